"""Validation during fine-tuning: zero-shot retrieval recall on a held-out caption file, with the eval pipeline.

The same features and metrics as ``ernievil2 eval`` (:func:`~ernievil2torch.runtime.encoding.encode_items`, the
official centre-crop preprocessing, raw-cosine ranking, :func:`~ernievil2torch.retrieval.metrics.
retrieval_metrics`). An image that cannot be read is left out with its captions and reported instead of stopping
the run (with none left, there are no metrics); the trainer treats any such failure before the first step as bad
input.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ContextManager, Dict, List, Optional, Tuple

import numpy as np

from ..data.readers import IndexedCaptions
from ..modeling import ErnieViL2
from ..processing import ErnieViL2Tokenizer
from ..retrieval.metrics import retrieval_metrics
from ..runtime.encoding import encode_items


@dataclass
class Validation:
    """Recall on the validation data: ``metrics`` as :func:`~ernievil2torch.retrieval.metrics.retrieval_metrics`
    gives them (None when no caption with a readable image was left), ``skipped`` the (image id or "caption N",
    reason) of every image or caption left out."""

    metrics: Optional[Dict[str, Any]]
    skipped: List[Tuple[str, str]]

    def record(self) -> Dict[str, Any]:
        """The JSON-friendly summary logged to ``metrics.jsonl``."""
        skipped = [name for name, _ in self.skipped]
        if self.metrics is None:
            return {"t2i": None, "i2t": None, "mean_recall": None, "skipped_images": skipped}
        m = self.metrics
        return {"t2i": m["t2i"], "i2t": m["i2t"], "mean_recall": m["mean_recall"], "num_texts": m["num_texts"],
                "num_images": m["num_images"], "skipped_images": skipped}


def validate(model: ErnieViL2, tokenizer: ErnieViL2Tokenizer, data: IndexedCaptions, batch_size: int,
             num_workers: int, max_length: int, autocast: ContextManager = contextlib.nullcontext()) -> Validation:
    """Recall both ways on ``data``, its images read as they are encoded (the model is put in eval mode; the caller
    restores training mode)."""
    model.eval()
    with autocast:
        image_feats, image_ok, image_failed = encode_items(model, data.image_items(), "image", batch_size,
                                                           num_workers)
        text_feats, text_ok, text_failed = encode_items(model, data.caption_items(), "text", batch_size,
                                                        num_workers, tokenizer, max_length)
    skipped = [(data.image_ids[i], reason) for i, reason in image_failed]
    skipped += [(f"caption {i}", reason) for i, reason in text_failed]
    new_index = {old: new for new, old in enumerate(image_ok)}
    keep = [row for row, t in enumerate(text_ok) if data.text_image[t] in new_index]
    if not keep:
        return Validation(None, skipped)
    links = [new_index[data.text_image[text_ok[row]]] for row in keep]
    metrics = retrieval_metrics(np.asarray(text_feats)[keep], image_feats, links)
    return Validation(metrics, skipped)
