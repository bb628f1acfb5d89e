"""runtime.distributed: the one process-group setup of embed and finetune (alone, and two processes under
torchrun)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ernievil2torch.errors import InputError
from ernievil2torch.runtime.distributed import DistributedContext, init_distributed_device, pick_device
from helpers import REPO_ROOT

WORKER = REPO_ROOT / "tests" / "workers" / "process_group.py"


def test_alone_it_creates_no_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed_device("cpu")
    assert context == DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"),
                                         created_group=False)
    assert context.is_main and not context.distributed
    context.barrier()
    context.close()
    assert not torch.distributed.is_initialized()


def test_device_names():
    assert pick_device("cuda", local_rank=3) == torch.device("cuda", 3)  # one GPU per local rank
    assert pick_device("cuda:1", local_rank=3) == torch.device("cuda", 1)  # an explicit index is kept
    assert pick_device("cpu", local_rank=3) == torch.device("cpu")
    expected = torch.device("cuda", 2) if torch.cuda.is_available() else torch.device("cpu")
    assert pick_device(None, local_rank=2) == expected
    with pytest.raises(InputError, match="'gpu0'"):
        pick_device("gpu0", local_rank=0)


def test_a_malformed_torchrun_environment_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE='two'"):
        init_distributed_device("cpu")


def test_two_processes_under_torchrun(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, report in enumerate(reports):
        assert report == {"rank": rank, "world_size": 2, "local_rank": rank, "device": "cpu", "created": True,
                          "is_main": rank == 0, "joined_created": False, "joined_rank": rank,
                          "kept_after_joined_close": True, "exists_after_close": False}
