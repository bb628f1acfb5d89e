"""One-command CPU benchmark of the ERNIE-ViL 2.0 port: ``python benchmarks/run.py [--threads N] [--rounds R]``.

Measures, in one process and in alternating rounds (``benchlib.run_rounds``), on the same inputs and — for every
implementation of this architecture — the same random full-size weights:

* ours: fp32 eager, bf16 eager and bf16 + ``torch.compile`` (inductor, freezing), when oneDNN supports bf16;
* the project's Paddle reference (``ernievil2torch.verify.paddle_reference``), in process;
* PaddleNLP 2.8.1's ``ErnieViLModel`` (Baidu's code) in a worker process under the PaddleNLP interpreter
  (``benchmarks/paddlenlp_worker.py``), its text LayerNorm epsilon set to the official 1e-5;
* ONNX Runtime running our own ONNX export (``ernievil2torch.export.onnx``), fp32, graph optimisation level "all",
  intra-op threads = the benchmark's threads;
* Hugging Face peers of the same size (``CLIPVisionModel`` QuickGELU, ``BertModel``; seeded random weights);
* fp32 and bf16 GEMM ceilings (``torch.matmul`` on the towers' own MLP shapes and a square 2048 GEMM).

"Of ceiling" divides the FLOPs the code executes (``benchmarks/flops.py``: the last block of each tower computes
one row) per second by the best GEMM rate of the same precision measured in the same rounds. After the rounds, one
profiled call per tower (fp32 and bf16) shows where the time goes. Also: the front ends
(``benchmarks/frontends.py``), the conversion's time and peak RSS beside ``cp`` and ``sha256sum`` of the same file,
and the GPU section (``benchmarks/gpu.py`` in a subprocess when CUDA is available; otherwise the report says it was
not measured).

Writes BENCHMARKS.md holding only what this run measured, sealed (``benchmarks/stamp.py``: the suite fails if it is
edited afterwards), and a chart (``--png``). Every framework runs with ``--threads`` threads: OMP_NUM_THREADS is set
before any OpenMP runtime loads (the script restarts itself once to set it) and passed to the worker, and
``torch.set_num_threads`` / ONNX Runtime's intra-op threads get the same number. ``--smoke`` runs the whole
report path on the tiny test config in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchlib import (Case, cosine_min, fmt, gemm_case, hf_peers, log, paired_ratio, run_rounds,  # noqa: E402
                      share_of_ceiling)
from flops import image_flops, text_flops  # noqa: E402
from stamp import seal  # noqa: E402

from ernievil2torch.config import ErnieViL2Config, base_config, tiny_config  # noqa: E402
from ernievil2torch.modeling import ErnieViL2  # noqa: E402
from ernievil2torch.verify.synthetic import layout_state, random_state  # noqa: E402

NO_GPU = "not measured: no GPU lent to this task"
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
TARGETS = {"image_fp32_ceiling": 85.0, "text_fp32_ceiling": 90.0, "bf16_ceiling": 70.0, "bf16_cosine": 0.999,
           "conversion_time": 2.0, "conversion_rss": 1.3, "embed_text_lengths": 2.0, "embed_image_share": 85.0}


# ---------------------------------------------------------------------------------------------------------------
# Arguments and the shared setup
# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every framework")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds (median reported)")
    ap.add_argument("--image-batch", type=int, default=8)
    ap.add_argument("--text-batch", type=int, default=32)
    ap.add_argument("--text-length", type=int, default=48, help="tokens per text (no padding)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny config, batch 2 images / 4 texts x 16 tokens, 1 round; skips Paddle, PaddleNLP, "
                         "compile, front ends and conversion (proves the report path, measures nothing useful)")
    ap.add_argument("--embed-rounds", type=int, default=2, help="rounds of the embed-command cases (best reported)")
    for name in ("paddle", "paddlenlp", "hf", "onnx", "compile", "profile", "conversion", "frontends", "gpu",
                 "embed"):
        ap.add_argument(f"--no-{name}", action="store_true", help=f"skip the {name} cases")
    ap.add_argument("--paddlenlp-python", default=os.environ.get(
        "ERNIEVIL2_ORACLE_PYTHON", str(ROOT / ".venv-paddlenlp" / "bin" / "python")))
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--png", default=str(ROOT / "benchmarks" / "cpu_throughput.png"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.image_batch, args.text_batch, args.text_length = 1, 2, 4, 16
        args.no_paddle = args.no_paddlenlp = args.no_compile = args.no_conversion = args.no_frontends = True
        args.no_embed = True
    return args


@dataclass
class Bench:
    """The config, weights, inputs and our fp32 model (with its features, the accuracy reference) of one run."""

    args: argparse.Namespace
    cfg: ErnieViL2Config
    state: Dict[str, np.ndarray]
    pixels: torch.Tensor
    ids: torch.Tensor
    fp32: ErnieViL2
    ref_image: torch.Tensor = None
    ref_text: torch.Tensor = None

    @property
    def image_flop(self) -> int:
        return image_flops(self.cfg.vision)

    @property
    def text_flop(self) -> int:
        return text_flops(self.cfg.text, self.ids.shape[1])

    def image_case(self, name: str, fn: Callable[[], object], precision: str) -> Case:
        return Case(name, "image", fn, self.pixels.shape[0], self.image_flop, precision)

    def text_case(self, name: str, fn: Callable[[], object], precision: str) -> Case:
        return Case(name, "text", fn, self.ids.shape[0], self.text_flop, precision)


@dataclass
class Section:
    """What one case group contributes: cases, accuracy rows, notes, versions, and clean-ups after the rounds."""

    cases: List[Case] = field(default_factory=list)
    accuracy: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    versions: Dict[str, str] = field(default_factory=dict)
    cleanup: List[Callable[[], None]] = field(default_factory=list)


def our_model(cfg: ErnieViL2Config, state: Dict[str, np.ndarray], dtype: torch.dtype = torch.float32) -> ErnieViL2:
    model = ErnieViL2(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model.eval().to(dtype=dtype)


def make_bench(args: argparse.Namespace) -> Bench:
    """Random weights (seed 0) and seeded inputs: pixels in the normalised range, ids without padding."""
    cfg = tiny_config() if args.smoke else base_config()
    state = random_state(cfg, seed=0)
    rng = np.random.default_rng(0)
    v = cfg.vision
    pixels = rng.uniform(-2.1, 2.6, (args.image_batch, v.num_channels, v.image_size, v.image_size))
    ids = rng.integers(4, cfg.text.vocab_size, (args.text_batch, args.text_length))
    ids[:, 0], ids[:, -1] = 1, 2
    bench = Bench(args, cfg, state, torch.from_numpy(pixels.astype(np.float32)), torch.from_numpy(ids),
                  our_model(cfg, state))
    with torch.inference_mode():
        bench.ref_image, bench.ref_text = bench.fp32.encode_image(bench.pixels), bench.fp32.encode_text(bench.ids)
    return bench


def cosine_row(label: str, bench: Bench, image: torch.Tensor, text: torch.Tensor) -> Tuple[str, str]:
    return (label, f"image min cosine {cosine_min(image, bench.ref_image):.6f}, "
                   f"text min cosine {cosine_min(text, bench.ref_text):.6f}")


def max_abs_row(label: str, bench: Bench, image: np.ndarray, text: np.ndarray) -> Tuple[str, str]:
    return (label, f"image max abs {float(np.abs(image - bench.ref_image.numpy()).max()):.2e}, "
                   f"text max abs {float(np.abs(text - bench.ref_text.numpy()).max()):.2e}")


def inductor_problem() -> str:
    """Why ``torch.compile`` cannot run here ("" when it can)."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
        return ""
    except Exception as exc:  # noqa: BLE001 - no C++ compiler, broken toolchain, ...
        return f"{type(exc).__name__}: {exc}"[:200]


