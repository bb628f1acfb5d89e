"""Exports: stock Hugging Face models, ONNX, OpenVINO IR, and back to Paddle (each needs its optional dependency only to be loaded
or checked; the Paddle export needs no Paddle at all).

:data:`~ernievil2torch.export.registry.EXPORTERS` lists the formats; importing this package imports no exporter
(and so no torch): ``export_hf``, ``export_onnx``, ``export_openvino`` and ``export_paddle`` are imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from .registry import EXPORTERS, Exporter, export_model, exporter
from .result import ExportResult

_LAZY = {"export_hf": ".hf", "export_onnx": ".onnx", "export_openvino": ".openvino", "export_paddle": ".paddle"}

__all__ = ["EXPORTERS", "ExportResult", "Exporter", "export_model", "exporter", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
