"""The PyTorch port against the Paddle reference: full-size and tiny, both checkpoint layouts, every weight random.

Bounds (fp32, CPU, ``verify.parity``): features max abs diff <= 1e-5 and cosine >= 0.999999 per tower, logits max
abs diff <= 1e-4.

What this proves: the converted PyTorch model computes the function of the official architecture, as written
independently in ``verify/paddle_reference.py`` (its epsilons, head size, activation and mask bias are constants
taken from the official code, its sizes are read from the checkpoint's own shapes; nothing comes from
``ernievil2torch.config``), on the weights of the file. A wrong constant in the package config fails here
(``test_a_wrong_text_eps_in_the_package_config_fails_parity``). For a PaddleNLP-layout file, both sides receive
weights renamed by the project's own layout engine: that renaming is proven against PaddleNLP itself in
``tests/verify/test_paddle_reference.py``, not here.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import require_module, run_pytest_on_copy

require_module("paddle")

from ernievil2torch.verify import parity  # noqa: E402
from ernievil2torch.verify.logit_check import to_official_layout as _official_layout_state  # noqa: E402
from ernievil2torch.conversion import convert_checkpoint  # noqa: E402
from ernievil2torch.modeling import ErnieViL2  # noqa: E402
from ernievil2torch.verify.paddle_reference import run_reference  # noqa: E402
from ernievil2torch.conversion.pdparams import load_pdparams  # noqa: E402
from ernievil2torch.conversion.pdparams import save_pdparams  # noqa: E402
from ernievil2torch.verify.synthetic import layout_state  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def convert_and_compare(pdparams: Path, out_dir: Path):
    report = convert_checkpoint(pdparams, out_dir)
    config, official = _official_layout_state(load_pdparams(pdparams))
    inputs = parity.synthetic_inputs(config, seed=7)
    reference = run_reference(official, inputs.pixel_values, inputs.input_ids)
    ours = parity.run_torch(ErnieViL2.from_pretrained(out_dir), inputs)
    figures = parity.compare(ours, reference)
    print(f"\n{pdparams.name} ({report.layout}):\n{figures.table()}")
    return figures, ours, reference


@pytest.mark.parametrize("layout", ["official", "paddlenlp"])
def test_tiny_matches_paddle_reference(synthetic_pdparams, tmp_path, layout):
    figures, _, _ = convert_and_compare(synthetic_pdparams("tiny", layout), tmp_path / "out")
    assert figures.passed(), figures.table()


@pytest.mark.fullsize
@pytest.mark.parametrize("layout", ["official", "paddlenlp"])
def test_full_size_matches_paddle_reference(synthetic_pdparams, tmp_path, layout):
    figures, ours, _ = convert_and_compare(synthetic_pdparams("base", layout), tmp_path / "out")
    assert figures.passed(), figures.table()
    assert ours["image_features"].shape == (2, 768) and ours["text_features"].shape == (4, 768)


def test_checkpoint_without_temperature_scores_by_plain_cosine(tmp_path):
    from ernievil2torch.config import tiny_config

    state = layout_state(tiny_config(), "official", seed=5)
    del state["contrastive_loss_mm.temperature_b"]
    src = save_pdparams(state, tmp_path / "no_temp.pdparams")
    figures, ours, reference = convert_and_compare(src, tmp_path / "out")
    assert figures.passed(), figures.table()
    assert ours["logit_scale"] is None and reference["logit_scale"] is None
    assert np.abs(ours["logits_per_image"]).max() <= 1.0 + 1e-6


def test_a_wrong_weight_is_detected(synthetic_pdparams, tmp_path):
    """The comparison can fail: perturb one LayerNorm bias of the converted model and the bound is broken."""
    src = synthetic_pdparams("tiny", "official")
    figures, _, _ = convert_and_compare(src, tmp_path / "out")
    assert figures.passed()
    model = ErnieViL2.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        model.text.layers[1].norm2.bias[3] += 1e-3
    config, official = _official_layout_state(load_pdparams(src))
    inputs = parity.synthetic_inputs(config, seed=7)
    broken = parity.compare(parity.run_torch(model, inputs),
                            run_reference(official, inputs.pixel_values, inputs.input_ids))
    assert not broken.passed() and broken.text_max_abs > 1e-5 and broken.image_max_abs <= 1e-5


def test_padding_does_not_change_text_features(synthetic_pdparams, tmp_path):
    convert_checkpoint(synthetic_pdparams("tiny", "official"), tmp_path / "out")
    model = ErnieViL2.from_pretrained(tmp_path / "out")
    ids = torch.tensor([[1, 17, 29, 33, 2]])
    padded = torch.cat([ids, torch.zeros(1, 11, dtype=torch.long)], dim=1)
    with torch.inference_mode():
        np.testing.assert_allclose(model.encode_text(ids), model.encode_text(padded), atol=1e-6, rtol=0)


def run_check(*args):
    return subprocess.run([sys.executable, "check.py", "logit_check", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900)


def test_check_cli_synthetic_tiny_passes_and_says_weights_are_random():
    proc = run_check("--tiny")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SYNTHETIC CHECKPOINT: every weight is random" in proc.stdout
    assert "PASS" in proc.stdout and "image features" in proc.stdout and "text features" in proc.stdout
    assert "what this proves: the converted directory computes the function of the Paddle reference" in proc.stdout


def test_check_cli_fails_on_a_mismatching_conversion(synthetic_pdparams, tmp_path):
    """check.py exits 1 when the PyTorch directory does not compute the Paddle file's function."""
    from ernievil2torch.config import tiny_config

    src = synthetic_pdparams("tiny", "official")
    other = save_pdparams(layout_state(tiny_config(), "official", seed=99), tmp_path / "other.pdparams")
    convert_checkpoint(other, tmp_path / "other")
    proc = run_check("--paddle", str(src), "--torch", str(tmp_path / "other"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout


def test_check_cli_real_file_mode_passes(synthetic_pdparams, tmp_path):
    src = synthetic_pdparams("tiny", "paddlenlp")
    convert_checkpoint(src, tmp_path / "conv")
    proc = run_check("--paddle", str(src), "--torch", str(tmp_path / "conv"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SYNTHETIC" not in proc.stdout and "PASS" in proc.stdout


@pytest.mark.parametrize("protocol", [2, 4])
def test_file_written_by_paddle_save_converts_and_matches(tmp_path, protocol):
    """A .pdparams written by Paddle itself (paddle.save of the reference's state_dict) converts unchanged."""
    import paddle

    from ernievil2torch.config import tiny_config
    from ernievil2torch.verify.paddle_reference import PaddleErnieViL2

    reference = PaddleErnieViL2.from_official_state(layout_state(tiny_config(), "official", seed=11))
    path = tmp_path / "paddle_saved.pdparams"
    paddle.save(reference.state_dict(), str(path), protocol=protocol)
    figures, _, _ = convert_and_compare(path, tmp_path / "out")
    assert figures.passed(), figures.table()


def test_a_wrong_text_eps_is_detected(synthetic_pdparams, tmp_path):
    """The reference does not share the package's config: a converted directory whose config says text LayerNorm
    eps 1e-6 (instead of the official 1e-5) breaks the text bound by far; the image tower still passes."""
    import json

    src = synthetic_pdparams("tiny", "official")
    convert_checkpoint(src, tmp_path / "out")
    config_file = tmp_path / "out" / "config.json"
    config = json.loads(config_file.read_text())
    config["text"]["layer_norm_eps"] = 1e-6
    config_file.write_text(json.dumps(config))
    config, official = _official_layout_state(load_pdparams(src))
    inputs = parity.synthetic_inputs(config, seed=7)
    broken = parity.compare(parity.run_torch(ErnieViL2.from_pretrained(tmp_path / "out"), inputs),
                            run_reference(official, inputs.pixel_values, inputs.input_ids))
    assert broken.text_max_abs > 10 * parity.FEATURE_ATOL, broken.table()
    assert broken.image_max_abs <= parity.FEATURE_ATOL


def test_a_wrong_text_eps_in_the_package_config_fails_parity(tmp_path):
    """The mutation itself: ``TextConfig.layer_norm_eps = 1e-6`` in a copy of the package makes this file's tiny
    parity test fail (run by pytest on that copy), in both layouts."""
    proc = run_pytest_on_copy(tmp_path, "tests/verify/test_parity.py::test_tiny_matches_paddle_reference",
                              edits={"ernievil2torch/config/schema.py": ("    layer_norm_eps: float = 1e-5\n",
                                                                         "    layer_norm_eps: float = 1e-6\n")})
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "2 failed" in proc.stdout and "| text features |" in proc.stdout, proc.stdout[-3000:]
