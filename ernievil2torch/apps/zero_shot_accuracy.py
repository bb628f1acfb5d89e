"""Dataset-level zero-shot classification accuracy, computed as CLIP_benchmark computes it.

The labelled images come in CLIP_benchmark's ``wds/`` layout (:func:`~ernievil2torch.data.webdataset.
open_labelled_images`). The classifier is the prompt ensemble of :func:`~ernievil2torch.apps.zero_shot.
build_classifier` (every template with the class name, features L2-normalised, averaged, normalised again: what
CLIP_benchmark's ``zero_shot_classifier`` does), images are ranked against it by cosine, and the figures are
CLIP_benchmark's: top-1 and top-5 accuracy (top-5 only with at least 5 classes) and the mean per-class recall
(balanced accuracy over the classes that have images).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import DEFAULT_MAX_LENGTH
from ..data.webdataset import open_labelled_images
from ..errors import InputError
from ..modeling.dtypes import torch_dtype
from ..pretrained import load_pretrained
from ..runtime.distributed import pick_device
from ..runtime.encoding import encode_items
from .zero_shot import build_classifier


@dataclass
class ZeroShotAccuracy:
    """What :func:`zero_shot_accuracy` measured: accuracies as fractions (CLIP_benchmark's ``acc1``, ``acc5``,
    ``mean_per_class_recall``; ``acc5`` is NaN with fewer than 5 classes), the counts, and ``skipped`` lines."""

    acc1: float
    acc5: float
    mean_per_class_recall: float
    num_images: int
    num_classes: int
    skipped: Tuple[str, ...] = ()

    def metrics(self) -> dict:
        return {"acc1": self.acc1, "acc5": self.acc5, "mean_per_class_recall": self.mean_per_class_recall,
                "num_images": self.num_images, "num_classes": self.num_classes, "skipped": list(self.skipped)}

    def summary(self) -> str:
        acc5 = "n/a (fewer than 5 classes)" if math.isnan(self.acc5) else f"{100 * self.acc5:.2f}%"
        lines = [f"{self.num_images} images, {self.num_classes} classes: top-1 {100 * self.acc1:.2f}%, top-5 {acc5}, "
                 f"mean per-class recall {100 * self.mean_per_class_recall:.2f}%"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} sample(s): " + "; ".join(self.skipped[:3])
                         + (" ..." if len(self.skipped) > 3 else ""))
        return "\n".join(lines)


def accuracy_figures(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[float, float, float]:
    """(top-1, top-5 or NaN under 5 classes, mean per-class recall) of ``logits`` [images, classes]."""
    k, count = min(5, logits.shape[1]), labels.shape[0]
    top = logits.topk(k, dim=1).indices
    acc1 = int((top[:, 0] == labels).sum()) / count
    acc5 = int((top == labels[:, None]).any(dim=1).sum()) / count if logits.shape[1] >= 5 else float("nan")
    pred = top[:, 0]
    recalls = [int((pred[labels == c] == c).sum()) / int((labels == c).sum()) for c in labels.unique().tolist()]
    return acc1, acc5, float(np.mean(recalls))


def zero_shot_accuracy(model_dir: str, data: str, split: str = "test", batch_size: int = 64, num_workers: int = 0,
                       dtype: str = "float32", device: Optional[str] = None, vocab: Optional[str] = None,
                       max_length: int = DEFAULT_MAX_LENGTH, progress: bool = True) -> ZeroShotAccuracy:
    """Zero-shot accuracy of the model in ``model_dir`` on the labelled images of ``data`` (CLIP_benchmark's
    ``wds/`` layout: ``classnames.txt``, ``zeroshot_classification_templates.txt`` with ``{c}``, ``SPLIT/*.tar``
    with ``KEY.png`` + ``KEY.cls``). Images that cannot be decoded are skipped and listed, like damaged samples.
    :class:`InputError` for a malformed set (before the model loads) or when no image could be read."""
    labelled = open_labelled_images(data, split)
    loaded = load_pretrained(model_dir, dtype=torch_dtype(dtype), device=pick_device(device, local_rank=0),
                             vocab=vocab)
    model, tokenizer = loaded.model, loaded.require_tokenizer()
    templates = [t.replace("{c}", "{}") for t in labelled.templates]
    classifier = build_classifier(model, tokenizer, labelled.classnames, templates, max_length=max_length)
    feats, ok, failed = encode_items(model, labelled.items, "image", batch_size, num_workers, progress=progress)
    if not ok:
        raise InputError(f"none of the {len(labelled.items)} images of {data} could be read")
    logits = F.normalize(torch.from_numpy(feats), dim=-1) @ classifier.float().T
    labels = torch.tensor([labelled.labels[i] for i in ok])
    acc1, acc5, recall = accuracy_figures(logits, labels)
    skipped = [f"{where}: {why}" for where, why in labelled.problems]
    skipped += [f"{labelled.items[i].id}: {why}" for i, why in failed]
    return ZeroShotAccuracy(acc1, acc5, recall, len(ok), len(labelled.classnames), tuple(skipped))
