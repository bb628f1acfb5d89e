"""Demo inputs the project draws itself, so every command has a default that runs on a fresh machine.

* :func:`demo_images`: a red disc, a blue square and a green triangle with Chinese captions describing them;
* :func:`write_shape_dataset`: an image-caption set of shapes x colours (``一个红色的圆形``, ...), each image drawn
  at a random position, size and background, written in the captions-file format ``eval`` and ``finetune`` read.
  A fine-tuning run must learn to match caption and picture on it (the proof-that-it-learns test).

Nothing is downloaded; the synthetic vocab that tokenizes these captions is in :mod:`~ernievil2torch.verify.synthetic`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

DEMO_CAPTIONS: Tuple[str, ...] = ("一个红色的圆形", "一个蓝色的正方形", "一个绿色的三角形")

#: Colours and shapes of :func:`write_shape_dataset` (Chinese name -> RGB / drawing).
SHAPE_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "红色": (220, 30, 30), "蓝色": (30, 60, 220), "绿色": (30, 170, 60), "黄色": (235, 205, 20),
    "紫色": (140, 50, 180)}
SHAPES: Tuple[str, ...] = ("圆形", "正方形", "三角形", "十字形")


def shape_caption(colour: str, shape: str) -> str:
    """The caption of a drawn shape, e.g. ``一个红色的圆形`` (the wording of :data:`DEMO_CAPTIONS`)."""
    return f"一个{colour}的{shape}"


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Tuple[int, int, int, int],
               fill: Tuple[int, int, int]) -> None:
    """Draw one of :data:`SHAPES` filling ``box`` (left, top, right, bottom)."""
    left, top, right, bottom = box
    if shape == "圆形":
        draw.ellipse(box, fill=fill)
    elif shape == "正方形":
        draw.rectangle(box, fill=fill)
    elif shape == "三角形":
        draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=fill)
    elif shape == "十字形":
        third_w, third_h = (right - left) // 3, (bottom - top) // 3
        draw.rectangle((left + third_w, top, right - third_w, bottom), fill=fill)
        draw.rectangle((left, top + third_h, right, bottom - third_h), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def demo_images(size: int = 320) -> List[Image.Image]:
    """A red disc, a blue square and a green triangle on white, in the order of :data:`DEMO_CAPTIONS`."""
    images = []
    margin = size // 6
    top = size // 8
    box = (margin, margin + top, size - margin, size - margin + top)
    for shape, colour in (("圆形", (220, 30, 30)), ("正方形", (30, 60, 220)), ("三角形", (30, 170, 60))):
        image = Image.new("RGB", (size, size + size // 4), "white")  # not square: exercises resize + crop
        draw_shape(ImageDraw.Draw(image), shape, box, colour)
        images.append(image)
    return images


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
