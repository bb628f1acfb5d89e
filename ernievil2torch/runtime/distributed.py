"""Where this process stands among the processes of a run: the one process-group setup of ``embed`` and ``finetune``.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`init_distributed_device` joins the process group
(NCCL when the device is a GPU, gloo otherwise) and gives each process its own GPU (``cuda:LOCAL_RANK``); run alone it
creates nothing and describes a single process. Callers keep the returned :class:`DistributedContext` and call
:meth:`~DistributedContext.close` when done, which destroys the group only if this call created it (a group set up
by the caller stays theirs).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from ..errors import InputError
from ..modeling.kernel_choice import parse_kernels, resolve_kernels
from ..modeling.kernels import KernelChoice


@dataclass(frozen=True)
class DistributedContext:
    """This process: ``rank`` of ``world_size`` (``local_rank`` on its machine), the ``device`` it computes on, and
    whether :func:`init_distributed_device` created the process group (so :meth:`close` may destroy it)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for when alone)."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if :func:`init_distributed_device` created it, after a barrier.

        Call it once every object holding the group (a ``DistributedDataParallel`` module and its reducer) has been
        released: gloo work still referenced at interpreter exit is destroyed during finalization, which aborts the
        process (SIGABRT, "terminate called without an active exception") after a run that did all its work. The
        barrier keeps a fast process from tearing down its connections while a slower one still uses them. Only
        on the success path: a process that failed must not wait in a barrier for peers that may never come."""
        if self.created_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def first_resolved_kernels(context: DistributedContext) -> KernelChoice:
    """This machine's kernel choice (:func:`~ernievil2torch.modeling.kernel_choice.resolve_kernels`), the same in
    every process: rank 0 resolves it (measuring once when nothing is cached) and sends it to the others, so ranks
    that would each measure on a busy machine never compute with different kernels."""
    if not context.distributed:
        return resolve_kernels()
    spec = [resolve_kernels().spec() if context.is_main else None]
    dist.broadcast_object_list(spec, src=0)
    return parse_kernels(spec[0])


def _environment_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


_DEVICE_NAME = re.compile(r"(cpu|mps|cuda)(?::(\d+))?")


def check_device(name: str, present: bool = True) -> str:
    """``name`` if it is ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (and, with ``present``, on this machine), else
    :class:`InputError` saying which (a name the project does not compute on, no CUDA GPU, too few, no MPS)."""
    match = _DEVICE_NAME.fullmatch(str(name).strip())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise InputError(f"must be cpu, cuda, cuda:N or mps, not {name!r}")
    kind, index = match.group(1), match.group(2)
    if not present:
        return name
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError("mps was asked for but this machine has no usable MPS device (use cpu)")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{name} was asked for but torch sees no CUDA GPU here (use cpu)")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise InputError(f"{name} was asked for but torch sees {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}")
    return name


def pick_device(device: Optional[str], local_rank: int) -> torch.device:
    """``device`` as a :class:`torch.device`: ``None`` means this process's GPU (``cuda:LOCAL_RANK``) when CUDA is
    available, else the CPU; ``'cuda'`` without an index also means ``cuda:LOCAL_RANK``; an explicit index
    (``'cuda:1'``) is kept. :class:`InputError` for a name that is not ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
    (whether the device is present is the caller's check, :func:`check_device`)."""
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        place = torch.device(check_device(str(name), present=False))
    except InputError as exc:
        raise InputError(f"device: {exc}") from None
    if place.type == "cuda" and place.index is None:
        place = torch.device("cuda", local_rank)
    return place


def init_distributed_device(device: Optional[str] = None) -> DistributedContext:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 and set this process's device.

    Reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (absent: one process, rank 0). The backend is NCCL when the
    device is a GPU, gloo otherwise. A group that already exists (set up by the caller) is joined as it is, and
    rank and world size are read from it. ``device``: see :func:`pick_device`; a CUDA device becomes this process's
    current device.
    """
    world_size = _environment_int("WORLD_SIZE", 1)
    rank = _environment_int("RANK", 0)
    local_rank = _environment_int("LOCAL_RANK", 0)
    place = pick_device(device, local_rank)
    if place.type == "cuda":
        torch.cuda.set_device(place)
    created = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if place.type == "cuda" else "gloo")
        created = True
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank, world_size, local_rank, place, created)
