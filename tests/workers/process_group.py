"""Worker for tests/runtime/test_distributed.py: what init_distributed_device reports under torchrun, and what close() does.

Writes OUT/rank{R}.json with the context's fields, whether a second call (the group already there) created a group,
and whether the group still exists after each close().
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from ernievil2torch.runtime.distributed import init_distributed_device


def main(out: Path) -> None:
    context = init_distributed_device("cpu")
    joined = init_distributed_device("cpu")  # the group exists now: joined, not created
    joined.close()
    kept_after_joined_close = dist.is_initialized()
    context.barrier()
    context.close()
    report = {"rank": context.rank, "world_size": context.world_size, "local_rank": context.local_rank,
              "device": str(context.device), "created": context.created_group, "is_main": context.is_main,
              "joined_created": joined.created_group, "joined_rank": joined.rank,
              "kept_after_joined_close": kept_after_joined_close, "exists_after_close": dist.is_initialized()}
    (out / f"rank{context.rank}.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
