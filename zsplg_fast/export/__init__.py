"""What an artifact is and how it is made: specs, ONNX export + validation, sidecars, TensorRT builds.

Kept import-light: ``zsplg_fast.export.tensors`` is used by the engines layer; the heavy modules
(``specs``, ``onnx``, ``tensorrt``) are imported where they are used.

Public entry points::

    from zsplg_fast.export.specs import SPECS, get_spec        # spec registry
    from zsplg_fast.export.onnx import export_onnx             # one spec + model → validated ONNX
    from zsplg_fast.export.pipeline import export_family       # what `zsplg-fast export` runs
    from zsplg_fast.export.tensorrt import build_engine        # ONNX → TensorRT plan (+ sidecar)
    from zsplg_fast.export.artifact import read_sidecar
"""
