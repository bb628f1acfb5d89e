"""Where a stream of samples stands, and the seeded order of one epoch.

A reader hands out samples epoch by epoch. What a checkpoint records to continue exactly is a
:class:`StreamPosition`; giving it back to the reader's ``stream`` restarts the stream at the first sample not yet
consumed, with nothing repeated and nothing skipped.

* A random-access reader (every sample reachable by number) walks the epoch's seeded permutation
  (:func:`epoch_order`): its position is the epoch and the index into that order; ``shard`` stays 0.
* A streaming reader (samples reachable only in file order, spread over shards) walks the epoch's order of shards:
  its position is the epoch, the shard's place in that order, and the number of samples already taken from it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class StreamPosition:
    """The next sample of a stream: sample ``index`` of shard ``shard`` in epoch ``epoch``'s order (all 0-based).

    ``StreamPosition()`` is the start of the first epoch. Saved as a plain dict (:meth:`to_dict`) in a checkpoint and
    read back with :meth:`from_dict`, which refuses anything but three non-negative integers.
    """

    epoch: int = 0
    index: int = 0
    shard: int = 0

    def __post_init__(self) -> None:
        for name in ("epoch", "index", "shard"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(f"stream position: {name} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    def advanced(self, count: int = 1) -> "StreamPosition":
        """The position ``count`` samples further in the same shard of the same epoch."""
        return StreamPosition(self.epoch, self.index + count, self.shard)

    def to_dict(self) -> Dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "StreamPosition":
        if not isinstance(record, Mapping) or set(record) - {"epoch", "index", "shard"}:
            raise InputError(f"stream position: expected a dict with epoch, index and shard, got {record!r}")
        return cls(**dict(record))


def epoch_order(count: int, seed: Optional[int], epoch: int) -> np.ndarray:
    """The order ``[count]`` int64 in which epoch ``epoch`` visits ``count`` samples: the permutation drawn by
    ``np.random.default_rng([seed, epoch])``, a function of the seed and the epoch only (every process of a run draws
    the same one); file order when ``seed`` is None."""
    if seed is None:
        return np.arange(count, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(count).astype(np.int64, copy=False)
