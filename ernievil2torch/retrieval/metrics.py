"""Cross-modal retrieval: recall metrics as in the official ``eval_retri.py``, dataset loaders, exact top-k search.

Metric semantics (official ``Research/ERNIE-ViL2/eval_retri.py``, ``single_eval``):

* scores are raw cosine similarities (features L2-normalised, then a float32 dot product; no logit scale);
* a query's rank is the number of gallery items scoring **strictly higher** than its best-scoring correct item
  (ties count in the query's favour); R@k = share of queries with rank < k; MRR = mean of 1 / (1 + rank);
* text -> image: one query per caption, its image is the one correct item;
* image -> text: one query per image, a hit if ANY of its captions is within the top k;
* "mean recall" (the headline "MR") = mean of the six recalls t2i/i2t R@1/5/10; each direction's own mean recall
  is the mean of its three.

``protocol="pairs"`` instead reproduces the official script's file mode exactly: every (caption, image) line is a
query in both directions and the only correct item is the other half of its own line; an image that appears on
several lines is then several gallery entries and several queries. Both protocols agree when every image has one
caption. Numbers are returned in percent, like the official table.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

ArrayLike = Union[np.ndarray, torch.Tensor]
KS = (1, 5, 10)


def as_float32_tensor(x: ArrayLike) -> torch.Tensor:
    """A float32 CPU tensor of an array or tensor (a read-only memory-mapped chunk is copied)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float()
    array = np.ascontiguousarray(x, dtype=np.float32)
    if not array.flags.writeable:  # a read-only memory map: copy the chunk (torch wants writable memory)
        array = array.copy()
    return torch.from_numpy(array)


