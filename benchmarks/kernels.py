"""Kernel candidates of the CPU inference path, timed on this machine (what the per-machine choice decides from).

    python benchmarks/kernels.py                  # full-size shapes (images batch 8, texts 32 x 48), 2 threads
    python benchmarks/kernels.py --write          # also write benchmarks/kernels.md (sealed)
    python benchmarks/kernels.py --quick          # tiny shapes, 1 round: the report path only

Rounds alternate between the candidates of each group and the best round of each is kept (the machine may be shared:
ratios are what to read, absolute rates move with the load). Groups:

* linear: every kernel of :mod:`ernievil2torch.modeling.kernels` usable here, per dtype, on the model's GEMMs at the
  benchmark's rows (8 x 197 image tokens; the text's 32 x 48 rows run the same shapes), fc1 with its activation
  (exact GELU: in place on oneDNN's output, out of place after MKL's);
* attention: ``F.scaled_dot_product_attention`` (torch's fused CPU kernel) against the unfused math
  (``softmax(q k^T / sqrt(d) + bias) v``), per tower shape;
* threads: the fp32 MLP GEMM at 1 thread and at every core (a run on a shared machine may prefer fewer);
* the choice :func:`~ernievil2torch.modeling.kernel_choice.measure_kernels` makes from its own short measurement.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from environment import machine_info, pin_threads
from repo import ROOT
from stamp import seal

from ernievil2torch.config import tiny_config
from ernievil2torch.modeling.kernel_choice import _candidates, measure_kernels
from ernievil2torch.modeling.kernels import DTYPE_FIELDS, KernelChoice, kernel_scope, linear

REPORT = ROOT / "benchmarks" / "kernels.md"


def best_times(cases: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, float]:
    """Best seconds per case over ``rounds`` alternating rounds (one warm-up call each first)."""
    for fn in cases.values():
        fn()
    best = {name: float("inf") for name in cases}
    for r in range(rounds):
        names = list(cases)
        names = names[r % len(names):] + names[:r % len(names)]  # rotate the order: no case always runs first
        for name in names:
            start = time.perf_counter()
            cases[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def linear_rows(rows: int, dim: int, hidden: int, rounds: int) -> List[Tuple[str, str, float, float]]:
    """``(dtype, kernel, GFLOP/s, x reference)`` over the four GEMMs of a block."""
    shapes = [(dim, 3 * dim, False), (dim, dim, False), (dim, hidden, True), (hidden, dim, False)]
    flops = sum(2.0 * rows * k * n for k, n, _ in shapes)
    g = torch.Generator().manual_seed(0)
    out = []
    for dtype, name in DTYPE_FIELDS.items():
        data = [(nn.Module(), torch.randn(rows, k, generator=g).to(dtype),
                 (torch.randn(n, k, generator=g) * k ** -0.5).to(dtype), torch.randn(n, generator=g).to(dtype), gelu)
                for k, n, gelu in shapes]

        def run(kernel: str, data=data, name=name) -> None:
            with torch.no_grad(), kernel_scope(KernelChoice(**{name: kernel})):
                for holder, x, w, b, gelu in data:
                    linear(holder, x, w, b, gelu)

        kernels = _candidates(name)
        times = best_times({k: (lambda k=k: run(k)) for k in kernels}, rounds)
        out += [(name, k, flops / times[k] / 1e9, times["reference"] / times[k]) for k in kernels]
    return out


def attention_rows(shapes: Dict[str, Tuple[int, int, int, int]], rounds: int) -> List[Tuple[str, str, float, float]]:
    """``(tower, implementation, ms, x math)`` for fused SDPA and the unfused math, fp32, masked like the model."""
    out = []
    for tower, (batch, heads, length, head_dim) in shapes.items():
        g = torch.Generator().manual_seed(1)
        q, k, v = (torch.randn(batch, heads, length, head_dim, generator=g) for _ in range(3))
        bias = torch.zeros(batch, 1, 1, length)
        bias[0, ..., length // 2:] = -10000.0

        def math() -> torch.Tensor:
            scores = q @ k.transpose(-1, -2) * head_dim ** -0.5 + bias
            return scores.softmax(-1) @ v

        with torch.no_grad():
            times = best_times({"SDPA": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                                "math": math}, rounds)
        out += [(tower, name, t * 1e3, times["math"] / t) for name, t in times.items()]
    return out


def thread_rows(rows: int, dim: int, hidden: int, rounds: int, threads: int) -> List[Tuple[int, float]]:
    """``(threads, GFLOP/s)`` of the fp32 fc1 GEMM at 1 thread and at ``threads``."""
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(rows, dim, generator=g), torch.randn(hidden, dim, generator=g)
    out = []
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        seconds = best_times({"gemm": lambda: F.linear(x, w)}, rounds)["gemm"]
        out.append((count, 2.0 * rows * dim * hidden / seconds / 1e9))
    torch.set_num_threads(threads)
    return out


def render(args: argparse.Namespace, info: Dict[str, str], linear_table, attention_table, thread_table,
           choice_summary: str) -> str:
    lines = ["# CPU kernel candidates", "",
             "Generated by `benchmarks/kernels.py`; every number comes from one run of:", "",
             f"    {shlex.join(['python', 'benchmarks/kernels.py', *shlex.split(args.command)])}", "",
             f"- machine: {info['cpu']}, {info['cpus']} logical CPUs, ISA flags: {info['flags'] or 'none of note'}; "
             f"{info['os']}",
             f"- threads: {args.threads}; torch {torch.__version__}; {args.rounds} alternating rounds, best of each",
             f"- load: 1-minute load average {args.load_before:.2f} before the run, {args.load_after:.2f} after "
             f"(the machine is shared: read ratios, not absolute rates)", "",
             f"## Linear layers ({args.rows} rows: one block's qkv, out_proj, fc1 + GELU, fc2)", "",
             "| dtype | kernel | GFLOP/s | x reference |", "|---|---|---|---|"]
    lines += [f"| {d} | {k} | {r:.1f} | {x:.2f}x |" for d, k, r, x in linear_table]
    lines += ["", "## Attention (fp32, one padded row)", "", "| tower | implementation | ms | x math |",
              "|---|---|---|---|"]
    lines += [f"| {t} | {n} | {ms:.2f} | {x:.2f}x |" for t, n, ms, x in attention_table]
    lines += ["", f"## Threads (fp32 fc1 GEMM, {args.rows} rows)", "", "| threads | GFLOP/s |", "|---|---|"]
    lines += [f"| {n} | {r:.1f} |" for n, r in thread_table]
    lines += ["", "## The choice measure_kernels() makes here", "", "```", choice_summary, "```", ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    """``argv`` None: run as a script (``pin_threads`` may re-execute with ``OMP_NUM_THREADS`` set)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 1 round (the report path only)")
    parser.add_argument("--write", action="store_true", help="write benchmarks/kernels.md (sealed)")
    args = parser.parse_args(argv)
    args.command = shlex.join(sys.argv[1:] if argv is None else argv)
    pin_threads(args.threads, argv)
    args.load_before = os.getloadavg()[0]
    if args.quick:
        args.rows, dim, hidden, args.rounds = 24, 32, 64, 1
        attention = {"image": (2, 2, 9, 16), "text": (2, 2, 6, 16)}
        measurement = measure_kernels(tiny_config(), rounds=1, repeats=1)
    else:
        args.rows, dim, hidden = 8 * 197, 768, 3072
        attention = {"image (8 x 12 heads x 197)": (8, 12, 197, 64), "text (32 x 12 heads x 48)": (32, 12, 48, 64)}
        measurement = measure_kernels()
    linear_table = linear_rows(args.rows, dim, hidden, args.rounds)
    attention_table = attention_rows(attention, args.rounds)
    thread_table = thread_rows(args.rows, dim, hidden, args.rounds, args.threads)
    args.load_after = os.getloadavg()[0]
    text = render(args, machine_info(args.threads), linear_table, attention_table, thread_table,
                  measurement.summary())
    print(text)
    if args.write and not args.quick:
        command = shlex.join(["python", "benchmarks/kernels.py", *shlex.split(args.command)])
        REPORT.write_text(seal(text, "benchmarks/kernels.py", command),
                          encoding="utf-8")


if __name__ == "__main__":
    main()
