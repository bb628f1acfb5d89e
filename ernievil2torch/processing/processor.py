"""One call for both front ends: texts to ``input_ids``/``attention_mask``, images to ``pixel_values``."""
from __future__ import annotations

import os
from typing import Dict, Optional, Union

import torch

from ..constants import DEFAULT_MAX_LENGTH
from ..errors import InputError
from .image import ErnieViL2ImageProcessor
from .tokenizer import ErnieViL2Tokenizer

__all__ = ["ErnieViL2Processor"]


class ErnieViL2Processor:
    """Wraps an :class:`ErnieViL2Tokenizer` and an :class:`ErnieViL2ImageProcessor`.

    ``processor(text=..., images=..., max_length=48, padding="max_length")`` returns a dict with ``input_ids`` and
    ``attention_mask`` (when ``text`` is given) and ``pixel_values`` (when ``images`` are given), all torch tensors.
    """

    def __init__(self, tokenizer: ErnieViL2Tokenizer, image_processor: Optional[ErnieViL2ImageProcessor] = None):
        self.tokenizer = tokenizer
        self.image_processor = image_processor if image_processor is not None else ErnieViL2ImageProcessor()

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], **image_kwargs) -> "ErnieViL2Processor":
        """Tokenizer from ``<path>/vocab.txt`` and the default image processor."""
        return cls(ErnieViL2Tokenizer.from_pretrained(path), ErnieViL2ImageProcessor.from_pretrained(path,
                                                                                                    **image_kwargs))

    def __call__(self, text=None, images=None, max_length: int = DEFAULT_MAX_LENGTH,
                 padding: str = "max_length") -> Dict[str, torch.Tensor]:
        if text is None and images is None:
            raise InputError("give text, images or both")
        out: Dict[str, torch.Tensor] = {}
        if text is not None:
            out.update(self.tokenizer(text, max_length=max_length, padding=padding, return_tensors="pt"))
        if images is not None:
            out["pixel_values"] = self.image_processor(images)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tokenizer={self.tokenizer!r}, image_processor={self.image_processor!r})"
