"""The model a fine-tuning run trains: a learnable temperature, gradient checkpointing, an optionally frozen tower.

A frozen tower (``--freeze vision`` or ``text``) has no gradient and stays in eval mode during training (no dropout),
so it computes exactly what inference computes; the other tower and the temperature train.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

from ..constants import OFFICIAL_TEMPERATURE_INIT
from ..modeling import ErnieViL2
from .settings import TOWERS


def with_temperature(model: ErnieViL2) -> ErnieViL2:
    """The model itself, or a copy with a learnable temperature at the official initial value when its checkpoint
    had none (contrastive training needs the scale; plain cosine logits would hardly move the loss)."""
    if model.temperature is not None:
        return model
    config = dataclasses.replace(model.config, has_temperature=True)
    copy = ErnieViL2(config)
    missing, unexpected = copy.load_state_dict(model.state_dict(), strict=False)
    assert missing == ["temperature"] and not unexpected, (missing, unexpected)
    with torch.no_grad():
        copy.temperature.fill_(OFFICIAL_TEMPERATURE_INIT)
    return copy


def trainable_model(model: ErnieViL2, device: Union[str, torch.device], gradient_checkpointing: bool,
                    freeze: Optional[str]) -> ErnieViL2:
    """``model`` ready to train on ``device``: with a temperature (:func:`with_temperature`), activations
    recomputed in backward when ``gradient_checkpointing``, and the ``freeze`` tower (``'vision'``/``'text'``/None)
    without gradient."""
    model = with_temperature(model).to(device)
    model.set_gradient_checkpointing(gradient_checkpointing)
    for tower in TOWERS:
        getattr(model, tower).requires_grad_(freeze != tower)
    return model


def train_mode(model: ErnieViL2, freeze: Optional[str]) -> None:
    """Put ``model`` in training mode, except the ``freeze`` tower, which stays in eval mode (no dropout)."""
    model.train()
    if freeze:
        getattr(model, freeze).eval()
