"""Cross-modal retrieval in four layers: recall metrics, exact top-k search, dataset formats, the commands."""
from .commands import encode_dataset, evaluate, search
from .datasets import RetrievalData, load_caption_folder, load_coco_cn_tsv
from .metrics import format_table, recall_from_ranks, retrieval_metrics, retrieval_ranks
from .topk import search_embeddings

__all__ = ["RetrievalData", "encode_dataset", "evaluate", "format_table", "load_caption_folder", "load_coco_cn_tsv",
           "recall_from_ranks", "retrieval_metrics", "retrieval_ranks", "search", "search_embeddings"]