# ---------------------------------------------------------------------------------------------------------------
# Case groups
# ---------------------------------------------------------------------------------------------------------------
def ours_group(bench: Bench) -> Section:
    """Our model: fp32 eager, bf16 eager, bf16 + compile (bf16 only where oneDNN supports it)."""
    out = Section()
    fp32, pixels, ids = bench.fp32, bench.pixels, bench.ids
    out.cases += [bench.image_case("ours fp32", lambda: fp32.encode_image(pixels), "fp32"),
                  bench.text_case("ours fp32", lambda: fp32.encode_text(ids), "fp32")]
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        out.notes.append("bf16 not measured: oneDNN reports no bf16 support on this CPU")
        return out
    variants = [("ours bf16", our_model(bench.cfg, bench.state, torch.bfloat16))]
    problem = "skipped (--no-compile)" if bench.args.no_compile else inductor_problem()
    if problem:
        out.notes.append(f"torch.compile not measured: {problem}")
    else:
        compiled = our_model(bench.cfg, bench.state, torch.bfloat16).compile(options={"freezing": True})
        t0 = time.perf_counter()
        compiled.encode_image(pixels), compiled.encode_text(ids)
        out.notes.append(f"torch.compile (inductor, freezing) of both bf16 towers took "
                         f"{time.perf_counter() - t0:.0f} s on the first call")
        variants.append(("ours bf16 + compile", compiled))
    for name, model in variants:
        out.accuracy.append(cosine_row(f"{name} vs ours fp32", bench, model.encode_image(pixels),
                                       model.encode_text(ids)))
        out.cases += [bench.image_case(name, lambda m=model: m.encode_image(pixels), "bf16"),
                      bench.text_case(name, lambda m=model: m.encode_text(ids), "bf16")]
    return out


