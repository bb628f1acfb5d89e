"""How much disk a fine-tuning run's outputs take, and the free-space check before each one is written.

Sizes (:func:`plan_outputs`; bytes on disk, to within a few KB of headers and the vocab file; tested against what
a run writes):

* ``final/``, ``best/``: the weights, ``4 x parameters`` in float32 (815 MB for the base model; LoRA runs write the
  merged weights plus the adapter);
* a checkpoint: the weights plus ``trainer_state.pt``, whose AdamW state is two float32 moments per trained
  parameter: ``3 x 4 x parameters``, 2.4 GB for the base model fully trained; a LoRA checkpoint holds only the
  trainable tensors and their moments (``3 x 4 x adapter parameters``: 28 MB at rank 8 on every block layer of
  the base model).

``--keep_last`` defaults to 1: a checkpoint is never half-written, so the newest always resumes, and each further
one costs 2.4 GB at full size.

Every output is published atomically (:func:`~ernievil2torch.storage.atomic.atomic_directory`): the new copy is
written completely beside the old one, and only then replaces it or the oldest checkpoint is removed. So writing
needs the *whole* new size free while the old outputs still stand: :func:`check_free_space` refuses with
:class:`~ernievil2torch.errors.DiskSpaceError` before writing anything when the file system has less, and the
previous outputs stay intact. (A write that still fails, e.g. another process filled the disk meanwhile, removes its
partial directory: a half-written checkpoint never appears, and :func:`out_of_space_is_clear` turns the failure,
which ``torch.save`` reports as a bare ``RuntimeError``, into a :class:`~ernievil2torch.errors.DiskSpaceError`.)
"""
from __future__ import annotations

import contextlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

import torch

from ..config import ErnieViL2Config
from ..config.shapes import parameter_shapes
from ..constants import TOWERS
from ..errors import DiskSpaceError
from .lora import LoraSpec

#: Slack for the safetensors header, JSON files, pickle framing of trainer_state.pt and file-system blocks.
OVERHEAD_BYTES = 1 << 20
OVERHEAD_FRACTION = 0.01


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """The payload of every tensor in ``tensors`` (nested dicts/lists/tuples are walked; other values count 0)."""
    total = 0
    for value in tensors:
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, Mapping):
            total += tensor_bytes(value.values())
        elif isinstance(value, (list, tuple)):
            total += tensor_bytes(value)
    return total


def estimated_bytes(payload: int, files: Iterable[Optional[Path]] = ()) -> int:
    """Disk an output with ``payload`` tensor bytes plus copies of ``files`` takes, with slack
    (:data:`OVERHEAD_BYTES` + :data:`OVERHEAD_FRACTION`), never less than the true size."""
    copied = sum(Path(f).stat().st_size for f in files if f is not None and Path(f).is_file())
    return int((payload + copied) * (1 + OVERHEAD_FRACTION)) + OVERHEAD_BYTES


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_free_space(directory: Path, needed: int, what: str) -> None:
    """:class:`DiskSpaceError` unless the file system of ``directory`` (or its nearest existing parent) has
    ``needed`` bytes free: the new output is written completely before the old one it replaces is removed."""
    probe = Path(directory)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DiskSpaceError(f"not enough disk space for {what}: it needs {format_bytes(needed)} and {probe} has "
                             f"{format_bytes(free)} free (the previous outputs stay until the new one is complete, "
                             "and they are intact); free some space, lower --keep_last, or choose another --out, "
                             "then continue with --resume")


@contextlib.contextmanager
def out_of_space_is_clear(tmp: Path, needed: int, what: str) -> Iterator[None]:
    """Around writing ``needed`` bytes into ``tmp``: a write error (``OSError``, or ``torch.save``'s
    ``RuntimeError``) while the file system has less free than what remained to be written becomes a
    :class:`DiskSpaceError` (the caller's atomic directory then removes ``tmp``)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, DiskSpaceError):
            raise
        written = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        free = shutil.disk_usage(tmp).free
        if free < needed - written + OVERHEAD_BYTES:
            raise DiskSpaceError(f"the disk filled up while {what} was written ({format_bytes(free)} left): the "
                                 "partial copy was removed and the previous outputs are intact; free some space, "
                                 "then continue with --resume") from exc
        raise


@dataclass(frozen=True)
class OutputSizes:
    """Planned bytes of a run's outputs (float32 weights; payload only, headers add a few KB): ``model`` for
    ``best/`` and ``final/``, ``checkpoint`` for one ``checkpoints/step-*``, and ``peak`` for the most the run
    needs at once with ``keep_last`` checkpoints, best/ and final/ (a new checkpoint beside the kept ones)."""

    parameters: int
    trainable: int
    model: int
    checkpoint: int
    peak: int

    def summary(self) -> str:
        return (f"{self.parameters / 1e6:.1f} M parameters ({self.trainable / 1e6:.2f} M trained): "
                f"best/ and final/ {format_bytes(self.model)} each, a checkpoint {format_bytes(self.checkpoint)}, "
                f"at most {format_bytes(self.peak)} at once")


def plan_outputs(config: ErnieViL2Config, keep_last: int = 1, lora: Optional[LoraSpec] = None,
                 freeze: Optional[str] = None) -> OutputSizes:
    """The disk a run of ``config`` takes (see the module docstring): full fine-tuning keeps a checkpoint of the
    weights plus AdamW's two moments per trained parameter; LoRA checkpoints keep the adapters, temperature and
    their moments, and its best/ and final/ add the adapter to the merged weights."""
    shapes = parameter_shapes(config)
    parameters = sum(math.prod(shape) for shape in shapes.values())
    if lora is not None:
        wanted = set(lora.targets)
        adapters = sum(lora.rank * (shape[0] + shape[1]) for name, shape in shapes.items()
                       if name.endswith(".weight") and len(shape) == 2 and name.split(".")[0] in TOWERS
                       and (name.split(".")[0], name.split(".")[-2]) in wanted)
        trainable = adapters + (1 if config.has_temperature else 0)
        model = 4 * (parameters + adapters)
        checkpoint = 12 * trainable
    else:
        trainable = sum(math.prod(shape) for name, shape in shapes.items()
                        if freeze is None or not name.startswith(freeze + "."))
        model = 4 * parameters
        checkpoint = 4 * parameters + 8 * trainable
    peak = (keep_last + 1) * checkpoint + 2 * model
    return OutputSizes(parameters, trainable, model, checkpoint, peak)
