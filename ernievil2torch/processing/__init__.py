"""Front ends: the official tokenizer, the official image pipeline, and the processor that wraps both.

The names are imported on first use, so a light submodule (``processing.vocab``, which the converter reads the
vocab with) does not pull in torch and PIL through the image pipeline.
"""
from __future__ import annotations

from ..lazy_exports import lazy_exports

_PUBLIC = {"ErnieViL2ImageProcessor": "image", "ErnieViL2Processor": "processor", "ErnieViL2Tokenizer": "tokenizer",
           "LengthGroupedTexts": "length_groups", "load_vocab": "vocab", "resolve_vocab": "vocab"}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
