"""Front ends: the official tokenizer, the official image pipeline, and the processor that wraps both.

The names are imported on first use, so a light submodule (``processing.vocab``, which the converter reads the
vocab with) does not pull in torch and PIL through the image pipeline.
"""
from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {"ErnieViL2ImageProcessor": "image", "ErnieViL2Processor": "processor", "ErnieViL2Tokenizer": "tokenizer",
           "LengthGroupedTexts": "length_groups", "load_vocab": "vocab", "resolve_vocab": "vocab"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
