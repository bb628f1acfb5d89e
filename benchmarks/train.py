"""Training-step benchmark: ``python benchmarks/train.py [--quick] [--threads N] [--steps N] [--out FILE]``.

Measures full-size ERNIE-ViL 2.0 training steps (random weights, batch 8 image-caption pairs of 224x224 images and
48-token texts, the fine-tuning code path: ``ContrastiveObjective`` forward, backward, gradient clipping, AdamW step)
on CPU in fp32 and bf16 autocast, with and without gradient checkpointing, and on the GPU when CUDA is available.
Data loading is not included (it runs in loader workers during training).

Each case runs in a fresh subprocess, so its peak memory is its own: on CPU the resident set between steps (weights,
AdamW state, allocator caches) and the process's peak resident set size (``ru_maxrss``); on GPU
``torch.cuda.max_memory_allocated``. Steps/s is the median over the timed steps, after one warm-up step.

``--quick`` runs the tiny test config (2 + 2 layers) for 2 steps: it checks that the script works, its figures mean
nothing. Writes a markdown table to ``--out`` (default benchmarks/TRAINING.md) and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
CASES = [("cpu", "fp32", False), ("cpu", "fp32", True), ("cpu", "bf16", False), ("cpu", "bf16", True),
         ("cuda", "fp32", False), ("cuda", "bf16", False), ("cuda", "bf16", True)]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny config, 2 steps: a smoke run of the script")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case (default 5, --quick 2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "TRAINING.md"))
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    return ap.parse_args()


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def rss_mib() -> float:
    """Current resident set size (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def run_case(device: str, precision: str, checkpointing: bool, args) -> Dict[str, float]:
    """One case in this process: set up, one warm-up step, ``args.steps`` timed steps."""
    import numpy as np
    import torch

    from ernievil2torch.config import base_config, tiny_config
    from ernievil2torch.modeling import ErnieViL2
    from ernievil2torch.training import ContrastiveObjective
    from ernievil2torch.training.optim import make_optimizer
    from ernievil2torch.verify.parity import synthetic_inputs
    from ernievil2torch.verify.synthetic import random_state

    torch.set_num_threads(args.threads)
    config = tiny_config() if args.quick else base_config()
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, 0).items()})
    model.to(device).train().set_gradient_checkpointing(checkpointing)
    objective = ContrastiveObjective(model)
    optimizer = make_optimizer(model, lr=5e-5, weight_decay=0.001)
    length = min(48, config.text.max_position_embeddings)
    inputs = synthetic_inputs(config, seed=0, images=args.batch, lengths=(length,) * args.batch)
    pixels = torch.from_numpy(inputs.pixel_values).to(device)
    ids = torch.from_numpy(inputs.input_ids).to(device)
    mask = (ids != 0).long()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step() -> float:
        with autocast:
            loss = objective(pixels, ids, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()  # warm-up: allocates AdamW state and gradients
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    setup_rss = rss_mib()  # weights + AdamW state (+ allocator caches), between steps
    times, losses = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        losses.append(step())
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"step_s": statistics.median(times), "steps_per_s": 1.0 / statistics.median(times),
              "pairs_per_s": args.batch / statistics.median(times), "finite": bool(np.isfinite(losses).all()),
              "rss_between_steps_mib": setup_rss, "peak_rss_mib": max_rss_mib()}
    if device == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def machine(args) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {args.threads} threads; GPU: {gpu}; torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def write_report(args, rows: List[Dict[str, object]], skipped: List[str]) -> str:
    size = "tiny test config (--quick: figures meaningless)" if args.quick else "full size (203.7M parameters)"
    lines = [f"# Training-step benchmark ({size})", "",
             f"Command: `python benchmarks/train.py{' --quick' if args.quick else ''} --threads {args.threads} "
             f"--steps {args.steps} --batch {args.batch}`", "",
             f"Machine: {machine(args)}", "",
             f"Batch {args.batch} pairs (224x224 images, 48-token texts), forward + backward + clip + AdamW, "
             f"median of {args.steps} steps after one warm-up; memory: on CPU the resident set between steps (weights, "
             "AdamW state, allocator caches) and the process's peak RSS; on GPU max allocated.", "",
             "| device | precision | checkpointing | step (s) | steps/s | pairs/s | resident between steps (MiB) | "
             "peak memory (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["result"]
        peak = r.get("peak_gpu_mib", r["peak_rss_mib"])
        lines.append(f"| {row['device']} | {row['precision']} | {'on' if row['checkpointing'] else 'off'} | "
                     f"{r['step_s']:.3f} | {r['steps_per_s']:.3f} | {r['pairs_per_s']:.2f} | "
                     f"{r['rss_between_steps_mib']:.0f} | {peak:.0f} |")
    lines += [""] + [f"- not measured: {reason}" for reason in skipped]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse()
    args.steps = args.steps or (2 if args.quick else 5)
    if args.case:
        device, precision, checkpointing = args.case.split(",")
        print(json.dumps(run_case(device, precision, checkpointing == "1", args)))
        return
    import torch

    rows, skipped = [], []
    for device, precision, checkpointing in CASES:
        label = f"{device} {precision} checkpointing {'on' if checkpointing else 'off'}"
        if device == "cuda" and not torch.cuda.is_available():
            if not skipped or "CUDA" not in skipped[-1]:
                skipped.append("GPU cases: CUDA is not available on this machine")
            continue
        if device == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
            skipped.append(f"{label}: this GPU has no bfloat16")
            continue
        cmd = [sys.executable, __file__, "--case", f"{device},{precision},{int(checkpointing)}", "--threads",
               str(args.threads), "--steps", str(args.steps), "--batch", str(args.batch)]
        if args.quick:
            cmd.append("--quick")
        print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if proc.returncode != 0:
            skipped.append(f"{label}: failed ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''})")
            continue
        rows.append({"device": device, "precision": precision, "checkpointing": checkpointing,
                     "result": json.loads(proc.stdout.strip().splitlines()[-1])})
    report = write_report(args, rows, skipped)
    Path(args.out).write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
