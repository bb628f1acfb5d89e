"""Image-text similarity of a converted model: the matrix behind ``test.py performance_check``.

Images are decoded once (to RGB arrays) and those arrays feed both the model and the thumbnails of ``--plot``.
With no images or texts given, the three demo images the project draws and their captions are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..constants import DEFAULT_MAX_LENGTH
from ..pretrained import load_pretrained
from ..processing.length_groups import LengthGroupedTexts
from ..data.demo import DEMO_CAPTIONS, demo_images
from ..storage.provenance import SYNTHETIC_NOTICE, has_synthetic_weights

DEMO_IMAGE_NAMES = ("disc(drawn)", "square(drawn)", "triangle(drawn)")


@dataclass
class SimilarityResult:
    """``similarity[t, i]`` is the cosine of text ``t`` and image ``i`` (rows texts, columns images)."""

    model_dir: str
    similarity: torch.Tensor
    texts: List[str]
    image_names: List[str]
    images: List[np.ndarray]
    logit_scale: Optional[float]
    synthetic: bool

    def probabilities(self) -> Optional[torch.Tensor]:
        """Per image, softmax over the texts of ``logit_scale * cosine`` [images, texts]; None without a scale."""
        if self.logit_scale is None:
            return None
        return (self.logit_scale * self.similarity.T).softmax(dim=-1)

    def matrix_lines(self) -> List[str]:
        """The matrix as text: one row per text, labelled ``T1..Tn``, cosines to four decimals in image order, then
        the text."""
        width = len(f"T{len(self.texts)}")
        return [f"  {f'T{row + 1}'.ljust(width)} [" + ", ".join(f"{value:+.4f}" for value in values) + f"]  {text}"
                for row, (values, text) in enumerate(zip(self.similarity.tolist(), self.texts))]

    def summary(self) -> str:
        """The report ``test.py performance_check`` prints: the matrix, then each image's probabilities."""
        lines = [f"*** {SYNTHETIC_NOTICE}"] if self.synthetic else []
        lines += [f"model: {self.model_dir}  images: {', '.join(self.image_names)}",
                  "cosine similarity (rows: texts, columns: images)", *self.matrix_lines()]
        probs = self.probabilities()
        if probs is not None:
            lines += ["", f"per-image probabilities over the texts (logit_scale {self.logit_scale:.2f})"]
            for name, row in zip(self.image_names, probs):
                best = int(row.argmax())
                lines.append(f"  {name}: " + ", ".join(f"{t} {p:.3f}" for t, p in zip(self.texts, row.tolist()))
                             + f"  -> {self.texts[best]}")
        return "\n".join(lines)


def image_text_similarity(model_dir: str, images: Optional[Sequence[str]] = None,
                          texts: Optional[Sequence[str]] = None, vocab: Optional[str] = None,
                          max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 64) -> SimilarityResult:
    """Cosine similarity of every text with every image under the model in ``model_dir``.

    ``images`` are paths (default: the three drawn demo images), ``texts`` captions (default: the demo captions),
    encoded ``batch_size`` at a time in batches grouped by token length (rows stay in the order given).
    Raises :class:`~ernievil2torch.errors.InputError` for an unreadable image or a missing vocab and
    :class:`~ernievil2torch.errors.CheckpointError` for a damaged model directory.
    """
    loaded = load_pretrained(model_dir, vocab=vocab)
    tokenizer, processor = loaded.require_tokenizer(), loaded.image_processor
    if images:
        arrays = [processor.load_image(path, index) for index, path in enumerate(images)]
        names = [Path(p).name for p in images]
    else:
        arrays = [np.asarray(image) for image in demo_images()]
        names = list(DEMO_IMAGE_NAMES)
    text_list = list(texts) if texts else list(DEMO_CAPTIONS)
    groups = LengthGroupedTexts(tokenizer, text_list, batch_size, max_length)
    model = loaded.model
    with torch.inference_mode():
        image_features = model.encode_image(processor(arrays), normalize=True)
        text_features = groups.encode(lambda ids, mask: model.encode_text(ids, mask, normalize=True))
    scale = model.logit_scale
    return SimilarityResult(
        model_dir=str(model_dir), similarity=text_features @ image_features.T, texts=text_list, image_names=names,
        images=arrays, logit_scale=None if scale is None else float(scale.detach()),
        synthetic=has_synthetic_weights(loaded.path))
