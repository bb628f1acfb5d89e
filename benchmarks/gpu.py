"""GPU benchmark of the ERNIE-ViL 2.0 port, one call: ``python benchmarks/gpu.py [--markdown OUT.md]``.

Sized to finish within 8 minutes of wall time on one data-centre GPU (compile included), it measures on
random full-size weights, batch 256 images (224x224) / 1024 texts x 48 tokens (no padding):

* our towers in fp32 (TF32 off), tf32, fp16, bf16 and bf16 + ``torch.compile``, each eager call timed in
  alternating rounds (``benchlib.run_rounds``), and the bf16 towers replayed as CUDA graphs (fixed shapes);
* the bf16 GEMM ceiling (``torch.matmul``) in the same rounds;
* peers in bf16: timm's ``vit_base_patch16_clip_quickgelu_224`` (skipped with a note when timm is missing) and a
  Hugging Face ``BertModel`` of ERNIE 3.0 Base's size (both random weights);
* half-precision vs fp32 feature cosine (fp16, bf16, bf16 + compile, CUDA graphs);
* end-to-end ``embed`` images/s: JPEG decode and preprocessing in DataLoader workers feeding the bf16 image tower;
* the targets: >= 12,500 images/s and >= 50,000 texts/s (the best of our paths), ahead of both peers;
* fine-tuning modes (``benchmarks/finetune_modes.py --device cuda``: full fine-tuning vs gradient cache vs LoRA,
  steps/s and max allocated memory, bf16 autocast), in a subprocess, when the budget allows.

Prints the markdown section (and writes it to ``--markdown``); ``benchmarks/run.py`` includes it in BENCHMARKS.md
when CUDA is available. ``--smoke`` runs every path on the CPU with the tiny test config and tiny batches (what
``tests/bench/test_benchmarks.py`` does): it proves the script, it measures nothing.
"""
from __future__ import annotations

import argparse
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

from benchlib import cosine_min, gemm_case, hf_peers, log, run_rounds
from cases import Case, ceiling, fmt, paired_ratio, share_of_ceiling
from flops import image_flops, text_flops

from ernievil2torch.config import ErnieViL2Config, base_config, tiny_config
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.verify.synthetic import random_state

IMAGE_TARGET, TEXT_TARGET = 12_500, 50_000
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Setup:
    """Where and at what size this run measures."""

    device: str
    cfg: ErnieViL2Config
    image_batch: int
    text_batch: int
    text_length: int
    rounds: int
    compile: bool
    workers: int
    embed_images: int

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny config, tiny batches: exercise every path")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image-batch", type=int, default=256)
    ap.add_argument("--text-batch", type=int, default=1024)
    ap.add_argument("--text-length", type=int, default=48)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers (embed)")
    ap.add_argument("--embed-images", type=int, default=4096, help="JPEGs in the end-to-end embed run")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--budget-s", type=float, default=420,
                    help="skip the end-to-end embed run when the model cases took longer than this (keeps the "
                         "whole script within 8 minutes)")
    ap.add_argument("--markdown", default=None, help="also write the markdown section here")
    return ap.parse_args(argv)


def make_setup(args: argparse.Namespace) -> Setup:
    if args.smoke:
        return Setup("cpu", tiny_config(), 2, 4, 16, 1, not args.no_compile, 1, 4)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to exercise the script on the CPU")
    return Setup("cuda", base_config(), args.image_batch, args.text_batch, args.text_length, args.rounds,
                 not args.no_compile, args.workers, args.embed_images)


