"""Worker for tests/training/test_training.py: one training step's loss and gradients, under torchrun or alone.

    torchrun --standalone --nproc_per_node 2 tests/workers/ddp_gradients.py OUT   # each rank: 4 of the 8 pairs
    python tests/workers/ddp_gradients.py OUT                                     # one process: all 8 pairs

Both build the same tiny model (every weight random, dropout 0) and the same global batch of 8 padded pairs; the
step is DistributedDataParallel(ContrastiveObjective(model)) with features gathered across ranks, i.e. the code path
``finetune`` trains with, once in float64 and once in float32. Each process writes OUT/rank<r>-of-<world>.npz:
``<dtype>/loss`` and ``<dtype>/grad/<name>``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ernievil2torch.training import ContrastiveObjective

GLOBAL_BATCH = 8


def main(out: Path) -> None:
    from gradient_setup import seeded_model, start  # this folder is on the path when run; test_docs reads the constants

    group, config, inputs, rows = start(GLOBAL_BATCH, lengths=(8, 30, 5, 17, 12, 3, 25, 9))
    ids = torch.from_numpy(inputs.input_ids[rows])
    arrays = {}
    for dtype in (torch.float64, torch.float32):
        model = seeded_model(config, dtype)
        step = ContrastiveObjective(model)
        if group.distributed:
            from torch.nn.parallel import DistributedDataParallel

            step = DistributedDataParallel(step)
        loss = step(torch.from_numpy(inputs.pixel_values[rows]).to(dtype), ids, (ids != 0).long())
        loss.backward()
        name = str(dtype).replace("torch.", "")
        arrays[f"{name}/loss"] = np.float64(loss.item())
        arrays.update({f"{name}/grad/{n}": p.grad.numpy() for n, p in model.named_parameters()})
    np.savez(out / f"rank{group.rank}-of-{group.world_size}.npz", **arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
