"""The sections of BENCHMARKS.md measured beside the alternating rounds, each in its own processes.

* :func:`gpu_section`: ``benchmarks/gpu.py`` when this machine has a CUDA device;
* :func:`frontends_section`: ``benchmarks/frontends.py`` (tokenizer and image processor);
* :func:`conversion_section`: ``cp``, ``sha256sum`` and ``convert.py`` on the same synthetic full-size checkpoint,
  each under ``/usr/bin/time -v`` (wall time and peak RSS);
* :func:`embed_section`: ``benchmarks/embed_lengths.py``'s cases (the whole ``ernievil2 embed`` command).

Each takes the run's parsed arguments and returns what ``report.render`` shows, or a line saying why it was not
measured.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from repo import ROOT

NO_CUDA = "not measured: no CUDA device on this machine"


def gpu_section(args: argparse.Namespace) -> str:
    """The markdown of ``benchmarks/gpu.py`` run on this machine, or why there is none (:data:`NO_CUDA`,
    ``--no-gpu``, or the script's failure)."""
    if args.no_gpu:
        return "not measured: --no-gpu"
    if not torch.cuda.is_available():
        return NO_CUDA
    with tempfile.TemporaryDirectory(prefix="ernievil2-gpu-") as tmp:
        record = Path(tmp) / "gpu.md"
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--markdown", str(record)],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            return f"failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
        return record.read_text(encoding="utf-8").strip()


def frontends_section(args: argparse.Namespace) -> Tuple[str, str]:
    """(command, markdown) of ``benchmarks/frontends.py`` at the same threads; command "" when not run."""
    if args.no_frontends:
        return "", "not measured: --no-frontends"
    extra = ["--captions", "100000", "--images", "200"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "frontends.py"), *extra], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ))
    if proc.returncode:
        return "", f"failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
    return " ".join(["python benchmarks/frontends.py", *extra]), proc.stdout.strip()


def time_v(cmd: List[str]) -> Tuple[float, float]:
    """(elapsed s, peak RSS MiB) of ``cmd`` under ``/usr/bin/time -v``; ``RuntimeError`` when it fails."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-600:]}")
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds, rss


def conversion_section(args: argparse.Namespace) -> Optional[dict]:
    """Two alternating runs of ``cp``, ``sha256sum`` and ``convert.py`` on a synthetic full-size checkpoint:
    ``{"size_mib": checkpoint MiB, "rows": [(command name, wall s, peak RSS MiB)]}``; None when skipped or
    ``/usr/bin/time`` is missing."""
    if args.no_conversion or not Path("/usr/bin/time").exists():
        return None
    from ernievil2torch.config import base_config
    from ernievil2torch.verify.synthetic import write_synthetic_pdparams

    with tempfile.TemporaryDirectory(prefix="ernievil2-bench-") as tmp:
        src = Path(tmp) / "full.pdparams"
        write_synthetic_pdparams(src, base_config(), "official", seed=0)
        rows = []
        for r in range(2):
            for name, cmd in (("cp", ["cp", str(src), str(Path(tmp) / f"copy{r}.pdparams")]),
                              ("sha256sum", ["sha256sum", str(src)]),
                              ("convert.py", [sys.executable, "convert.py", "--src", str(src),
                                              "--dst", str(Path(tmp) / f"out{r}")])):
                rows.append((name, *time_v(cmd)))
        return {"size_mib": src.stat().st_size / 2**20, "rows": rows}


def embed_section(args: argparse.Namespace) -> Optional[dict]:
    """``benchmarks/embed_lengths.py``'s two cases: the whole ``ernievil2 embed --kind text`` command on realistic vs
    46-character captions, and embed's image loop (DataLoader workers) vs the model alone, bf16.
    ``{"lines", "command", "text_ratio", "image_share" (per cent)}``; None when skipped."""
    if args.no_embed:
        return None
    import embed_lengths

    with tempfile.TemporaryDirectory(prefix="ernievil2-embed-") as tmp:
        work = Path(tmp)
        model_dir = embed_lengths.make_model_dir(work / "model")
        text_lines, text_ratio = embed_lengths.text_case(work, model_dir, 1000, args.embed_rounds, args.threads, 64)
        image_lines, image_share = embed_lengths.image_case(work, model_dir, 128, args.embed_rounds, args.threads,
                                                            32, 2)
    command = f"python benchmarks/embed_lengths.py --rounds {args.embed_rounds} --threads {args.threads}"
    return {"lines": [line.replace(str(ROOT), ".") for line in text_lines + image_lines], "command": command,
            "text_ratio": text_ratio, "image_share": 100 * image_share}
