"""The retrieval commands: ``search`` (top-k over embedding folders) and ``eval`` (zero-shot recall of a model)."""
from .commands import EncodedDataset, Evaluation, SearchResult, encode_dataset, evaluate, search

__all__ = ["EncodedDataset", "Evaluation", "SearchResult", "encode_dataset", "evaluate", "search"]
