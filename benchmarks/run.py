"""One-command CPU benchmark of the ERNIE-ViL 2.0 port: ``python benchmarks/run.py [--threads N] [--rounds R]``.

Measures, in one process and in alternating rounds (``benchlib.run_rounds``), on the same inputs and — for every
implementation of this architecture — the same random full-size weights:

* ours, with this machine's kernel choice (``ernievil2torch.modeling.kernel_choice``): fp32 eager, bf16 eager and
  bf16 + ``torch.compile`` (inductor, freezing) when oneDNN supports bf16; without native bf16, bf16 eager where
  the choice runs its GEMMs in fp32;
* the project's Paddle reference (``ernievil2torch.verify.paddle_reference``), in process;
* PaddleNLP 2.8.1's ``ErnieViLModel`` (Baidu's code) in a worker process under the PaddleNLP interpreter
  (``benchmarks/paddlenlp_worker.py``), its text LayerNorm epsilon set to the official 1e-5;
* OpenVINO (CPU plugin) running our own OpenVINO export, with its ``f32`` hint and with the CPU's default hint;
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
edited afterwards), a chart (``--png``) and the run's record (``--record``, every call time); ``--from-record``
renders the report and chart again from a record without measuring. Every framework runs with ``--threads``
threads (``environment.pin_threads``; the PaddleNLP worker and ONNX Runtime get the same number). ``--smoke`` runs
the whole report path on the tiny test config in seconds.

This file parses the arguments and holds one function per case group; the other jobs have their own files:
``benchlib.py`` (alternating rounds, GEMM ceilings, peers), ``cases.py`` (timed cases and their ratios),
``subprocess_runs.py`` (the sections measured beside the rounds), ``paddlenlp_client.py`` (the PaddleNLP worker's
protocol), ``report.py`` (the markdown, measuring nothing), ``environment.py`` (threads, CPU support, machine
description), ``chart.py`` (the PNG).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchlib import cosine_min, gemm_case, hf_peers, log, run_rounds
from cases import Case
from chart import chart
from environment import cpu_bf16_supported, inductor_problem, machine_info, pin_threads
from flops import image_flops, text_flops
from paddlenlp_client import PaddleNLPWorker, paddlenlp_version
from report import Measured, Profile, RunFacts, from_record, quoted_companions, render, to_record
from repo import ROOT
from stamp import seal
from subprocess_runs import conversion_section, embed_section, frontends_section, gpu_section

from ernievil2torch.config import ErnieViL2Config, base_config, tiny_config
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.modeling.kernel_choice import resolve_kernels
from ernievil2torch.verify.synthetic import layout_state, random_state


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
    for name in ("paddle", "paddlenlp", "hf", "onnx", "openvino", "compile", "profile", "conversion", "frontends", "gpu",
                 "embed"):
        ap.add_argument(f"--no-{name}", action="store_true", help=f"skip the {name} cases")
    ap.add_argument("--paddlenlp-python", default=os.environ.get(
        "ERNIEVIL2_ORACLE_PYTHON", str(ROOT / ".venv-paddlenlp" / "bin" / "python")))
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--png", default=str(ROOT / "benchmarks" / "cpu_throughput.png"))
    ap.add_argument("--record", default=str(ROOT / "benchmarks" / "cpu_run.json"),
                    help="the run's record (every call time): written after measuring, read by --from-record")
    ap.add_argument("--from-record", action="store_true",
                    help="measure nothing: render --out and --png again from --record")
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
    """Ours as a user's loading gives it: eval mode, this machine's kernel choice (``resolve_kernels``)."""
    model = ErnieViL2(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model.eval().to(dtype=dtype).use_kernels(resolve_kernels())


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



# ---------------------------------------------------------------------------------------------------------------
# Case groups
# ---------------------------------------------------------------------------------------------------------------
def ours_group(bench: Bench) -> Section:
    """Our model: fp32 eager, bf16 eager, bf16 + compile (bf16 only where oneDNN supports it)."""
    out = Section()
    fp32, pixels, ids = bench.fp32, bench.pixels, bench.ids
    out.cases += [bench.image_case("ours fp32", lambda: fp32.encode_image(pixels), "fp32"),
                  bench.text_case("ours fp32", lambda: fp32.encode_text(ids), "fp32")]
    kernels = resolve_kernels()
    out.notes.append(f"ours run this machine's kernel choice ({kernels.summary()}; "
                     "`ernievil2torch.modeling.kernel_choice`, details in benchmarks/kernels.md)")
    native = cpu_bf16_supported()
    if not native and kernels.bfloat16 == "reference":
        out.notes.append("bf16 not measured: oneDNN reports no bf16 support on this CPU")
        return out
    variants = [("ours bf16", our_model(bench.cfg, bench.state, torch.bfloat16))]
    if not native:
        out.notes.append("this CPU has no bf16 instructions: 'ours bf16' keeps bf16 weights and activations and "
                         "runs its GEMMs in fp32 (the measured kernel choice); no bf16 GEMM ceiling, no compile")
    problem = ("skipped (--no-compile)" if bench.args.no_compile else inductor_problem() if native
               else "no native bf16 on this CPU")
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


def paddlenlp_group(bench: Bench, workdir: Path) -> Section:
    """PaddleNLP 2.8.1's ``ErnieViLModel`` on the same weights (PaddleNLP layout, official text epsilon)."""
    out = Section()
    python = bench.args.paddlenlp_python
    versions = paddlenlp_version(python) if Path(python).exists() else ""
    if not versions:
        out.notes.append(f"PaddleNLP not measured: no working PaddleNLP interpreter at {python}")
        return out
    worker = PaddleNLPWorker(python, workdir, bench.cfg, bench.state, bench.pixels.numpy(), bench.ids.numpy(),
                             bench.args.threads)
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


