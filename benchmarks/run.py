"""One-command benchmark of the ERNIE-ViL 2.0 port: ``python benchmarks/run.py [--quick] [--threads N]``.

Measures, in one process and in alternating rounds (every case once per round, the order rotated each round,
median over rounds), on the same random full-size weights and the same inputs:

* CPU fp32: our image tower (batch 8, 224x224) and text tower (batch 32 x 48 tokens) vs the independent Paddle
  reference of the official architecture (``ernievil2torch.verify.paddle_reference``);
* CPU bf16 (when oneDNN bf16 is supported) eager and with ``torch.compile`` (inductor, freezing);
* Hugging Face peers of the same size (CLIPVisionModel ViT-B/16 quick_gelu, BertModel base, SDPA attention);
* fp32 and bf16 GEMM ceilings (torch.matmul), to express every figure as a fraction of the attainable rate;
* a GPU section when CUDA is available (otherwise it says so);
* tokenizer / image preprocessing throughput via ``benchmarks/frontends.py`` when those modules exist;
* conversion time and peak RSS (``/usr/bin/time -v``) next to a plain ``cp`` of the same checkpoint.

Writes BENCHMARKS.md, sealed (``benchmarks/stamp.py``: the test suite fails if it is edited afterwards), and
benchmarks/cpu_throughput.png (``--out`` / ``--png`` to change). Every framework runs
with the same thread count: OMP_NUM_THREADS is set before torch and paddle are imported (Paddle would otherwise
force 1 thread).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
IMAGE_GFLOP = 35.1   # ViT-B/16 at 224, per image (2 x multiply-adds)
TEXT_GFLOP = 8.2     # ERNIE 3.0 Base text tower, per 48-token text


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no compile, small front-end runs")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every framework")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 7, --quick 3)")
    ap.add_argument("--no-paddle", action="store_true")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-conversion", action="store_true")
    ap.add_argument("--no-frontends", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--png", default=str(ROOT / "benchmarks" / "cpu_throughput.png"))
    return ap.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    # Must happen before numpy/torch/paddle start their thread pools.
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(ARGS.threads))

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(ROOT))
from ernievil2torch.config import base_config  # noqa: E402
from ernievil2torch.modeling import ErnieViL2  # noqa: E402
from ernievil2torch.verify.synthetic import layout_state, random_state  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from stamp import seal  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Cases and the alternating timer
# ---------------------------------------------------------------------------------------------------------------
class Case:
    """One timed callable: ``items`` per call, ``gflop`` per item, ``group`` = 'image' | 'text' | 'gemm'."""

    def __init__(self, name: str, group: str, fn: Callable[[], object], items: int, gflop: float,
                 precision: str) -> None:
        self.name, self.group, self.fn, self.items, self.gflop, self.precision = name, group, fn, items, gflop, precision
        self.times: List[float] = []

    @property
    def rate(self) -> float:
        return self.items / float(np.median(self.times))

    @property
    def spread(self) -> Tuple[float, float]:
        rates = [self.items / t for t in self.times]
        return min(rates), max(rates)


def run_rounds(cases: List[Case], rounds: int) -> None:
    for case in cases:  # warm-up (and compile) outside the timed rounds
        t0 = time.perf_counter()
        case.fn()
        case.fn()
        log(f"warm {case.name}: {time.perf_counter() - t0:.1f} s")
    for r in range(rounds):
        shift = r % len(cases)
        order = cases[shift:] + cases[:shift]
        if r % 2:
            order = order[::-1]
        for case in order:
            t0 = time.perf_counter()
            case.fn()
            case.times.append(time.perf_counter() - t0)
        log(f"round {r + 1}/{rounds} done")


def gemm_cases(dtype: torch.dtype, label: str, device: str = "cpu") -> List[Case]:
    """The ViT MLP GEMM (batch-8 tokens x 768 x 3072) and a square 2048 GEMM; the ceiling is the better one."""
    cases = []
    for m, k, n in ((8 * 197, 768, 3072), (2048, 2048, 2048)):
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        flop = 2.0 * m * k * n / 1e9

        def fn(a=a, b=b):
            out = a @ b
            if device != "cpu":
                torch.cuda.synchronize()
            return out
        cases.append(Case(f"GEMM {label} {m}x{k}x{n}", "gemm", fn, 1, flop, label))
    return cases


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------
def our_model(state: Dict[str, np.ndarray], dtype: torch.dtype = torch.float32, device: str = "cpu") -> ErnieViL2:
    model = ErnieViL2(base_config())
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model.eval().to(device=device, dtype=dtype)


def hf_peers(dtype: torch.dtype, device: str = "cpu"):
    import warnings

    warnings.simplefilter("ignore")
    from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                              num_attention_heads=12, image_size=224, patch_size=16,
                                              hidden_act="quick_gelu", attn_implementation="sdpa"))
    text = BertModel(BertConfig(vocab_size=40000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                intermediate_size=3072, max_position_embeddings=2048,
                                attn_implementation="sdpa"))
    return vision.eval().to(device=device, dtype=dtype), text.eval().to(device=device, dtype=dtype)


def cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).min())


def compile_options() -> dict:
    return {"options": {"freezing": True}}


def inductor_usable() -> str:
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
        return ""
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:200]


# ---------------------------------------------------------------------------------------------------------------
# CPU section
# ---------------------------------------------------------------------------------------------------------------
def cpu_section(args, report: dict) -> None:
    torch.set_num_threads(args.threads)
    cfg = base_config()
    state = random_state(cfg, seed=0)
    rng = np.random.default_rng(0)
    pixels_np = rng.uniform(-2.1, 2.6, (8, 3, 224, 224)).astype(np.float32)
    ids_np = rng.integers(4, cfg.text.vocab_size, (32, 48)).astype(np.int64)
    ids_np[:, 0], ids_np[:, -1] = 1, 2
    pixels, ids = torch.from_numpy(pixels_np), torch.from_numpy(ids_np)
    mask = torch.ones_like(ids)
    cases: List[Case] = []
    notes: List[str] = []
    accuracy: List[Tuple[str, str]] = []

    fp32 = our_model(state)
    inference = torch.inference_mode()
    inference.__enter__()
    ref_img, ref_txt = fp32.encode_image(pixels), fp32.encode_text(ids)
    cases += [Case("ours fp32", "image", lambda: fp32.encode_image(pixels), 8, IMAGE_GFLOP, "fp32"),
              Case("ours fp32", "text", lambda: fp32.encode_text(ids), 32, TEXT_GFLOP, "fp32")]

    if not args.no_paddle:
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import paddle
                from ernievil2torch.verify.paddle_reference import PaddleErnieViL2
            paddle.set_device("cpu")
            ref = PaddleErnieViL2.from_official_state(layout_state(cfg, "official", seed=0))
            p_pix, p_ids = paddle.to_tensor(pixels_np), paddle.to_tensor(ids_np)

            def p_img():
                with paddle.no_grad():
                    return ref.encode_image(p_pix).numpy()

            def p_txt():
                with paddle.no_grad():
                    return ref.encode_text(p_ids).numpy()
            img_diff = float(np.abs(p_img() - ref_img.numpy()).max())
            txt_diff = float(np.abs(p_txt() - ref_txt.numpy()).max())
            accuracy.append(("ours fp32 vs Paddle reference (benchmark inputs)",
                             f"image max abs {img_diff:.2e}, text max abs {txt_diff:.2e}"))
            cases += [Case("Paddle reference fp32", "image", p_img, 8, IMAGE_GFLOP, "fp32"),
                      Case("Paddle reference fp32", "text", p_txt, 32, TEXT_GFLOP, "fp32")]
            report["paddle_version"] = paddle.__version__
            a = paddle.randn([8 * 197, 768])
            b = paddle.randn([768, 3072])
            cases.append(Case("GEMM Paddle fp32 1576x768x3072", "gemm", lambda: paddle.matmul(a, b).numpy(), 1,
                              2.0 * 8 * 197 * 768 * 3072 / 1e9, "fp32"))
        except ImportError as exc:
            notes.append(f"Paddle reference not measured: {exc}")

    bf16_ok = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    report["bf16_supported"] = bf16_ok
    if bf16_ok:
        bf16 = our_model(state, torch.bfloat16)
        img, txt = bf16.encode_image(pixels), bf16.encode_text(ids)
        accuracy.append(("ours bf16 eager vs ours fp32", f"image min cosine {cosine_min(img, ref_img):.6f}, "
                                                         f"text min cosine {cosine_min(txt, ref_txt):.6f}"))
        cases += [Case("ours bf16", "image", lambda: bf16.encode_image(pixels), 8, IMAGE_GFLOP, "bf16"),
                  Case("ours bf16", "text", lambda: bf16.encode_text(ids), 32, TEXT_GFLOP, "bf16")]
        reason = "" if not args.no_compile and not args.quick else "skipped (--quick / --no-compile)"
        reason = reason or inductor_usable()
        if not reason:
            compiled = our_model(state, torch.bfloat16).compile(**compile_options())
            t0 = time.perf_counter()
            img, txt = compiled.encode_image(pixels), compiled.encode_text(ids)
            notes.append(f"torch.compile (inductor, freezing) of both bf16 towers took "
                         f"{time.perf_counter() - t0:.0f} s on first call")
            accuracy.append(("ours bf16 + compile vs ours fp32",
                             f"image min cosine {cosine_min(img, ref_img):.6f}, "
                             f"text min cosine {cosine_min(txt, ref_txt):.6f}"))
            cases += [Case("ours bf16 + compile", "image", lambda: compiled.encode_image(pixels), 8,
                           IMAGE_GFLOP, "bf16"),
                      Case("ours bf16 + compile", "text", lambda: compiled.encode_text(ids), 32, TEXT_GFLOP,
                           "bf16")]
            if not args.quick:
                compiled32 = our_model(state).compile(**compile_options())
                img, txt = compiled32.encode_image(pixels), compiled32.encode_text(ids)
                accuracy.append(("ours fp32 + compile vs ours fp32 eager",
                                 f"image max abs {float((img - ref_img).abs().max()):.2e}, "
                                 f"text max abs {float((txt - ref_txt).abs().max()):.2e}"))
                cases += [Case("ours fp32 + compile", "image", lambda: compiled32.encode_image(pixels), 8,
                               IMAGE_GFLOP, "fp32"),
                          Case("ours fp32 + compile", "text", lambda: compiled32.encode_text(ids), 32,
                               TEXT_GFLOP, "fp32")]
        else:
            notes.append(f"torch.compile not measured: {reason}")
    else:
        notes.append("bf16 not measured: oneDNN reports no bf16 support on this CPU")

    if not args.no_hf:
        try:
            hf_img32, hf_txt32 = hf_peers(torch.float32)
            cases += [Case("HF CLIPVisionModel fp32", "image", lambda: hf_img32(pixel_values=pixels), 8,
                           IMAGE_GFLOP, "fp32"),
                      Case("HF BertModel fp32", "text", lambda: hf_txt32(input_ids=ids, attention_mask=mask), 32,
                           TEXT_GFLOP, "fp32")]
            if bf16_ok:
                hf_img16, hf_txt16 = hf_peers(torch.bfloat16)
                pix16 = pixels.to(torch.bfloat16)
                cases += [Case("HF CLIPVisionModel bf16", "image", lambda: hf_img16(pixel_values=pix16), 8,
                               IMAGE_GFLOP, "bf16"),
                          Case("HF BertModel bf16", "text", lambda: hf_txt16(input_ids=ids, attention_mask=mask),
                               32, TEXT_GFLOP, "bf16")]
            import transformers

            report["transformers_version"] = transformers.__version__
        except ImportError as exc:
            notes.append(f"Hugging Face peers not measured: {exc}")

    cases += gemm_cases(torch.float32, "fp32")
    if bf16_ok:
        cases += gemm_cases(torch.bfloat16, "bf16")
    run_rounds(cases, args.rounds)
    inference.__exit__(None, None, None)
    report["cpu_cases"] = cases
    report["notes"] += notes
    report["accuracy"] += accuracy


# ---------------------------------------------------------------------------------------------------------------
# GPU section (only with CUDA)
# ---------------------------------------------------------------------------------------------------------------
def gpu_section(args, report: dict) -> None:
    if not torch.cuda.is_available():
        report["gpu"] = "not measured: no GPU in this session"
        return
    cfg = base_config()
    state = random_state(cfg, seed=0)
    n_img, n_txt = (64, 256) if args.quick else (256, 1024)
    g = torch.Generator(device="cpu").manual_seed(0)
    pixels = (torch.rand(n_img, 3, 224, 224, generator=g) * 4.7 - 2.1).cuda()
    ids = torch.randint(4, cfg.text.vocab_size, (n_txt, 48), generator=g).cuda()
    mask = torch.ones_like(ids)
    cases: List[Case] = []

    def synced(fn):
        def run():
            out = fn()
            torch.cuda.synchronize()
            return out
        return run

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fp32 = our_model(state, device="cuda")
    variants = [("fp32", fp32, torch.float32)]
    with torch.inference_mode():
        ref_img, ref_txt = fp32.encode_image(pixels), fp32.encode_text(ids)
        for label, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            variants.append((label, our_model(state, dtype, "cuda"), dtype))
        if not args.no_compile:
            variants.append(("bf16 + compile", our_model(state, torch.bfloat16, "cuda").compile(), torch.bfloat16))
        for label, model, dtype in variants:
            img, txt = model.encode_image(pixels), model.encode_text(ids)
            report["accuracy"].append((f"GPU ours {label} vs GPU fp32",
                                       f"image min cosine {cosine_min(img, ref_img):.6f}, "
                                       f"text min cosine {cosine_min(txt, ref_txt):.6f}"))
            cases += [Case(f"ours {label}", "image", synced(lambda m=model: m.encode_image(pixels)), n_img,
                           IMAGE_GFLOP, label),
                      Case(f"ours {label}", "text", synced(lambda m=model: m.encode_text(ids)), n_txt, TEXT_GFLOP,
                           label)]

        def tf32_case(fn):
            def run():
                torch.backends.cuda.matmul.allow_tf32 = True
                try:
                    return synced(fn)()
                finally:
                    torch.backends.cuda.matmul.allow_tf32 = False
            return run
        cases += [Case("ours tf32", "image", tf32_case(lambda: fp32.encode_image(pixels)), n_img, IMAGE_GFLOP,
                       "tf32"),
                  Case("ours tf32", "text", tf32_case(lambda: fp32.encode_text(ids)), n_txt, TEXT_GFLOP, "tf32")]
        try:
            import timm

            vit = timm.create_model("vit_base_patch16_clip_quickgelu_224", pretrained=False, num_classes=0)
            vit = vit.eval().cuda().to(torch.bfloat16)
            pix16 = pixels.to(torch.bfloat16)
            cases.append(Case("timm vit_base_patch16_clip_quickgelu_224 bf16", "image",
                              synced(lambda: vit(pix16)), n_img, IMAGE_GFLOP, "bf16"))
        except Exception as exc:  # noqa: BLE001 - timm missing or broken beside this torch
            report["notes"].append(f"GPU timm peer not measured: {type(exc).__name__}: {exc}"[:200])
        if not args.no_hf:
            try:
                _, bert = hf_peers(torch.bfloat16, "cuda")
                cases.append(Case("HF BertModel bf16", "text", synced(lambda: bert(input_ids=ids,
                                                                                   attention_mask=mask)),
                                  n_txt, TEXT_GFLOP, "bf16"))
            except ImportError as exc:
                report["notes"].append(f"GPU HF peer not measured: {exc}")
        cases += gemm_cases(torch.bfloat16, "bf16", "cuda")
        run_rounds(cases, max(3, args.rounds // 2))
    report["gpu"] = cases
    report["gpu_name"] = torch.cuda.get_device_name()


# ---------------------------------------------------------------------------------------------------------------
# Front ends and conversion (subprocesses)
# ---------------------------------------------------------------------------------------------------------------
def frontends_section(args, report: dict) -> None:
    script = ROOT / "benchmarks" / "frontends.py"
    needed = [ROOT / "ernievil2torch" / "processing" / "tokenizer.py", ROOT / "ernievil2torch" / "processing" / "image.py", script]
    if args.no_frontends or not all(p.exists() for p in needed):
        report["frontends"] = "not measured: " + ("--no-frontends" if args.no_frontends else
                                                  "tokenizer / image processing modules not present")
        return
    extra = ["--captions", "20000", "--images", "64"] if args.quick else ["--captions", "100000", "--images", "200"]
    proc = subprocess.run([sys.executable, str(script), *extra], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ))
    if proc.returncode:
        report["frontends"] = f"failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
    else:
        report["frontends"] = proc.stdout.strip()
        report["frontends_cmd"] = " ".join(["python benchmarks/frontends.py", *extra])


def _time_v(cmd: List[str]) -> Tuple[float, float, str]:
    """(elapsed s, peak RSS MiB, stderr tail) of ``cmd`` under /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-600:]}")
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds, rss, proc.stderr


