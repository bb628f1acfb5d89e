"""Conversion against the hashing floor: ``python convert.py`` vs ``sha256sum`` of the same checkpoint.

    python benchmarks/convert_floor.py [--rounds 3] [--workdir DIR] [--keep]

Writes a seeded full-size synthetic checkpoint in the official layout (~780 MiB, unless ``--src`` names one), then
runs ``sha256sum FILE`` and ``python convert.py --src FILE --dst OUT --overwrite`` alternately, each under
``/usr/bin/time -v``, and prints per-round wall times, peak RSS and the ratios (targets: wall <= 2x sha256sum, peak
RSS <= 1.3x the file). The file is read once before the first round so every run finds it in the page cache.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Run:
    """One measured command: wall seconds and peak resident set size in bytes."""

    wall_s: float
    peak_rss: int


def timed(cmd: List[str]) -> Run:
    """Run ``cmd`` under ``/usr/bin/time -v`` (output discarded); ``RuntimeError`` if it fails."""
    proc = subprocess.run([TIME, "-v", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{proc.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    hours, minutes, seconds = wall.groups()
    return Run(int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), int(rss.group(1)) * 1024)


def make_checkpoint(path: Path) -> Path:
    """The seeded full-size official-layout checkpoint the tests use (seed 0)."""
    from ernievil2torch.verify.synthetic import write_synthetic_pdparams

    return write_synthetic_pdparams(path)


def warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass


def measure(src: Path, out: Path, rounds: int) -> List[tuple]:
    """``rounds`` pairs of (sha256sum run, convert run), alternating."""
    pairs = []
    for _ in range(rounds):
        sha = timed(["sha256sum", str(src)])
        conv = timed([sys.executable, str(ROOT / "convert.py"), "--src", str(src), "--dst", str(out), "--overwrite"])
        pairs.append((sha, conv))
    return pairs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(src: Path, pairs: List[tuple]) -> str:
    size = src.stat().st_size
    lines = [f"machine: {cpu_name()}, {os.cpu_count()} CPUs; python "
             f"{platform.python_version()}; file {size / 2**20:.1f} MiB",
             "round  sha256sum_s  convert_s  wall_ratio  convert_peak_MiB  rss_ratio"]
    for number, (sha, conv) in enumerate(pairs, 1):
        lines.append(f"{number:5d}  {sha.wall_s:11.2f}  {conv.wall_s:9.2f}  {conv.wall_s / sha.wall_s:10.2f}  "
                     f"{conv.peak_rss / 2**20:16.1f}  {conv.peak_rss / size:9.2f}")
    best_sha = min(s.wall_s for s, _ in pairs)
    best_conv = min(c.wall_s for _, c in pairs)
    worst_rss = max(c.peak_rss for _, c in pairs)
    lines += [f"best of {len(pairs)}: convert {best_conv:.2f} s vs sha256sum {best_sha:.2f} s = "
              f"{best_conv / best_sha:.2f}x (target <= 2x); median of round ratios "
              f"{sorted(c.wall_s / s.wall_s for s, c in pairs)[len(pairs) // 2]:.2f}x",
              f"peak RSS (worst round) {worst_rss / 2**20:.1f} MiB = {worst_rss / size:.2f}x the file "
              "(target <= 1.3x)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", type=Path, help="an existing .pdparams (default: write the synthetic one)")
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoint and output (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="convert_floor_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = args.src or make_checkpoint(work / "OPEN_ERNIE_VIL2_BASE_ViT.pdparams")
        warm(src)
        print(report(src, measure(src, work / "converted", args.rounds)))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
