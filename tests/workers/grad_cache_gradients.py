"""Worker for tests/training/test_grad_cache.py: one step's loss and gradients with the gradient cache under
torchrun, or the plain step on the whole batch in one process (the reference).

    torchrun --standalone --nproc_per_node 2 tests/workers/grad_cache_gradients.py OUT  # 8 of 16 a rank, chunks of 4
    python tests/workers/grad_cache_gradients.py OUT                                     # one process: plain, all 16

Both build the same tiny model (every weight random, dropout 0) and the same global batch of 16 padded pairs, once
in float64 and once in float32. Each process writes OUT/rank<r>-of-<world>.npz: ``<dtype>/loss`` and
``<dtype>/grad/<name>``.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

from ernievil2torch.training import ContrastiveObjective
from ernievil2torch.training.grad_cache import grad_cache_backward

GLOBAL_BATCH = 16
CHUNK = 4


def main(out: Path) -> None:
    from gradient_setup import seeded_model, start  # this folder is on the path when run; test_docs reads the constants

    group, config, inputs, rows = start(GLOBAL_BATCH, lengths=(8, 30, 5, 17, 12, 3, 25, 9) * 2)
    ids = torch.from_numpy(inputs.input_ids[rows])
    arrays = {}
    for dtype in (torch.float64, torch.float32):
        model = seeded_model(config, dtype)
        objective = ContrastiveObjective(model)
        pixels = torch.from_numpy(inputs.pixel_values[rows]).to(dtype)
        if group.distributed:
            loss = grad_cache_backward(objective, pixels, ids, (ids != 0).long(), CHUNK, contextlib.nullcontext).loss
        else:
            loss = objective(pixels, ids, (ids != 0).long())
            loss.backward()
        name = str(dtype).replace("torch.", "")
        arrays[f"{name}/loss"] = np.float64(loss.item())
        arrays.update({f"{name}/grad/{n}": p.grad.numpy() for n, p in model.named_parameters()})
    np.savez(out / f"rank{group.rank}-of-{group.world_size}.npz", **arrays)
    group.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
