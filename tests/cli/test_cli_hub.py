"""Every command that takes a model takes a Hugging Face Hub id, read through a test-built cache (offline)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ernievil2torch import cli
from ernievil2torch.data.demo import demo_images

from helpers import require_module
from shapes import shapes_setup

REPO = "ernie-test/shapes"


def invoke(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ernievil2", *map(str, argv)])
    capsys.readouterr()
    try:
        cli.run_command(cli.commands(), name="ernievil2")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return (code, *capsys.readouterr())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return shapes_setup(tmp_path_factory.mktemp("hub_shapes"), images_per_caption=1)


@pytest.fixture
def images(tmp_path):
    paths = []
    (tmp_path / "photos").mkdir()
    for i, image in enumerate(demo_images()):
        paths.append(tmp_path / "photos" / f"shape{i}.png")
        image.save(paths[-1])
    return paths


def test_every_model_command_takes_a_hub_id(setup, hub_cache, images, tmp_path, monkeypatch, capsys):
    snapshot = hub_cache.add(REPO, setup.model)
    run = lambda *argv: invoke(argv, monkeypatch, capsys)  # noqa: E731

    code, out, err = run("similarity", "--model", REPO, "--images", ",".join(map(str, images)), "--texts", "圆形,方形")
    assert code == 0 and out.count("shape") >= 3, err
    code, out, err = run("classify", "--model", f"hf-hub:{REPO}", "--images", images[0], "--labels", "圆形,正方形")
    assert code == 0 and "shape0.png" in out, err

    code, out, err = run("embed", images[0].parent, REPO, tmp_path / "gallery", "--kind", "image", "--num_workers", "0",
                         "--progress", "False", "--normalize", "true")
    assert code == 0 and "embedded 3 images" in out + err, err
    record = json.loads(next((tmp_path / "gallery").glob("*.json")).read_text())
    assert str(snapshot.resolve()) in json.dumps(record)  # the run is marked by the snapshot (commit) it used
    assert np.load(tmp_path / "gallery" / "embeddings.npy").shape[0] == 3

    code, out, err = run("eval", REPO, setup.val, "--images", setup.val_images, "--num_workers", "0", "--progress",
                         "False", "--out", tmp_path / "metrics.json")
    assert code == 0 and "MR (mean of the six recalls)" in out, err
    code, out, err = run("eval", setup.model, setup.val, "--images", setup.val_images, "--num_workers", "0",
                         "--progress", "False", "--out", tmp_path / "local.json")
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads((tmp_path / "local.json").read_text())

    code, out, err = run("export", REPO, tmp_path / "model.pdparams", "--format", "paddle")
    assert code == 0 and (tmp_path / "model.pdparams").is_file(), err

    code, out, err = run("finetune", REPO, setup.train, tmp_path / "run", "--images", setup.train_images,
                         "--max_steps", "1", "--batch_size", "4", "--num_workers", "0", "--progress", "False")
    assert code == 0 and (tmp_path / "run" / "final" / "model.safetensors").is_file(), err

    require_module("fastapi")
    uvicorn = require_module("uvicorn")

    def loaded_then_stopped(self, *args, **kwargs):
        raise KeyboardInterrupt  # the model and the gallery are loaded when the server starts

    monkeypatch.setattr(uvicorn.Server, "run", loaded_then_stopped)
    code, out, err = run("serve", REPO, "--gallery", tmp_path / "gallery", "--images", images[0].parent, "--port", "0")
    assert code == cli.EXIT_INTERRUPTED and "error" not in err, err


def test_the_console_command_honours_the_environment(setup, hub_cache, images):
    hub_cache.add(REPO, setup.model)  # HF_HUB_CACHE and HF_HUB_OFFLINE=1 are in the child's environment
    command = [sys.executable, "-c", "from ernievil2torch.cli import main; main()", "classify", "--images",
               str(images[0]), "--labels", "圆形,正方形", "--model"]
    proc = subprocess.run(command + [REPO], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "shape0.png" in proc.stdout, proc.stderr
    proc = subprocess.run(command + ["nobody/absent-model"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == cli.EXIT_BAD_INPUT and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: nobody/absent-model: ") and "HF_HUB_OFFLINE=1" in proc.stderr
