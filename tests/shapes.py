"""The drawn shapes x colours set and a tiny random model for the fine-tuning tests (nothing downloaded).

``write_shape_dataset(root)`` draws every shape x colour (``一个红色的圆形``, ...) at a random position, size and
background and writes them in the captions-file format ``eval`` and ``finetune`` read; a fine-tuning run must learn
to match caption and picture on it (the proof-that-it-learns test).

``shapes_setup(root)`` writes ``root/model`` (the tiny config with a 200-token synthetic vocab, every weight random at
unit gain, the temperature at its official initial value as for a model trained from nothing), ``root/train`` (every
caption drawn ``images_per_caption`` times) and ``root/val`` (each caption once, so text->image R@1 by chance is
1/20).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from ernievil2torch.config import ErnieViL2Config, tiny_config
from ernievil2torch.constants import OFFICIAL_TEMPERATURE_INIT
from ernievil2torch.data.demo import SHAPE_COLOURS, SHAPES, draw_shape, shape_caption
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.verify.synthetic import random_state, write_synthetic_vocab

VOCAB_SIZE = 200
IMAGE_SIDE = 40  # drawn 45 x 40, resized to the tiny model's 32 px by the official pipeline


def random_shape_image(shape: str, colour: Tuple[int, int, int], size: int, rng: np.random.Generator
                       ) -> Image.Image:
    """``shape`` in ``colour`` at a random place and scale (40-80 % of the side) on a light random background;
    the image is a little wider than tall, so the resize and the crops have work to do."""
    width, height = size + size // 8, size
    background = tuple(int(v) for v in rng.integers(200, 256, size=3))
    image = Image.new("RGB", (width, height), background)
    side = int(rng.integers(int(0.6 * size), int(0.9 * size) + 1))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    draw_shape(ImageDraw.Draw(image), shape, (left, top, left + side - 1, top + side - 1), colour)
    return image


def write_shape_dataset(root: Union[str, Path], images_per_caption: int = 1, size: int = 64, seed: int = 0,
                        name: str = "captions.jsonl") -> Path:
    """Draw every shape x colour ``images_per_caption`` times into ``root/images`` and write ``root/name``
    (``{"image": "images/...png", "caption": "一个红色的圆形"}`` per line). Returns the captions file; the image
    folder for ``--images`` is ``root``. ``len(SHAPES) * len(SHAPE_COLOURS)`` = 20 distinct captions."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for k in range(images_per_caption):
        for s, shape in enumerate(SHAPES):
            for c, (colour, rgb) in enumerate(SHAPE_COLOURS.items()):
                relative = f"images/{seed}_{k}_{s}_{c}.png"
                random_shape_image(shape, rgb, size, rng).save(root / relative)
                lines.append(json.dumps({"image": relative, "caption": shape_caption(colour, shape)},
                                        ensure_ascii=False))
    captions = root / name
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return captions


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