def paddle_reference_group(bench: Bench) -> Section:
    """The project's Paddle reference of the official architecture, on the same weights (official layout)."""
    out = Section()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import paddle
            from ernievil2torch.verify.paddle_reference import PaddleErnieViL2
    except ImportError as exc:
        out.notes.append(f"Paddle reference not measured: {exc}")
        return out
    paddle.set_device("cpu")
    ref = PaddleErnieViL2.from_official_state(layout_state(bench.cfg, "official", seed=0))
    p_pix, p_ids = paddle.to_tensor(bench.pixels.numpy()), paddle.to_tensor(bench.ids.numpy())

    def image() -> np.ndarray:
        with paddle.no_grad():
            return ref.encode_image(p_pix).numpy()

    def text() -> np.ndarray:
        with paddle.no_grad():
            return ref.encode_text(p_ids).numpy()
    out.accuracy.append(max_abs_row("Paddle reference vs ours fp32", bench, image(), text()))
    out.cases += [bench.image_case("Paddle reference", image, "fp32"),
                  bench.text_case("Paddle reference", text, "fp32")]
    out.versions["paddlepaddle"] = paddle.__version__
    return out


class PaddleNLPWorker:
    """``benchmarks/paddlenlp_worker.py`` under the PaddleNLP interpreter: one stdin line per timed call."""

    def __init__(self, python: str, workdir: Path, bench: Bench) -> None:
        from ernievil2torch.conversion.layouts import LAYOUTS, to_layout

        np.savez(workdir / "state.npz", **to_layout(bench.state, LAYOUTS["paddlenlp"], bench.cfg))
        (workdir / "config.json").write_text(json.dumps(bench.cfg.to_dict()), encoding="utf-8")
        np.savez(workdir / "inputs.npz", pixel_values=bench.pixels.numpy(), input_ids=bench.ids.numpy())
        env = dict(os.environ, OMP_NUM_THREADS=str(bench.args.threads), MKL_NUM_THREADS=str(bench.args.threads))
        self.stderr = open(workdir / "worker.log", "w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [python, str(ROOT / "benchmarks" / "paddlenlp_worker.py"), "--params", str(workdir / "state.npz"),
             "--config", str(workdir / "config.json"), "--inputs", str(workdir / "inputs.npz"),
             "--out", str(workdir / "features.npz")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1, env=env)
        self._expect("ready")
        with np.load(workdir / "features.npz") as z:
            self.image_features, self.text_features = z["image_features"], z["text_features"]

    def _expect(self, word: str) -> None:
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.stderr.seek(0)
            raise RuntimeError(f"PaddleNLP worker said {line!r}, expected {word!r}: {self.stderr.read()[-800:]}")

    def call(self, tower: str) -> None:
        self.proc.stdin.write(tower + "\n")
        self._expect("done")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.stderr.close()


def paddlenlp_version(python: str) -> str:
    """"paddlenlp X, paddlepaddle Y" of the worker's interpreter ("" when it cannot import them)."""
    code = "import paddlenlp, paddle; print(f'paddlenlp {paddlenlp.__version__}, paddlepaddle {paddle.__version__}')"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""


def paddlenlp_group(bench: Bench, workdir: Path) -> Section:
    """PaddleNLP 2.8.1's ``ErnieViLModel`` on the same weights (PaddleNLP layout, official text epsilon)."""
    out = Section()
    python = bench.args.paddlenlp_python
    versions = paddlenlp_version(python) if Path(python).exists() else ""
    if not versions:
        out.notes.append(f"PaddleNLP not measured: no working PaddleNLP interpreter at {python}")
        return out
    worker = PaddleNLPWorker(python, workdir, bench)
    out.cleanup.append(worker.close)
    out.accuracy.append(max_abs_row("PaddleNLP ErnieViLModel vs ours fp32", bench, worker.image_features,
                                    worker.text_features))
    out.cases += [bench.image_case("PaddleNLP ErnieViLModel", lambda: worker.call("image"), "fp32"),
                  bench.text_case("PaddleNLP ErnieViLModel", lambda: worker.call("text"), "fp32")]
    out.versions["PaddleNLP worker:"] = versions
    return out


def onnxruntime_group(bench: Bench, workdir: Path) -> Section:
    """ONNX Runtime on our own ONNX export, fp32, graph optimisation "all", intra-op threads = ``--threads``."""
    out = Section()
    try:
        import onnxruntime as ort
    except ImportError as exc:
        out.notes.append(f"ONNX Runtime not measured: {exc}")
        return out
    from ernievil2torch.export.onnx import export_onnx

    bench.fp32.save_pretrained(workdir / "model")
    export_onnx(str(workdir / "model"), str(workdir / "onnx"), check=False)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = bench.args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL

    def session(name: str):
        return ort.InferenceSession(str(workdir / "onnx" / name), options, providers=["CPUExecutionProvider"])
    image_session, text_session = session("image_encoder.onnx"), session("text_encoder.onnx")
    pixels = {"pixel_values": bench.pixels.numpy()}
    text = {"input_ids": bench.ids.numpy(), "attention_mask": np.ones_like(bench.ids.numpy())}

    def image_call() -> np.ndarray:
        return image_session.run(None, pixels)[0]

    def text_call() -> np.ndarray:
        return text_session.run(None, text)[0]
    out.accuracy.append(max_abs_row("ONNX Runtime (our export) vs ours fp32", bench, image_call(), text_call()))
    out.cases += [bench.image_case("ONNX Runtime (our export)", image_call, "fp32"),
                  bench.text_case("ONNX Runtime (our export)", text_call, "fp32")]
    out.versions["onnxruntime"] = ort.__version__
    return out


def hf_group(bench: Bench) -> Section:
    """Hugging Face peers of the towers' sizes, fp32 (their own seeded random weights: another architecture)."""
    out = Section()
    try:
        import transformers

        vision, text = hf_peers(bench.cfg, torch.float32)
    except ImportError as exc:
        out.notes.append(f"Hugging Face peers not measured: {exc}")
        return out
    pixels, ids = bench.pixels, bench.ids
    mask = torch.ones_like(ids)
    out.cases += [bench.image_case("HF CLIPVisionModel", lambda: vision(pixel_values=pixels), "fp32"),
                  bench.text_case("HF BertModel", lambda: text(input_ids=ids, attention_mask=mask), "fp32")]
    out.versions["transformers"] = transformers.__version__
    return out


def gemm_group(bench: Bench) -> Section:
    """fp32 and bf16 GEMM ceilings: each tower's MLP GEMM at the benchmark batch and a square GEMM."""
    out = Section()
    v, t = bench.cfg.vision, bench.cfg.text
    square = 256 if bench.args.smoke else 2048
    shapes = [(bench.pixels.shape[0] * v.num_positions, v.hidden_size, v.intermediate_size),
              (bench.ids.numel(), t.hidden_size, t.intermediate_size), (square, square, square)]
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    for dtype, label in [(torch.float32, "fp32")] + ([(torch.bfloat16, "bf16")] if bf16 else []):
        out.cases += [gemm_case(m, k, n, dtype, label) for m, k, n in shapes]
    return out


def profile_towers(bench: Bench, top: int = 6) -> Dict[Tuple[str, str], List[Tuple[str, float]]]:
    """One profiled call per tower in fp32 and (where supported) bf16 eager: the ``top`` operators by self CPU
    time, as shares of the call. {(tower, precision): [(operator, share %)]}."""
    from torch.profiler import ProfilerActivity, profile

    models = [("fp32", bench.fp32)]
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        models.append(("bf16", our_model(bench.cfg, bench.state, torch.bfloat16)))
    shares = {}
    for precision, model in models:
        for tower, call in (("image", lambda m=model: m.encode_image(bench.pixels)),
                            ("text", lambda m=model: m.encode_text(bench.ids))):
            with torch.inference_mode():
                call()  # warm (oneDNN primitives)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    call()
            events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
            total = sum(e.self_cpu_time_total for e in events)
            events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
            shares[(tower, precision)] = [(e.key, 100.0 * e.self_cpu_time_total / total) for e in events[:top]]
    return shares


# ---------------------------------------------------------------------------------------------------------------
# GPU, front ends, conversion (subprocesses)
# ---------------------------------------------------------------------------------------------------------------
def gpu_section(args: argparse.Namespace) -> str:
    """The markdown of ``benchmarks/gpu.py`` run here, or why there is none."""
    if args.no_gpu:
        return "not measured: --no-gpu"
    if not torch.cuda.is_available():
        return NO_GPU
    with tempfile.TemporaryDirectory(prefix="ernievil2-gpu-") as tmp:
        record = Path(tmp) / "gpu.md"
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--markdown", str(record)],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            return f"failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
        return record.read_text(encoding="utf-8").strip()


