"""What the gradient workers share: one thread, the process group, the tiny config without dropout and one seeded
global batch of padded pairs, so the loss and gradients they write are deterministic functions of the data."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence, Tuple

import torch

from ernievil2torch.config import ErnieViL2Config, tiny_config
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.runtime.distributed import DistributedContext, init_distributed_device
from ernievil2torch.verify.parity import synthetic_inputs
from ernievil2torch.verify.synthetic import random_state


def start(global_batch: int, lengths: Sequence[int]) -> Tuple[DistributedContext, ErnieViL2Config, Any, slice]:
    """(process group, dropout-free tiny config, the global batch: ``global_batch`` images, texts of ``lengths``,
    and this process's rows of it)."""
    torch.set_num_threads(1)
    group = init_distributed_device("cpu")
    config = tiny_config()
    no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0}
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, **no_dropout))
    share = global_batch // group.world_size
    rows = slice(group.rank * share, (group.rank + 1) * share)
    return group, config, synthetic_inputs(config, seed=8, images=global_batch, lengths=lengths), rows


def seeded_model(config: ErnieViL2Config, dtype: torch.dtype) -> ErnieViL2:
    """The workers' model: every weight random (seed 8), in ``dtype``, in training mode."""
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, 8, unit_gain=True).items()})
    return model.to(dtype).train()
