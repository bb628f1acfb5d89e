"""Exact top-k search by dot product over galleries larger than memory (chunked; FAISS optional)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .metrics import ArrayLike, as_float32_tensor


def _block_topk(scores: torch.Tensor, k: int, offset: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top k of each row, ordered by score descending then index ascending (deterministic with ties)."""
    k = min(k, scores.shape[1])
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    need = k - above.sum(dim=1, keepdim=True)
    tied = scores == kth
    take = above | (tied & (tied.cumsum(dim=1) <= need))  # among ties at the boundary, the lowest indices
    cols = take.nonzero()[:, 1].view(scores.shape[0], k)  # row-major: ascending index within each row
    vals = scores.gather(1, cols)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return vals.gather(1, order), cols.gather(1, order) + offset


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def build_faiss_index(gallery_embeds: ArrayLike, chunk_size: int = 65536):
    """A ``faiss.IndexFlatIP`` (exact inner product) holding the gallery, added ``chunk_size`` rows at a time.

    Build it once and pass it to :func:`search_embeddings` as ``faiss_index`` to search the same gallery many
    times. Raises ImportError when faiss is not installed.
    """
    import faiss

    index = faiss.IndexFlatIP(int(gallery_embeds.shape[1]))
    for start in range(0, int(gallery_embeds.shape[0]), chunk_size):
        index.add(np.ascontiguousarray(np.asarray(gallery_embeds[start:start + chunk_size]), dtype=np.float32))
    return index


def search_embeddings(query_embeds: ArrayLike, gallery_embeds: ArrayLike, k: int = 10,
                      chunk_size: int = 65536, query_chunk_size: int = 1024, use_faiss: bool = False,
                      faiss_index=None) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product (cosine if both sides are normalised): ``(scores [Q, k], indices [Q, k])``.

    The gallery is scanned ``chunk_size`` rows at a time (a ``np.load(..., mmap_mode="r")`` array works, so
    galleries larger than memory are fine) and queries ``query_chunk_size`` at a time. Order: score descending,
    ties by gallery index ascending, the same for every chunk size. ``use_faiss=True`` uses ``faiss.IndexFlatIP``
    when faiss is installed, else the exact torch scan (same scores; FAISS's tie order is its own); ``faiss_index`` is such an index already
    built over ``gallery_embeds`` (:func:`build_faiss_index`), used instead of building one.
    """
    n_gallery = int(gallery_embeds.shape[0])
    if n_gallery == 0 or int(query_embeds.shape[0]) == 0:
        raise InputError("empty query or gallery")
    k = min(int(k), n_gallery)
    if k < 1:
        raise InputError("k must be at least 1")
    if faiss_index is None and use_faiss and faiss_available():
        faiss_index = build_faiss_index(gallery_embeds, chunk_size)
    if faiss_index is not None:
        scores, ids = faiss_index.search(np.ascontiguousarray(np.asarray(query_embeds), dtype=np.float32), k)
        return scores, ids.astype(np.int64)
    all_scores, all_ids = [], []
    for qs in range(0, int(query_embeds.shape[0]), query_chunk_size):
        q = as_float32_tensor(query_embeds[qs:qs + query_chunk_size])
        best_s = torch.empty(q.shape[0], 0)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long)
        for gs in range(0, n_gallery, chunk_size):
            g = as_float32_tensor(gallery_embeds[gs:gs + chunk_size])
            s, i = _block_topk(q @ g.T, k, gs)
            # Earlier blocks hold lower indices, so a stable sort of [best, block] keeps index order in ties.
            cat_s, cat_i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
            order = torch.sort(cat_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s, best_i = cat_s.gather(1, order), cat_i.gather(1, order)
        all_scores.append(best_s)
        all_ids.append(best_i)
    return torch.cat(all_scores).numpy(), torch.cat(all_ids).numpy()


class NormalizedRows:
    """Array-like view that L2-normalises the rows it hands out (keeps a memory-mapped gallery lazy)."""

    def __init__(self, array) -> None:
        self.array, self.shape = array, array.shape

    def __getitem__(self, key) -> np.ndarray:
        return F.normalize(as_float32_tensor(np.asarray(self.array[key])), dim=-1).numpy()

    def __array__(self, dtype=None, copy=None):
        return self[:]
