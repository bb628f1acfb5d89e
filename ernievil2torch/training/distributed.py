"""Several processes (``torchrun``): the contrastive loss over the global batch.

The process group itself is set up by :func:`~ernievil2torch.runtime.distributed.init_distributed_device`.

Every process encodes its own micro-batch; the features of all processes are then gathered **with their
gradient** (``torch.distributed.nn.functional.all_gather``), so each process's loss is the contrastive loss of the
whole global batch: every pair has ``world_size * B - 1`` negatives. The gather's backward sums the gradients that
all processes send to a process's own rows, and DDP then averages the parameter gradients over processes, so the
result equals the gradient of the same global batch on a single process (tested: 2 processes x 4 pairs against
1 process x 8 pairs).

That is what Baidu's ``ContrastiveHead`` meant to do (it gathers, then overwrites the gathered features with the
local ones) and more than PaddleNLP does (its gathered features carry no gradient).
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from ..modeling import ErnieViL2
from ..modeling.loss import contrastive_loss


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """All processes' ``features`` [B, D] stacked in rank order [W*B, D], differentiable (identity when alone).
    Every process must pass the same B."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # torch 2.13 marks this public, differentiable all_gather deprecated in favour of a private module
        # (torch.distributed._functional_collectives); it is still the documented autograd-aware collective.
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(features), dim=0)


class ContrastiveObjective(nn.Module):
    """What a training step differentiates (and what DDP wraps): a micro-batch of pairs -> the contrastive loss over
    the global batch. Its parameters are the model's; ``frozen`` names a tower encoded without gradient (LiT)."""

    def __init__(self, model: ErnieViL2, frozen: Optional[str] = None) -> None:
        super().__init__()
        self.model = model
        self.frozen = frozen

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.frozen != "vision"):
            image = self.model.encode_image(pixel_values)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.frozen != "text"):
            text = self.model.encode_text(input_ids, attention_mask)
        return contrastive_loss(gather_with_grad(image), gather_with_grad(text), self.model.logit_scale)