def frontends_section(args: argparse.Namespace) -> Tuple[str, str]:
    """(command, markdown) of ``benchmarks/frontends.py`` at the same threads."""
    if args.no_frontends:
        return "", "not measured: --no-frontends"
    extra = ["--captions", "100000", "--images", "200"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "frontends.py"), *extra], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ))
    if proc.returncode:
        return "", f"failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
    return " ".join(["python benchmarks/frontends.py", *extra]), proc.stdout.strip()


def time_v(cmd: List[str]) -> Tuple[float, float]:
    """(elapsed s, peak RSS MiB) of ``cmd`` under ``/usr/bin/time -v``."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-600:]}")
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds, rss


def conversion_section(args: argparse.Namespace) -> Optional[dict]:
    """Alternating runs of ``cp``, ``sha256sum`` and ``convert.py`` on a synthetic full-size checkpoint."""
    if args.no_conversion or not Path("/usr/bin/time").exists():
        return None
    from ernievil2torch.verify.synthetic import write_synthetic_pdparams

    with tempfile.TemporaryDirectory(prefix="ernievil2-bench-") as tmp:
        src = Path(tmp) / "full.pdparams"
        write_synthetic_pdparams(src, base_config(), "official", seed=0)
        rows = []
        for r in range(2):
            for name, cmd in (("cp", ["cp", str(src), str(Path(tmp) / f"copy{r}.pdparams")]),
                              ("sha256sum", ["sha256sum", str(src)]),
                              ("convert.py", [sys.executable, "convert.py", "--src", str(src),
                                              "--dst", str(Path(tmp) / f"out{r}")])):
                rows.append((name, *time_v(cmd)))
        return {"size_mib": src.stat().st_size / 2**20, "rows": rows}


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def machine_info(threads: int) -> Dict[str, str]:
    """CPU model, logical CPUs, the ISA flags that matter for fp32/bf16 GEMMs, OS."""
    info = {"cpu": platform.processor() or "unknown", "cpus": str(os.cpu_count()), "flags": ""}
    try:
        fields = dict(line.split(":", 1) for line in
                      subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", info["cpu"]).strip()
        info["cpus"] = fields.get("CPU(s)", info["cpus"]).strip()
        present = set(fields.get("Flags", "").split())
        info["flags"] = " ".join(f for f in ISA_FLAGS if f in present)
    except OSError:
        pass
    info.update(threads=str(threads), os=platform.platform())
    return info


def case_of(cases: List[Case], group: str, name: str) -> Optional[Case]:
    return next((c for c in cases if c.group == group and c.name == name), None)


def ratio_cell(case: Case, base: Optional[Case]) -> str:
    return f"{fmt(paired_ratio(case, base))}x" if base else "n/a"


def share_cell(case: Case, cases: List[Case], precision: str) -> str:
    share = share_of_ceiling(case, cases, precision)
    return f"{share:.0f} %" if share else "n/a"


def throughput_lines(cases: List[Case]) -> List[str]:
    """The CPU throughput table; 'x' and 'of ceiling' columns are medians of per-round ratios."""
    lines = ["| tower | implementation | precision | items/s [min-max] | x Paddle reference | x PaddleNLP | "
             "executed GFLOP/s | of fp32 GEMM ceiling | of bf16 GEMM ceiling |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group in ("image", "text"):
        paddle, paddlenlp = case_of(cases, group, "Paddle reference"), case_of(cases, group, "PaddleNLP ErnieViLModel")
        for c in (c for c in cases if c.group == group):
            lo, hi = c.spread
            lines.append(f"| {group} | {c.name} | {c.precision} | {fmt(c.rate)} [{fmt(lo)}-{fmt(hi)}] | "
                         f"{ratio_cell(c, paddle)} | {ratio_cell(c, paddlenlp)} | {fmt(c.gflops, 1)} | "
                         f"{share_cell(c, cases, 'fp32')} | {share_cell(c, cases, 'bf16')} |")
    return lines


def min_cosines(accuracy: List[Tuple[str, str]], label: str) -> Dict[str, float]:
    """{tower: min cosine} from the accuracy row named ``label``."""
    row = dict(accuracy).get(label, "")
    return {tower: float(value) for tower, value in re.findall(r"(image|text) min cosine ([0-9.]+)", row)}


def verdict(ok: Optional[bool]) -> str:
    return "not measured" if ok is None else "met" if ok else "MISSED"


def embed_section(args: argparse.Namespace) -> Optional[dict]:
    """``benchmarks/embed_lengths.py``'s two cases: the whole ``ernievil2 embed --kind text`` command on realistic vs
    46-character captions, and embed's image loop (DataLoader workers) vs the model alone, bf16."""
    if args.no_embed:
        return None
    import embed_lengths

    with tempfile.TemporaryDirectory(prefix="ernievil2-embed-") as tmp:
        work = Path(tmp)
        model_dir = embed_lengths.make_model_dir(work / "model")
        text_lines, text_ratio = embed_lengths.text_case(work, model_dir, 1000, args.embed_rounds, args.threads, 64)
        image_lines, image_share = embed_lengths.image_case(work, model_dir, 128, args.embed_rounds, args.threads,
                                                            32, 2)
    command = f"python benchmarks/embed_lengths.py --rounds {args.embed_rounds} --threads {args.threads}"
    return {"lines": [line.replace(str(ROOT), ".") for line in text_lines + image_lines], "command": command,
            "text_ratio": text_ratio, "image_share": 100 * image_share}


