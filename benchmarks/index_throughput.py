"""``ernievil2 index`` throughput with the full-size model against the model alone, on camera-sized JPEGs.

Writes ``--photos`` distinct JPEGs of ``--size`` pixels (a colour field plus noise, with an EXIF capture time),
then measures, on this machine's CPU:

* the model alone: the image tower on already-decoded crops, in batches of ``--batch`` (images/s);
* a first ``index`` run into a fresh embedded Milvus Lite database (reading, hashing, decoding, embedding,
  writing: images/s over the whole run);
* a second run over the unchanged folder (files/s: nothing read beyond ``stat``, no model call).

The model has random weights (full size: what matters for time). ``--write`` seals the report into
``benchmarks/index_throughput.md``.
"""
from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from environment import machine_info
from repo import ROOT
from stamp import seal

REPORT = ROOT / "benchmarks" / "index_throughput.md"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_photos(folder: Path, count: int, size) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        base = rng.integers(0, 256, 3)
        small = np.clip(base + rng.integers(-60, 60, (size[1] // 8, size[0] // 8, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = f"2024:0{1 + i % 9}:1{i % 9} 10:00:00"
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=90, exif=exif)
        (folder / f"IMG_{i:04d}.jpg").write_bytes(out.getvalue())


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=(4000, 3000))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="8 photos of 1600x1200 and the tiny model")
    parser.add_argument("--write", action="store_true", help=f"write {REPORT.relative_to(ROOT)} (sealed)")
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.size = 8, (1600, 1200)
    command = "python benchmarks/index_throughput.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    import torch

    from ernievil2torch.apps.index import index_photos
    from ernievil2torch.config import base_config, tiny224_config
    from ernievil2torch.processing import ErnieViL2ImageProcessor
    from ernievil2torch.verify.synthetic import random_model

    torch.set_num_threads(args.threads)
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="index-throughput-") as tmp:
        photos, model_dir = Path(tmp) / "photos", Path(tmp) / "model"
        photos.mkdir()
        log(f"writing {args.photos} photos of {args.size[0]}x{args.size[1]}")
        write_photos(photos, args.photos, args.size)
        model = random_model(tiny224_config() if args.quick else base_config(), seed=0).eval()
        model.save_pretrained(model_dir)
        processor = ErnieViL2ImageProcessor(image_size=model.config.vision.image_size)
        crops = [processor.resize_crop(processor.load_image(path)) for path in sorted(photos.iterdir())]
        log("model alone")
        with torch.inference_mode():
            model.encode_image(processor.normalize(crops[:2]))  # warm-up
            started = time.perf_counter()
            for start in range(0, len(crops), args.batch):
                model.encode_image(processor.normalize(crops[start:start + args.batch]), normalize=True)
            model_rate = len(crops) / (time.perf_counter() - started)
        del model
        log("index, first run")
        db = str(Path(tmp) / "photos.db")
        first = index_photos(str(model_dir), [str(photos)], db=db, batch_size=args.batch, num_workers=args.workers,
                             progress=False)
        log("index, unchanged")
        second = index_photos(str(model_dir), [str(photos)], db=db, batch_size=args.batch, num_workers=args.workers,
                              progress=False)
    info = machine_info(args.threads)
    load = f"{load_before} -> {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    size = "tiny224 (quick)" if args.quick else "full size (Base: ViT-B/16 + ERNIE 3.0 Base)"
    text = "\n".join([
        "# `ernievil2 index` throughput against the model alone", "",
        f"Command: `{command}`. Machine: {info['cpu']}, {info['cpus']} logical CPUs, {args.threads} torch threads "
        f"({info['os']}); load average {load} (a shared machine: rates are lower bounds).", "",
        f"{args.photos} JPEGs of {args.size[0]}x{args.size[1]} pixels, model {size}, float32 on the CPU, batches of "
        f"{args.batch}, {args.workers} decoding threads.", "",
        "| what | rate |", "|---|---|",
        f"| image tower alone (decoded crops) | {model_rate:.2f} images/s |",
        f"| `index`, first run (read, hash, decode, embed, write to Milvus Lite) | "
        f"{first.embedded / first.seconds:.2f} images/s ({first.seconds:.1f} s in all, "
        f"{first.embed_seconds:.1f} s of it in the model) |",
        f"| `index`, second run over the unchanged folder ({second.embedded} embedded) | "
        f"{args.photos / second.seconds:.1f} files/s ({second.seconds:.2f} s, model hash included) |", ""])
    print(text)
    if args.write:
        REPORT.write_text(seal(text, "benchmarks/index_throughput.py", command), encoding="utf-8")
        log(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
