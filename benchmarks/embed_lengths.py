"""``ernievil2 embed`` throughput: realistic-length captions vs 46-character ones (padding paid or not), and the
image path's DataLoader overlap.

    python benchmarks/embed_lengths.py [--texts 1000] [--rounds 3] [--threads 2] [--images 128] [--skip-images]

Texts: a seeded full-size synthetic model (random weights, the released Base dims) and the synthetic vocab; 1,000
captions of realistic length (6-46 characters, mean about 18) drawn with a seeded RNG from the vocab's CJK
characters, against 1,000 captions of 46 characters. Each round runs the whole ``ernievil2 embed --kind text``
command (process start, model load, tokenising, encoding, writing) on both sets, alternately; texts/s = texts /
wall time of the command. Target: realistic >= 2x the 46-character texts/s.

Images (CPU bfloat16): ``embed``'s encoding loop (``encode_items``: DataLoader workers decode and preprocess JPEGs
while the model encodes) against the model alone on ready tensors, same batch and threads. Target: >= 85 %.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CaptionSet:
    name: str
    texts: List[str]

    @property
    def mean_chars(self) -> float:
        return float(np.mean([len(t) for t in self.texts]))


def cjk_characters(vocab: Path) -> List[str]:
    """The single CJK ideographs of a vocab file (one token per line, ``token<TAB>id`` allowed)."""
    chars = []
    for line in vocab.read_text(encoding="utf-8").splitlines():
        token = line.split("\t")[0].strip()
        if len(token) == 1 and 0x4E00 <= ord(token) <= 0x9FFF:
            chars.append(token)
    return chars


def draw_captions(chars: List[str], count: int, seed: int) -> Dict[str, CaptionSet]:
    """Realistic lengths: 6 + gamma(2, 6.5) characters, capped at 46 (mean ~18); and all-46-character captions."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(6 + np.floor(rng.gamma(2.0, 6.5, count)).astype(int), 46)
    pool = np.asarray(chars)
    realistic = ["".join(rng.choice(pool, n)) for n in lengths]
    long = ["".join(rng.choice(pool, 46)) for _ in range(count)]
    return {"realistic": CaptionSet("realistic", realistic), "46-char": CaptionSet("46-char", long)}


def make_model_dir(path: Path) -> Path:
    """The released Base dims with seeded random weights, plus the synthetic vocab."""
    from ernievil2torch.config import base_config
    from ernievil2torch.verify.synthetic import random_model, write_synthetic_vocab

    random_model(base_config(), seed=0).save_pretrained(path)
    write_synthetic_vocab(path / "vocab.txt")
    return path


def run_embed(model_dir: Path, texts_file: Path, out: Path, threads: int, batch_size: int, code: Path) -> float:
    """Wall seconds of one whole ``ernievil2 embed --kind text`` process running the package in ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-c", "from ernievil2torch.cli import main; main()", "embed", str(texts_file),
           "--model_dir", str(model_dir), "--out", str(out), "--kind", "text", "--batch_size", str(batch_size),
           "--progress", "False", "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code)  # "-c" puts the cwd first
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"embed failed:\n{proc.stderr[-3000:]}")
    return wall


def text_case(work: Path, model_dir: Path, count: int, rounds: int, threads: int, batch_size: int,
              code: Path = ROOT) -> Tuple[List[str], float]:
    """Report lines and the ratio realistic / 46-character texts/s (best wall of ``rounds`` each)."""
    sets = draw_captions(cjk_characters(model_dir / "vocab.txt"), count, seed=0)
    files = {}
    for name, caption_set in sets.items():
        files[name] = work / f"{name}.txt"
        files[name].write_text("\n".join(caption_set.texts) + "\n", encoding="utf-8")
    walls: Dict[str, List[float]] = {name: [] for name in sets}
    for _ in range(rounds):
        for name in sets:
            walls[name].append(run_embed(model_dir, files[name], work / f"out-{name}", threads, batch_size, code))
    lines = [f"## embed --kind text, {count} captions, batch {batch_size}, {threads} threads, float32, "
             f"whole command, best of {rounds}, code {code}"]
    rates = {}
    for name, caption_set in sets.items():
        lengths = [len(t) for t in caption_set.texts]
        rates[name] = count / min(walls[name])
        lines.append(f"{name:10s} chars min/mean/max {min(lengths)}/{caption_set.mean_chars:.1f}/{max(lengths)}  "
                     f"walls {', '.join(f'{w:.1f}' for w in walls[name])} s  -> {rates[name]:.1f} texts/s")
    same = np.load(work / "out-realistic" / "embeddings.npy").shape
    ratio = rates['realistic'] / rates['46-char']
    lines.append(f"realistic / 46-char = {ratio:.2f}x (target >= 2x); output {same}")
    return lines, ratio


def write_images(folder: Path, count: int) -> List[str]:
    """JPEGs of camera-like sizes (500x375 and 640x480), seeded noise plus gradients."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        w, h = (500, 375) if i % 2 else (640, 480)
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(str(folder / f"img{i:04d}.jpg"))
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def image_case(work: Path, model_dir: Path, count: int, rounds: int, threads: int, batch_size: int,
               num_workers: int) -> Tuple[List[str], float]:
    """Report lines and the share embed-loop images/s / model-only images/s (best of ``rounds`` each)."""
    import torch

    from ernievil2torch.data.inputs import Item
    from ernievil2torch.runtime.encoding import encode_items
    from ernievil2torch.pretrained import load_pretrained

    torch.set_num_threads(threads)
    paths = write_images(work / "images", count)
    items = [Item(str(i), p) for i, p in enumerate(paths)]
    model = load_pretrained(str(model_dir), dtype=torch.bfloat16).model
    ready = torch.randn(batch_size, 3, 224, 224).to(torch.bfloat16)
    batches = -(-count // batch_size)
    with torch.no_grad():
        model.encode_image(ready)  # warm-up: oneDNN kernels
        model_rates, loop_rates = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(batches):
                model.encode_image(ready)
            model_rates.append(batches * batch_size / (time.perf_counter() - start))
            start = time.perf_counter()
            feats, ok, failed = encode_items(model, items, "image", batch_size, num_workers)
            loop_rates.append(len(ok) / (time.perf_counter() - start))
    best_model, best_loop = max(model_rates), max(loop_rates)
    return [f"## embed --kind image encoding loop vs model only, {count} JPEGs (500x375 / 640x480), batch "
            f"{batch_size}, {threads} threads, {num_workers} DataLoader workers, bfloat16, best of {rounds}",
            f"model only  {', '.join(f'{r:.1f}' for r in model_rates)} images/s",
            f"embed loop  {', '.join(f'{r:.1f}' for r in loop_rates)} images/s",
            f"embed / model = {best_loop / best_model:.0%} (target >= 85 %)"], best_loop / best_model


def machine() -> str:
    name = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{name}, {os.cpu_count()} CPUs; python {platform.python_version()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--image_batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip_images", action="store_true")
    parser.add_argument("--skip_texts", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep the model and outputs here (default: a temp dir)")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the checkout whose package the embed command runs (for a before/after comparison)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="embed_lengths_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = work / "model"
        if not (model_dir / "model.safetensors").is_file():
            make_model_dir(model_dir)
        print(f"machine: {machine()}")
        if not args.skip_texts:
            print("\n".join(text_case(work, model_dir, args.texts, args.rounds, args.threads, args.batch_size,
                                       args.code)[0]))
        if not args.skip_images:
            print("\n".join(image_case(work, model_dir, args.images, args.rounds, args.threads, args.image_batch,
                                        args.workers)[0]))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