# ---------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------
def inputs(setup: Setup) -> Tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    v = setup.cfg.vision
    pixels = torch.rand(setup.image_batch, v.num_channels, v.image_size, v.image_size, generator=g) * 4.7 - 2.1
    ids = torch.randint(4, setup.cfg.text.vocab_size, (setup.text_batch, setup.text_length), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    return pixels.to(setup.device), ids.to(setup.device)


def tf32(enabled: bool) -> None:
    """TF32 tensor-core matmuls (and cuDNN convolutions) on or off; fp32 cases run with it off."""
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    if torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = enabled


def timed(setup: Setup, fn: Callable[[], torch.Tensor], tf32_on: bool = False) -> Callable[[], torch.Tensor]:
    """``fn`` followed by a device sync, with TF32 on only for its duration when ``tf32_on``."""
    def run() -> torch.Tensor:
        tf32(tf32_on)
        try:
            out = fn()
            setup.sync()
            return out
        finally:
            tf32(False)
    return run


def cuda_graph(setup: Setup, fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``fn`` captured once as a CUDA graph and replayed (fixed shapes); on the CPU (smoke) ``fn`` itself."""
    if setup.device != "cuda":
        return fn
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out
    return replay


def model_of(setup: Setup, state: Dict[str, np.ndarray], dtype: torch.dtype) -> ErnieViL2:
    model = ErnieViL2(setup.cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model.eval().to(device=setup.device, dtype=dtype)


def our_cases(setup: Setup, pixels: torch.Tensor, ids: torch.Tensor,
              accuracy: List[Tuple[str, str]]) -> List[Case]:
    """Our towers in every precision (and bf16 + compile, bf16 CUDA graphs); cosines to fp32 into ``accuracy``."""
    state = random_state(setup.cfg, seed=0)
    i_flop, t_flop = image_flops(setup.cfg.vision), text_flops(setup.cfg.text, ids.shape[1])
    models = {label: model_of(setup, state, DTYPES[label]) for label in ("fp32", "fp16", "bf16")}
    models["tf32"] = models["fp32"]
    ref_image, ref_text = models["fp32"].encode_image(pixels), models["fp32"].encode_text(ids)
    paths: List[Tuple[str, str, Callable, Callable]] = []
    for label in ("fp32", "tf32", "fp16", "bf16"):
        m = models[label]
        paths.append((f"ours {label}", label, lambda m=m: m.encode_image(pixels), lambda m=m: m.encode_text(ids)))
    if setup.compile:
        compiled = model_of(setup, state, torch.bfloat16).compile()
        paths.append(("ours bf16 + compile", "bf16", lambda: compiled.encode_image(pixels),
                      lambda: compiled.encode_text(ids)))
    bf16 = models["bf16"]
    paths.append(("ours bf16 CUDA graph", "bf16", cuda_graph(setup, lambda: bf16.vision.encode(pixels)),
                  cuda_graph(setup, lambda: bf16.text.encode(ids))))
    cases = []
    for name, label, image, text in paths:
        if label not in ("fp32", "tf32"):
            accuracy.append((f"{name} vs ours fp32", f"image min cosine {cosine_min(image(), ref_image):.6f}, "
                                                     f"text min cosine {cosine_min(text(), ref_text):.6f}"))
        cases += [Case(name, "image", timed(setup, image, label == "tf32"), pixels.shape[0], i_flop, label),
                  Case(name, "text", timed(setup, text, label == "tf32"), ids.shape[0], t_flop, label)]
    return cases


def peer_cases(setup: Setup, pixels: torch.Tensor, ids: torch.Tensor, notes: List[str]) -> List[Case]:
    """timm's CLIP ViT-B/16 (QuickGELU) and an HF BertModel of the same size, bf16, random weights."""
    cases = []
    i_flop, t_flop = image_flops(setup.cfg.vision), text_flops(setup.cfg.text, ids.shape[1])
    pix16 = pixels.to(torch.bfloat16)
    try:
        import timm

        v = setup.cfg.vision
        vit = timm.create_model("vit_base_patch16_clip_quickgelu_224", pretrained=False, num_classes=0,
                                img_size=v.image_size, patch_size=v.patch_size, embed_dim=v.hidden_size,
                                depth=v.num_layers, num_heads=v.num_heads,
                                mlp_ratio=v.intermediate_size / v.hidden_size)
        vit = vit.eval().to(setup.device, torch.bfloat16)
        cases.append(Case("timm vit_base_patch16_clip_quickgelu_224", "image", timed(setup, lambda: vit(pix16)),
                          pixels.shape[0], i_flop, "bf16"))
    except ImportError as exc:
        notes.append(f"timm peer not measured: timm is not installed ({exc})")
    try:
        _, bert = hf_peers(setup.cfg, torch.bfloat16, setup.device)
        mask = torch.ones_like(ids)
        cases.append(Case("HF BertModel", "text", timed(setup, lambda: bert(input_ids=ids, attention_mask=mask)),
                          ids.shape[0], t_flop, "bf16"))
    except ImportError as exc:
        notes.append(f"HF BertModel peer not measured: {exc}")
    return cases


def gemm_cases(setup: Setup) -> List[Case]:
    n = 256 if setup.device == "cpu" else 8192
    return [gemm_case(n, n, n, torch.bfloat16, "bf16", setup.device, setup.sync)]


# ---------------------------------------------------------------------------------------------------------------
# End-to-end embed with DataLoader workers
# ---------------------------------------------------------------------------------------------------------------
class JpegDataset(torch.utils.data.Dataset):
    """``count`` JPEG bytes (640x480, seeded noise on a gradient) decoded and preprocessed in ``__getitem__``."""

    def __init__(self, count: int, size: int) -> None:
        from PIL import Image

        from ernievil2torch.processing.image import ErnieViL2ImageProcessor

        rng = np.random.default_rng(0)
        base = (np.linspace(0, 255, 640)[None, :, None] + rng.integers(0, 60, (480, 640, 3))).clip(0, 255)
        buffer = io.BytesIO()
        Image.fromarray(base.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        self.jpeg, self.count = buffer.getvalue(), count
        self.processor = ErnieViL2ImageProcessor(image_size=size)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.processor(self.jpeg)[0]


def embed_images_per_s(setup: Setup) -> Tuple[float, int]:
    """Images/s of decode + preprocess (DataLoader workers) + bf16 image tower, the whole stream timed."""
    model = model_of(setup, random_state(setup.cfg, seed=0), torch.bfloat16)
    data = JpegDataset(setup.embed_images, setup.cfg.vision.image_size)
    loader = torch.utils.data.DataLoader(data, batch_size=setup.image_batch, num_workers=setup.workers,
                                         pin_memory=setup.device == "cuda", persistent_workers=False,
                                         prefetch_factor=4 if setup.workers else None)
    t0, seen = time.perf_counter(), 0
    with torch.inference_mode():
        for batch in loader:
            model.encode_image(batch.to(setup.device, non_blocking=True))
            seen += batch.shape[0]
    setup.sync()
    return seen / (time.perf_counter() - t0), seen


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def target_lines(cases: List[Case]) -> List[str]:
    """Best of our paths per tower against the absolute target and both peers (met / MISSED)."""
    lines = ["| target | figure | verdict |", "|---|---|---|"]
    for group, goal, peer in (("image", IMAGE_TARGET, "timm"), ("text", TEXT_TARGET, "HF BertModel")):
        ours = [c for c in cases if c.group == group and c.name.startswith("ours")]
        best = max(ours, key=lambda c: c.rate)
        lines.append(f"| {group}s/s >= {goal:,} (best: {best.name}) | {fmt(best.rate, 0)} | "
                     f"{'met' if best.rate >= goal else 'MISSED'} |")
        theirs = [c for c in cases if c.group == group and c.name.startswith(peer)]
        if theirs:
            x = paired_ratio(best, theirs[0])
            lines.append(f"| {group} ahead of {theirs[0].name} | {x:.2f}x | {'met' if x > 1 else 'MISSED'} |")
        else:
            lines.append(f"| {group} ahead of the {peer} peer | n/a | not measured |")
    return lines


def render(setup: Setup, cases: List[Case], accuracy: List[Tuple[str, str]], notes: List[str],
           embed: Tuple[float, int]) -> str:
    name = torch.cuda.get_device_name() if setup.device == "cuda" else "CPU (--smoke: tiny config, not a measurement)"
    bf16_ceiling = ceiling(cases, "bf16")
    lines = [f"{name}; torch {torch.__version__}; batch {setup.image_batch} images / {setup.text_batch} texts x "
             f"{setup.text_length} tokens; {setup.rounds} alternating rounds, median [min-max]; shares of the "
             "ceiling and ratios to peers are medians of per-round ratios.", "",
             "| tower | implementation | precision | items/s [min-max] | executed TFLOP/s | of bf16 GEMM ceiling |",
             "|---|---|---|---|---|---|"]
    for c in (c for c in cases if c.group != "gemm"):
        lo, hi = c.spread
        share = f"{share_of_ceiling(c, cases, 'bf16'):.0f} %" if bf16_ceiling else "n/a"
        lines.append(f"| {c.group} | {c.name} | {c.precision} | {fmt(c.rate, 0)} [{fmt(lo, 0)}-{fmt(hi, 0)}] | "
                     f"{fmt(c.gflops / 1e3, 1)} | {share} |")
    lines += ["", f"bf16 GEMM ceiling: {fmt(bf16_ceiling / 1e3, 1)} TFLOP/s "
                  f"({', '.join(c.name for c in cases if c.group == 'gemm')}).",
              f"End-to-end embed (JPEG decode + preprocessing in {setup.workers} DataLoader workers, bf16 image "
              f"tower): {fmt(embed[0], 0)} images/s over {embed[1]} images.", "",
              "| comparison | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in accuracy]
    lines += [""] + target_lines(cases) + [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def finetune_modes(setup: Setup) -> str:
    """The table of ``benchmarks/finetune_modes.py`` on this device (the tiny config, one step, on the CPU in a
    smoke run), as a section to append; its own seal is dropped (this report is the document)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modes.md"
        cmd = [sys.executable, str(Path(__file__).with_name("finetune_modes.py")), "--device", setup.device,
               "--out", str(out)]
        cmd += ["--quick", "--threads", "1", "--steps", "0", "--cases", "0,1"] if setup.device == "cpu" else []
        log("fine-tuning modes ...")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return f"\n## Fine-tuning modes\n\nnot measured: {proc.stderr.strip().splitlines()[-1:]}\n"
        text = out.read_text(encoding="utf-8")
    body = text[:text.rindex("<!-- generated by")].rstrip("\n")
    return "\n" + body.replace("# Fine-tuning modes", "## Fine-tuning modes", 1) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    setup = make_setup(args)
    t0 = time.perf_counter()
    pixels, ids = inputs(setup)
    accuracy: List[Tuple[str, str]] = []
    notes: List[str] = []
    with torch.inference_mode():
        cases = our_cases(setup, pixels, ids, accuracy) + peer_cases(setup, pixels, ids, notes) + gemm_cases(setup)
        run_rounds(cases, setup.rounds)
    if time.perf_counter() - t0 < args.budget_s:
        embed = embed_images_per_s(setup)
    else:
        embed = (float("nan"), 0)
        notes.append(f"end-to-end embed not measured: the model cases took more than --budget-s {args.budget_s:g} s")
    modes = ""
    if time.perf_counter() - t0 < args.budget_s:
        modes = finetune_modes(setup)
    else:
        notes.append(f"fine-tuning modes not measured: more than --budget-s {args.budget_s:g} s had passed")
    notes.append(f"whole script: {time.perf_counter() - t0:.0f} s")
    text = render(setup, cases, accuracy, notes, embed) + modes
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    log("done")


if __name__ == "__main__":
    main()
