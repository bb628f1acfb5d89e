"""The benchmark scripts work end to end (on the tiny config, in seconds) and count the FLOPs the code executes.

Nothing here times anything: ``benchmarks/run.py --smoke`` and ``benchmarks/gpu.py --smoke`` run every path of the
two scripts on the CPU with tiny batches, and the report they write is checked for shape (sealed, the sections, the
targets table, the GPU section saying why it is empty), not for figures.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

REPO = Path(__file__).resolve().parents[2]
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
    """``python benchmarks/SCRIPT ARGS...`` as a user runs it, importing the package of this checkout."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_run_py_writes_a_sealed_report_of_what_it_measured(tmp_path: Path):
    out, record = tmp_path / "BENCHMARKS.md", tmp_path / "record.json"
    run("run.py", "--smoke", "--threads", "1", "--out", str(out), "--png", str(tmp_path / "chart.png"),
        "--record", str(record))
    text = out.read_text(encoding="utf-8")
    generator, command = stamp.check_seal(text)
    assert generator == "benchmarks/run.py" and command.startswith("python benchmarks/run.py --smoke")
    for heading in ("## CPU throughput", "### Targets on this run", "### GEMM ceilings (same rounds)",
                    "### Accuracy of the measured paths", "### Where the time goes", "## GPU"):
        assert f"\n{heading}\n" in text, heading
    assert "ISA flags:" in text and "- threads: 1 for every framework" in text
    assert "| image | ours fp32 | fp32 |" in text and "| text | ONNX Runtime (our export) | fp32 |" in text
    assert "| image | OpenVINO f32 hint (our export) | fp32 |" in text and "| text | OpenVINO default hint (" in text
    for peer in ("ONNX Runtime (our export)", "OpenVINO f32 hint (our export)"):
        assert f"| image fp32: ours >= {peer} |" in text and f"| text fp32: ours >= {peer} |" in text
    targets = [line for line in text.splitlines() if line.startswith(("| image fp32", "| text fp32", "| image bf16",
                                                                       "| text bf16"))]
    assert len(targets) >= 6 and all(line.rstrip(" |").endswith(("met", "MISSED", "not measured"))
                                     for line in targets)
    if not torch.cuda.is_available():
        assert "\n## GPU\n\nnot measured: no CUDA device on this machine\n" in text
    assert "Optimisations kept" not in text
    again = tmp_path / "again.md"  # the record renders the same sealed report, measuring nothing
    run("run.py", "--from-record", "--record", str(record), "--out", str(again), "--png", str(tmp_path / "again.png"))
    assert again.read_text(encoding="utf-8") == text


def test_photo_decode_quick_runs_its_report_path():
    text = run("photo_decode.py", "--quick").stdout
    assert "| float32 | model only |" in text and "| float32 | embed loop, fast_decode, 0 workers |" in text
    assert "fast_decode at its best worker count:" in text and "- pixel difference: max " in text
    assert "- feature cosine: min " in text and "ISA flags:" in text


def test_kernels_quick_runs_its_report_path():
    text = run("kernels.py", "--quick").stdout
    for row in ("| float32 | reference |", "| float32 | onednn |", "| bfloat16 | fp32 |", "| float16 | fp32 |",
                "| image | SDPA |", "| text | math |", "| 1 |"):
        assert row in text, row
    assert "ISA flags:" in text and "linear kernels: float32 " in text


def test_op_profile_quick_profiles_both_sides():
    text = run("op_profile.py", "--quick").stdout
    for section in ("## image: ours fp32", "## image: ONNX Runtime", "## text: ours fp32", "## text: ONNX Runtime"):
        assert section in text, section
    assert "`aten::addmm`" in text and "`MatMul`" in text


def test_gpu_py_smoke_runs_every_path_on_the_cpu(tmp_path: Path):
    out = tmp_path / "gpu.md"
    run("gpu.py", "--smoke", "--no-compile", "--markdown", str(out))
    text = out.read_text(encoding="utf-8")
    for name in ("ours fp32", "ours tf32", "ours fp16", "ours bf16", "ours bf16 CUDA graph", "HF BertModel"):
        assert f"| {name} |" in text, name
    assert "bf16 GEMM ceiling:" in text and "End-to-end embed" in text
    assert "images/s >= 12,500" in text and "texts/s >= 50,000" in text
    assert "min cosine" in text
    assert "## Fine-tuning modes (cpu, tiny test config" in text and "| gradient cache | 64 (8) |" in text


