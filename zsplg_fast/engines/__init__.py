"""Run artifacts anywhere: one Engine protocol; torch, onnxruntime and TensorRT backends."""

from zsplg_fast.engines.base import Engine, TensorSpec, backends, check_feeds, load_engine, register_backend

__all__ = ["Engine", "TensorSpec", "backends", "check_feeds", "load_engine", "register_backend"]