def embed_lines(embed: Optional[dict]) -> List[str]:
    if not embed:
        return ["not measured."]
    return [f"The cases of `{embed['command']}` (full-size synthetic model, random weights):", "", "```",
            *embed["lines"], "```"]


def target_rows(cases: List[Case], accuracy: List[Tuple[str, str]], conversion: Optional[dict],
                embed: Optional[dict] = None) -> List[str]:
    """Every target of issue 11 evaluated on this run's figures: met, MISSED (never rounded up) or not measured."""
    rows = ["| target | figure | verdict |", "|---|---|---|"]
    for group in ("image", "text"):
        ours = case_of(cases, group, "ours fp32")
        for peer in ("ONNX Runtime (our export)", "HF " + ("CLIPVisionModel" if group == "image" else "BertModel")):
            theirs = case_of(cases, group, peer)
            x = paired_ratio(ours, theirs) if theirs else None
            rows.append(f"| {group} fp32 faster than {peer} | {'n/a' if x is None else f'{x:.2f}x'} | "
                        f"{verdict(None if x is None else x > 1)} |")
    for group in ("image", "text"):
        goal = TARGETS[f"{group}_fp32_ceiling"]
        share = share_of_ceiling(case_of(cases, group, "ours fp32"), cases, "fp32")
        rows.append(f"| {group} fp32 >= {goal:.0f} % of fp32 GEMM ceiling | {share:.1f} % | {verdict(share >= goal)} |")
    for group in ("image", "text"):
        bf16 = [c for c in cases if c.group == group and c.name.startswith("ours") and c.precision == "bf16"]
        goal, cos_goal = TARGETS["bf16_ceiling"], TARGETS["bf16_cosine"]
        if not bf16 or not any(c.group == "gemm" and c.precision == "bf16" for c in cases):
            rows.append(f"| {group} bf16 >= {goal:.0f} % of bf16 GEMM ceiling, cosine >= {cos_goal} | n/a | "
                        "not measured |")
            continue
        best = max(bf16, key=lambda c: c.rate)
        share = share_of_ceiling(best, cases, "bf16")
        cosine = min_cosines(accuracy, f"{best.name} vs ours fp32")[group]
        rows.append(f"| {group} bf16 >= {goal:.0f} % of bf16 GEMM ceiling (best: {best.name}) | {share:.1f} % | "
                    f"{verdict(share >= goal)} |")
        rows.append(f"| {group} bf16 cosine >= {cos_goal} to fp32 ({best.name}) | {cosine:.6f} | "
                    f"{verdict(cosine >= cos_goal)} |")
    if conversion:
        time_ratio, rss_ratio = conversion_ratios(conversion)
        rows.append(f"| conversion time <= {TARGETS['conversion_time']:g}x sha256sum | {time_ratio:.2f}x | "
                    f"{verdict(time_ratio <= TARGETS['conversion_time'])} |")
        rows.append(f"| conversion peak RSS <= {TARGETS['conversion_rss']:g}x checkpoint | {rss_ratio:.2f}x | "
                    f"{verdict(rss_ratio <= TARGETS['conversion_rss'])} |")
    if embed:
        goal = TARGETS["embed_text_lengths"]
        rows.append(f"| `embed --kind text`: realistic captions >= {goal:g}x the texts/s of 46-character ones | "
                    f"{embed['text_ratio']:.2f}x | {verdict(embed['text_ratio'] >= goal)} |")
        goal = TARGETS["embed_image_share"]
        rows.append(f"| `embed --kind image` loop >= {goal:.0f} % of model-only images/s (bf16) | "
                    f"{embed['image_share']:.1f} % | {verdict(embed['image_share'] >= goal)} |")
    return rows


