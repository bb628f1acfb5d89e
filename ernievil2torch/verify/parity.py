"""Side-by-side comparison of the PyTorch port with the Paddle reference on the same inputs.

Used by ``check.py logit_check`` and the tests: same pixel tensor, same token ids (with padding in the batch), then
per tower the max abs diff and the worst row cosine of the features, and the max abs diff of the scaled logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..config import ErnieViL2Config
from ..modeling import ErnieViL2
from ..retrieval.metrics import cosine_rows

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


# ---- gradients of one training step ------------------------------------------------------------------------------
#: Gradient bounds: the loss, and every gradient's max abs diff relative to that gradient's largest magnitude.
LOSS_ATOL = 1e-5
GRADIENT_REL_TOL = 1e-4
GRADIENT_GROUPS = (("image tower", "vision."), ("text tower", "text."), ("temperature", "temperature"),
                   ("pixels", "pixel_values"))


@dataclass
class GradientDiff:
    """One gradient against its reference: max abs diff, the reference's largest magnitude, cosine."""

    name: str
    max_abs: float
    scale: float
    cosine: float

    @property
    def relative(self) -> float:
        """``max_abs / scale`` (0 when both are exactly zero)."""
        if self.scale == 0.0:
            return 0.0 if self.max_abs == 0.0 else float("inf")
        return self.max_abs / self.scale


def gradient_diff(name: str, ours: np.ndarray, reference: np.ndarray) -> GradientDiff:
    a, b = np.asarray(ours, np.float64).ravel(), np.asarray(reference, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{name}: gradient of {a.size} values vs the reference's {b.size}")
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / norms) if norms > 0 else float(np.array_equal(a, b))
    return GradientDiff(name, float(np.abs(a - b).max()), float(np.abs(b).max()), cosine)


@dataclass
class GradientReport:
    """Loss and gradients of one step (ours vs a reference), summarised per tower."""

    loss_ours: float
    loss_reference: float
    diffs: List[GradientDiff]

    def group(self, prefix: str) -> List[GradientDiff]:
        return [d for d in self.diffs if d.name.startswith(prefix)]

    def passed(self, loss_atol: float = LOSS_ATOL, rel_tol: float = GRADIENT_REL_TOL) -> bool:
        return abs(self.loss_ours - self.loss_reference) <= loss_atol and all(
            d.relative <= rel_tol for d in self.diffs)

    def table(self) -> str:
        lines = [f"loss: ours {self.loss_ours:.8f}, reference {self.loss_reference:.8f}, "
                 f"|diff| {abs(self.loss_ours - self.loss_reference):.3e}",
                 "| gradients | tensors | max abs diff | max diff / largest magnitude (worst tensor) | "
                 "1 - min cosine |",
                 "|---|---|---|---|---|"]
        for label, prefix in GRADIENT_GROUPS:
            diffs = self.group(prefix)
            if not diffs:
                continue
            worst = max(diffs, key=lambda d: d.relative)
            lines.append(f"| {label} | {len(diffs)} | {max(d.max_abs for d in diffs):.3e} | "
                         f"{worst.relative:.3e} ({worst.name}) | {1 - min(d.cosine for d in diffs):.1e} |")
        return "\n".join(lines)


def compare_gradients(ours: Dict[str, np.ndarray], reference: Dict[str, np.ndarray], loss_ours: float,
                      loss_reference: float) -> GradientReport:
    """Both dicts in our layout ({parameter name or ``pixel_values``: gradient}); their key sets must agree."""
    if set(ours) != set(reference):
        raise ValueError(f"gradient sets differ: only ours {sorted(set(ours) - set(reference))[:5]}, only the "
                         f"reference {sorted(set(reference) - set(ours))[:5]}")
    return GradientReport(float(loss_ours), float(loss_reference),
                          [gradient_diff(name, ours[name], reference[name]) for name in sorted(ours)])


def torch_training_step(model: ErnieViL2, pixel_values: np.ndarray, input_ids: np.ndarray
                        ) -> Tuple[float, Dict[str, np.ndarray]]:
    """Loss and gradients (every parameter and ``pixel_values``) of one training-mode step of ``model``
    (``return_loss=True``, image i paired with text i); the model's gradients are cleared afterwards."""
    model.train()
    model.zero_grad(set_to_none=True)
    pixels = torch.from_numpy(np.asarray(pixel_values, np.float32)).requires_grad_(True)
    loss = model(pixels, torch.from_numpy(np.asarray(input_ids, np.int64)), return_loss=True).loss
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    if missing:
        raise RuntimeError(f"no gradient reached {missing[:5]}")
    grads = {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()}
    grads["pixel_values"] = pixels.grad.numpy().copy()
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads
