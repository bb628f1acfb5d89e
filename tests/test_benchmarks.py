"""The benchmark scripts work end to end (on the tiny config, in seconds) and count the FLOPs the code executes.

Nothing here times anything: ``benchmarks/run.py --smoke`` and ``benchmarks/gpu.py --smoke`` run every path of the
two scripts on the CPU with tiny batches, and the report they write is checked for shape (sealed, the sections, the
targets table, the GPU section saying why it is empty), not for figures.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"


def load(name: str):
    """A benchmark script as a module (importing it must not parse arguments or run anything)."""
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


flops = load("flops")
stamp = load("stamp")


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def counted(model, call) -> int:
    """FLOPs of ``call(model)`` by ``FlopCounterMode``, taught SDPA's CPU flash kernel (it counts only the CUDA
    kernels' formulas by default)."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        call(model)
    return counter.get_total_flops()


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_executed_flops_match_the_flop_counter(size: str):
    """``flops.py`` counts exactly the matrix products PyTorch's FLOP counter sees in one forward per tower."""
    from ernievil2torch.config import base_config, tiny_config
    from ernievil2torch.modeling import ErnieViL2

    cfg = tiny_config() if size == "tiny" else base_config()
    model = ErnieViL2(cfg).eval()
    v = cfg.vision
    pixels = torch.randn(2, v.num_channels, v.image_size, v.image_size)
    ids = torch.randint(4, cfg.text.vocab_size, (3, 16))
    assert counted(model, lambda m: m.encode_image(pixels)) == 2 * flops.image_flops(v)
    assert counted(model, lambda m: m.encode_text(ids)) == 3 * flops.text_flops(cfg.text, 16)


def test_the_last_block_counts_one_row_by_hand():
    """A hand count of ViT-B/16's last block: k|v for all 197 tokens, everything else for the class row."""
    d, f, n = 768, 3072, 197
    assert flops.block_flops(n, d, f, last=True) == 2 * (d * d + n * d * 2 * d + 2 * n * d + d * d + 2 * d * f)
    assert flops.block_flops(n, d, f) == 2 * (n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * f)


def run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_run_py_writes_a_sealed_report_of_what_it_measured(tmp_path: Path):
    out = tmp_path / "BENCHMARKS.md"
    run("run.py", "--smoke", "--threads", "1", "--out", str(out), "--png", str(tmp_path / "chart.png"))
    text = out.read_text(encoding="utf-8")
    generator, command = stamp.check_seal(text)
    assert generator == "benchmarks/run.py" and command.startswith("python benchmarks/run.py --smoke")
    for heading in ("## CPU throughput", "### Targets on this run", "### GEMM ceilings (same rounds)",
                    "### Accuracy of the measured paths", "### Where the time goes", "## GPU"):
        assert f"\n{heading}\n" in text, heading
    assert "ISA flags:" in text and "- threads: 1 for every framework" in text
    assert "| image | ours fp32 | fp32 |" in text and "| text | ONNX Runtime (our export) | fp32 |" in text
    targets = [line for line in text.splitlines() if line.startswith(("| image fp32", "| text fp32", "| image bf16",
                                                                       "| text bf16"))]
    assert len(targets) >= 6 and all(line.rstrip(" |").endswith(("met", "MISSED", "not measured"))
                                     for line in targets)
    if not torch.cuda.is_available():
        assert "\n## GPU\n\nnot measured: no GPU lent to this task\n" in text
    assert "Optimisations kept" not in text


def test_gpu_py_smoke_runs_every_path_on_the_cpu(tmp_path: Path):
    out = tmp_path / "gpu.md"
    run("gpu.py", "--smoke", "--no-compile", "--markdown", str(out))
    text = out.read_text(encoding="utf-8")
    for name in ("ours fp32", "ours tf32", "ours fp16", "ours bf16", "ours bf16 CUDA graph", "HF BertModel"):
        assert f"| {name} |" in text, name
    assert "bf16 GEMM ceiling:" in text and "End-to-end embed" in text
    assert "images/s >= 12,500" in text and "texts/s >= 50,000" in text
    assert "min cosine" in text


def test_importing_the_scripts_runs_nothing():
    run_py = load("run")
    assert callable(run_py.main) and callable(run_py.parse_args)
    assert run_py.parse_args(["--smoke"]).rounds == 1


def test_readme_speed_summary_is_what_readme_speed_renders():
    """README's "## Speed" section is benchmarks/readme_speed.py's rendering of BENCHMARKS.md, prose included."""
    readme_speed = load("readme_speed")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Speed\n")
    assert readme[start:readme.index("\n## ", start + 1) + 1] == readme_speed.render(), \
        "run python benchmarks/readme_speed.py after benchmarks/run.py"


def test_ratios_are_medians_of_per_round_ratios():
    """A slow spell that hits one round hits both cases of a comparison; the per-round ratio cancels it."""
    benchlib = load("benchlib")
    ours = benchlib.Case("ours", "image", lambda: None, 8, 1e9, "fp32", times=[1.0, 3.0, 1.0])
    peer = benchlib.Case("peer", "image", lambda: None, 8, 1e9, "fp32", times=[2.0, 6.0, 2.2])
    gemm = benchlib.Case("GEMM", "gemm", lambda: None, 1, 10e9, "fp32", times=[0.5, 1.5, 0.5])
    assert benchlib.paired_ratio(ours, peer) == pytest.approx(2.0)
    assert benchlib.share_of_ceiling(ours, [ours, gemm], "fp32") == pytest.approx(40.0)
    assert benchlib.share_of_ceiling(ours, [ours, gemm], "bf16") == 0.0