def conversion_ratios(conversion: dict) -> Tuple[float, float]:
    """(median convert.py time / median sha256sum time, worst convert.py peak RSS / checkpoint size)."""
    rows = conversion["rows"]
    seconds = {name: float(np.median([s for n, s, _ in rows if n == name])) for name in ("sha256sum", "convert.py")}
    rss = max(r for n, _, r in rows if n == "convert.py")
    return seconds["convert.py"] / seconds["sha256sum"], rss / conversion["size_mib"]


def conversion_lines(conversion: Optional[dict]) -> List[str]:
    if not conversion:
        return ["not measured."]
    lines = [f"Synthetic full-size official-layout checkpoint, {fmt(conversion['size_mib'], 0)} MiB; "
             "`/usr/bin/time -v`, alternating runs:", "",
             "| command | wall s | peak RSS MiB | RSS / checkpoint size |", "|---|---|---|---|"]
    lines += [f"| {name} | {fmt(seconds)} | {fmt(rss, 0)} | {fmt(rss / conversion['size_mib'])} |"
              for name, seconds, rss in conversion["rows"]]
    return lines


def gemm_lines(cases: List[Case]) -> List[str]:
    lines = ["| GEMM | GFLOP/s [min-max] |", "|---|---|"]
    for c in (c for c in cases if c.group == "gemm"):
        lo, hi = c.spread
        lines.append(f"| {c.name} | {fmt(c.gflops, 1)} [{fmt(lo * c.flop / 1e9, 1)}-{fmt(hi * c.flop / 1e9, 1)}] |")
    return lines


def profile_lines(shares: Dict[Tuple[str, str], List[Tuple[str, float]]]) -> List[str]:
    if not shares:
        return ["not measured."]
    lines = ["One profiled call per tower and precision (ours, eager; `torch.profiler`, self CPU time), the largest "
             "operators (`aten::addmm` is the Linear layers' GEMMs, bias included):", "",
             "| tower | precision | operator | share of the call |", "|---|---|---|---|"]
    lines += [f"| {tower} | {precision} | `{name}` | {share:.1f} % |" for (tower, precision), rows in shares.items()
              for name, share in rows]
    return lines


def header_lines(bench: Bench, machine: Dict[str, str], versions: Dict[str, str], command: str) -> List[str]:
    args, cfg = bench.args, bench.cfg
    version_text = ", ".join(f"{k} {v}" for k, v in versions.items())
    size = "tiny test config (--smoke)" if args.smoke else "random full-size weights"
    return [
        "# Benchmarks", "",
        "Generated by `benchmarks/run.py`; every number below comes from one run of:", "",
        f"    {command}", "",
        f"- machine: {machine['cpu']}, {machine['cpus']} logical CPUs, ISA flags: {machine['flags'] or 'none listed'}; "
        f"{machine['os']}",
        f"- threads: {machine['threads']} for every framework (torch.set_num_threads, OMP_NUM_THREADS for Paddle "
        f"and the PaddleNLP worker, ONNX Runtime intra-op threads)",
        f"- versions: {version_text}",
        f"- method: {size} (the same values in ours, the Paddle reference, PaddleNLP and the ONNX export; HF peers "
        f"have their own), image batch {bench.pixels.shape[0]} x {cfg.vision.num_channels} x {cfg.vision.image_size} "
        f"x {cfg.vision.image_size}, text batch {bench.ids.shape[0]} x {bench.ids.shape[1]} tokens (no padding); "
        f"{args.rounds} alternating rounds (each case once per round, order rotated), median reported, [min-max] "
        f"over rounds; ratios between cases (x, of ceiling, faster than) are medians of per-round ratios; warm-up "
        f"calls excluded.",
        f"- executed FLOPs (`benchmarks/flops.py`, matrix products, the last block computing one row): "
        f"{bench.image_flop / 1e9:.2f} GFLOP per image, {bench.text_flop / 1e9:.2f} GFLOP per text; 'of ceiling' = "
        f"executed GFLOP/s / the best torch.matmul GFLOP/s of that precision in the same round.",
    ]