def openvino_group(bench: Bench, workdir: Path) -> Section:
    """OpenVINO's CPU plugin on our own OpenVINO export (float32 IR), ``INFERENCE_NUM_THREADS`` = ``--threads``,
    compiled twice: with the ``f32`` precision hint, and with the CPU's default hint (bf16 on CPUs with bf16
    instructions, where OpenVINO picks it unasked; f32 elsewhere)."""
    out = Section()
    try:
        import openvino as ov
    except ImportError as exc:
        out.notes.append(f"OpenVINO not measured: {exc}")
        return out
    from ernievil2torch.export.openvino import default_precision, export_openvino

    if not (workdir / "model").is_dir():
        bench.fp32.save_pretrained(workdir / "model")
    export_openvino(str(workdir / "model"), str(workdir / "openvino"), check=False)
    core = ov.Core()
    default = default_precision(core)
    pixels, ids = bench.pixels.numpy(), bench.ids.numpy()
    mask = np.ones_like(ids)
    for hint, label in (("f32", "OpenVINO f32 hint (our export)"), (None, f"OpenVINO default hint ({default})")):
        config = {"INFERENCE_NUM_THREADS": bench.args.threads, "PERFORMANCE_HINT": "LATENCY"}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        image = core.compile_model(str(workdir / "openvino" / "image_encoder.xml"), "CPU", config)
        text = core.compile_model(str(workdir / "openvino" / "text_encoder.xml"), "CPU", config)
        image_request, text_request = image.create_infer_request(), text.create_infer_request()

        def image_call(request=image_request) -> np.ndarray:
            return request.infer([pixels])[0]

        def text_call(request=text_request) -> np.ndarray:
            return request.infer([ids, mask])[0]
        precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[hint or default]
        got_image, got_text = image_call().copy(), text_call().copy()
        out.accuracy.append(max_abs_row(f"{label} vs ours fp32", bench, got_image, got_text) if precision == "fp32"
                            else cosine_row(f"{label} vs ours fp32", bench, torch.from_numpy(got_image),
                                            torch.from_numpy(got_text)))
        out.cases += [bench.image_case(label, image_call, precision), bench.text_case(label, text_call, precision)]
    out.versions["openvino"] = ov.__version__.split("-")[0]
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
    for dtype, label in [(torch.float32, "fp32")] + ([(torch.bfloat16, "bf16")] if cpu_bf16_supported() else []):
        out.cases += [gemm_case(m, k, n, dtype, label) for m, k, n in shapes]
    return out


def profile_towers(bench: Bench, top: int = 6) -> Profile:
    """One profiled call per tower in fp32 and (where supported) bf16 eager: the ``top`` operators by self CPU
    time, as shares of the call. {(tower, precision): [(operator, share %)]}."""
    from torch.profiler import ProfilerActivity, profile

    models = [("fp32", bench.fp32)]
    if cpu_bf16_supported():
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
    if not args.no_openvino:
        groups.append(lambda: openvino_group(bench, workdir))
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


def facts_of(bench: Bench, versions: Dict[str, str], command: str) -> RunFacts:
    """What the report's header states about this run."""
    v = bench.cfg.vision
    return RunFacts(command=command, machine=machine_info(bench.args.threads), versions=versions,
                    smoke=bench.args.smoke, rounds=bench.args.rounds,
                    image_shape=(bench.pixels.shape[0], v.num_channels, v.image_size, v.image_size),
                    text_shape=(bench.ids.shape[0], bench.ids.shape[1]), image_flop=bench.image_flop,
                    text_flop=bench.text_flop)


def write_report(facts: RunFacts, measured: Measured, out: str, png: str) -> None:
    """The sealed report to ``out`` and the chart to ``png``."""
    text = render(facts, measured, quoted_companions(ROOT))
    Path(out).write_text(seal(text, "benchmarks/run.py", facts.command), encoding="utf-8")
    log(f"wrote {out}")
    chart(png, measured.cases, int(facts.machine["threads"]))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse ``argv`` (None: the command line, and pin threads by restarting if needed), measure, write the record
    to ``--record``, the sealed report to ``--out`` and the chart to ``--png``; with ``--from-record``, only render
    the report and chart again from the record."""
    args = parse_args(argv)
    if args.from_record:
        facts, measured = from_record(json.loads(Path(args.record).read_text(encoding="utf-8")))
        write_report(facts, measured, args.out, args.png)
        return
    pin_threads(args.threads, argv)
    shown = [os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)] if argv is None else ["benchmarks/run.py"]
    command = "python " + " ".join(shlex.quote(a) for a in shown + list(sys.argv[1:] if argv is None else argv))
    log(f"threads={args.threads}, rounds={args.rounds}, smoke={args.smoke}")
    bench = make_bench(args)
    with tempfile.TemporaryDirectory(prefix="ernievil2-run-") as tmp:
        section = measure(bench, Path(tmp))
    measured = Measured(cases=section.cases, accuracy=section.accuracy, notes=section.notes,
                        profile={} if args.no_profile else profile_towers(bench), gpu=gpu_section(args),
                        frontends=frontends_section(args), conversion=conversion_section(args),
                        embed=embed_section(args))
    facts = facts_of(bench, section.versions, command)
    Path(args.record).write_text(json.dumps(to_record(facts, measured), indent=1) + "\n", encoding="utf-8")
    log(f"wrote {args.record}")
    write_report(facts, measured, args.out, args.png)


if __name__ == "__main__":
    main()
