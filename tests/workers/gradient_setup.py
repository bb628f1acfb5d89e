"""What the gradient workers share: one thread, the process group, the tiny config without dropout and one seeded
global batch of padded pairs, so the loss and gradients they write are deterministic functions of the data."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence, Tuple

import torch

from ernievil2torch.config import ErnieViL2Config, tiny_config
from ernievil2torch.runtime.distributed import DistributedContext, init_distributed_device
from ernievil2torch.verify.parity import synthetic_inputs


def start(global_batch: int, lengths: Sequence[int]) -> Tuple[DistributedContext, ErnieViL2Config, Any]:
    """(process group, dropout-free tiny config, the global batch: ``global_batch`` images, texts of ``lengths``)."""
    torch.set_num_threads(1)
    group = init_distributed_device("cpu")
    config = tiny_config()
    no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0}
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, **no_dropout))
    return group, config, synthetic_inputs(config, seed=8, images=global_batch, lengths=lengths)
