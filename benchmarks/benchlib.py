"""Measuring helpers shared by ``benchmarks/run.py`` (CPU) and ``benchmarks/gpu.py``: rounds, GEMM ceilings, peers.

:func:`run_rounds` warms every :class:`cases.Case` up, then runs all of them once per round, the order rotated (and
reversed every other round) so that a slow spell of a shared machine hits every case alike; the figures derived from
the times live in ``cases.py``.
"""
from __future__ import annotations

import time
from typing import Callable, List

import torch

from cases import Case

from ernievil2torch.config import ErnieViL2Config


def log(msg: str) -> None:
    """A timestamped progress line on stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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
