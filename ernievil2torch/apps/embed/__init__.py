"""Batch embedding of image or text collections: sharded, resumable, multi-process (torchrun), fault tolerant."""
from .pipeline import EmbedResult, embed

__all__ = ["EmbedResult", "embed"]
