"""Exports: stock Hugging Face models and ONNX (each needs its optional dependency only to be loaded or checked)."""
from .hf import export_hf
from .onnx import export_onnx

__all__ = ["export_hf", "export_onnx"]
