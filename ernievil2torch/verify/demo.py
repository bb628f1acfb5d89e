"""Demo inputs the project draws itself, so every command has a default that runs on a fresh machine.

Three images drawn with Pillow (a red disc, a blue square, a green triangle) with Chinese captions that describe
them. Nothing is downloaded; the synthetic vocab that lets the random-weight demo tokenize these captions is in
:mod:`~ernievil2torch.verify.synthetic`.
"""
from __future__ import annotations

from typing import List, Tuple

from PIL import Image, ImageDraw

DEMO_CAPTIONS: Tuple[str, ...] = ("一个红色的圆形", "一个蓝色的正方形", "一个绿色的三角形")


def demo_images(size: int = 320) -> List[Image.Image]:
    """A red disc, a blue square and a green triangle on white, in the order of :data:`DEMO_CAPTIONS`."""
    images = []
    margin = size // 6
    box = (margin, margin, size - margin, size - margin)
    for shape in ("circle", "square", "triangle"):
        image = Image.new("RGB", (size, size + size // 4), "white")  # not square: exercises resize + crop
        draw = ImageDraw.Draw(image)
        top = size // 8
        shifted = (box[0], box[1] + top, box[2], box[3] + top)
        if shape == "circle":
            draw.ellipse(shifted, fill=(220, 30, 30))
        elif shape == "square":
            draw.rectangle(shifted, fill=(30, 60, 220))
        else:
            draw.polygon([((shifted[0] + shifted[2]) // 2, shifted[1]), (shifted[0], shifted[3]),
                          (shifted[2], shifted[3])], fill=(30, 170, 60))
        images.append(image)
    return images
