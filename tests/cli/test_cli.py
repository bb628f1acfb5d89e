"""The scripts as a user runs them: convert.py, test.py performance_check, check.py errors; the console help."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ernievil2torch.config import tiny224_config, tiny_config
from ernievil2torch.data.demo import DEMO_CAPTIONS
from ernievil2torch.verify.synthetic import write_synthetic_vocab
from ernievil2torch.verify.synthetic import write_synthetic_pdparams

from helpers import require_module

REPO = Path(__file__).resolve().parents[2]


def run(script: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def small224(tmp_path_factory):
    """A 2-layer model with the real input sizes (224 px images, 40000-token vocab), converted with a vocab."""
    root = tmp_path_factory.mktemp("cli")
    src = write_synthetic_pdparams(root / "synthetic_small.pdparams", tiny224_config(), "official", seed=2)
    vocab = write_synthetic_vocab(root / "vocab.txt")
    proc = run("convert.py", "--src", str(src), "--dst", str(root / "model"), "--vocab", str(vocab))
    assert proc.returncode == 0, proc.stderr
    return root, proc.stdout


def test_convert_prints_a_summary(small224):
    root, stdout = small224
    for fragment in ("layout detected : official", "keys dropped    : visual.classfy.bias, visual.classfy.weight",
                     "source sha256   :", "tensors written : 62"):
        assert fragment in stdout
    assert sorted(p.name for p in (root / "model").iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]


def test_convert_refuses_to_overwrite_without_flag(small224):
    root, _ = small224
    before = (root / "model" / "model.safetensors").stat().st_mtime_ns
    proc = run("convert.py", "--src", str(root / "synthetic_small.pdparams"), "--dst", str(root / "model"))
    assert proc.returncode == 2 and "already exists; pass --overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (root / "model" / "model.safetensors").stat().st_mtime_ns == before


def test_convert_without_src_says_where_to_download(tmp_path):
    proc = run("convert.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "OPEN_ERNIE_VIL2_BASE_ViT.pdparams" in proc.stderr and "bj.bcebos.com" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_convert_finds_the_official_file_name_in_the_working_directory(tmp_path):
    write_synthetic_pdparams(tmp_path / "OPEN_ERNIE_VIL2_BASE_ViT.pdparams", tiny_config(), "official", seed=1)
    proc = run("convert.py", "--dst", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_performance_check_prints_a_3x3_matrix_and_probabilities(small224):
    root, _ = small224
    proc = run("test.py", "performance_check", "--model", str(root / "model"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SYNTHETIC CHECKPOINT" in out
    matrix = out.split("cosine similarity (rows: texts, columns: images)")[1].split("per-image")[0]
    rows = [line for line in matrix.splitlines() if "[" in line]
    assert len(rows) == 3 and all(line.count(",") >= 2 for line in rows)
    assert "tensor(" not in out and [row.split()[0] for row in rows] == ["T1", "T2", "T3"]
    for caption in DEMO_CAPTIONS:
        assert caption in out


def test_performance_check_with_user_images_and_texts(small224, tmp_path):
    from ernievil2torch.data.demo import demo_images

    root, _ = small224
    paths = []
    for i, image in enumerate(demo_images()[:2]):
        paths.append(tmp_path / f"img{i}.png")
        image.save(paths[-1])
    proc = run("test.py", "performance_check", "--model", str(root / "model"),
               "--images", ",".join(map(str, paths)), "--texts", "一张猫的照片,一张狗的照片,第三句,第四句")
    assert proc.returncode == 0, proc.stderr
    matrix = proc.stdout.split("columns: images)")[1].split("per-image")[0]
    assert len([line for line in matrix.splitlines() if "[" in line]) == 4


def test_performance_check_on_a_pdparams_gives_a_one_line_hint(small224):
    root, _ = small224
    proc = run("test.py", "performance_check", "--model", str(root / "synthetic_small.pdparams"))
    assert proc.returncode == 2 and "must be converted first" in proc.stderr and "Traceback" not in proc.stderr


CONSOLE_SUBCOMMANDS = ("convert", "check", "similarity", "classify", "embed", "search", "eval", "finetune", "export",
                       "serve", "dedup")


@pytest.mark.parametrize("sub", ("",) + CONSOLE_SUBCOMMANDS)
def test_console_command_help(sub):
    args = [sys.executable, "-c", "from ernievil2torch.cli import main; main()"] + ([sub] if sub else []) + ["--help"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env={"PAGER": "cat", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "NAME" in text and ("ernievil2" in text)
    if sub:
        assert f"ernievil2 {sub}" in text and ("FLAGS" in text or "POSITIONAL ARGUMENTS" in text)


def test_classify_prints_a_label_per_image(small224, tmp_path):
    from ernievil2torch.data.demo import demo_images

    root, _ = small224
    paths = []
    for i, image in enumerate(demo_images()):
        paths.append(tmp_path / f"shape{i}.png")
        image.save(paths[-1])
    proc = subprocess.run([sys.executable, "-c", "from ernievil2torch.cli import main; main()", "classify",
                           "--model", str(root / "model"), "--images", ",".join(map(str, paths)),
                           "--labels", "圆形,正方形,三角形"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("shape")]
    assert len(lines) == 3 and all("圆形" in line and "三角形" in line for line in lines)


def test_performance_check_plot_writes_a_png(small224, tmp_path):
    require_module("matplotlib")
    root, _ = small224
    png = tmp_path / "sim.png"
    proc = run("test.py", "performance_check", "--model", str(root / "model"), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert "heatmap written to" in proc.stdout
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300
