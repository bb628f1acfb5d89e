"""The inputs every runtime-checked export traces with and checks against: padded text batches and random pixels.

One definition, so the ONNX and OpenVINO checks probe the same cases: a text batch whose last row is padded (the
attention mask must matter), lengths other than the traced one (the length axis must be dynamic) and batch sizes
other than the traced one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import torch

from ..config import ErnieViL2Config


@dataclass(frozen=True)
class ProbeBatch:
    """One batch: token ids and mask [B, L] (int64; the last row padded from position ``padded_from``) and pixels
    [B, C, S, S] (float32)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor


def probe_batch(config: ErnieViL2Config, batch: int, length: int, padded_from: int,
                generator: torch.Generator) -> ProbeBatch:
    """Random ids in ``[3, vocab)`` (no special token), the last row padded with the pad id from ``padded_from``."""
    ids = torch.randint(3, config.text.vocab_size, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[-1, padded_from:] = 0
    ids[-1, padded_from:] = config.text.pad_token_id
    size = config.vision.image_size
    pixels = torch.randn(batch, config.vision.num_channels, size, size, generator=generator)
    return ProbeBatch(ids, mask, pixels)


def trace_and_check_batches(config: ErnieViL2Config, seed: int = 0) -> Tuple[ProbeBatch, Iterator[ProbeBatch]]:
    """The batch to trace with (2 rows of ``min(16, max positions)`` tokens, the second half-padded) and, drawn
    after it from the same generator, the check batches (1 and 3 rows, 3 tokens longer, the last row padded from
    position 5)."""
    generator = torch.Generator().manual_seed(seed)
    length = min(16, config.text.max_position_embeddings)
    traced = probe_batch(config, 2, length, length // 2, generator)

    def checks() -> Iterator[ProbeBatch]:
        for batch in (1, 3):
            yield probe_batch(config, batch, length + 3, 5, generator)

    return traced, checks()
