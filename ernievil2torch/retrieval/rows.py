"""What a search back end stores and returns, and the filter values it understands: shared by every back end
(:mod:`.backends` and the vector databases), with no back end of its own."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..storage.embeddings import first_non_finite_row


@dataclass(frozen=True)
class Range:
    """A filter value: the row's number at that key lies in ``low .. high`` (both inclusive; None: unbounded)."""

    low: Optional[float] = None
    high: Optional[float] = None

    def matches(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


@dataclass(frozen=True)
class Contains:
    """A filter value: the row's value at that key is a list that holds ``value``."""

    value: Any

    def matches(self, value: Any) -> bool:
        return isinstance(value, list) and self.value in value


@dataclass(frozen=True)
class Under:
    """A filter value: the row's value at that key is a folder path (relative, ``/``-separated) that is ``folder``
    itself or lies inside it (``a/b`` keeps ``a/b`` and ``a/b/c``, not ``a/bc``); ``''`` keeps every folder.

    Why not :class:`Contains` over a list of ancestors: one string per row can carry a scalar index in a vector
    database (a prefix is a range of strings), a list cannot."""

    folder: str

    def __post_init__(self) -> None:
        if not isinstance(self.folder, str) or self.folder != self.folder.strip("/") or "\x00" in self.folder:
            raise InputError(f"Under: a folder path without leading or trailing '/', got {self.folder!r}")

    def matches(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        return not self.folder or value == self.folder or value.startswith(self.folder + "/")


#: ``where`` of :meth:`SearchBackend.search`: metadata key -> the value a row's metadata must hold there (a plain
#: JSON value: equal; a :class:`Range`, :class:`Contains` or :class:`Under`: as they say).
MetadataFilter = Mapping[str, Any]


def passes(entry: Mapping[str, Any], where: MetadataFilter) -> bool:
    """Whether metadata ``entry`` passes every key of ``where``; a missing key never passes."""
    for key, wanted in where.items():
        if key not in entry:
            return False
        value = entry[key]
        if isinstance(wanted, (Range, Contains, Under)):
            if not wanted.matches(value):
                return False
        elif isinstance(value, bool) != isinstance(wanted, bool) or value != wanted:
            return False
    return True


class UnknownIdError(InputError):
    """An id the back end does not hold (:meth:`SearchBackend.fetch`)."""


@dataclass(frozen=True)
class BackendHit:
    """One search result: the row's stable id, its score (inner product with the query) and its metadata."""

    id: str
    score: float
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredVector:
    """One row as stored: its id, its vector [dim] (float32) and its metadata."""

    id: str
    vector: np.ndarray
    metadata: Mapping[str, Any]


# ---- the argument checks every back end makes (one wording of each error, whatever stores the rows) ---------------
def checked_vectors(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 [N, dim] array; :class:`InputError` for another shape, non-numbers,
    NaN or infinity (naming the first such row)."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] != dim:
        raise InputError(f"{what} must be [N, {dim}], got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(f"{what} must be numbers, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = first_non_finite_row(array)
    if bad is not None:
        raise InputError(f"{what} hold NaN or infinity (first in row {bad})")
    return array


def checked_rows(vectors: np.ndarray, ids: Sequence[str], metadata: Optional[Sequence[Mapping[str, Any]]],
                 dim: int) -> Tuple[np.ndarray, List[str], List[dict]]:
    """The rows of an add: checked vectors, ids that are unique strings (one per vector) and one metadata mapping
    per id (empty ones when ``metadata`` is None), each copied into a plain dict."""
    array = checked_vectors(vectors, dim, "vectors")
    ids = list(ids)
    if len(ids) != array.shape[0]:
        raise InputError(f"{array.shape[0]} vectors but {len(ids)} ids")
    for index, item in enumerate(ids):
        if not isinstance(item, str):
            raise InputError(f"ids[{index}] must be a string, got {type(item).__name__}")
    if len(set(ids)) != len(ids):
        raise InputError("ids must be unique within one call")
    if metadata is None:
        metadata = [{} for _ in ids]
    elif len(metadata) != len(ids):
        raise InputError(f"{len(ids)} ids but {len(metadata)} metadata entries")
    for index, entry in enumerate(metadata):
        if not isinstance(entry, Mapping):
            raise InputError(f"metadata[{index}] must be a mapping, got {type(entry).__name__}")
    return array, ids, [dict(entry) for entry in metadata]


def check_page(k: Any, offset: Any) -> None:
    """:class:`InputError` unless ``k`` is a positive integer and ``offset`` a non-negative one."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise InputError(f"offset must be a non-negative integer, got {offset!r}")
