"""A/B the model's speed between two commits: ``python benchmarks/ab_commits.py OLD [NEW] [--rounds 5]``.

Each commit is checked out into a temporary ``git worktree`` and timed in its own subprocess (so each imports its
own ``ernievil2torch``), alternating OLD, NEW, OLD, NEW, ... for ``--rounds`` rounds so drift on a shared machine hits
both alike. Every worker builds the full-size model on the same random weights (each tensor seeded by its name, so
the values do not depend on the order of parameters; only the public API is used: ``ErnieViL2(base_config())``,
``encode_image``, ``encode_text``), runs
fp32 eager image batches and text batches, and prints items/s. The script reports per-round figures, the median
ratio NEW/OLD and its spread; it proves nothing about fidelity (the test suite does). NEW defaults to the working
tree. Nothing is written to the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent('''
    import json, sys, time, zlib
    import torch
    torch.manual_seed(0)
    from ernievil2torch import ErnieViL2, base_config
    threads, image_batch, text_batch, tokens = (int(a) for a in sys.argv[1:5])
    seconds = float(sys.argv[5])
    torch.set_num_threads(threads)
    model = ErnieViL2(base_config()).eval()
    with torch.no_grad():  # each tensor seeded by its name: the same values whatever the parameter order
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode()))) * 0.02)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(image_batch, 3, 224, 224, generator=generator)
    ids = torch.randint(5, 18000, (text_batch, tokens), generator=generator)
    ids[:, 0] = 1

    def rate(run, items):
        run()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            run()
            done += items
        return done / (time.perf_counter() - start)

    with torch.inference_mode():
        image = rate(lambda: model.encode_image(pixels), image_batch)
        text = rate(lambda: model.encode_text(ids), text_batch)
    print(json.dumps({"image": image, "text": text}))
''')


def checkout(commit: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), commit], check=True)
    return into


def measure(tree: Path, args: argparse.Namespace) -> Dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", WORKER, str(args.threads), str(args.image_batch),
                           str(args.text_batch), str(args.tokens), str(args.seconds)],
                          capture_output=True, text=True, env=env, cwd=tree, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"error: the worker failed in {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", help="a commit (the baseline)")
    ap.add_argument("new", nargs="?", default=None, help="a commit (default: the working tree)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--image-batch", type=int, default=8)
    ap.add_argument("--text-batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per tower per round")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ernievil2-ab-") as scratch:
        trees = {"old": checkout(args.old, Path(scratch) / "old")}
        trees["new"] = checkout(args.new, Path(scratch) / "new") if args.new else ROOT
        try:
            results: Dict[str, List[Dict[str, float]]] = {"old": [], "new": []}
            for round_ in range(args.rounds):
                for side in (("old", "new") if round_ % 2 == 0 else ("new", "old")):
                    results[side].append(measure(trees[side], args))
                    print(f"round {round_ + 1} {side}: " + ", ".join(
                        f"{k} {v:.2f}/s" for k, v in results[side][-1].items()), flush=True)
        finally:
            for side, tree in trees.items():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(f"\nOLD {args.old}, NEW {args.new or 'working tree'}; {args.threads} threads, fp32 eager, image batch "
          f"{args.image_batch}, text {args.text_batch} x {args.tokens} tokens; {args.rounds} alternating rounds")
    print("| tower | OLD items/s (median) | NEW items/s (median) | NEW/OLD per round (min / median / max) |")
    print("|---|---|---|---|")
    for tower in ("image", "text"):
        old = [r[tower] for r in results["old"]]
        new = [r[tower] for r in results["new"]]
        ratios = sorted(n / o for n, o in zip(new, old))
        print(f"| {tower} | {statistics.median(old):.2f} | {statistics.median(new):.2f} | "
              f"{ratios[0]:.3f} / {statistics.median(ratios):.3f} / {ratios[-1]:.3f} |")


if __name__ == "__main__":
    main()