def render(bench: Bench, section: Section, extras: dict, machine: Dict[str, str], command: str) -> str:
    """The whole report (unsealed) from what this run measured."""
    lines = header_lines(bench, machine, section.versions, command)
    lines += ["", "## CPU throughput", ""] + throughput_lines(section.cases)
    lines += ["", "### Targets on this run", ""] + target_rows(section.cases, section.accuracy,
                                                                extras["conversion"], extras.get("embed"))
    lines += ["", "### GEMM ceilings (same rounds)", ""] + gemm_lines(section.cases)
    lines += ["", "### Accuracy of the measured paths", "", "| comparison | result |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in section.accuracy]
    lines += ["", "### Where the time goes", ""] + profile_lines(extras["profile"])
    lines += ["", "## GPU", "", extras["gpu"]]
    frontends_cmd, frontends = extras["frontends"]
    lines += ["", "## Front ends", ""] + ([f"`{frontends_cmd}`, same threads:", ""] if frontends_cmd else [])
    lines += [frontends, "", "## Conversion", ""] + conversion_lines(extras["conversion"])
    lines += ["", "## The embed command", ""] + embed_lines(extras.get("embed"))
    if section.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in section.notes]
    return "\n".join(lines) + "\n"


def chart(path: str, cases: List[Case], threads: int) -> None:
    """Horizontal bars of items/s per tower (ours blue, Paddle/PaddleNLP red, peers grey)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, group in zip(axes, ("image", "text")):
        sel = [c for c in cases if c.group == group][::-1]
        colors = ["#1f77b4" if c.name.startswith("ours") else "#d62728" if "Paddle" in c.name else "#7f7f7f"
                  for c in sel]
        ax.barh([f"{c.name} {c.precision}" for c in sel], [c.rate for c in sel], color=colors)
        for y, c in enumerate(sel):
            ax.text(c.rate, y, f" {c.rate:.1f}", va="center", fontsize=8)
        ax.set_xlabel(f"{group}s/s")
        ax.set_title(f"{group} tower, CPU, {threads} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure(bench: Bench, workdir: Path) -> Section:
    """Every case group, then the alternating rounds; returns everything merged."""
    args = bench.args
    groups: List[Callable[[], Section]] = [lambda: ours_group(bench)]
    if not args.no_paddle:
        groups.append(lambda: paddle_reference_group(bench))
    if not args.no_paddlenlp:
        groups.append(lambda: paddlenlp_group(bench, workdir))
    if not args.no_onnx:
        groups.append(lambda: onnxruntime_group(bench, workdir))
    if not args.no_hf:
        groups.append(lambda: hf_group(bench))
    groups.append(lambda: gemm_group(bench))
    merged = Section(versions={"python": platform.python_version(), "torch": torch.__version__,
                               "numpy": np.__version__})
    with torch.inference_mode():
        for make in groups:
            part = make()
            for name in ("cases", "accuracy", "notes", "cleanup"):
                getattr(merged, name).extend(getattr(part, name))
            merged.versions.update(part.versions)
        try:
            run_rounds(merged.cases, args.rounds)
        finally:
            for close in merged.cleanup:
                close()
    return merged


def pin_threads(threads: int, argv: Optional[Sequence[str]]) -> None:
    """Every framework on ``threads`` threads. OpenMP runtimes read OMP_NUM_THREADS when they load, and torch's has
    loaded with this module: run as a script with another value, the process restarts itself with it set."""
    wanted = str(threads)
    if argv is None and os.environ.get("OMP_NUM_THREADS") != wanted:
        env = dict(os.environ, OMP_NUM_THREADS=wanted, MKL_NUM_THREADS=wanted)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = wanted
    torch.set_num_threads(threads)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads, argv)
    shown = [os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)] if argv is None else ["benchmarks/run.py"]
    command = "python " + " ".join(shlex.quote(a) for a in shown + list(sys.argv[1:] if argv is None else argv))
    log(f"threads={args.threads}, rounds={args.rounds}, smoke={args.smoke}")
    bench = make_bench(args)
    with tempfile.TemporaryDirectory(prefix="ernievil2-run-") as tmp:
        section = measure(bench, Path(tmp))
    extras = {"profile": {} if args.no_profile else profile_towers(bench), "gpu": gpu_section(args),
              "frontends": frontends_section(args), "conversion": conversion_section(args),
              "embed": embed_section(args)}
    text = render(bench, section, extras, machine_info(args.threads), command)
    Path(args.out).write_text(seal(text, "benchmarks/run.py", command), encoding="utf-8")
    log(f"wrote {args.out}")
    chart(args.png, section.cases, args.threads)


if __name__ == "__main__":
    main()
