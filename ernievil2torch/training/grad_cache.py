"""Gradient cache (Gao et al., 2021): the exact gradient of a contrastive batch larger than what fits in memory.

A step over a per-process batch of ``B`` pairs in chunks of ``N`` (the last chunk may be smaller):

1. **Encode without a graph**: every chunk's image and text features, under ``torch.no_grad`` (only ``B x D``
   features stay in memory). The torch random state is captured before each tower of each chunk.
2. **The loss over all features**: the cached features (gathered across processes with their gradient, as in
   :class:`~ernievil2torch.training.distributed.ContrastiveObjective`) give the loss of the whole global batch;
   its backward yields the gradient of every cached feature and of the temperature.
3. **Re-encode with a graph, chunk by chunk**: the random state of step 1 is restored, so every dropout mask is the
   same, and each chunk's features are back-propagated with their cached gradient. Peak activation memory is one
   chunk's, whatever ``B``.

Step 1 runs inside :func:`~ernievil2torch.modeling.layers.autograd_paths`, so both passes take the same code path
(the inference fast paths compute the same function with other roundings): in float32 the re-encoded features equal
the cached ones bit for bit, with dropout on (tested). By the chain rule the parameter gradients are then those of
the plain full batch up to summation order (tested: float64 within 1e-6, float32 within 1e-5).

Several processes: each process's parameter gradient is, as with DDP in the plain step, its own rows'
contribution (the gather's backward sums what every process sends to them); the gradients are averaged over the
processes here (all-reduce), without DDP, whose single forward/backward per step does not fit this two-pass step.
A frozen tower is encoded once (step 1) and never re-encoded: it needs no gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, List, Optional

import torch
import torch.distributed as dist

from ..modeling.layers import autograd_paths
from ..modeling.loss import contrastive_loss
from .distributed import ContrastiveObjective, gather_with_grad


class RandomState:
    """The torch random state that dropout draws from on ``device`` (CPU, plus the CUDA generator on a GPU),
    captured now and restored by :meth:`restore`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


@dataclass
class GradCacheStep:
    """What :func:`grad_cache_backward` did: the loss (detached) and, when asked for, the features of both passes
    (``cached_*`` from the no-grad pass, ``replayed_*`` re-encoded with gradient; None for a frozen tower's
    replay, which does not happen)."""

    loss: torch.Tensor
    cached_image: torch.Tensor
    cached_text: torch.Tensor
    replayed_image: Optional[torch.Tensor] = None
    replayed_text: Optional[torch.Tensor] = None


def chunk_slices(batch: int, chunk: int) -> List[slice]:
    """Row slices of ``batch`` rows in chunks of ``chunk`` (the last one may be smaller)."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    return [slice(start, min(start + chunk, batch)) for start in range(0, batch, chunk)]


def grad_cache_backward(objective: ContrastiveObjective, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor, chunk: int,
                        autocast: Callable[[], ContextManager], keep_replay: bool = False) -> GradCacheStep:
    """Accumulate into ``.grad`` the gradient of the contrastive loss of this process's batch (gathered over
    processes), computed in chunks of ``chunk`` pairs; returns the loss. ``autocast()`` gives the precision context
    of each forward pass. With several processes the gradients are averaged over them (every process must call
    it with the same batch size). ``keep_replay`` keeps the re-encoded features for inspection."""
    model, frozen = objective.model, objective.frozen
    device = pixel_values.device
    slices = chunk_slices(pixel_values.shape[0], chunk)
    images, texts, states = [], [], []
    with torch.no_grad(), autograd_paths():
        for rows in slices:
            image_state = RandomState(device)
            with autocast():
                images.append(model.encode_image(pixel_values[rows]))
            text_state = RandomState(device)
            with autocast():
                texts.append(model.encode_text(input_ids[rows], attention_mask[rows]))
            states.append((image_state, text_state))
    after_first_pass = RandomState(device)
    cached_image = torch.cat(images).requires_grad_(frozen != "vision")
    cached_text = torch.cat(texts).requires_grad_(frozen != "text")
    with autocast():
        loss = contrastive_loss(gather_with_grad(cached_image), gather_with_grad(cached_text), model.logit_scale)
    loss.backward()
    replayed = {"vision": [], "text": []}
    for rows, (image_state, text_state) in zip(slices, states):
        for tower, state, cached in (("vision", image_state, cached_image), ("text", text_state, cached_text)):
            if tower == frozen:
                continue
            state.restore()
            with autocast():
                if tower == "vision":
                    features = model.encode_image(pixel_values[rows])
                else:
                    features = model.encode_text(input_ids[rows], attention_mask[rows])
            features.backward(cached.grad[rows])
            if keep_replay:
                replayed[tower].append(features.detach())
    after_first_pass.restore()  # the step leaves the random state where one pass of the batch would
    average_gradients(model)
    return GradCacheStep(loss.detach(), cached_image.detach(), cached_text.detach(),
                         torch.cat(replayed["vision"]) if replayed["vision"] else None,
                         torch.cat(replayed["text"]) if replayed["text"] else None)


def average_gradients(model: torch.nn.Module) -> None:
    """Average the trainable parameters' gradients over the processes (nothing when alone), in one flat buffer
    per dtype and device. A parameter no chunk reached gets a zero gradient first, so every process sends the
    same layout."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    groups: dict = {}
    for p in params:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
