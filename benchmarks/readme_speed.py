"""Rewrite README.md's speed summary (its "## Speed" section) from BENCHMARKS.md: ``python benchmarks/readme_speed.py``.

Run it after ``python benchmarks/run.py``. Every figure is computed by ``tests/test_docs.py``'s own functions (the
ones its ``FIGURES`` check the README with), so the section it writes passes those checks by construction and holds
only what BENCHMARKS.md's run measured. Only the text between "## Speed" and the next "## " heading changes.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_docs as d  # noqa: E402


def render() -> str:
    """The "## Speed" section, figures from BENCHMARKS.md."""
    cpu, flags = d.machine()
    threads = re.search(r"threads: (\d+) for every framework", d.threads_line()).group(1)
    rounds = re.search(r"; (\d+) alternating rounds", d.method_line()).group(1)
    image_batch = re.search(r"image batch (\d+) x", d.method_line()).group(1)
    text_batch, text_length = re.search(r"text batch (\d+) x (\d+) tokens", d.method_line()).groups()
    i, t, c = d.speed_row("image"), d.speed_row("text"), d.of_ceiling()
    return "\n".join([
        "## Speed", "",
        f"CPU ({cpu}, ISA flags {flags}), {threads} threads for every framework,",
        f"random full-size weights, medians of {rounds} alternating rounds (`python benchmarks/run.py`; the full "
        "tables, versions",
        "and every target are in [BENCHMARKS.md](BENCHMARKS.md), which holds only what that one run measured; the "
        "figures here",
        "are re-derived from it by `tests/test_docs.py`):", "",
        "| tower | ours fp32 | ours bf16 (fastest path) | Paddle reference fp32 | PaddleNLP fp32 | ONNX Runtime fp32 "
        "(our export) | HF peer fp32 |",
        "|---|---|---|---|---|---|---|",
        f"| image, batch {image_batch} (img/s) | {i[0]} ({i[1]}× PaddleNLP) | {i[2]} ({i[3]}) | {i[4]} | {i[5]} | "
        f"{i[6]} | {i[7]} (CLIPVisionModel) |",
        f"| text, {text_batch} × {text_length} tokens (texts/s) | {t[0]} ({t[1]}× PaddleNLP) | {t[2]} ({t[3]}) | "
        f"{t[4]} | {t[5]} | {t[6]} | {t[7]} (BertModel) |", "",
        "Counting the FLOPs the code executes (the last block of each tower computes only the class/[CLS] row), "
        "ours fp32",
        f"runs at {c[0]} % (image) and {c[1]} % (text) of the fp32 GEMM ceiling measured in the same rounds; the "
        "fastest bf16",
        f"path at {c[2]} % and {c[3]} % of the bf16 one (the bf16 GEMM ceiling is {d.gemm_ratio()}× the fp32 one on "
        "that",
        f"machine). bf16 features have cosine ≥ {d.bf16_min_cosine()} to fp32; the fp32 fast paths keep the "
        "fidelity bounds",
        "below.", "",
        "Targets reported MISSED in that run:", "",
        d.missed_targets()[0], "",
        f"GPU (`benchmarks/gpu.py`): {d.gpu_status()[0]}.", "",
        "No padding paid: every command that encodes many texts (`embed --kind text`, `eval`, `similarity`, "
        "`classify`,",
        "the service) tokenises each text once, sorts the texts by token length (`processing/length_groups.py`) and "
        "encodes",
        "batches padded only to their own longest text, then returns the rows in input order: the same rows as "
        "encoding",
        "each text alone (`tests/test_length_grouping.py`). `python convert.py` needs only numpy: it never imports "
        "torch,",
        "takes the target shapes from the config and hashes the checkpoint on a second thread while reading it. "
        "Both are",
        "timed in BENCHMARKS.md (the embed command and conversion sections).", "", ""])


def main() -> None:
    path = ROOT / "README.md"
    readme = path.read_text(encoding="utf-8")
    start = readme.index("## Speed\n")
    end = readme.index("\n## ", start + 1) + 1
    path.write_text(readme[:start] + render() + readme[end:], encoding="utf-8")
    print(f"rewrote the speed summary of {path}")


if __name__ == "__main__":
    main()