def conversion_section(args, report: dict) -> None:
    if args.no_conversion:
        report["conversion"] = None
        return
    if not Path("/usr/bin/time").exists():
        report["notes"].append("conversion not measured: /usr/bin/time is missing")
        report["conversion"] = None
        return
    from ernievil2torch.verify.synthetic import write_synthetic_pdparams

    with tempfile.TemporaryDirectory(prefix="ernievil2-bench-") as tmp:
        src = Path(tmp) / "full.pdparams"
        write_synthetic_pdparams(src, base_config(), "official", seed=0)
        size_mib = src.stat().st_size / 2**20
        rows = []
        repeats = 1 if args.quick else 2
        for r in range(repeats):  # alternate cp and convert
            for name, cmd in (("cp", ["cp", str(src), str(Path(tmp) / f"copy{r}.pdparams")]),
                              ("convert.py", [sys.executable, "convert.py", "--src", str(src),
                                              "--dst", str(Path(tmp) / f"out{r}")])):
                seconds, rss, _ = _time_v(cmd)
                rows.append((name, seconds, rss))
        report["conversion"] = {"size_mib": size_mib, "rows": rows}


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def machine_info(args) -> Dict[str, str]:
    model, cores = platform.processor(), str(os.cpu_count())
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        cores = fields.get("CPU(s)", cores).strip()
        flags = fields.get("Flags", "")
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags.split()]
    except OSError:
        isa = []
    return {"cpu": model, "cores": cores, "isa": " ".join(isa), "threads": str(args.threads),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "os": platform.platform()}


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}"


