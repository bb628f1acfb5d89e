"""Timed cases and the figures derived from their rounds: no timing, no torch (the report renderer uses these).

A :class:`Case` is one callable doing a fixed amount of work (``items`` per call, ``flop`` per item) and the call
times of its rounds; each case reports the median over rounds and the [min-max] spread. Comparisons between cases
(:func:`paired_ratio`, :func:`share_of_ceiling`) are medians of per-round ratios, so a slow spell of a shared machine
that spans a round slows both sides of a comparison alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import numpy as np


@dataclass
class Case:
    """One timed callable. ``group``: 'image' | 'text' | 'gemm'; ``flop``: executed FLOPs per item."""

    name: str
    group: str
    fn: Callable[[], object]
    items: int
    flop: float
    precision: str
    times: List[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Items per second, median over rounds."""
        return self.items / float(np.median(self.times))

    @property
    def gflops(self) -> float:
        """Executed GFLOP/s at the median rate."""
        return self.rate * self.flop / 1e9

    @property
    def spread(self) -> Tuple[float, float]:
        """(slowest, fastest) items per second over rounds."""
        rates = [self.items / t for t in self.times]
        return min(rates), max(rates)



def ceiling(cases: List[Case], precision: str) -> float:
    """The best GEMM GFLOP/s of ``precision`` among ``cases`` (0 when none was measured)."""
    return max((c.gflops for c in cases if c.group == "gemm" and c.precision == precision), default=0.0)


def paired_ratio(case: Case, base: Case) -> float:
    """Median over rounds of ``case``'s rate / ``base``'s rate in the same round.

    Both ran minutes apart at most within one round, so a slow spell of a shared machine that spans a round
    slows both; a ratio of medians taken over different rounds would not cancel it."""
    return float(np.median([(case.items / a) / (base.items / b) for a, b in zip(case.times, base.times)]))


def share_of_ceiling(case: Case, cases: List[Case], precision: str) -> float:
    """Median over rounds of ``case``'s executed GFLOP/s / the best ``precision`` GEMM GFLOP/s of the same round,
    in per cent (0 when no GEMM of that precision was measured)."""
    gemms = [c for c in cases if c.group == "gemm" and c.precision == precision]
    if not gemms:
        return 0.0
    shares = [(case.items * case.flop / t) / max(g.flop / g.times[r] for g in gemms)
              for r, t in enumerate(case.times)]
    return 100.0 * float(np.median(shares))


def fmt(x: float, digits: int = 2) -> str:
    """A figure as the reports print it (thousands separated)."""
    return f"{x:,.{digits}f}"
