"""Batch embedding of image or text collections: sharded, resumable, multi-process (torchrun), fault tolerant."""
from .encoding import encode_items
from .inputs import IMAGE_EXTENSIONS, Item, list_images, list_texts
from .pipeline import embed
from .shards import load_embeddings

__all__ = ["IMAGE_EXTENSIONS", "Item", "embed", "encode_items", "list_images", "list_texts", "load_embeddings"]