def _chunk_rows(n_gallery: int, chunk_size: Optional[int]) -> int:
    """Queries per block so that one block of scores stays near 64 Mi floats (256 MB)."""
    if chunk_size:
        return max(1, int(chunk_size))
    return max(1, (1 << 26) // max(1, n_gallery))


def retrieval_ranks(queries: ArrayLike, gallery: ArrayLike, positives: Sequence[Sequence[int]],
                    chunk_size: Optional[int] = None, gallery_index: Optional[Sequence[int]] = None) -> np.ndarray:
    """Per query: how many gallery items score strictly higher than its best correct item (0 = top-1 hit).

    ``queries`` [Q, D] and ``gallery`` [G, D] are compared by plain dot product (normalise them first for
    cosine); ``positives[q]`` lists the correct gallery indices of query q (at least one). Scores are computed
    ``chunk_size`` queries at a time. With ``gallery_index`` the gallery is ``gallery[gallery_index]``, scored
    once per distinct row, so repeated entries get bit-identical scores (exact ties, as intended).
    """
    q, g = as_float32_tensor(queries), as_float32_tensor(gallery)
    columns = None if gallery_index is None else torch.as_tensor(list(gallery_index), dtype=torch.long)
    n_gallery = g.shape[0] if columns is None else columns.shape[0]
    if len(positives) != q.shape[0]:
        raise InputError(f"{q.shape[0]} queries but {len(positives)} positive lists")
    if any(len(p) == 0 for p in positives):
        raise InputError("every query needs at least one correct gallery item")
    width = max(len(p) for p in positives)
    # Pad the positive lists by repeating their first entry (a repeat does not change the max).
    pos = torch.tensor([list(p) + [p[0]] * (width - len(p)) for p in positives], dtype=torch.long)
    if int(pos.min()) < 0 or int(pos.max()) >= n_gallery:
        raise InputError("a positive index is outside the gallery")
    step = _chunk_rows(n_gallery, chunk_size)
    ranks = []
    for start in range(0, q.shape[0], step):
        scores = q[start:start + step] @ g.T
        if columns is not None:
            scores = scores[:, columns]
        best = scores.gather(1, pos[start:start + step]).max(dim=1, keepdim=True).values
        ranks.append((scores > best).sum(dim=1))
    return torch.cat(ranks).numpy().astype(np.int64)


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> Dict[str, float]:
    """R@k for each k, their mean and MRR, in percent."""
    ranks = np.asarray(ranks)
    out = {f"R@{k}": 100.0 * float((ranks < k).mean()) for k in ks}
    out["mean_recall"] = float(np.mean([out[f"R@{k}"] for k in ks]))
    out["MRR"] = 100.0 * float((1.0 / (1.0 + ranks)).mean())
    return out


def retrieval_metrics(text_embeds: ArrayLike, image_embeds: ArrayLike, text_to_image: Sequence[int],
                      protocol: str = "grouped", normalize: bool = True,
                      chunk_size: Optional[int] = None) -> Dict[str, Any]:
    """Text->image and image->text recall (percent) for captions ``text_embeds`` [T, D] of the images
    ``image_embeds`` [I, D]; ``text_to_image[t]`` is the image index of caption t.

    Returns ``{"t2i": {...}, "i2t": {...}, "mean": {R@1, R@5, R@10, mean_recall, MRR}, "mean_recall": MR,
    "num_texts", "num_images", "protocol"}`` where ``mean`` averages the two directions (the official
    "MeanRecall" row) and ``mean_recall`` is the headline MR.
    """
    if protocol not in ("grouped", "pairs"):
        raise InputError(f"protocol must be 'grouped' or 'pairs', got {protocol!r}")
    texts, images = as_float32_tensor(text_embeds), as_float32_tensor(image_embeds)
    links = [int(i) for i in text_to_image]
    if len(links) != texts.shape[0]:
        raise InputError(f"{texts.shape[0]} text embeddings but {len(links)} caption->image links")
    if links and (min(links) < 0 or max(links) >= images.shape[0]):
        raise InputError("a caption points outside the image list")
    if normalize:
        texts, images = F.normalize(texts, dim=-1), F.normalize(images, dim=-1)
    if protocol == "pairs":
        own = [[t] for t in range(len(links))]
        t2i = retrieval_ranks(texts, images, own, chunk_size, gallery_index=links)
        i2t = retrieval_ranks(images[torch.tensor(links, dtype=torch.long)], texts, own, chunk_size)
        num_images = len(links)
    else:
        t2i = retrieval_ranks(texts, images, [[i] for i in links], chunk_size)
        captions: List[List[int]] = [[] for _ in range(images.shape[0])]
        for t, i in enumerate(links):
            captions[i].append(t)
        queried = [i for i in range(images.shape[0]) if captions[i]]  # uncaptioned images: gallery only
        i2t = retrieval_ranks(images[queried], texts, [captions[i] for i in queried], chunk_size)
        num_images = images.shape[0]
    r_t2i, r_i2t = recall_from_ranks(t2i), recall_from_ranks(i2t)
    mean = {k: (r_t2i[k] + r_i2t[k]) / 2 for k in r_t2i}
    return {"t2i": r_t2i, "i2t": r_i2t, "mean": mean, "mean_recall": mean["mean_recall"],
            "num_texts": len(links), "num_images": int(num_images), "protocol": protocol}


def format_table(metrics: Dict[str, Any]) -> str:
    """The official script's table (GitHub markdown, two decimals); the columns stay aligned up to 100.00."""
    rows = [("Text2Image", metrics["t2i"]), ("Image2Text", metrics["i2t"]), ("MeanRecall", metrics["mean"])]
    lines = ["| Name       |    R@1 |    R@5 |   R@10 | meanRecall |",
             "|------------|--------|--------|--------|------------|"]
    for name, m in rows:
        lines.append(f"| {name:<10} | {m['R@1']:6.2f} | {m['R@5']:6.2f} | {m['R@10']:6.2f} | "
                     f"{m['mean_recall']:10.2f} |")
    return "\n".join(lines)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of ``a`` with the same row of ``b`` (in float64): how close two runs' features are,
    whatever their norms."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a64 * b64).sum(-1) / (np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1))
