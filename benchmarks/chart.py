"""The CPU throughput chart of ``benchmarks/run.py`` (``--png``): items/s per implementation, one panel per tower."""
from __future__ import annotations

from typing import List

from benchlib import log
from cases import Case


def chart(path: str, cases: List[Case], threads: int) -> None:
    """Horizontal bars of items/s per tower (ours blue, Paddle/PaddleNLP red, peers grey) written to ``path``.

    Without matplotlib it logs that there is no chart and writes nothing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, group in zip(axes, ("image", "text")):
        sel = [c for c in cases if c.group == group][::-1]
        colors = ["#1f77b4" if c.name.startswith("ours") else "#d62728" if "Paddle" in c.name else "#7f7f7f"
                  for c in sel]
        ax.barh([f"{c.name} {c.precision}" for c in sel], [c.rate for c in sel], color=colors)
        for y, c in enumerate(sel):
            ax.text(c.rate, y, f" {c.rate:.1f}", va="center", fontsize=8)
        ax.set_xlabel(f"{group}s/s")
        ax.set_title(f"{group} tower, CPU, {threads} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