def write_report(args, report: dict, command: str) -> None:
    cases: List[Case] = report.get("cpu_cases", [])
    ceil = {}
    for c in cases:
        if c.group == "gemm" and not c.name.startswith("GEMM Paddle"):
            ceil[c.precision] = max(ceil.get(c.precision, 0.0), c.rate * c.gflop)
    paddle_rate = {c.group: c.rate for c in cases if c.name.startswith("Paddle")}
    hf32 = {c.group: c.rate for c in cases if c.name.startswith("HF") and c.precision == "fp32"}
    info = report["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py`; every number below comes from one run of:",
        "",
        f"    {command}",
        "",
        f"- machine: {info['cpu']}, {info['cores']} CPUs ({info['isa']}), {info['os']}",
        f"- threads: {info['threads']} for every framework (OMP_NUM_THREADS set before any import, "
        f"torch.set_num_threads)",
        f"- versions: python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, "
        f"paddlepaddle {report.get('paddle_version', 'n/a')}, transformers {report.get('transformers_version', 'n/a')}",
        f"- method: random full-size weights (same values in every framework), image batch 8 x 3 x 224 x 224, text "
        f"batch 32 x 48 tokens (no padding); {args.rounds} alternating rounds (each case once per round, order "
        f"rotated), median reported, [min-max] over rounds; warm-up calls excluded.",
        f"- FLOP per item: image {IMAGE_GFLOP} GFLOP, text {TEXT_GFLOP} GFLOP; 'of ceiling' = achieved GFLOP/s "
        f"divided by the best torch.matmul GFLOP/s of the same precision measured in the same rounds.",
        f"- the machine is shared with other jobs: treat single figures as +-10-20 %; ratios within a round "
        f"are more reliable.",
        "",
        "## CPU throughput",
        "",
        "| tower | implementation | precision | items/s [min-max] | x Paddle fp32 | x HF fp32 | GFLOP/s | "
        "of fp32 ceiling | of bf16 ceiling |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group in ("image", "text"):
        for c in [c for c in cases if c.group == group]:
            lo, hi = c.spread
            gf = c.rate * c.gflop
            lines.append(
                f"| {group} | {c.name} | {c.precision} | {fmt(c.rate)} [{fmt(lo)}-{fmt(hi)}] | "
                f"{fmt(c.rate / paddle_rate[group]) + 'x' if group in paddle_rate else 'n/a'} | "
                f"{fmt(c.rate / hf32[group]) + 'x' if group in hf32 else 'n/a'} | {fmt(gf, 1)} | "
                f"{fmt(100 * gf / ceil['fp32'], 0) + ' %' if 'fp32' in ceil else 'n/a'} | "
                f"{fmt(100 * gf / ceil['bf16'], 0) + ' %' if 'bf16' in ceil else 'n/a'} |")
    lines += _targets(cases, paddle_rate, hf32, report.get("conversion"))
    lines += ["", "### GEMM ceilings (same rounds)", "", "| GEMM | GFLOP/s [min-max] |", "|---|---|"]
    for c in [c for c in cases if c.group == "gemm"]:
        lo, hi = c.spread
        lines.append(f"| {c.name} | {fmt(c.rate * c.gflop, 1)} [{fmt(lo * c.gflop, 1)}-{fmt(hi * c.gflop, 1)}] |")
    lines += ["", "### Accuracy of the measured paths", "", "| comparison | result |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in report["accuracy"]]
    lines += ["", "## GPU", ""]
    gpu = report.get("gpu")
    if isinstance(gpu, str):
        lines.append(gpu + ".")
    else:
        lines += [f"{report.get('gpu_name')}; batch {gpu[0].items} images / {gpu[1].items} texts.", "",
                  "| tower | implementation | precision | items/s |", "|---|---|---|---|"]
        lines += [f"| {c.group} | {c.name} | {c.precision} | "
                  f"{fmt(c.rate) if c.group != 'gemm' else fmt(c.rate * c.gflop, 0) + ' GFLOP/s'} |" for c in gpu]
    lines += ["", "## Front ends", ""]
    fe = report.get("frontends", "not measured")
    if "frontends_cmd" in report:
        lines += [f"`{report['frontends_cmd']}`, same threads:", ""]
    lines.append(fe)
    lines += ["", "## Conversion", ""]
    conv = report.get("conversion")
    if conv:
        lines += [f"Synthetic full-size official-layout checkpoint, {fmt(conv['size_mib'], 0)} MiB; "
                  f"`/usr/bin/time -v`, alternating runs:", "",
                  "| command | wall s | peak RSS MiB | RSS / checkpoint size |", "|---|---|---|---|"]
        for name, seconds, rss in conv["rows"]:
            lines.append(f"| {name} | {fmt(seconds)} | {fmt(rss, 0)} | {fmt(rss / conv['size_mib'])} |")
        cp = [s for n, s, _ in conv["rows"] if n == "cp"]
        cv = [s for n, s, _ in conv["rows"] if n != "cp"]
        lines += ["", f"convert.py / cp time: {fmt(np.median(cv) / np.median(cp))}x (target <= 2x); "
                      f"peak RSS / checkpoint: {fmt(max(r for n, _, r in conv['rows'] if n != 'cp') / conv['size_mib'])}"
                      f" (target <= 1.3)."]
    else:
        lines.append("not measured.")
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", OPTIMISATION_LOG.rstrip()]
    Path(args.out).write_text(seal("\n".join(lines) + "\n", "benchmarks/run.py", command), encoding="utf-8")
    log(f"wrote {args.out}")
    _chart(args, cases)


# Kept optimisations, each measured A/B (5 alternating rounds, median, same process, 2 threads, same machine as
# the tables) against the committed code before the change; fp32 features changed by <= 7.2e-7.
OPTIMISATION_LOG = """## Optimisations kept (A/B against the code before them)

| change | image fp32 | text fp32 | image bf16 | text bf16 |
|---|---|---|---|---|
| last block computes only the [CLS]/class row (queries from token 0, k/v from all), QuickGELU in place without autograd, trailing batch-wide padding trimmed on CPU | 5.01 -> 5.60 img/s (1.12x) | 22.79 -> 24.32 texts/s (1.07x) | 9.59 -> 10.41 img/s (1.09x) | 44.36 -> 47.06 texts/s (1.06x) |

- QuickGELU alone, [1576, 3072] activations: bf16 6.26 -> 2.26 ms, fp32 6.74 -> 6.16 ms per call (12 calls per batch).
- Measured and not kept / not needed: SDPA math path or manual matmul-softmax attention (fp32 197 tokens: 3x slower
  than SDPA's flash kernel); `torch.compile` is offered (`ErnieViL2.compile()`, `from_pretrained(compile=True)`) but
  buys only 0-4 % here once the eager path is tuned; the patch convolution is 0.6 % of the bf16 image time.
- Why the Paddle baseline is slow: its fp32 GEMM reaches ~75 GFLOP/s on this AMD CPU against torch/oneDNN's ~187
  (see GEMM ceilings), so a straight SDPA port is already ~3x Paddle here; both towers run at ~100 % of the fp32
  GEMM ceiling, so fp32 has no headroom left.
- bf16 targets: 6x Paddle images = 10.5 img/s = 369 GFLOP/s (90 % of the bf16 GEMM ceiling, no AMX on this CPU);
  9x Paddle texts = 68 texts/s = 561 GFLOP/s, above the bf16 GEMM ceiling itself: not reachable on this machine
  without skipping work.
"""


def _targets(cases: List[Case], paddle_rate: Dict[str, float], hf32: Dict[str, float], conv) -> List[str]:
    """Issue 6 acceptance targets, evaluated on this run's figures (met / MISSED, never rounded up)."""
    if not paddle_rate:
        return []
    out = ["", "### Targets (issue 6) on this run", "", "| target | figure | verdict |", "|---|---|---|"]

    def row(text: str, value: float, goal: float, unit: str = "x") -> None:
        out.append(f"| {text} | {value:.2f}{unit} | {'met' if value >= goal else 'MISSED'} |")

    for group, fp32_goal, bf16_goal in (("image", 2.0, 6.0), ("text", 2.0, 9.0)):
        ours = {c.name: c.rate for c in cases if c.group == group and c.name.startswith("ours")}
        if "ours fp32" in ours and group in paddle_rate:
            row(f"{group} fp32 >= {fp32_goal:g}x Paddle reference", ours["ours fp32"] / paddle_rate[group], fp32_goal)
        if "ours fp32" in ours and group in hf32:
            row(f"{group} fp32 faster than HF fp32 peer", ours["ours fp32"] / hf32[group], 1.0 + 1e-9)
        bf16 = {n: r for n, r in ours.items() if "bf16" in n}
        if bf16:
            name = max(bf16, key=bf16.get)
            row(f"{group} bf16 >= {bf16_goal:g}x Paddle fp32 (best: {name})", bf16[name] / paddle_rate[group],
                bf16_goal)
    if conv:
        cp = float(np.median([s for n, s, _ in conv["rows"] if n == "cp"]))
        cv = float(np.median([s for n, s, _ in conv["rows"] if n != "cp"]))
        rss = max(r for n, _, r in conv["rows"] if n != "cp") / conv["size_mib"]
        out.append(f"| conversion time <= 2x cp | {cv / cp:.2f}x | {'met' if cv / cp <= 2 else 'MISSED'} |")
        out.append(f"| conversion peak RSS <= 1.3x checkpoint | {rss:.2f}x | {'met' if rss <= 1.3 else 'MISSED'} |")
    return out


def _chart(args, cases: List[Case]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, group, unit in ((axes[0], "image", "images/s (batch 8)"), (axes[1], "text", "texts/s (32 x 48)")):
        sel = [c for c in cases if c.group == group]
        names = [c.name for c in sel]
        rates = [c.rate for c in sel]
        colors = ["#d62728" if n.startswith("Paddle") else "#1f77b4" if n.startswith("ours") else "#7f7f7f"
                  for n in names]
        ax.barh(names[::-1], rates[::-1], color=colors[::-1])
        for y, r in enumerate(rates[::-1]):
            ax.text(r, y, f" {r:.1f}", va="center", fontsize=8)
        ax.set_xlabel(unit)
        ax.set_title(f"{group} tower, CPU, {args.threads} threads")
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    log(f"wrote {args.png}")


def main() -> None:
    args = ARGS
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    report = {"notes": [], "accuracy": [], "machine": machine_info(args)}
    log(f"threads={args.threads}, rounds={args.rounds}, quick={args.quick}")
    cpu_section(args, report)
    gpu_section(args, report)
    frontends_section(args, report)
    conversion_section(args, report)
    write_report(args, report, command)


if __name__ == "__main__":
    main()
