"""Drawn image-caption sets for proofs that run on a fresh machine (nothing is downloaded).

The demo images, shapes, colours and caption wording live in :mod:`ernievil2torch.data.demo` (re-exported here).

* :func:`write_shape_dataset`: an image-caption set of shapes x colours (``一个红色的圆形``, ...), each image drawn
  at a random position, size and background, written in the captions-file format ``eval`` and ``finetune`` read.
  A fine-tuning run must learn to match caption and picture on it (the proof-that-it-learns test).

The synthetic vocab that tokenizes these captions is in :mod:`~ernievil2torch.verify.synthetic`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from ..data.demo import DEMO_CAPTIONS, SHAPE_COLOURS, SHAPES, demo_images, draw_shape, shape_caption

__all__ = ["DEMO_CAPTIONS", "SHAPE_COLOURS", "SHAPES", "demo_images", "draw_shape", "random_shape_image",
           "shape_caption", "write_shape_dataset"]


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
