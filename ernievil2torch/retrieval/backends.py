"""Search back ends: one protocol for "vectors with stable ids and metadata, searched by inner product", its
in-memory exact implementation, and the factory that picks a back end by name.

A back end holds rows of ``dim`` float32 numbers, each under a caller-chosen string id that never changes (removing
other rows does not renumber it) and with a metadata mapping (JSON-like values). :meth:`SearchBackend.search`
ranks rows by inner product with each query (the cosine, when both sides are L2-normalised), best first (among
equal scores the order is the back end's own; the in-memory one without FAISS puts rows added earlier first). A
metadata filter keeps only rows whose metadata passes every given key before ranking: equal to a plain value,
inside a :class:`Range` (dates, sizes), a list holding a :class:`Contains` value, or a folder path
:class:`Under` a folder (a photo's folder, with its subfolders); ``offset`` skips that many of the best (paging).

The web service talks to this protocol only, so a vector database is one more implementation registered in
:data:`BACKENDS`, not a change to the service. ``BackendContract`` in ``tests/retrieval/test_backends.py`` is the
contract any implementation must pass.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import InputError
from .rows import (BackendHit, Contains, MetadataFilter, Range, StoredVector, Under, UnknownIdError, check_page,
                   checked_rows, checked_vectors, passes)
from .topk import build_faiss_index, faiss_available, search_embeddings

__all__ = ["BACKENDS", "BackendHit", "Contains", "FAISS_MIN_ROWS", "InMemoryBackend", "MetadataFilter", "Range",
           "SearchBackend", "StoredVector", "Under", "UnknownIdError", "backend_factory", "create_backend", "passes"]

#: In-memory back ends with at least this many rows search with FAISS (when installed and not switched off).
FAISS_MIN_ROWS = 50_000


@runtime_checkable
class SearchBackend(Protocol):
    """What the service (and any other searcher) needs from a store of vectors.

    Errors are :class:`~ernievil2torch.errors.InputError` s with a specific message: vectors that are not
    [N, dim] finite numbers, ids that are not unique strings, a metadata list of the wrong length, a bad ``k`` or
    ``offset``; :class:`UnknownIdError` for :meth:`fetch` of an id not held.
    """

    @property
    def dim(self) -> int:
        """The length of every vector (fixed when the back end is made)."""

    @property
    def name(self) -> str:
        """A short label of how it searches (for health reports), e.g. ``torch`` or ``faiss``."""

    def count(self) -> int:
        """Rows held now."""

    def add(self, vectors: np.ndarray, ids: Sequence[str],
            metadata: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
        """Add rows ``vectors[i]`` [N, dim] under ``ids[i]`` (new, unique) with ``metadata[i]`` (default ``{}``).
        All or nothing: on an error nothing is added."""

    def remove(self, ids: Sequence[str]) -> int:
        """Remove the rows of ``ids``; ids not held are ignored. Returns how many rows were removed."""

    def search(self, queries: np.ndarray, k: int, where: Optional[MetadataFilter] = None,
               offset: int = 0) -> List[List[BackendHit]]:
        """For each query [Q, dim]: hits ``offset .. offset + k - 1`` of the ranking of the rows that pass
        ``where`` (fewer when fewer rows pass; none on an empty back end)."""

    def fetch(self, id: str) -> StoredVector:
        """The stored vector (a copy) and metadata of ``id``; :class:`UnknownIdError` when it is not held."""


class InMemoryBackend:
    """Exact search over float32 rows held in one contiguous array (N x dim x 4 bytes of memory).

    Search is a chunked matrix product with a deterministic top-k
    (:func:`~ernievil2torch.retrieval.topk.search_embeddings`), or a FAISS ``IndexFlatIP`` (also exact) when
    ``use_faiss`` is True, or None and faiss is installed and the back end holds at least :data:`FAISS_MIN_ROWS`
    rows. A filtered search ranks only the rows that pass, with the matrix product. Adding appends (the first
    add keeps a float32 C-contiguous array without copying it: do not change it afterwards; later adds copy);
    removing compacts the array (and rebuilds the FAISS index), so both cost O(N).
    """

    def __init__(self, dim: int, use_faiss: Optional[bool] = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InputError(f"dim must be a positive integer, got {dim!r}")
        if use_faiss and not faiss_available():
            raise InputError("use_faiss=True needs the faiss-cpu package (pip install faiss-cpu)")
        self._dim = dim
        self.use_faiss = use_faiss
        self._vectors = np.zeros((0, dim), np.float32)
        self._ids: List[str] = []
        self._metadata: List[Mapping[str, Any]] = []
        self._positions: Dict[str, int] = {}
        self._index = None

    # ---- the protocol ------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return "faiss" if self._index is not None else "torch"

    def count(self) -> int:
        return len(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, vectors: np.ndarray, ids: Sequence[str],
            metadata: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
        rows, ids, metadata = checked_rows(vectors, ids, metadata, self._dim)
        taken = [item for item in ids if item in self._positions]
        if taken:
            raise InputError(f"{len(taken)} ids are already held (first: {taken[0]!r}); remove them first")
        start = len(self._ids)
        self._vectors = rows if start == 0 else np.concatenate([self._vectors, rows])
        self._ids += ids
        self._metadata += metadata
        self._positions.update((item, start + offset) for offset, item in enumerate(ids))
        if self._index is not None:
            self._index.add(rows)
        elif self._wants_faiss():
            self._index = build_faiss_index(self._vectors)

    def remove(self, ids: Sequence[str]) -> int:
        drop = sorted({self._positions[item] for item in ids if item in self._positions})
        if not drop:
            return 0
        keep = np.ones(len(self._ids), bool)
        keep[drop] = False
        self._vectors = self._vectors[keep]
        self._ids = [item for item, kept in zip(self._ids, keep) if kept]
        self._metadata = [entry for entry, kept in zip(self._metadata, keep) if kept]
        self._positions = {item: position for position, item in enumerate(self._ids)}
        self._index = build_faiss_index(self._vectors) if self._wants_faiss() else None
        return len(drop)

    def search(self, queries: np.ndarray, k: int, where: Optional[MetadataFilter] = None,
               offset: int = 0) -> List[List[BackendHit]]:
        queries = checked_vectors(queries, self._dim, "queries")
        check_page(k, offset)
        if where is not None and not isinstance(where, Mapping):
            raise InputError(f"where must be a mapping of metadata key -> value, got {type(where).__name__}")
        candidates = self._passing(where) if where else None
        pool = len(self._ids) if candidates is None else len(candidates)
        wanted = min(int(k) + int(offset), pool)
        if wanted <= int(offset) or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        if candidates is None:
            scores, rows = search_embeddings(queries, self._vectors, k=wanted, faiss_index=self._index)
        else:
            scores, local = search_embeddings(queries, self._vectors[candidates], k=wanted)
            rows = candidates[local]
        return [[self._hit(int(r), float(s)) for s, r in zip(srow[offset:], rrow[offset:])]
                for srow, rrow in zip(scores, rows)]

    def fetch(self, id: str) -> StoredVector:
        position = self._positions.get(id)
        if position is None:
            raise UnknownIdError(f"no row with id {id!r}")
        return StoredVector(id, self._vectors[position].copy(), self._metadata[position])

    # ---- helpers -----------------------------------------------------------------------------------------------
    def _wants_faiss(self) -> bool:
        if self.use_faiss is None:
            return len(self._ids) >= FAISS_MIN_ROWS and faiss_available()
        return bool(self.use_faiss) and len(self._ids) > 0

    def _passing(self, where: MetadataFilter) -> np.ndarray:
        return np.asarray([position for position, entry in enumerate(self._metadata) if passes(entry, where)],
                          np.int64)

    def _hit(self, position: int, score: float) -> BackendHit:
        return BackendHit(self._ids[position], score, self._metadata[position])


def _milvus(dim: int, **options: Any) -> SearchBackend:
    """:class:`~ernievil2torch.retrieval.milvus.MilvusBackend` (imported here: pymilvus is an optional extra)."""
    from .milvus import MilvusBackend

    return MilvusBackend(dim, **options)


#: Back-end names -> ``factory(dim, **options)``; a vector database registers here.
BACKENDS: Dict[str, Callable[..., SearchBackend]] = {"memory": InMemoryBackend, "milvus": _milvus}


def backend_factory(name: str) -> Callable[..., SearchBackend]:
    """The factory registered as ``name``; :class:`~ernievil2torch.errors.InputError` naming the known ones when
    there is none (callers check a name with it before doing any work)."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise InputError(f"unknown search back end {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return factory


def create_backend(name: str, dim: int, **options: Any) -> SearchBackend:
    """A new, empty back end of kind ``name`` (one of :data:`BACKENDS`) for ``dim``-long vectors.

    ``options`` go to that back end (``memory``: ``use_faiss``; ``milvus``: ``uri``, ``token``, ``collection``,
    ``index_type``...). Raises
    :class:`~ernievil2torch.errors.InputError` for an unknown name or options the back end does not take.
    """
    factory = backend_factory(name)
    try:
        return factory(dim, **options)
    except TypeError as exc:
        raise InputError(f"search back end {name!r}: {exc}") from None
