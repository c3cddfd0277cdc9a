"""The toy world's own tiny SAM and tiny CLIP: training scripts, shipped weights, registration.

Real SAM/CLIP weights cannot be downloaded on the project's machines, so the project trains these two
small models on the synthetic shapes world (``zsplg_fast.data.synthetic``) and ships their weights as
package data (``weights/``, sha256 in ``manifest.json``). ``zsplg_fast.toy.registry.register()`` adds
them as SAM variant ``toy`` and CLIP model ``toy``; nothing here is imported by lower layers eagerly.
"""
