"""The contrastive (CLIP) loss ERNIE-ViL 2.0 is trained with: symmetric cross-entropy over scaled cosine logits."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                     logit_scale: Optional[Union[torch.Tensor, float]] = None) -> torch.Tensor:
    """``(CE(logits_per_image, arange) + CE(logits_per_text, arange)) / 2`` as a 0-d float32 tensor.

    ``image_embeds`` [N, D] and ``text_embeds`` [N, D] are paired row by row (row i of each is the i-th pair; the
    other rows are its negatives); they need not be normalised: both are L2-normalised here (``x / max(|x|,
    1e-12)``, as Paddle's ``F.normalize``). ``logits_per_text = logit_scale * text @ image.T`` and
    ``logits_per_image`` is its transpose; ``logit_scale`` is ``exp(temperature)`` (a tensor, so the temperature
    learns) or None for plain cosine. Cross-entropy uses mean reduction over the N pairs.

    This is Baidu's ``ContrastiveHead`` and PaddleNLP's ``clip_loss``. Like both, no clamp is applied to the
    scale (their ``temperature.clip(-100, 100)`` result is discarded). The computation runs in float32 (float64
    for float64 inputs) with autocast disabled, so a bf16 forward still gets a float32 loss. Raises ``ValueError``
    when the two batches differ in size or are empty.
    """
    if image_embeds.dim() != 2 or text_embeds.dim() != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(f"need paired [N, D] image and text embeddings, got {tuple(image_embeds.shape)} and "
                         f"{tuple(text_embeds.shape)}")
    if image_embeds.shape[0] == 0:
        raise ValueError("the contrastive loss needs at least one image-text pair")
    dtype = torch.promote_types(image_embeds.dtype, torch.float32)  # float32, or float64 for a float64 model
    with torch.autocast(device_type=image_embeds.device.type, enabled=False):
        image = F.normalize(image_embeds.to(dtype), dim=-1)
        text = F.normalize(text_embeds.to(dtype), dim=-1)
        logits_per_text = text @ image.T
        if logit_scale is not None:
            scale = logit_scale.to(dtype) if isinstance(logit_scale, torch.Tensor) else float(logit_scale)
            logits_per_text = logits_per_text * scale
        labels = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
        return (F.cross_entropy(logits_per_text.T, labels) + F.cross_entropy(logits_per_text, labels)) / 2
