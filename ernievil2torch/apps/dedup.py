"""``ernievil2 dedup``: groups of near-duplicate images in an ``embed`` output, exact and memory-bounded.

Two images are *linked* when the cosine of their embeddings is at least ``threshold``; a group is a connected
component of those links (single linkage: a chain a~b~c is one group even if a and c are further apart), with two or
more members. Every pair is compared (exact, O(N^2 D) work): the gallery is read ``chunk_size`` rows at a time from
the memory-mapped ``embeddings.npy`` and compared block by block (upper triangle only), so memory stays at about
``chunk_size^2`` scores plus one int per image, whatever N is. Links are merged into a union-find forest as each
block is done; no list of pairs is kept. With ``faiss=True`` the links are found through the search back-end
protocol instead (:func:`backend_links`), by the in-memory back end searching with a FAISS ``IndexFlatIP`` (also
exact; it holds the whole normalised gallery in memory, in the back end's array and in the index).

Output folder (published atomically: the previous one or the complete new one)::

    OUT/groups.tsv    group <TAB> row <TAB> id <TAB> cosine_to_first   (header line; groups largest first)
    OUT/groups.json   the same, with the settings and counts
    OUT/groups.png    example groups as thumbnails (with --images IMAGE_ROOT; Chinese captions drawn properly)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..data.image_root import ImageRoot
from ..errors import InputError
from ..processing import ErnieViL2ImageProcessor
from ..retrieval.backends import SearchBackend, create_backend
from ..retrieval.topk import NormalizedRows, faiss_available
from ..storage.atomic import atomic_directory
from ..storage.outputs import check_output_dir
from ..storage.embeddings import read_embed_output
from .fonts import CJK_FONT_PACKAGE

TSV_NAME, JSON_NAME, PICTURE_NAME = "groups.tsv", "groups.json", "groups.png"
THUMBNAIL_SIZE = 160
MEMBERS_DRAWN = 6


# ---- links and groups -------------------------------------------------------------------------------------------
def _roots(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The union-find root of each node (pointer jumping; parents always point to a lower index)."""
    roots = parent[nodes]
    while True:
        up = parent[roots]
        if np.array_equal(up, roots):
            return roots
        roots = up


