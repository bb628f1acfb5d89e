"""The optimiser, schedule and clipping of a fine-tuning run, checked against what README and ``training/optim.py``
promise, not against the code's own helpers:

* weight decay on the weight matrices of Linear and Conv layers only; none on biases, LayerNorms, embeddings and the
  temperature (the README's defaults table);
* AdamW with the run's lr / betas / eps, decoupled decay (``p <- p * (1 - lr * wd)`` on a zero gradient);
* linear warm-up from 0, then a half-cosine to 0 at the last step; clipping to a global norm.

All on the tiny config: milliseconds each.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ernievil2torch.config import tiny_config
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.training.model_setup import trainable_model
from ernievil2torch.training.optim import make_optimizer, make_scheduler, parameter_groups, warmup_cosine

WEIGHT_DECAY = 0.25  # large, so a decayed parameter moves visibly in one step


def documented_decay(model: nn.Module, name: str) -> bool:
    """The README's rule, written out from the parameter's name and its module's kind: True when decayed."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if leaf == "bias" or name == "temperature":
        return False
    if isinstance(module, (nn.LayerNorm, nn.Embedding)):
        return False
    if name in ("vision.class_embedding", "vision.positional_embedding"):  # plain parameters, embeddings all the same
        return False
    return isinstance(module, (nn.Linear, nn.Conv2d)) and leaf == "weight"


def named_groups(optimizer: torch.optim.Optimizer, model: nn.Module):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [([by_id[id(p)] for p in group["params"]], group) for group in optimizer.param_groups]


@pytest.fixture(scope="module")
def model() -> ErnieViL2:
    return trainable_model(ErnieViL2(tiny_config()), "cpu", gradient_checkpointing=False, freeze=None)


def test_every_parameter_is_decayed_exactly_as_documented(model):
    """Name by name: each trainable parameter is in exactly one group, and it is the decayed group iff the README's
    rule says so; the other group's weight decay is 0."""
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=WEIGHT_DECAY)
    groups = named_groups(optimizer, model)
    placed = [n for names, _ in groups for n in names]
    assert sorted(placed) == sorted(n for n, _ in model.named_parameters()), "each parameter exactly once"
    for names, group in groups:
        assert names, "an empty group"
        decays = group["weight_decay"]
        assert decays in (WEIGHT_DECAY, 0.0)
        for name in names:
            assert (decays == WEIGHT_DECAY) == documented_decay(model, name), (name, decays)
    spotted = {n: g["weight_decay"] for names, g in groups for n in names}
    # the rule's corner cases, spelled out
    for name in ("temperature", "vision.class_embedding", "vision.positional_embedding", "vision.norm_pre.weight",
                 "vision.norm_post.bias", "text.embeddings.word_embeddings.weight",
                 "text.embeddings.position_embeddings.weight", "text.embeddings.norm.weight",
                 "text.layers.0.attn.qkv.bias", "text.pooler.bias", "vision.layers.0.norm1.weight"):
        assert spotted[name] == 0.0, name
    for name in ("vision.patch_embed.weight", "vision.layers.0.attn.qkv.weight", "vision.layers.0.mlp.fc1.weight",
                 "text.layers.0.attn.out_proj.weight", "text.pooler.weight"):
        assert spotted[name] == WEIGHT_DECAY, name


def test_a_zero_gradient_step_decays_only_the_documented_parameters(model):
    """Behaviour, not bookkeeping: with every gradient zero, AdamW's update is the decay alone, so a decayed
    parameter becomes ``p * (1 - lr * wd)`` and every other one stays bit-identical."""
    lr = 0.1
    trained = trainable_model(ErnieViL2(tiny_config()), "cpu", gradient_checkpointing=False, freeze=None)
    before = {n: p.detach().clone() for n, p in trained.named_parameters()}
    optimizer = make_optimizer(trained, lr=lr, weight_decay=WEIGHT_DECAY)
    for p in trained.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in trained.named_parameters():
        if documented_decay(trained, name):
            torch.testing.assert_close(p.detach(), before[name] * (1 - lr * WEIGHT_DECAY), rtol=1e-6, atol=0,
                                       msg=name)
        else:
            assert torch.equal(p.detach(), before[name]), name


def test_frozen_parameters_are_left_out_of_the_optimizer():
    for frozen in ("vision", "text"):
        lit = trainable_model(ErnieViL2(tiny_config()), "cpu", gradient_checkpointing=False, freeze=frozen)
        optimizer = make_optimizer(lit, lr=1e-3, weight_decay=WEIGHT_DECAY)
        names = {n for names, _ in named_groups(optimizer, lit) for n in names}
        expected = {n for n, _ in lit.named_parameters() if not n.startswith(frozen + ".")}
        assert names == expected and "temperature" in names, frozen
        assert all(g["params"] for g in parameter_groups(lit, WEIGHT_DECAY))


def test_adamw_hyperparameters_are_the_ones_given(model):
    optimizer = make_optimizer(model, lr=3e-4, weight_decay=0.01, betas=(0.8, 0.95), eps=1e-6)
    assert isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        assert group["lr"] == 3e-4 and group["betas"] == (0.8, 0.95) and group["eps"] == 1e-6
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


# ---- schedule -------------------------------------------------------------------------------------------------------
def reference_factor(step: int, warmup: int, total: int) -> float:
    """README: ``--warmup_steps`` linear from 0, then cosine decay to zero at the last step."""
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize("warmup,total", [(0, 10), (1, 7), (4, 12), (10, 11), (3, 1000)])
def test_schedule_matches_its_definition_at_every_step(warmup, total):
    for step in range(total + 1):
        assert math.isclose(warmup_cosine(step, warmup, total), reference_factor(step, warmup, total),
                            rel_tol=1e-12, abs_tol=1e-15), step
    assert warmup_cosine(total, warmup, total) == pytest.approx(0.0, abs=1e-15)
    assert warmup_cosine(warmup, warmup, total) == 1.0  # the peak is reached exactly when warm-up ends
    assert all(warmup_cosine(s, warmup, total) >= 0.0 for s in range(total + 1))


def test_scheduler_sets_the_learning_rate_of_both_groups(model):
    optimizer = make_optimizer(model, lr=1e-2, weight_decay=0.1)
    scheduler = make_scheduler(optimizer, warmup_steps=2, total_steps=6)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert [lrs[0] for lrs in seen] == pytest.approx([1e-2 * reference_factor(s, 2, 6) for s in range(6)])
    assert all(lrs[0] == lrs[1] for lrs in seen)
