"""Batch embedding of image or text collections: sharded, resumable, multi-process (torchrun), fault tolerant."""
from .pipeline import EmbedResult, embed
from .shards import load_embeddings

__all__ = ["EmbedResult", "embed", "load_embeddings"]
