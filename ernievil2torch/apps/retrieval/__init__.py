"""The retrieval commands: ``search`` (top-k over embedding folders) and ``eval`` (zero-shot recall of a model)."""
from .commands import encode_dataset, evaluate, search

__all__ = ["encode_dataset", "evaluate", "search"]
