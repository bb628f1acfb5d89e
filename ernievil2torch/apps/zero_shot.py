"""Zero-shot image classification with prompt ensembles (as open_clip's ``zero_shot_classifier``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..constants import DEFAULT_MAX_LENGTH
from ..errors import InputError
from ..pretrained import load_pretrained
from ..processing import ErnieViL2Tokenizer
from ..processing.length_groups import LengthGroupedTexts

__all__ = ["DEFAULT_TEMPLATES", "DEFAULT_LOGIT_SCALE", "build_classifier", "check_templates", "classify",
           "classify_images"]

#: The default prompt, "a photo of a {}" (``{}`` is the label). Other templates are checked by
#: :func:`check_templates`.
DEFAULT_TEMPLATES = ("一张{}的照片",)
DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained value, used when the checkpoint carries no temperature


def check_templates(templates: Sequence[str]) -> None:
    """:class:`InputError` unless ``templates`` is a non-empty list of str, each with exactly one ``{}`` (where the
    label goes) and no other brace."""
    if isinstance(templates, str) or not isinstance(templates, Sequence) or len(templates) == 0:
        raise InputError("templates must be a non-empty list of str, each with one '{}'")
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            raise InputError(f"template {t!r} has no '{{}}' for the label")
        rest = t.replace("{}", "", 1)
        if "{" in rest or "}" in rest:
            raise InputError(f"template {t!r} must hold exactly one '{{}}' (for the label) and no other brace")


def build_classifier(model, tokenizer: ErnieViL2Tokenizer, labels: Sequence[str],
                     templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = 256,
                     max_length: int = DEFAULT_MAX_LENGTH) -> torch.Tensor:
    """Class weights [num_labels, dim]: every ``template.format(label)`` is encoded and L2-normalised, the
    prompts of a label are averaged, and the mean is normalised again. Prompts are encoded ``batch_size`` at a time,
    grouped by token length (:class:`LengthGroupedTexts`)."""
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) == 0:
        raise InputError("labels must be a non-empty list of str")
    check_templates(templates)
    for label in labels:
        if not isinstance(label, str):
            raise InputError(f"labels must be str, got {type(label).__name__}")
    prompts = [t.format(label) for label in labels for t in templates]
    groups = LengthGroupedTexts(tokenizer, prompts, batch_size, max_length)
    with torch.inference_mode():
        emb = groups.encode(lambda ids, mask: model.encode_text(ids, mask, normalize=True).float())
        emb = emb.view(len(labels), len(templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)


def classify(model, pixel_values: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Probabilities [num_images, num_labels]: softmax over ``logit_scale * cosine(image, class)``.

    ``logit_scale`` is ``model.logit_scale``; a model without a temperature (``logit_scale is None``) uses 100, as
    CLIP does. The ranking of labels does not depend on the scale, only how peaked the probabilities are.
    """
    if pixel_values.ndim != 4:
        raise InputError(f"pixel_values must be [B, 3, H, W], got shape {tuple(pixel_values.shape)}")
    with torch.inference_mode():
        image = model.encode_image(pixel_values, normalize=True).float()
        weights = classifier.to(image.device, torch.float32)
        if weights.ndim != 2 or weights.shape[1] != image.shape[1]:
            raise InputError(f"classifier must be [num_labels, {image.shape[1]}], got {tuple(weights.shape)}")
        scale = model.logit_scale
        scale = DEFAULT_LOGIT_SCALE if scale is None else scale.float().to(image.device)
        return (scale * image @ weights.T).softmax(dim=-1)


@dataclass
class ClassificationResult:
    """Per-image probabilities over ``labels`` (rows in the order of ``images``)."""

    images: List[str]
    labels: List[str]
    probabilities: torch.Tensor

    def summary(self) -> str:
        """One line per image: the best label, then every label's probability."""
        lines = []
        for path, row in zip(self.images, self.probabilities.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            lines.append(f"{Path(path).name}: {self.labels[best]} ({row[best]:.3f})  |  "
                         + ", ".join(f"{label} {p:.3f}" for label, p in zip(self.labels, row)))
        return "\n".join(lines)


def classify_images(model_dir: str, images: Sequence[str], labels: Sequence[str],
                    templates: Sequence[str] = DEFAULT_TEMPLATES, vocab: Optional[str] = None
                    ) -> ClassificationResult:
    """Zero-shot classification of image files with the model in ``model_dir`` (prompt ensemble over
    ``templates``). :class:`InputError` when images or labels are missing or an image cannot be read."""
    if not images or not labels:
        raise InputError("give --images a.jpg,b.jpg and --labels 猫,狗")
    check_templates(tuple(templates))
    loaded = load_pretrained(model_dir, vocab=vocab)
    classifier = build_classifier(loaded.model, loaded.require_tokenizer(), list(labels), tuple(templates))
    probs = classify(loaded.model, loaded.image_processor(list(images)), classifier)
    return ClassificationResult(list(images), list(labels), probs)
