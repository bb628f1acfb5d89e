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

import base64
import binascii
import csv
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .jsonl import iter_jsonl

ArrayLike = Union[np.ndarray, torch.Tensor]
KS = (1, 5, 10)


# ---- metrics --------------------------------------------------------------------------------------------------
def _as_tensor(x: ArrayLike) -> torch.Tensor:
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
    q, g = _as_tensor(queries), _as_tensor(gallery)
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
    texts, images = _as_tensor(text_embeds), _as_tensor(image_embeds)
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
    """The official script's table (GitHub markdown, two decimals)."""
    rows = [("Text2Image", metrics["t2i"]), ("Image2Text", metrics["i2t"]), ("MeanRecall", metrics["mean"])]
    lines = ["| Name       |   R@1 |   R@5 |  R@10 | meanRecall |", "|------------|-------|-------|-------|------------|"]
    for name, m in rows:
        lines.append(f"| {name:<10} | {m['R@1']:5.2f} | {m['R@5']:5.2f} | {m['R@10']:5.2f} | "
                     f"{m['mean_recall']:10.2f} |")
    return "\n".join(lines)


# ---- exact top-k search ---------------------------------------------------------------------------------------
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


def search_embeddings(query_embeds: ArrayLike, gallery_embeds: ArrayLike, k: int = 10,
                      chunk_size: int = 65536, query_chunk_size: int = 1024, use_faiss: bool = False
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product (cosine if both sides are normalised): ``(scores [Q, k], indices [Q, k])``.

    The gallery is scanned ``chunk_size`` rows at a time (a ``np.load(..., mmap_mode="r")`` array works, so
    galleries larger than memory are fine) and queries ``query_chunk_size`` at a time. Order: score descending,
    ties by gallery index ascending, the same for every chunk size. ``use_faiss=True`` uses ``faiss.IndexFlatIP``
    when faiss is installed (same scores; FAISS's tie order is its own).
    """
    n_gallery = int(gallery_embeds.shape[0])
    if n_gallery == 0 or int(query_embeds.shape[0]) == 0:
        raise InputError("empty query or gallery")
    k = min(int(k), n_gallery)
    if k < 1:
        raise InputError("k must be at least 1")
    if use_faiss:
        try:
            import faiss
        except ImportError:
            print("note: faiss not installed, using exact torch search", file=sys.stderr)
        else:
            index = faiss.IndexFlatIP(int(gallery_embeds.shape[1]))
            for start in range(0, n_gallery, chunk_size):
                index.add(np.ascontiguousarray(np.asarray(gallery_embeds[start:start + chunk_size]),
                                               dtype=np.float32))
            scores, ids = index.search(np.ascontiguousarray(np.asarray(query_embeds), dtype=np.float32), k)
            return scores, ids.astype(np.int64)
    all_scores, all_ids = [], []
    for qs in range(0, int(query_embeds.shape[0]), query_chunk_size):
        q = _as_tensor(query_embeds[qs:qs + query_chunk_size])
        best_s = torch.empty(q.shape[0], 0)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long)
        for gs in range(0, n_gallery, chunk_size):
            g = _as_tensor(gallery_embeds[gs:gs + chunk_size])
            s, i = _block_topk(q @ g.T, k, gs)
            # Earlier blocks hold lower indices, so a stable sort of [best, block] keeps index order in ties.
            cat_s, cat_i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
            order = torch.sort(cat_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s, best_i = cat_s.gather(1, order), cat_i.gather(1, order)
        all_scores.append(best_s)
        all_ids.append(best_i)
    return torch.cat(all_scores).numpy(), torch.cat(all_ids).numpy()


def _load_side(spec: str) -> Tuple[np.ndarray, List[str]]:
    path = Path(spec)
    if path.is_dir():
        from .embed import load_embeddings

        array, ids = load_embeddings(spec)
        return np.load(path / "embeddings.npy", mmap_mode="r"), ids
    array = np.load(path, mmap_mode="r")
    return array, [str(i) for i in range(array.shape[0])]


def search(queries: str, gallery: str, out: str, k: int = 10, chunk_size: int = 65536, normalize: bool = True,
           faiss: bool = False) -> str:
    """Top-k gallery items for every query; writes OUT as TSV: query_id, rank, gallery_id, score.

    Args:
        queries: an `embed` output folder (embeddings.npy + ids.txt) or a .npy file (ids = row numbers).
        gallery: the same for the gallery (read memory-mapped, scanned chunk by chunk).
        out: the TSV to write.
        k: results per query.
        chunk_size: gallery rows per block.
        normalize: L2-normalise queries (per block, also the gallery) so scores are cosines.
        faiss: use faiss.IndexFlatIP if installed.
    """
    q, q_ids = _load_side(queries)
    g, g_ids = _load_side(gallery)
    if normalize:
        q = F.normalize(_as_tensor(np.asarray(q)), dim=-1).numpy()
        g = _NormalizedRows(g)
    scores, ids = search_embeddings(q, g, k=k, chunk_size=chunk_size, use_faiss=faiss)
    with open(out, "w", encoding="utf-8") as handle:
        for row in range(scores.shape[0]):
            for rank in range(scores.shape[1]):
                handle.write(f"{q_ids[row]}\t{rank + 1}\t{g_ids[ids[row, rank]]}\t{scores[row, rank]:.6f}\n")
    return out


class _NormalizedRows:
    """Array-like view that L2-normalises the rows it hands out (keeps a memory-mapped gallery lazy)."""

    def __init__(self, array) -> None:
        self.array, self.shape = array, array.shape

    def __getitem__(self, key) -> np.ndarray:
        return F.normalize(_as_tensor(np.asarray(self.array[key])), dim=-1).numpy()

    def __array__(self, dtype=None, copy=None):
        return self[:]


# ---- datasets -------------------------------------------------------------------------------------------------
@dataclass
class RetrievalData:
    """Captions and their images: ``text_image[t]`` indexes ``images`` (paths or encoded bytes)."""

    texts: List[str] = field(default_factory=list)
    text_image: List[int] = field(default_factory=list)
    images: List[Any] = field(default_factory=list)
    image_ids: List[str] = field(default_factory=list)


def load_coco_cn_tsv(path: Union[str, Path]) -> RetrievalData:
    """The official test file (e.g. ``test.coco_cn.data``): ``text<TAB>image_id<TAB>base64 image`` per line,
    one caption per line, an image repeated on the lines of each of its captions. As in the official reader
    the line is stripped and split on tabs: text = first field, image = last field, id = second field."""
    data = RetrievalData()
    index: Dict[Tuple[str, str], int] = {}
    with open(path, encoding="utf-8") as handle:
        for num, line in enumerate(handle, 1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            if len(fields) < 2:
                raise InputError(f"{path} line {num}: expected 'text<TAB>image_id<TAB>base64', got 1 field")
            text, b64 = fields[0], fields[-1]
            image_id = fields[1] if len(fields) >= 3 else f"line{num}"
            key = (image_id, hashlib.sha1(b64.encode("ascii", "replace")).hexdigest())
            if key not in index:
                try:
                    raw = base64.b64decode(b64, validate=False)
                except (binascii.Error, ValueError) as exc:
                    raise InputError(f"{path} line {num}: bad base64 image ({exc})") from None
                index[key] = len(data.images)
                data.images.append(raw)
                data.image_ids.append(image_id)
            data.texts.append(text)
            data.text_image.append(index[key])
    if not data.texts:
        raise InputError(f"{path}: no captions")
    return data


def load_caption_folder(images: Union[str, Path], captions: Union[str, Path]) -> RetrievalData:
    """An image folder plus a captions file mapping captions to image files (paths relative to the folder):

    * ``.jsonl``: ``{"image": "a.jpg", "caption": "..."}`` or ``{"image": "a.jpg", "captions": ["...", ...]}``;
    * ``.tsv``: ``caption<TAB>image`` per line (an optional header ``caption<TAB>image`` / ``text<TAB>image``;
      ``image<TAB>caption`` is recognised by its header).
    Images are listed in first-mention order.
    """
    root, cap = Path(images), Path(captions)
    if not root.is_dir():
        raise InputError(f"image folder {root} not found")
    pairs: List[Tuple[str, str]] = []
    if cap.suffix.lower() == ".jsonl":
        for num, obj, error in iter_jsonl(cap):
            if error is not None:
                raise InputError(f"{cap} line {num}: {error}")
            if not isinstance(obj, dict) or "image" not in obj or not ("caption" in obj or "captions" in obj):
                raise InputError(f"{cap} line {num}: needs 'image' and 'caption' or 'captions'")
            texts = obj["captions"] if "captions" in obj else [obj["caption"]]
            pairs.extend((str(t), str(obj["image"])) for t in texts)
    else:
        with open(cap, encoding="utf-8", newline="") as handle:
            rows = [r for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
        text_col, image_col = 0, 1
        if rows and [c.strip().lower() for c in rows[0][:2]] in (["caption", "image"], ["text", "image"],
                                                                   ["image", "caption"], ["image", "text"]):
            if rows[0][0].strip().lower() == "image":
                text_col, image_col = 1, 0
            rows = rows[1:]
        for num, row in enumerate(rows, 1):
            if len(row) < 2:
                raise InputError(f"{cap} row {num}: expected 'caption<TAB>image'")
            pairs.append((row[text_col], row[image_col].strip()))
    data = RetrievalData()
    index: Dict[str, int] = {}
    for text, name in pairs:
        if name not in index:
            index[name] = len(data.images)
            data.images.append(str(root / name))
            data.image_ids.append(name)
        data.texts.append(text)
        data.text_image.append(index[name])
    if not data.texts:
        raise InputError(f"{cap}: no captions")
    return data


# ---- end to end -----------------------------------------------------------------------------------------------
def encode_dataset(model, tokenizer, data: RetrievalData, batch_size: int = 64, num_workers: int = 0,
                   max_length: int = 48, progress: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Raw (not normalised) text and image features of a dataset; any unreadable image is an error."""
    from .embed import Item, encode_items

    image_items = [Item(i, src) for i, src in zip(data.image_ids, data.images)]
    image_feats, ok, failed = encode_items(model, image_items, "image", batch_size, num_workers,
                                           progress=progress)
    if failed:
        shown = "; ".join(f"{data.image_ids[i]}: {r}" for i, r in failed[:5])
        raise InputError(f"{len(failed)} image(s) could not be read: {shown}")
    text_items = [Item(str(t), text) for t, text in enumerate(data.texts)]
    text_feats, ok_t, failed_t = encode_items(model, text_items, "text", batch_size, num_workers, tokenizer,
                                              max_length, progress=progress)
    if failed_t:
        shown = "; ".join(f"caption {i}: {r}" for i, r in failed_t[:5])
        raise InputError(f"{len(failed_t)} caption(s) could not be tokenised: {shown}")
    return text_feats, image_feats


def evaluate(model_dir: str, data: str, images: Optional[str] = None, protocol: str = "grouped",
             batch_size: int = 64, num_workers: int = 2, dtype: str = "float32", device: Optional[str] = None,
             vocab: Optional[str] = None, max_length: int = 48, out: Optional[str] = None,
             save_embeddings: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
    """Zero-shot image-text retrieval: R@1/5/10 both ways and mean recall, ranked by raw cosine (official eval).

    Args:
        model_dir: a converted model directory (with vocab.txt, or pass --vocab).
        data: the official COCO-CN style TSV (text<TAB>image_id<TAB>base64 per line), or with --images a
            captions file (.jsonl or .tsv, see load_caption_folder).
        images: image folder for a captions file.
        protocol: 'grouped' (images deduplicated; image->text hit if any of its captions is in the top k) or
            'pairs' (the official script's file mode: every line is one query each way).
        batch_size: encoding batch size.
        num_workers: DataLoader worker processes for image decoding.
        dtype: float32 (default), float16 or bfloat16 compute.
        device: cpu / cuda (default: cuda if available).
        vocab: vocab.txt (default MODEL_DIR/vocab.txt).
        max_length: text length incl. [CLS]/[SEP] (48, official).
        out: write the metrics as JSON here.
        save_embeddings: write text/image features and links to this .npz.
        progress: progress bars.
    """
    from .embed import _DTYPES
    from .model import ErnieViL2
    from .tokenizer import ErnieViL2Tokenizer

    dataset = load_caption_folder(images, data) if images else load_coco_cn_tsv(data)
    if dtype not in _DTYPES:
        raise InputError(f"dtype must be one of {sorted(set(_DTYPES))}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = ErnieViL2.from_pretrained(model_dir, dtype=_DTYPES[dtype], device=device)
    vocab_path = Path(vocab) if vocab else Path(model_dir) / "vocab.txt"
    if not vocab_path.is_file():
        raise InputError(f"no vocab file at {vocab_path}; pass --vocab")
    tokenizer = ErnieViL2Tokenizer(vocab_path)
    text_feats, image_feats = encode_dataset(model, tokenizer, dataset, batch_size, num_workers, max_length,
                                             progress)
    if save_embeddings:
        np.savez(save_embeddings, text_embeds=text_feats, image_embeds=image_feats,
                 text_to_image=np.asarray(dataset.text_image), image_ids=np.asarray(dataset.image_ids))
    metrics = retrieval_metrics(text_feats, image_feats, dataset.text_image, protocol=protocol)
    print(f"{metrics['num_texts']} captions, {len(dataset.images)} images, protocol {protocol}")
    print(format_table(metrics))
    print(f"MR (mean of the six recalls): {metrics['mean_recall']:.2f}")
    if out:
        Path(out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
