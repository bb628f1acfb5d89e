"""The drawn shapes x colours set and a tiny random model for the fine-tuning tests (nothing downloaded).

``shapes_setup(root)`` writes ``root/model`` (the tiny config with a 200-token synthetic vocab, every weight random at
unit gain, the temperature at its official initial value as for a model trained from nothing), ``root/train`` (every
caption drawn ``images_per_caption`` times) and ``root/val`` (each caption once, so text->image R@1 by chance is
1/20).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ernievil2torch.config import ErnieViL2Config, tiny_config
from ernievil2torch.constants import OFFICIAL_TEMPERATURE_INIT
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.verify.demo import write_shape_dataset
from ernievil2torch.verify.synthetic import random_state, write_synthetic_vocab

VOCAB_SIZE = 200
IMAGE_SIDE = 40  # drawn 45 x 40, resized to the tiny model's 32 px by the official pipeline


@dataclass
class ShapesSetup:
    model: Path
    train: Path
    train_images: Path
    val: Path
    val_images: Path


def shapes_config(text_dropout: float = 0.1) -> ErnieViL2Config:
    """The tiny config with room for the synthetic vocab; ``text_dropout`` for both text dropout rates."""
    config = tiny_config()
    return dataclasses.replace(config, text=dataclasses.replace(
        config.text, vocab_size=VOCAB_SIZE, hidden_dropout=text_dropout, attention_dropout=text_dropout))


def shapes_setup(root: Path, images_per_caption: int = 8, text_dropout: float = 0.1, seed: int = 0) -> ShapesSetup:
    root = Path(root)
    config = shapes_config(text_dropout)
    model = ErnieViL2(config)
    state = random_state(config, seed, unit_gain=True)
    state["temperature"][:] = OFFICIAL_TEMPERATURE_INIT  # a model trained from nothing starts where CLIP does
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.save_pretrained(root / "model")
    write_synthetic_vocab(root / "model" / "vocab.txt", VOCAB_SIZE)
    train = write_shape_dataset(root / "train", images_per_caption, IMAGE_SIDE, seed=seed + 1)
    val = write_shape_dataset(root / "val", 1, IMAGE_SIDE, seed=seed + 2)
    return ShapesSetup(root / "model", train, root / "train", val, root / "val")
