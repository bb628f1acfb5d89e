"""Side-by-side comparison of the PyTorch port with the Paddle reference on the same inputs.

Used by ``check.py logit_check`` and the tests: same pixel tensor, same token ids (with padding in the batch), then
per tower the max abs diff and the worst row cosine of the features, and the max abs diff of the scaled logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from ..config import ErnieViL2Config
from ..modeling import ErnieViL2

# The project's fidelity bounds (fp32, CPU); the tests assert the same numbers.
FEATURE_ATOL = 1e-5
MIN_COSINE = 0.999999
LOGIT_ATOL = 1e-4


@dataclass
class ParityInputs:
    pixel_values: np.ndarray  # [B, 3, H, W] float32, already normalised
    input_ids: np.ndarray     # [T, L] int64, padded with 0


def synthetic_inputs(config: ErnieViL2Config, seed: int = 0, images: int = 2,
                     lengths: tuple = (8, 48, 5, 17)) -> ParityInputs:
    """Seeded pixels in the normalised ImageNet range and ids of several lengths, padded with 0 to the longest."""
    rng = np.random.default_rng(seed)
    size = config.vision.image_size
    pixels = rng.uniform(-2.1, 2.6, size=(images, config.vision.num_channels, size, size)).astype(np.float32)
    width = min(max(lengths), config.text.max_position_embeddings)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    for row, length in enumerate(lengths):
        length = min(length, width)
        ids[row, :length] = rng.integers(4, config.text.vocab_size, size=length)
        ids[row, 0], ids[row, length - 1] = 1, 2  # [CLS] ... [SEP]
    return ParityInputs(pixels, ids)


def run_torch(model: ErnieViL2, inputs: ParityInputs) -> Dict[str, Optional[np.ndarray]]:
    with torch.inference_mode():
        out = model(torch.from_numpy(inputs.pixel_values), torch.from_numpy(inputs.input_ids))
    scale = model.logit_scale
    return {"image_features": out.image_embeds.float().numpy(), "text_features": out.text_embeds.float().numpy(),
            "logits_per_image": out.logits_per_image.float().numpy(),
            "logit_scale": None if scale is None else scale.detach().float().numpy()}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(-1) / (np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1))


@dataclass
class ParityReport:
    image_max_abs: float
    image_min_cosine: float
    text_max_abs: float
    text_min_cosine: float
    logits_max_abs: float

    def passed(self, feature_atol: float = FEATURE_ATOL, min_cosine: float = MIN_COSINE,
               logit_atol: float = LOGIT_ATOL) -> bool:
        return (self.image_max_abs <= feature_atol and self.text_max_abs <= feature_atol
                and self.image_min_cosine >= min_cosine and self.text_min_cosine >= min_cosine
                and self.logits_max_abs <= logit_atol)

    def table(self) -> str:
        return "\n".join([
            "| tower | max abs diff | min cosine |",
            "|---|---|---|",
            f"| image features | {self.image_max_abs:.3e} | {self.image_min_cosine:.9f} |",
            f"| text features | {self.text_max_abs:.3e} | {self.text_min_cosine:.9f} |",
            f"| scaled logits | {self.logits_max_abs:.3e} | |",
        ])


def compare(ours: Dict[str, Optional[np.ndarray]], reference: Dict[str, Optional[np.ndarray]]) -> ParityReport:
    def max_abs(key: str) -> float:
        return float(np.abs(ours[key].astype(np.float64) - reference[key].astype(np.float64)).max())

    return ParityReport(
        image_max_abs=max_abs("image_features"),
        image_min_cosine=float(cosine_rows(ours["image_features"], reference["image_features"]).min()),
        text_max_abs=max_abs("text_features"),
        text_min_cosine=float(cosine_rows(ours["text_features"], reference["text_features"]).min()),
        logits_max_abs=max_abs("logits_per_image"),
    )
