"""The output folder policy of a fine-tuning run: when ``OUT`` may be used, what a resume continues from, and when it
is first written.

* An existing, non-empty ``OUT`` is refused unless ``--overwrite`` (discard it) or ``--resume`` (continue it).
* ``--resume`` continues only the same run: ``OUT/run.json`` (:mod:`~ernievil2torch.storage.run_record`) must equal
  the settings that decide the result (:meth:`FinetuneSettings.run_record`); every difference is named.
* Nothing is written before every input was checked: :func:`check_run_folder` only reads, :func:`start_run_folder`
  (called once the data and the model are loaded) deletes, creates and writes, on the main process.

The output folder ``OUT``::

    run.json                      the settings (a resume must not change those that affect the result)
    metrics.jsonl                 {"step", "epoch", "loss", "lr", "grad_norm", "items_per_s", ...} every log_every
                                  steps; {"step", "validation": {...}} per validation; skipped images
    checkpoints/step-00000050/    converted directory + trainer_state.pt (the newest keep_last are kept); a LoRA
                                  run: trainable.safetensors (adapters, temperature) + trainer_state.pt
    best/                         converted directory with the best validation mean recall (+ best.json)
    final/                        converted directory after the last step
                                  (LoRA: merged weights, and the peft adapter in lora_adapter/)
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..constants import KERNELS_RESUME_ADVICE
from ..errors import InputError
from ..modeling.kernel_choice import kernel_record
from ..modeling.kernels import REFERENCE, KernelChoice
from ..storage.outputs import check_output_dir
from ..storage.run_record import check_run_record, read_run_record, run_record_path, write_run_record
from .checkpoints import MetricsLog, latest_checkpoint
from .settings import FinetuneSettings

#: Advice of the refusal to resume a run with other settings.
START_OVER = ("resume with the original settings, or use a new output directory (or --overwrite) to start over "
              + KERNELS_RESUME_ADVICE)


def run_inputs(settings: FinetuneSettings) -> List[Optional[str]]:
    """The paths a run reads, which ``OUT`` may never be or hold."""
    return [settings.model, settings.train, settings.images, settings.val, settings.val_images, settings.vocab]


def check_run_folder(settings: FinetuneSettings, world_size: int, kernels: KernelChoice = REFERENCE) -> Optional[Path]:
    """Check that the run may use ``settings.out``; return the checkpoint a ``--resume`` continues from (``None``:
    a fresh start, also for ``--resume`` before the first checkpoint). Reads only.

    Raises :class:`OutputExistsError` for an existing OUT without ``--overwrite``/``--resume`` or an OUT that is a
    file; :class:`InputError` for an OUT :func:`~ernievil2torch.storage.outputs.check_output_path` refuses (the
    current directory or above, an input or a folder holding one) and for ``--resume`` of a folder without
    ``run.json`` or with other settings."""
    out = Path(settings.out)
    exists = out.is_dir() and any(out.iterdir())
    check_output_dir(out, overwrite=settings.overwrite or settings.resume or not exists, inputs=run_inputs(settings),
                     also=" or --resume to continue the run in it")
    if not (exists and settings.resume):
        return None
    if read_run_record(out) is None:
        raise InputError(f"{out} holds no fine-tuning run ({run_record_path(out).name} missing): nothing to resume")
    check_run_record(out, run_record(settings, world_size, kernels), START_OVER)
    return latest_checkpoint(out)


def run_record(settings: FinetuneSettings, world_size: int, kernels: KernelChoice) -> Dict[str, Any]:
    """``OUT/run.json`` of the run: :meth:`FinetuneSettings.run_record` plus the CPU inference kernel of the fp32
    model (:func:`~ernievil2torch.modeling.kernel_choice.kernel_record`; the validation passes run it, the
    training steps never do). ``kernels``: the run's choice, ``REFERENCE`` on an accelerator."""
    return {**settings.run_record(world_size), **kernel_record(kernels, torch.float32)}


def start_run_folder(settings: FinetuneSettings, world_size: int, log: MetricsLog,
                     resumed_step: Optional[int], kernels: KernelChoice = REFERENCE) -> None:
    """Write ``OUT`` for the run (main process only): delete it first with ``--overwrite``; on a fresh start write
    ``run.json`` and empty the metrics log; on a resume at ``resumed_step`` drop the log records written after that
    step (by the run that was then killed) and note the resume."""
    out = Path(settings.out)
    if settings.overwrite and out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if resumed_step is None:
        log.truncate_after(-1)
        write_run_record(out, run_record(settings, world_size, kernels))
    else:
        log.truncate_after(resumed_step)
        log.write({"step": resumed_step, "event": "resumed"})
