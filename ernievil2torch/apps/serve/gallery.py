"""The searchable gallery: an ``embed`` output (``embeddings.npy`` + ``ids.txt``) over images under one root.

* :class:`ImageRoot` turns a gallery id (a path relative to ``IMAGE_ROOT``, as ``embed`` wrote it) into a file that
  is safe to serve: inside the root after every symlink is followed, a regular file, with an image extension.
  Clients never send paths, only row numbers; this is the second wall, against ids or symlinks that lead out.
* :class:`Gallery` holds the L2-normalised embeddings in memory and answers exact top-k queries by cosine
  (:func:`~ernievil2torch.retrieval.topk.search_embeddings`; a FAISS ``IndexFlatIP``, built once, when faiss
  is installed and the gallery is large; both are exact).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from ...errors import InputError
from ...data.inputs import IMAGE_EXTENSIONS
from ..embed import load_embeddings
from ...retrieval.topk import build_faiss_index, faiss_available, search_embeddings

#: Galleries with at least this many rows use FAISS (when installed and not switched off); smaller ones torch.
FAISS_MIN_ROWS = 50_000
#: Rows normalised per step when loading (bounds the float64-free temporary).
LOAD_CHUNK_ROWS = 65_536


class ImageLookupError(InputError):
    """A gallery row that cannot be served: ``status`` is the HTTP status that describes why (404 or 403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ImageRoot:
    """The folder gallery images are served from; :meth:`resolve` is the only way from an id to a file."""

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        path = Path(root)
        if not path.is_dir():
            raise InputError(f"image root '{root}' is not a folder")
        self.root = path.resolve(strict=True)

    def resolve(self, image_id: str) -> Path:
        """The real path of ``image_id`` under the root.

        Raises :class:`ImageLookupError` with status 403 when the id is absolute, holds a NUL, or leads outside
        the root (``..``, a symlink anywhere on the way), and 404 when the file is missing, not a regular file, or
        not an image by its extension.
        """
        if "\x00" in image_id or os.path.isabs(image_id):
            raise ImageLookupError(f"refused: gallery id {image_id!r} is not a path inside the image root", 403)
        try:
            real = (self.root / image_id).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a symlink loop, a name too long
            raise ImageLookupError(f"image file for {image_id!r} not found under the image root", 404) from None
        if not real.is_relative_to(self.root):
            raise ImageLookupError(f"refused: {image_id!r} leads outside the image root", 403)
        if not real.is_file():
            raise ImageLookupError(f"{image_id!r} is not a regular file", 404)
        if real.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ImageLookupError(f"{image_id!r} is not an image file ({real.suffix or 'no extension'})", 404)
        return real


@dataclass
class Hit:
    """One search result: the gallery row, its id (the ``ids.txt`` entry) and the cosine to the query."""

    row: int
    id: str
    score: float


class Gallery:
    """L2-normalised float32 gallery embeddings [N, D] with their ids; exact top-k by cosine.

    The whole gallery is held in memory (N x D x 4 bytes: 3 GiB for a million 768-d rows); a query is a matrix
    product over it. ``use_faiss``: None chooses FAISS when faiss is installed and N >= :data:`FAISS_MIN_ROWS`.
    """

    def __init__(self, embeddings: np.ndarray, ids: List[str], images: ImageRoot,
                 use_faiss: Optional[bool] = None) -> None:
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise InputError(f"gallery embeddings must be a non-empty [N, D] array, got shape {embeddings.shape}")
        if embeddings.shape[0] != len(ids):
            raise InputError(f"gallery has {embeddings.shape[0]} embeddings but {len(ids)} ids")
        self.embeddings = _normalized_float32(embeddings)
        self.ids = ids
        self.images = images
        if use_faiss is None:
            use_faiss = faiss_available() and len(ids) >= FAISS_MIN_ROWS
        self.index = build_faiss_index(self.embeddings) if use_faiss else None

    @classmethod
    def load(cls, embed_dir: Union[str, os.PathLike], image_root: Union[str, os.PathLike],
             use_faiss: Optional[bool] = None) -> "Gallery":
        """Read an ``embed`` output folder; its ids are paths relative to ``image_root``."""
        folder = Path(embed_dir)
        for name in ("embeddings.npy", "ids.txt"):
            if not (folder / name).is_file():
                raise InputError(f"{folder} is not an `ernievil2 embed` output: {name} is missing")
        embeddings, ids = load_embeddings(str(folder), mmap=True)
        return cls(embeddings, ids, ImageRoot(image_root), use_faiss)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def backend(self) -> str:
        return "faiss" if self.index is not None else "torch"

    def search(self, queries: np.ndarray, k: int) -> List[List[Hit]]:
        """The ``min(k, N)`` best rows for each L2-normalised query [Q, D], best first (ties: lower row first)."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(f"queries must be [Q, {self.dim}], got {queries.shape}")
        scores, rows = search_embeddings(queries, self.embeddings, k=k, faiss_index=self.index)
        return [[Hit(int(r), self.ids[int(r)], float(s)) for s, r in zip(srow, rrow)]
                for srow, rrow in zip(scores, rows)]

    def image_file(self, row: int) -> Path:
        """The file of gallery row ``row`` (see :meth:`ImageRoot.resolve`); 404 for a row that does not exist."""
        if not 0 <= row < len(self.ids):
            raise ImageLookupError(f"no gallery row {row}: rows are 0..{len(self.ids) - 1}", 404)
        return self.images.resolve(self.ids[row])


def _normalized_float32(array: np.ndarray) -> np.ndarray:
    """A float32 in-memory copy with unit-norm rows (all-zero rows stay zero), built chunk by chunk."""
    out = np.empty(array.shape, dtype=np.float32)
    for start in range(0, array.shape[0], LOAD_CHUNK_ROWS):
        block = np.asarray(array[start:start + LOAD_CHUNK_ROWS], dtype=np.float32)
        if not np.isfinite(block).all():
            raise InputError(f"gallery embeddings hold NaN or infinity (rows {start}..{start + len(block) - 1})")
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(block)] = block / np.maximum(norms, np.float32(1e-12))
    return out
