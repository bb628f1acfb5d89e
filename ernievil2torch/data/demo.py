"""Demo images the project draws itself, so every command that shows similarities has a default input that runs on
a fresh machine (nothing is downloaded).

* :data:`DEMO_CAPTIONS` and :func:`demo_images`: a red disc, a blue square and a green triangle, each with the
  Chinese caption that describes it (``similarity`` uses them when given no images or texts);
* :data:`SHAPES`, :data:`SHAPE_COLOURS`, :func:`shape_caption`, :func:`draw_shape`: the shapes, colours and caption
  wording these and the drawn image-caption sets of the fine-tuning tests share.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from PIL import Image, ImageDraw

DEMO_CAPTIONS: Tuple[str, ...] = ("一个红色的圆形", "一个蓝色的正方形", "一个绿色的三角形")

#: Colours and shapes of the drawn sets (Chinese name -> RGB / drawing).
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
