"""Exports: stock Hugging Face models, ONNX, and back to Paddle (each needs its optional dependency only to be loaded
or checked; the Paddle export needs no Paddle at all)."""
from .hf import export_hf
from .onnx import export_onnx
from .paddle import export_paddle

__all__ = ["export_hf", "export_onnx", "export_paddle"]
