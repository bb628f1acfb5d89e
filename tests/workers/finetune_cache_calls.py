"""Worker for tests/training/test_grad_cache.py: the finetune command under torchrun, counting the gradient cache.

    torchrun --standalone --nproc_per_node 2 tests/workers/finetune_cache_calls.py CALLS ARGS...

Runs ``python -m ernievil2torch.finetune ARGS...`` (the same entry point, the same arguments) with the trainer's
``grad_cache_backward`` wrapped by a recorder, and writes CALLS/rank<r>.json: one entry per call with the rows of
the batch it got, its chunk size and the process group's size at the time. The test reads them to know that the
cache really ran in every process (a trainer that ignored ``--grad_cache_chunk`` would step plainly, and with
these settings its weights would agree with the cached run's, so the weights alone cannot tell).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

import ernievil2torch.training.trainer as trainer_module
from ernievil2torch.cli import main_finetune


def main(calls_dir: Path, args: list) -> None:
    calls = []
    real = trainer_module.grad_cache_backward

    def recording(objective, pixel_values, input_ids, attention_mask, chunk, autocast, **kwargs):
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        calls.append({"rows": int(pixel_values.shape[0]), "chunk": int(chunk), "world_size": world})
        return real(objective, pixel_values, input_ids, attention_mask, chunk, autocast, **kwargs)

    trainer_module.grad_cache_backward = recording
    sys.argv = ["ernievil2torch.finetune", *args]
    try:
        main_finetune()
    finally:
        rank = os.environ.get("RANK", "0")
        (calls_dir / f"rank{rank}.json").write_text(json.dumps(calls), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
