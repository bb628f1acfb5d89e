"""The train-time image pipeline: the official random crop and flip around the official resize.

Baidu's training preprocessing (``Research/ERNIE-ViL2/ernievil2/utils/preprocess_image.py``,
``decode_image_base64(..., mode='train')``) scales the short side to 224 (``group_scale``, the same resize as the
eval pipeline), takes a random 224 x 224 crop (``group_random_crop``: offsets ``random.randint(0, W - 224)``, both ends
included) and flips horizontally with probability 0.5 (``group_random_flip``). This module does exactly that, reusing
the eval pipeline's decoder, resize arithmetic and normalisation (:mod:`ernievil2torch.processing.image`).

Not reproduced: the official code also has a colour step (``new_data_augument``: colour jitter 0.4/0.4/0.4/0.1 with
probability 0.8, greyscale with probability 0.2, Gaussian blur with probability 0.5). PaddleNLP's recipe uses yet
another pipeline (``RandomResizedCrop(224, scale=(0.9, 1.0))``, bicubic, then a flip).

Randomness comes from the ``numpy.random.Generator`` the caller passes, so a sample's crop depends only on the seed
the trainer derives for it (run seed, epoch, sample index): the same with any number of loader workers and after a
resume.
"""
from __future__ import annotations

import numpy as np
import torch

from ..processing.image import ErnieViL2ImageProcessor, ImageInput, official_resize_shape, official_window


class TrainAugmentation:
    """Decode, official short-side resize, random ``S x S`` crop, random horizontal flip, ImageNet normalisation."""

    def __init__(self, image_size: int, flip_probability: float = 0.5) -> None:
        self.processor = ErnieViL2ImageProcessor(image_size=image_size)
        self.flip_probability = flip_probability

    def crop(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random window of the resized image, maybe mirrored: uint8 ``S x S x 3``."""
        size = self.processor.image_size
        height, width = rgb.shape[:2]
        new_w, new_h = official_resize_shape(width, height, size)
        left = int(rng.integers(0, new_w - size + 1))
        top = int(rng.integers(0, new_h - size + 1))
        window = official_window(rgb, left, top, size)
        if rng.random() < self.flip_probability:
            window = window[:, ::-1]
        return np.ascontiguousarray(window)

    def __call__(self, image: ImageInput, rng: np.random.Generator) -> torch.Tensor:
        """``pixel_values`` [3, S, S] float32 of one image; :class:`~ernievil2torch.errors.InputError` if it
        cannot be decoded."""
        return self.processor.normalize([self.crop(self.processor.load_image(image), rng)])[0]
