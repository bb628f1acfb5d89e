"""``--freeze vision|text`` (README: "a frozen tower runs in eval mode without gradients"; the other tower and the
temperature train), checked on one training step of the objective a run differentiates, for both towers: the
frozen tower is encoded with autograd off and in eval mode, and every parameter of the other tower gets a gradient.
(``test_training.py`` checks end to end that a frozen tower's weights stay fixed.)"""
from __future__ import annotations

import pytest
import torch

from ernievil2torch.config import tiny_config
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.training.distributed import ContrastiveObjective
from ernievil2torch.training.model_setup import train_mode, trainable_model
from ernievil2torch.verify.parity import synthetic_inputs

TOWERS = ("vision", "text")


def one_step(freeze):
    """One forward + backward of the training objective with ``freeze``; returns the model and, per tower, whether
    autograd was on and whether the tower was in training mode while it ran."""
    torch.manual_seed(0)
    model = trainable_model(ErnieViL2(tiny_config()), "cpu", gradient_checkpointing=False, freeze=freeze)
    train_mode(model, freeze)
    seen = {}

    def record(tower):
        def hook(module, args):
            seen.setdefault(tower, (torch.is_grad_enabled(), module.training))
        return hook

    for tower in TOWERS:
        getattr(model, tower).register_forward_pre_hook(record(tower))
    inputs = synthetic_inputs(model.config, seed=1, images=3, lengths=(6, 9, 4))
    pixels = torch.from_numpy(inputs.pixel_values).requires_grad_(True)
    ids = torch.from_numpy(inputs.input_ids)
    loss = ContrastiveObjective(model, freeze)(pixels, ids, (ids != 0).long())
    loss.backward()
    return model, seen, pixels


@pytest.mark.parametrize("frozen", TOWERS)
def test_the_frozen_tower_runs_without_gradient_and_the_other_learns(frozen):
    trained = TOWERS[1 - TOWERS.index(frozen)]
    model, seen, pixels = one_step(frozen)
    assert seen[frozen] == (False, False), f"frozen {frozen}: (grad enabled, training) = {seen[frozen]}"
    assert seen[trained] == (True, True), f"trained {trained}: (grad enabled, training) = {seen[trained]}"
    for name, p in model.named_parameters():
        if name.startswith(frozen + "."):
            assert not p.requires_grad and p.grad is None, name
        elif "word_embeddings" not in name:  # rows of tokens absent from the batch get no gradient
            assert p.grad is not None and p.grad.abs().max() > 0, name
    assert model.temperature.grad is not None and model.temperature.grad.abs() > 0
    # the pixels' gradient exists exactly when the image tower ran with autograd on
    assert (pixels.grad is None) == (frozen == "vision")


def test_without_freezing_both_towers_learn():
    model, seen, pixels = one_step(None)
    assert seen == {"vision": (True, True), "text": (True, True)}
    assert all(p.grad is not None for n, p in model.named_parameters() if "word_embeddings" not in n)
    assert pixels.grad is not None and pixels.grad.abs().max() > 0