def test_finetune_modes_quick_writes_a_sealed_report(tmp_path: Path):
    """The fine-tuning modes benchmark on the tiny config: every chosen case measured, the report sealed."""
    out = tmp_path / "modes.md"
    run("finetune_modes.py", "--quick", "--threads", "1", "--steps", "0", "--cases", "0,1,2", "--out", str(out))
    text = out.read_text(encoding="utf-8")
    for name in ("| full fine-tuning | 16 |", "| gradient cache | 64 (8) |", "| LoRA rank 8 | 16 |"):
        assert name in text, name
    assert "not measured" not in text
    assert stamp.check_seal(text)[0] == "benchmarks/finetune_modes.py"


def test_importing_the_scripts_runs_nothing():
    for name in ("benchlib", "cases", "chart", "environment", "paddlenlp_client", "report", "repo", "subprocess_runs",
                 "readme_speed", "gpu", "serve_load", "photo_decode", "finetune_modes", "kernels", "op_profile",
                 "serve_load_library", "library_site", "peak_memory"):
        load(name)
    run_py = load("run")
    assert callable(run_py.main) and callable(run_py.parse_args)
    assert run_py.parse_args(["--smoke"]).rounds == 1


def test_a_failing_load_run_says_failed_and_exits_1():
    """serve_load's pass line (both modes): a 5xx, a dropped request, an unexpected status or a request never sent
    each turn the report's result to FAILED and the exit status to 1."""
    serve_load = load("serve_load")
    ok = [serve_load.Outcome("text search", 200, 200, 0.1), serve_load.Outcome("bad: k=0", 422, 422, 0.01)]
    assert "| passed |" in serve_load.result_tables(serve_load.summarize(ok, 2, 1.0, {}))[2]
    for broken, planned in (([serve_load.Outcome("text search", 200, 500, 0.1)], 1),
                            ([serve_load.Outcome("text search", 200, None, 9.0, "timed out")], 1),
                            ([serve_load.Outcome("bad: k=0", 422, 200, 0.1)], 1), (ok, 3)):
        summary = serve_load.summarize(broken, planned, 1.0, {})
        assert not serve_load.passed(summary)
        assert "| FAILED |" in serve_load.result_tables(summary)[2]
        with pytest.raises(SystemExit) as exited:
            serve_load.exit_on_failure(summary)
        assert exited.value.code == 1


def test_readme_speed_summary_is_what_readme_speed_renders():
    """README's speed summary (a block of its "## Speed" section) is benchmarks/readme_speed.py's rendering of
    BENCHMARKS.md, prose included."""
    readme_speed = load("readme_speed")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Speed\n"):]
    assert section.index(readme_speed.BEGIN) < section.index("\n## ", 1), "the summary sits in the Speed section"
    assert stamp.block(readme, readme_speed.BEGIN, readme_speed.END) == readme_speed.render(), \
        "run python benchmarks/readme_speed.py after benchmarks/run.py"


def test_readme_speed_reads_only_the_report_it_is_given():
    """The summary follows BENCHMARKS.md: a changed rate, a target turned MISSED and another GPU line show up."""
    readme_speed = load("readme_speed")
    report = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    # the report's own figures, whatever machine ran it: the rate of one row and the verdict of one target
    rate = re.search(r"\| image \| ours fp32 \| fp32 \| ([0-9.]+) \[", report)
    verdict = re.search(r"\| text fp32 faster than HF BertModel \| [0-9.]+x \| (met|MISSED) \|", report)
    assert rate and verdict and rate.group(1) != "6.01", "BENCHMARKS.md lost the rows this test edits"
    changed = (report.replace(rate.group(0), "| image | ours fp32 | fp32 | 6.01 [")
               .replace(verdict.group(0), "| text fp32 faster than HF BertModel | 0.90x | MISSED |")
               .replace("not measured: no CUDA device on this machine", "not measured: --no-gpu"))
    assert changed.count("6.01 [") == 1 and "0.90x | MISSED" in changed and "--no-gpu" in changed
    summary = readme_speed.render(changed)
    assert "| 6.01 (" in summary and "- text fp32 faster than HF BertModel: 0.90x" in summary
    assert "GPU (`benchmarks/gpu.py`): not measured: --no-gpu." in summary
    with pytest.raises(ValueError, match="no table starting with 'GEMM'"):
        readme_speed.render(changed.replace("| GEMM |", "| matmul |"))


