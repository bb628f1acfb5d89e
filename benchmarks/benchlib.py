"""What ``benchmarks/run.py`` (CPU) and ``benchmarks/gpu.py`` share: timed cases, alternating rounds, peers, cosine.

A :class:`Case` is one callable doing a fixed amount of work (``items`` per call, ``flop`` per item).
:func:`run_rounds` warms every case up, then runs all of them once per round, the order rotated (and reversed every
other round) so that a slow spell of a shared machine hits every case alike; each case reports the median over
rounds and the [min-max] spread. Comparisons between cases (:func:`paired_ratio`, :func:`share_of_ceiling`) are
medians of per-round ratios.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import numpy as np
import torch

from ernievil2torch.config import ErnieViL2Config


def log(msg: str) -> None:
    """A timestamped progress line on stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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


def run_rounds(cases: List[Case], rounds: int, warmup: int = 2) -> None:
    """Warm every case up ``warmup`` times (compilation happens here), then time ``rounds`` alternating rounds."""
    for case in cases:
        t0 = time.perf_counter()
        for _ in range(warmup):
            case.fn()
        log(f"warm {case.group} {case.name}: {time.perf_counter() - t0:.1f} s")
    for r in range(rounds):
        shift = r % len(cases)
        order = cases[shift:] + cases[:shift]
        for case in order[::-1] if r % 2 else order:
            t0 = time.perf_counter()
            case.fn()
            case.times.append(time.perf_counter() - t0)
        log(f"round {r + 1}/{rounds} done")


def gemm_flop(m: int, k: int, n: int) -> float:
    return 2.0 * m * k * n


def gemm_case(m: int, k: int, n: int, dtype: torch.dtype, label: str, device: str = "cpu",
              sync: Callable[[], None] = lambda: None) -> Case:
    """``[m, k] @ [k, n]`` in ``dtype`` as a case of one item (its rate times ``flop`` is the GEMM's FLOP/s)."""
    a = torch.randn(m, k, dtype=dtype, device=device)
    b = torch.randn(k, n, dtype=dtype, device=device)

    def fn() -> torch.Tensor:
        out = a @ b
        sync()
        return out
    return Case(f"GEMM {label} {m}x{k}x{n}", "gemm", fn, 1, gemm_flop(m, k, n), label)


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


def cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    """The lowest row-wise cosine similarity between two feature matrices (computed in float64)."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).min())


def hf_peers(cfg: ErnieViL2Config, dtype: torch.dtype, device: str = "cpu"):
    """Hugging Face ``CLIPVisionModel`` (QuickGELU) and ``BertModel`` of the towers' sizes, seeded random, SDPA."""
    import warnings

    warnings.simplefilter("ignore")
    from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

    v, t = cfg.vision, cfg.text
    torch.manual_seed(0)
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                                              num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
                                              image_size=v.image_size, patch_size=v.patch_size,
                                              hidden_act="quick_gelu", attn_implementation="sdpa"))
    text = BertModel(BertConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_hidden_layers=t.num_layers,
                                num_attention_heads=t.num_heads, intermediate_size=t.intermediate_size,
                                max_position_embeddings=t.max_position_embeddings, attn_implementation="sdpa"))
    return vision.eval().to(device=device, dtype=dtype), text.eval().to(device=device, dtype=dtype)


def fmt(x: float, digits: int = 2) -> str:
    """A figure as the reports print it (thousands separated)."""
    return f"{x:,.{digits}f}"
