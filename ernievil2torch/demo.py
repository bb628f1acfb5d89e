"""Inputs the project makes itself, so every command has a default that runs on a fresh machine.

Three images drawn with Pillow, with Chinese captions that describe them, and (for the synthetic checkpoint only)
a synthetic vocab in the official ``token<TAB>id`` format. The real vocab is Baidu's file; the synthetic one only
lets the random-weight demo tokenize its captions.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import List, Tuple, Union

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


def write_synthetic_vocab(path: Union[str, Path], vocab_size: int = 40000) -> Path:
    """A SYNTHETIC vocab of ``vocab_size`` entries: specials, ASCII, then CJK ideographs; ``[UNK]`` last.

    Only for the random-weight demo checkpoint (no real vocab can be shipped). Ids are not the real ones.
    """
    if vocab_size < 200:
        raise ValueError("a synthetic vocab needs at least 200 entries")
    tokens = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [chr(c) for c in range(33, 127)]
    seen = set(tokens)
    for caption in DEMO_CAPTIONS:  # make sure the demo captions never hit [UNK]
        tokens += [ch for ch in caption if ch not in seen and not seen.add(ch)]
    # CJK Unified Ideographs, then Extension A, then Extension B: plenty of single-character tokens.
    codes = itertools.chain(range(0x4E00, 0xA000), range(0x3400, 0x4DC0), range(0x20000, 0x2A6E0))
    for code in codes:
        if len(tokens) >= vocab_size - 1:
            break
        if chr(code) not in seen:
            tokens.append(chr(code))
    tokens.append("[UNK]")
    path = Path(path)
    path.write_text("".join(f"{token}\t{index}\n" for index, token in enumerate(tokens)), encoding="utf-8")
    return path