def _is_sys_path(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys"


def _sys_path_edits(path: Path) -> list:
    """Lines of ``path`` that change ``sys.path`` (a method call on it, or an assignment to it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_sys_path(node.func.value):
            found.add(node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AugAssign) else []
        if any(_is_sys_path(target) for target in targets):
            found.add(node.lineno)
    return sorted(found)


def test_no_benchmark_script_edits_sys_path(tmp_path: Path):
    """Scripts run as ``python benchmarks/X.py`` find their siblings and the installed package as they are; other
    files of the repository are imported by path (``benchmarks/repo.py``)."""
    edits = {p.name: _sys_path_edits(p) for p in sorted(BENCHMARKS.glob("*.py"))}
    assert not {name: lines for name, lines in edits.items() if lines}, edits
    planted = tmp_path / "planted.py"
    planted.write_text("import sys\nsys.path.insert(0, 'x')\nsys.path = []\n", encoding="utf-8")
    assert _sys_path_edits(planted) == [2, 3]


def test_the_report_renderer_measures_nothing():
    """``report.render`` shows exactly the cases and sections it is given, with the machine named."""
    cases_py, report = load("cases"), load("report")
    cases = [cases_py.Case("ours fp32", "image", lambda: None, 8, 1e9, "fp32", times=[1.0, 1.0, 1.0]),
             cases_py.Case("ours fp32", "text", lambda: None, 32, 1e8, "fp32", times=[2.0, 2.0, 2.0]),
             cases_py.Case("GEMM fp32 8x8x8", "gemm", lambda: None, 1, 2e9, "fp32", times=[1.0, 1.0, 1.0])]
    facts = report.RunFacts(command="python benchmarks/run.py --threads 3", versions={"torch": "9.9"},
                            machine={"cpu": "Test CPU", "cpus": "4", "flags": "avx2", "threads": "3", "os": "TestOS"},
                            smoke=False, rounds=3, image_shape=(8, 3, 224, 224), text_shape=(32, 48),
                            image_flop=1e9, text_flop=2e9)
    measured = report.Measured(cases=cases, gpu=load("subprocess_runs").NO_CUDA,
                               conversion={"size_mib": 100.0, "rows": [("sha256sum", 1.0, 10.0),
                                                                       ("convert.py", 1.5, 120.0)]})
    text = report.render(facts, measured)
    record = json.loads(json.dumps(report.to_record(facts, measured)))
    assert report.render(*report.from_record(record)) == text
    assert "    python benchmarks/run.py --threads 3\n" in text
    assert "- machine: Test CPU, 4 logical CPUs, ISA flags: avx2; TestOS" in text and "torch 9.9" in text
    assert "| image | ours fp32 | fp32 | 8.00 [8.00-8.00] | n/a | n/a | 8.0 | 400 % | n/a |" in text
    assert "| image fp32 >= 85 % of fp32 GEMM ceiling | 400.0 % | met |" in text
    assert "| text fp32 >= 90 % of fp32 GEMM ceiling | 80.0 % | MISSED |" in text
    assert "| image bf16 >= 70 % of bf16 GEMM ceiling, cosine >= 0.999 | n/a | not measured |" in text
    assert "\n## GPU\n\nnot measured: no CUDA device on this machine\n" in text
    assert "| conversion peak RSS <= 1.3x checkpoint | 1.20x | met |" in text and "## Notes" not in text
    probe = "import sys, report; print(sorted({'torch', 'benchlib'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=BENCHMARKS, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr  # apart from measuring


def test_ratios_are_medians_of_per_round_ratios():
    """A slow spell that hits one round hits both cases of a comparison; the per-round ratio cancels it."""
    cases = load("cases")
    ours = cases.Case("ours", "image", lambda: None, 8, 1e9, "fp32", times=[1.0, 3.0, 1.0])
    peer = cases.Case("peer", "image", lambda: None, 8, 1e9, "fp32", times=[2.0, 6.0, 2.2])
    gemm = cases.Case("GEMM", "gemm", lambda: None, 1, 10e9, "fp32", times=[0.5, 1.5, 0.5])
    assert cases.paired_ratio(ours, peer) == pytest.approx(2.0)
    assert cases.share_of_ceiling(ours, [ours, gemm], "fp32") == pytest.approx(40.0)
    assert cases.share_of_ceiling(ours, [ours, gemm], "bf16") == 0.0
