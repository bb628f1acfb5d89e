"""What a search back end stores and returns, and the filter values it understands: shared by every back end
(:mod:`.backends` and the vector databases), with no back end of its own."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import InputError


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


#: ``where`` of :meth:`SearchBackend.search`: metadata key -> the value a row's metadata must hold there (a plain
#: JSON value: equal; a :class:`Range` or :class:`Contains`: as they say).
MetadataFilter = Mapping[str, Any]


def passes(entry: Mapping[str, Any], where: MetadataFilter) -> bool:
    """Whether metadata ``entry`` passes every key of ``where``; a missing key never passes."""
    for key, wanted in where.items():
        if key not in entry:
            return False
        value = entry[key]
        if isinstance(wanted, (Range, Contains)):
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
