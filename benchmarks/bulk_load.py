"""``ernievil2 index --from_embeddings``: how fast an ``embed`` output is loaded into the embedded Milvus Lite, and
the memory it takes.

Writes ``--rows`` small files (the loader only ``lstat``\\ s them: it never decodes a photo) and an embed output
naming them (``write_embed_output``: random unit vectors of ``--dim``, one file record per row), saves a random
full-size model (the loader hashes its weights and reads its config; it never runs it), then measures on this
machine:

* a first load into a fresh database (rows/s over the whole command: checks, model hash, writes, alias);
* the same load again (every row present: rows/s of a resumed load's skipping);
* the peak resident memory of the process (the loader memory-maps ``embeddings.npy``; Milvus Lite runs in it).

``--write`` seals the report into ``benchmarks/bulk_load.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from environment import machine_info
from repo import ROOT
from stamp import seal

REPORT = ROOT / "benchmarks" / "bulk_load.md"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_output(folder: Path, photos: Path, rows: int, dim: int, model_hash: str) -> None:
    """An embed output of ``rows`` image rows whose records name files written under ``photos``."""
    from ernievil2torch.storage.embeddings import write_embed_output

    rng = np.random.default_rng(0)
    records, ids = [], []
    root = str(photos.resolve())
    for i in range(rows):
        path = f"{i // 1000:03d}/IMG_{i:06d}.jpg"
        full = photos / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(i.to_bytes(4, "little"))
        stat = os.lstat(full)
        records.append({"root": root, "path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                        "sha256": hashlib.sha256(full.read_bytes()).hexdigest(), "width": 4000, "height": 3000,
                        "taken": "2024-06-01T10:00:00", "taken_ts": 1717236000})
        ids.append(path)
    folder.mkdir()
    parts = (rng.standard_normal((min(10_000, rows - start), dim)).astype(np.float32)
             for start in range(0, rows, 10_000))
    write_embed_output(folder, parts, ids, [], "image", dim, np.float32, records=records, normalized=False,
                       model_name="model", model_hash=model_hash)


def child(tmp: str, batch: int) -> None:
    """Both loads, reported as JSON on stdout with this process's peak resident memory."""
    from ernievil2torch.apps.index import load_embeddings

    base = Path(tmp)
    runs = {}
    for name in ("first", "again"):
        report = load_embeddings(str(base / "model"), str(base / "out"), db=str(base / "photos.db"),
                                 batch_size=batch, progress=False)
        runs[name] = {"loaded": report.loaded, "present": report.present, "skipped": len(report.skipped),
                      "seconds": report.seconds, "write_seconds": report.write_seconds}
    runs["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(runs))


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="2,000 rows and the tiny model")
    parser.add_argument("--write", action="store_true", help=f"write {REPORT.relative_to(ROOT)} (sealed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.batch)
    if args.quick:
        args.rows = 2_000
    command = "python benchmarks/bulk_load.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    from ernievil2torch.apps.index.model_hash import model_fingerprint
    from ernievil2torch.config import base_config, tiny_config
    from ernievil2torch.verify.synthetic import random_model

    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bulk-load-") as tmp:
        base = Path(tmp)
        config = tiny_config() if args.quick else base_config()
        random_model(config, seed=0).save_pretrained(base / "model")
        dim = config.vision.hidden_size
        log(f"writing {args.rows} files and an embed output of {dim}-d rows")
        write_output(base / "out", base / "photos", args.rows, dim, model_fingerprint(base / "model"))
        log("two loads, in a child process (its peak memory is the loader's alone)")
        done = subprocess.run([sys.executable, __file__, "--child", tmp, "--batch", str(args.batch)],
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    first, again = result["first"], result["again"]
    assert first["loaded"] == args.rows and again["present"] == args.rows and not first["skipped"]
    info = machine_info(1)
    load = f"{load_before} -> {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    size = "tiny (quick)" if args.quick else "full size (Base)"
    text = "\n".join([
        "# `ernievil2 index --from_embeddings` throughput and memory", "",
        f"Command: `{command}`. Machine: {info['cpu']}, {info['cpus']} logical CPUs ({info['os']}); load average "
        f"{load} (a shared machine: rates are lower bounds).", "",
        f"An embed output of {args.rows} rows of {dim}-d float32 vectors (model {size}: its weights are hashed, "
        f"never run) with one file record per row, loaded into a fresh embedded Milvus Lite database in batches of "
        f"{args.batch} rows (HNSW index).", "",
        "| what | rate |", "|---|---|",
        f"| first load, the whole command (checks, model hash, lstat of every file, upserts, alias, closing "
        f"the database) | {first['loaded'] / first['seconds']:.0f} rows/s ({first['seconds']:.1f} s) |",
        f"| first load, reading and writing rows only (without opening and closing Milvus Lite, which "
        f"persists the segments and builds their index when it closes) | "
        f"{first['loaded'] / first['write_seconds']:.0f} rows/s ({first['write_seconds']:.1f} s) |",
        f"| the same load again (every row present: nothing written) | "
        f"{again['present'] / again['seconds']:.0f} rows/s ({again['seconds']:.1f} s) |",
        f"| peak resident memory of the loading process (Milvus Lite runs in it) | {result['peak_mib']:.0f} MiB |",
        ""])
    print(text)
    if args.write:
        REPORT.write_text(seal(text, "benchmarks/bulk_load.py", command), encoding="utf-8")
        log(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
