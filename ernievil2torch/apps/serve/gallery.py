"""The searchable gallery: an ``embed`` output (``embeddings.npy`` + ``ids.txt``) in a search back end, over the
folder of its images.

* Rows are stored in a :class:`~ernievil2torch.retrieval.backends.SearchBackend` under their row number (the line
  of ``ids.txt``, as a string: the stable id the API's ``row`` and ``/v1/images/{row}`` use) with the ``ids.txt``
  entry as metadata ``id``. The gallery talks to the back end through the protocol only, so any registered back
  end (:func:`~ernievil2torch.retrieval.backends.create_backend`) can hold it.
* Files are found through an :class:`~ernievil2torch.data.image_root.ImageRoot`: clients never send paths, only row
  numbers; the root is the second wall, against ids or symlinks that lead out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ...data.image_root import ImageLookupError, ImageRoot
from ...errors import InputError
from ...retrieval.backends import SearchBackend, UnknownIdError, create_backend
from ...storage.embeddings import first_non_finite_row, read_embed_output

__all__ = ["Gallery", "Hit", "ImageLookupError", "ImageRoot", "LOAD_CHUNK_ROWS"]

#: Rows normalised per step when loading (bounds the float64-free temporary).
LOAD_CHUNK_ROWS = 65_536
#: The metadata key that holds a row's ``ids.txt`` entry.
ID_KEY = "id"


@dataclass
class Hit:
    """One search result: the gallery row, its id (the ``ids.txt`` entry) and the cosine to the query."""

    row: int
    id: str
    score: float


class Gallery:
    """L2-normalised gallery embeddings [N, D] in a search back end, with the image root their ids point into.

    Searches are exact top-k by cosine (ties: lower row first) with the in-memory back end, which holds the whole
    gallery in memory (N x D x 4 bytes: 3 GiB for a million 768-d rows).
    """

    def __init__(self, backend: SearchBackend, images: ImageRoot) -> None:
        self.backend = backend
        self.images = images

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, ids: Sequence[str], images: ImageRoot,
                        use_faiss: Optional[bool] = None, backend: str = "memory") -> "Gallery":
        """A gallery of rows ``embeddings[i]`` (normalised here, chunk by chunk) named ``ids[i]``.

        ``use_faiss`` goes to the in-memory back end (None: FAISS when installed and the gallery is large).
        Raises :class:`~ernievil2torch.errors.InputError` for an empty or non-2-D array, a count of ids that
        differs from the rows, or values that are not finite.
        """
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise InputError(f"gallery embeddings must be a non-empty [N, D] array, got shape {embeddings.shape}")
        if embeddings.shape[0] != len(ids):
            raise InputError(f"gallery has {embeddings.shape[0]} embeddings but {len(ids)} ids")
        options = {"use_faiss": use_faiss} if backend == "memory" else {}
        store = create_backend(backend, int(embeddings.shape[1]), **options)
        store.add(_normalized_float32(embeddings), [str(row) for row in range(len(ids))],
                  [{ID_KEY: image_id} for image_id in ids])
        return cls(store, images)

    @classmethod
    def load(cls, embed_dir: Union[str, os.PathLike], image_root: Union[str, os.PathLike],
             use_faiss: Optional[bool] = None, backend: str = "memory") -> "Gallery":
        """Read an ``embed`` output folder of image embeddings (validated by
        :func:`~ernievil2torch.storage.embeddings.read_embed_output`; one whose manifest says it holds text is
        refused); its ids are paths relative to ``image_root``."""
        output = read_embed_output(embed_dir, mmap=True, kind="image")
        return cls.from_embeddings(output.embeddings, output.ids, ImageRoot(image_root), use_faiss, backend)

    def __len__(self) -> int:
        return self.backend.count()

    @property
    def dim(self) -> int:
        return self.backend.dim

    def search(self, queries: np.ndarray, k: int) -> List[List[Hit]]:
        """The ``min(k, N)`` best rows for each L2-normalised query [Q, D], best first."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(f"queries must be [Q, {self.dim}], got {queries.shape}")
        return [[Hit(int(hit.id), hit.metadata[ID_KEY], hit.score) for hit in hits]
                for hits in self.backend.search(queries, k)]

    def image_file(self, row: int) -> Path:
        """The file of gallery row ``row`` (see :meth:`ImageRoot.resolve`); 404 for a row that does not exist."""
        try:
            stored = self.backend.fetch(str(row))
        except UnknownIdError:
            raise ImageLookupError(f"no gallery row {row}: rows are 0..{len(self) - 1}", 404) from None
        return self.images.resolve(stored.metadata[ID_KEY])


def _normalized_float32(array: np.ndarray) -> np.ndarray:
    """A float32 in-memory copy with unit-norm rows (all-zero rows stay zero), built chunk by chunk."""
    out = np.empty(array.shape, dtype=np.float32)
    for start in range(0, array.shape[0], LOAD_CHUNK_ROWS):
        block = np.asarray(array[start:start + LOAD_CHUNK_ROWS], dtype=np.float32)
        bad = first_non_finite_row(block)
        if bad is not None:
            raise InputError(f"gallery embeddings hold NaN or infinity (first in row {start + bad})")
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(block)] = block / np.maximum(norms, np.float32(1e-12))
    return out
