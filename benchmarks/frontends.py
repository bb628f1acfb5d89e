"""Throughput of the front ends: tokenizer (captions/s) and image preprocessing (images/s).

    python benchmarks/frontends.py [--vocab ../shared/data/vocab.txt] [--captions 100000] [--images 200]

Captions are 6-20 characters drawn deterministically from the vocab's CJK characters; images are generated
640x480 JPEGs (quality 90), preprocessed from bytes (decode + resize + crop + normalise). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ernievil2torch.processing.image import ErnieViL2ImageProcessor
from ernievil2torch.processing.tokenizer import ErnieViL2Tokenizer


def main() -> None:
    default_vocab = os.environ.get("ERNIEVIL2_SHARED_DATA",
                                   str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", default=str(Path(default_vocab) / "vocab.txt"))
    ap.add_argument("--captions", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()

    rows = []
    t0 = time.perf_counter()
    tok = ErnieViL2Tokenizer(args.vocab)
    rows.append(("tokenizer load", "1 vocab", f"{time.perf_counter() - t0:.2f} s", ""))
    rng = random.Random(0)
    hanzi = sorted(t for t in tok.vocab if len(t) == 1 and 0x4E00 <= ord(t) <= 0x9FFF)
    caps = ["".join(rng.choice(hanzi) for _ in range(rng.randint(6, 20))) for _ in range(args.captions)]
    for label, fn in (("tokenizer, batched call (cold cache)", lambda: tok(caps)),
                      ("tokenizer, batched call (warm cache)", lambda: tok(caps)),
                      ("tokenizer, encode() per caption", lambda: [tok.encode(c) for c in caps])):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        rows.append((label, f"{len(caps):,} captions", f"{dt:.2f} s", f"{len(caps) / dt:,.0f} captions/s"))

    nrng = np.random.default_rng(0)
    jpegs = []
    for i in range(args.images):
        base = nrng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((640, 480), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        jpegs.append(buf.getvalue())
    for mode in ("official", "paddlenlp"):
        proc = ErnieViL2ImageProcessor(resample=mode)
        proc(jpegs[:2])
        t0 = time.perf_counter()
        for i in range(0, len(jpegs), 32):
            proc(jpegs[i:i + 32])
        dt = time.perf_counter() - t0
        rows.append((f"images 640x480 JPEG, resample={mode}", f"{len(jpegs)} images", f"{dt:.2f} s",
                     f"{len(jpegs) / dt:,.0f} images/s"))
    print("| step | work | time | throughput |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\n{os.cpu_count()} CPUs, torch threads {__import__('torch').get_num_threads()}, one process")


if __name__ == "__main__":
    main()