def union_links(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Merge the components of each link ``a[i]`` ~ ``b[i]`` into ``parent`` (vectorised union-find).

    Each round hooks the higher root of every still-separate link under the lower one; several links sharing a
    root take the lowest, and the others are retried next round, until every link joins one component.
    """
    while a.size:
        ra, rb = _roots(parent, a), _roots(parent, b)
        apart = ra != rb
        if not apart.any():
            return
        a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))


def _block_links(rows: NormalizedRows, threshold: float, chunk_size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Links (i < j, cosine >= threshold) of the upper triangle, one ``chunk_size`` x ``chunk_size`` block at a
    time (exact float32 dot products)."""
    n = rows.shape[0]
    for start in range(0, n, chunk_size):
        left = torch.from_numpy(rows[start:start + chunk_size])
        for other in range(start, n, chunk_size):
            right = left if other == start else torch.from_numpy(rows[other:other + chunk_size])
            linked = (left @ right.T) >= threshold
            if other == start:
                linked = torch.triu(linked, diagonal=1)
            i, j = linked.nonzero(as_tuple=True)
            if i.numel():
                yield (i + start).numpy(), (j + other).numpy()


def backend_links(backend: SearchBackend, rows: NormalizedRows, threshold: float, chunk_size: int,
                  first_k: int = 16) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """The same links from a search back end that holds row ``i`` of ``rows`` under the id ``str(i)``.

    Each ``chunk_size`` rows are one batch of queries, searched for their ``first_k`` best hits; a query whose
    last hit is still at or above ``threshold`` is searched again with twice the ``k``, until its last hit falls
    below it, so every row at or above it is found (exact when the back end is, whatever order it gives ties).
    Only the protocol is used, so any back end (:mod:`ernievil2torch.retrieval.backends`) can find the links.
    """
    for start in range(0, rows.shape[0], chunk_size):
        queries = rows[start:start + chunk_size]
        pending, k = np.arange(queries.shape[0]), first_k
        while pending.size:
            left, right, more = [], [], []
            for local, hits in zip(pending.tolist(), backend.search(queries[pending], k=k)):
                if len(hits) == k and hits[-1].score >= threshold:
                    more.append(local)  # there may be more linked rows beyond these k
                    continue
                query = start + local
                later = [int(h.id) for h in hits if h.score >= threshold and int(h.id) > query]
                left += [query] * len(later)
                right += later
            if left:
                yield np.asarray(left, np.int64), np.asarray(right, np.int64)
            pending, k = np.asarray(more, np.int64), 2 * k


def _faiss_links(rows: NormalizedRows, threshold: float, chunk_size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """The links from the in-memory back end searching with a FAISS ``IndexFlatIP`` (exact)."""
    backend = create_backend("memory", int(rows.shape[1]), use_faiss=True)
    backend.add(np.asarray(rows[:]), [str(i) for i in range(rows.shape[0])])
    return backend_links(backend, rows, threshold, chunk_size)


def near_duplicate_groups(embeddings, threshold: float = 0.95, chunk_size: int = 4096,
                          use_faiss: bool = False) -> List[np.ndarray]:
    """Groups (2+ rows, ascending) of rows linked by cosine >= ``threshold``; largest first, then by first row.

    ``embeddings`` is any [N, D] array-like (a memory map works; rows are L2-normalised as they are read).
    """
    if not -1.0 <= threshold <= 1.0:
        raise InputError(f"threshold must be a cosine in [-1, 1], got {threshold}")
    if chunk_size < 1:
        raise InputError("chunk_size must be positive")
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise InputError(f"embeddings must be a non-empty [N, D] array, got shape {embeddings.shape}")
    rows = NormalizedRows(embeddings)
    n = rows.shape[0]
    parent = np.arange(n, dtype=np.int64)
    links = _faiss_links if use_faiss else _block_links
    for a, b in links(rows, float(threshold), chunk_size):
        union_links(parent, a, b)
    roots = _roots(parent, np.arange(n, dtype=np.int64))
    order = np.argsort(roots, kind="stable")
    _, starts, counts = np.unique(roots[order], return_index=True, return_counts=True)
    groups = [order[s:s + c] for s, c in zip(starts, counts) if c > 1]
    groups.sort(key=lambda g: (-len(g), int(g[0])))
    return groups


# ---- the command ------------------------------------------------------------------------------------------------
@dataclass
class DedupResult:
    """What ``dedup`` found and wrote."""

    threshold: float
    images: int
    groups: List[List[int]]
    out: Path
    picture: Optional[Path]
    note: str = ""

    @property
    def duplicates(self) -> int:
        """Images that could be removed keeping one per group."""
        return sum(len(g) - 1 for g in self.groups)

    def summary(self) -> str:
        lines = [f"{_count(self.images, 'image')}, threshold {self.threshold:g}: "
                 f"{_count(len(self.groups), 'group')} of near-duplicates "
                 f"({_count(self.duplicates, 'image')} beyond the first of each group)",
                 f"written: {self.out / TSV_NAME}, {self.out / JSON_NAME}"
                 + (f", {self.picture}" if self.picture else "")]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless the number is one ("1 group", "2 groups")."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _cosines_to_first(rows: NormalizedRows, group: np.ndarray) -> np.ndarray:
    members = rows[np.asarray(group)]
    return members @ members[0]


def _matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _short(text: str, width: int = 24) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _draw_groups(path: Path, groups: List[dict], root: ImageRoot, threshold: float, examples: int,
                 counts: Tuple[int, int]) -> Tuple[Path, bool]:
    from PIL import Image

    from .plotting import Tile, plot_tile_rows

    decoder = ErnieViL2ImageProcessor()
    rows, labels, plain_labels = [], [], []
    for number, group in enumerate(groups[:examples]):
        tiles = []
        for member in group["members"][:MEMBERS_DRAWN]:
            try:
                picture = Image.fromarray(decoder.load_image(root.resolve(member["id"])))
                picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
                image: Optional[np.ndarray] = np.asarray(picture)
            except InputError:  # missing, unreadable or outside the root: an empty frame, the caption says so
                image = None
            score = member["cosine_to_first"]
            tiles.append(Tile(image, f"{_short(member['id'])}\n余弦 {score:.3f}" + ("" if image is not None
                                                                                      else "（无法读取）"),
                              f"row {member['row']}\ncos {score:.3f}" + ("" if image is not None else " (unreadable)")))
        rows.append(tiles)
        labels.append(f"第 {number + 1} 组（{group['size']} 张）")
        plain_labels.append(f"group {number + 1} ({group['size']})")
    n_groups, n_duplicates = counts
    return plot_tile_rows(
        rows, str(path), title=f"近重复图像组（余弦相似度 ≥ {threshold:g}）：{n_groups} 组，{n_duplicates} 张重复",
        plain_title=f"near-duplicate groups (cosine >= {threshold:g}): {n_groups} groups, {n_duplicates} duplicates",
        row_labels=labels, plain_row_labels=plain_labels)


def dedup(embeddings: str, threshold: float = 0.95, out: Optional[str] = None, images: Optional[str] = None,
          chunk_size: int = 4096, faiss: bool = False, examples: int = 8, overwrite: bool = False) -> DedupResult:
    """Find groups of near-duplicate images in an ``embed`` output and write them as TSV, JSON and a picture.

    Args:
        embeddings: an `ernievil2 embed` output folder of images (embeddings.npy + ids.txt; one whose manifest
            says it holds text embeddings is refused).
        threshold: link two images when the cosine of their embeddings is at least this.
        out: output folder (default EMBEDDINGS/dedup); refused if it exists, unless --overwrite.
        images: the folder the embedded images' ids are relative to; needed for the picture of example groups.
        chunk_size: rows compared per block (memory ~ chunk_size^2 floats).
        faiss: find the links with a FAISS range search (exact; needs faiss-cpu).
        examples: groups drawn in the picture (largest first).
        overwrite: replace an existing output folder.
    """
    folder = Path(embeddings)
    target = Path(out) if out else folder / "dedup"
    check_output_dir(target, overwrite, inputs=[folder, images])
    source = read_embed_output(folder, mmap=True, kind="image")
    array, ids = source.embeddings, source.ids
    if faiss and not faiss_available():
        raise InputError("--faiss needs the faiss-cpu package (pip install faiss-cpu)")
    root = ImageRoot(images) if images else None
    found = near_duplicate_groups(array, threshold, chunk_size, use_faiss=faiss)
    rows = NormalizedRows(array)
    groups = []
    for number, group in enumerate(found):
        scores = _cosines_to_first(rows, group)
        groups.append({"group": number, "size": len(group),
                       "members": [{"row": int(r), "id": ids[int(r)], "cosine_to_first": round(float(s), 6)}
                                   for r, s in zip(group, scores)]})
    picture, note = None, ""
    with atomic_directory(target, overwrite=overwrite, inputs=[folder, images]) as tmp:
        with open(tmp / TSV_NAME, "w", encoding="utf-8") as handle:
            handle.write("group\trow\tid\tcosine_to_first\n")
            for group in groups:
                for member in group["members"]:
                    handle.write(f"{group['group']}\t{member['row']}\t{member['id']}\t"
                                 f"{member['cosine_to_first']:.6f}\n")
        counts = (len(groups), sum(g["size"] - 1 for g in groups))
        report = {"threshold": threshold, "images": len(ids), "groups_found": counts[0], "duplicates": counts[1],
                  "linkage": "single (connected components of cosine >= threshold)",
                  "backend": "faiss" if faiss else "torch", "embeddings": str(folder.resolve()), "groups": groups}
        (tmp / JSON_NAME).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        if root is None:
            note = "no picture: pass --images IMAGE_ROOT (the folder given to `ernievil2 embed`) to draw examples"
        elif not groups:
            note = "no picture: no groups at this threshold"
        elif not _matplotlib_available():
            note = "no picture: matplotlib is not installed (pip install 'ernievil2torch[plot]')"
        else:
            _, has_cjk = _draw_groups(tmp / PICTURE_NAME, groups, root, threshold, examples, counts)
            picture = target / PICTURE_NAME
            if not has_cjk:
                note = f"no CJK font found: the picture uses English captions (pip install {CJK_FONT_PACKAGE})"
    return DedupResult(threshold, len(ids), [[m["row"] for m in g["members"]] for g in groups], target, picture,
                       note)
