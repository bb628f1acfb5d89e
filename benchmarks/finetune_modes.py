"""Fine-tuning modes benchmark: ``python benchmarks/finetune_modes.py [--quick] [--device cpu|cuda] [--threads N]``.

Full fine-tuning vs the gradient cache (``--grad_cache_chunk``) vs LoRA (``--lora_rank``), one full-size training
step each (random weights; 224x224 images, 48-token texts; forward, backward, gradient clipping, AdamW: the code
``ernievil2 finetune`` runs, data loading excluded), gradient checkpointing off, fp32 on CPU / bf16 autocast on a GPU:

* full, batch B (default 16);
* gradient cache, batch 4B in chunks of B/2 (64 in chunks of 8): four times the negatives;
* LoRA rank 8 on every block layer, batch B; and LoRA with the gradient cache, batch 4B in chunks of B/2.

Each case runs in its own subprocess, so its memory is its own: peak resident set size (``ru_maxrss``, what the
operating system had to give the process: weights, gradients, AdamW state, activations, allocator caches) and the
resident set between steps on CPU; ``torch.cuda.max_memory_allocated`` on a GPU. Speed: median step time over
``--steps`` timed steps after one warm-up step; ``--steps 0`` times one step after a cheap warm-up that only
allocates the AdamW state (an optimizer step on zero gradients), so its memory is a steady-state step's (weights,
AdamW state, gradients and activations at once) where one gradient-cache step at batch 64 takes minutes on a CPU.
``--cases`` picks cases by number (default all). The report, with the machine and the command, is written to
``benchmarks/finetune_modes.md`` (``--out``) and sealed (``benchmarks/stamp.py``: ``tests/test_docs.py`` fails on a
hand edit).

``--quick`` runs the tiny test config for 1 step: it checks that the script works, its figures mean nothing.
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
from typing import Dict, List, Optional

from stamp import seal

ROOT = Path(__file__).resolve().parent.parent


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny config, 1 step: a smoke run of the script")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per case after a warm-up (default 2, --quick 1); 0: one step after a cheap "
                         "warm-up")
    ap.add_argument("--cases", default=None, help="comma-separated case numbers (0 full, 1 gradient cache, 2 LoRA, "
                                                  "3 LoRA + gradient cache; default all)")
    ap.add_argument("--batch", type=int, default=16, help="B: the plain batch (the cache runs 4B in chunks of B/2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "finetune_modes.md"))
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    return ap.parse_args()


def cases(batch: int) -> List[Dict[str, Optional[int]]]:
    chunk = max(1, batch // 2)
    return [{"name": "full fine-tuning", "batch": batch, "chunk": None, "rank": None},
            {"name": "gradient cache", "batch": 4 * batch, "chunk": chunk, "rank": None},
            {"name": "LoRA rank 8", "batch": batch, "chunk": None, "rank": 8},
            {"name": "LoRA rank 8 + gradient cache", "batch": 4 * batch, "chunk": chunk, "rank": 8}]


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def run_case(case: Dict[str, Optional[int]], args) -> Dict[str, float]:
    """One case in this process: set up, one warm-up step, ``args.steps`` timed steps."""
    import contextlib

    import numpy as np
    import torch

    from ernievil2torch.config import base_config, tiny_config
    from ernievil2torch.modeling import ErnieViL2
    from ernievil2torch.training import ContrastiveObjective
    from ernievil2torch.training.grad_cache import grad_cache_backward
    from ernievil2torch.training.lora import add_adapters, lora_spec
    from ernievil2torch.training.optim import make_optimizer
    from ernievil2torch.verify.parity import synthetic_inputs

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    config = tiny_config() if args.quick else base_config()
    model = ErnieViL2(config)  # random weights: speed and memory do not depend on their values
    model.to(device).train()
    if case["rank"]:
        add_adapters(model, lora_spec(case["rank"], None, 0.0, "qkv,out_proj,fc1,fc2", None))
    objective = ContrastiveObjective(model)
    optimizer = make_optimizer(model, lr=5e-5, weight_decay=0.001)
    trainable = [p for p in model.parameters() if p.requires_grad]
    length = min(48, config.text.max_position_embeddings)
    batch = case["batch"]
    inputs = synthetic_inputs(config, seed=0, images=batch, lengths=(length,) * batch)
    pixels = torch.from_numpy(inputs.pixel_values).to(device)
    ids = torch.from_numpy(inputs.input_ids).to(device)
    mask = (ids != 0).long()

    def autocast():
        if device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> float:
        if case["chunk"]:
            loss = grad_cache_backward(objective, pixels, ids, mask, case["chunk"], autocast).loss
        else:
            with autocast():
                loss = objective(pixels, ids, mask)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    if args.steps:
        step()  # warm-up: allocates the AdamW state and the allocator's caches
    else:  # only the AdamW state: a step on zero gradients (weight decay moves the weights a little, no matter)
        for p in trainable:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    between = rss_mib()
    times, losses = [], []
    for _ in range(max(1, args.steps)):
        start = time.perf_counter()
        losses.append(step())
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    result = {"step_s": median, "steps_per_s": 1.0 / median, "pairs_per_s": batch / median,
              "finite": bool(np.isfinite(losses).all()), "rss_between_steps_mib": between,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              "trainable_params": sum(p.numel() for p in trainable)}
    if device == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def machine(args) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "not used"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {args.threads} threads; GPU: {gpu}; torch {torch.__version__}, "
            f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}")


def command_line(args) -> str:
    chosen = f" --cases {args.cases}" if args.cases else ""
    return (f"python benchmarks/finetune_modes.py{' --quick' if args.quick else ''} --device {args.device} "
            f"--threads {args.threads} --steps {args.steps} --batch {args.batch}{chosen}")


def report(args, rows: List[Dict[str, object]], failed: List[str]) -> str:
    size = "tiny test config (--quick: figures meaningless)" if args.quick else "full size (203.7M parameters)"
    precision = "bf16 autocast" if args.device == "cuda" else "fp32"
    memory = "max allocated GPU memory" if args.device == "cuda" else "peak RSS"
    timing = (f"median of {args.steps} step(s) after one warm-up" if args.steps else
              "one step after allocating the AdamW state (an optimizer step on zero gradients)")
    lines = [f"# Fine-tuning modes ({args.device}, {size})", "", "Command:", "", f"    {command_line(args)}", "",
             f"Machine: {machine(args)}", "",
             f"One training step (forward, backward, clipping, AdamW), {precision}, gradient checkpointing off, "
             f"{timing}, each case in its own process. Memory: {memory} of the process (weights, gradients, AdamW "
             "state, activations) and, on CPU, the resident set before the timed step(s).", "",
             f"| mode | batch (chunk) | trainable parameters | step (s) | steps/s | pairs/s | {memory} (MiB) | "
             "resident before the step (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r, case = row["result"], row["case"]
        peak = r.get("peak_gpu_mib", r["peak_rss_mib"])
        shape = f"{case['batch']} ({case['chunk']})" if case["chunk"] else f"{case['batch']}"
        lines.append(f"| {case['name']} | {shape} | {r['trainable_params'] / 1e6:.2f} M | {r['step_s']:.2f} | "
                     f"{r['steps_per_s']:.4f} | {r['pairs_per_s']:.2f} | {peak:.0f} | "
                     f"{r['rss_between_steps_mib']:.0f} |")
    lines += [""] + [f"- not measured: {reason}" for reason in failed]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse()
    if args.steps is None:
        args.steps = 1 if args.quick else 2
    if args.case is not None:
        print(json.dumps(run_case(cases(args.batch)[int(args.case)], args)))
        return
    rows, failed = [], []
    chosen = {int(i) for i in args.cases.split(",")} if args.cases else None
    for index, case in enumerate(cases(args.batch)):
        if chosen is not None and index not in chosen:
            continue
        cmd = [sys.executable, __file__, "--case", str(index), "--device", args.device, "--threads",
               str(args.threads), "--steps", str(args.steps), "--batch", str(args.batch)]
        if args.quick:
            cmd.append("--quick")
        print(f"[{time.strftime('%H:%M:%S')}] {case['name']} ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            failed.append(f"{case['name']}: failed ({tail})")
            continue
        rows.append({"case": case, "result": json.loads(proc.stdout.strip().splitlines()[-1])})
        print(f"    {rows[-1]['result']}", flush=True)
    text = seal(report(args, rows, failed), "benchmarks/finetune_modes.py", command_line(args))
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
