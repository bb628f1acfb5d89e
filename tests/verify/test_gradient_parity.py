"""Gradient parity: one training step of the PyTorch port against two independent Paddle implementations.

Full size, every parameter random (``verify.synthetic.random_state(unit_gain=True)``: features of different inputs
stay apart, so the loss gradient is not mere float32 cancellation), training mode with dropout 0, four images
paired with four texts of lengths 8/48/5/17 padded in one batch. Bounds: the loss within 1e-5; every parameter's
gradient, and the gradient of the pixels, within 1e-4 of that gradient's largest magnitude.

* (a) the project's Paddle reference (official layout) run backward in Paddle
  (``paddle_reference.run_reference_backward``);
* (b) PaddleNLP 2.8.1's ``ErnieViLModel(..., return_loss=True)`` in ``.venv-paddlenlp`` (text LayerNorm eps forced to
  the official 1e-5, every dropout 0).

Paddle gradients come in Paddle's parameter layout (Linear [in, out], separate q/k/v in the text tower) and are
mapped to ours by the same layout engine that converts the weights. Run with ``-s`` to see the figures.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ernievil2torch.config import ErnieViL2Config, base_config, tiny_config
from ernievil2torch.conversion.layouts import OFFICIAL, PADDLENLP, from_layout, to_layout
from ernievil2torch.conversion.pdparams import save_pdparams
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.verify import parity
from ernievil2torch.verify.synthetic import random_state
from helpers import run_oracle, require_module

SEED = 21


def dropout_free(config: ErnieViL2Config) -> ErnieViL2Config:
    no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0}
    return dataclasses.replace(config, text=dataclasses.replace(config.text, **no_dropout),
                               vision=dataclasses.replace(config.vision, **no_dropout))


def setup_step(config: ErnieViL2Config):
    """Random weights, paired padded inputs and our loss + gradients."""
    config = dropout_free(config)
    state = random_state(config, seed=SEED, unit_gain=True)
    inputs = parity.synthetic_inputs(config, seed=SEED, images=4, lengths=(8, 48, 5, 17))
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    loss, grads = parity.torch_training_step(model, inputs.pixel_values, inputs.input_ids)
    return config, state, inputs, loss, grads


def against_paddle_reference(config, state, inputs):
    require_module("paddle")
    from ernievil2torch.verify.paddle_reference import run_reference_backward

    out = run_reference_backward(to_layout(state, OFFICIAL, config), inputs.pixel_values, inputs.input_ids)
    grads = from_layout(out["grads"], OFFICIAL, config)
    grads["pixel_values"] = out["pixel_grad"]
    assert len(out["grads"]) == len(to_layout(state, OFFICIAL, config))  # every official parameter got one
    return out["loss"], grads


def against_paddlenlp(config, state, inputs, tmp_path):
    params = save_pdparams(to_layout(state, PADDLENLP, config), tmp_path / "model_state.pdparams")
    np.savez(tmp_path / "inputs.npz", pixel_values=inputs.pixel_values, input_ids=inputs.input_ids)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    run_oracle("paddlenlp_model.py", None, "--inputs", tmp_path / "inputs.npz", "--params", params,
               "--config", tmp_path / "config.json", "--out", tmp_path / "out.npz", "--text-ln-eps", "1e-5",
               "--backward")
    with np.load(tmp_path / "out.npz") as z:
        theirs = {k[len("grad/"):]: z[k] for k in z.files if k.startswith("grad/")}
        loss, pixel_grad = float(z["loss"]), z["pixel_grad"]
    assert set(theirs) == set(to_layout(state, PADDLENLP, config))  # all 398 (full size) parameters
    grads = from_layout(theirs, PADDLENLP, config)
    grads["pixel_values"] = pixel_grad
    return loss, grads


def check(label: str, ours_loss, ours, theirs_loss, theirs) -> parity.GradientReport:
    report = parity.compare_gradients(ours, theirs, ours_loss, theirs_loss)
    print(f"\n{label}\n{report.table()}")
    assert report.passed(), report.table()
    return report


@pytest.fixture(scope="module")
def full_size_step():
    return setup_step(base_config())


@pytest.mark.fullsize
def test_full_size_gradients_match_paddle_reference(full_size_step):
    config, state, inputs, loss, grads = full_size_step
    ref_loss, ref = against_paddle_reference(config, state, inputs)
    check("full size, PyTorch vs Paddle reference (official layout)", loss, grads, ref_loss, ref)


@pytest.mark.fullsize
@pytest.mark.oracle
def test_full_size_gradients_match_paddlenlp(full_size_step, tmp_path):
    config, state, inputs, loss, grads = full_size_step
    ref_loss, ref = against_paddlenlp(config, state, inputs, tmp_path)
    check("full size, PyTorch vs PaddleNLP 2.8.1 ErnieViLModel(return_loss=True), text eps 1e-5", loss, grads,
          ref_loss, ref)


def test_tiny_gradients_match_both_paddle_implementations(tmp_path):
    config, state, inputs, loss, grads = setup_step(tiny_config())
    check("tiny, vs Paddle reference", loss, grads, *against_paddle_reference(config, state, inputs))
    check("tiny, vs PaddleNLP", loss, grads, *against_paddlenlp(config, state, inputs, tmp_path))


def test_the_gradient_comparison_can_fail():
    """A wrong gradient in one tensor is caught (the bound is not vacuous)."""
    config, state, inputs, loss, grads = setup_step(tiny_config())
    ref_loss, ref = against_paddle_reference(config, state, inputs)
    broken = dict(ref)
    broken["text.layers.0.mlp.fc1.weight"] = ref["text.layers.0.mlp.fc1.weight"] * (1 + 1e-3)
    report = parity.compare_gradients(grads, broken, loss, ref_loss)
    assert not report.passed()
    assert [d.name for d in report.diffs if d.relative > parity.GRADIENT_REL_TOL] == ["text.layers.0.mlp.fc1.weight"]
