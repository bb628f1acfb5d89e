"""A fine-tuning run's output folder: checkpoints, the best model, the final model, the metrics log.

Every model written here is a converted directory (``config.json`` + ``model.safetensors`` + ``vocab.txt``) that
``ErnieViL2.from_pretrained`` / ``load_pretrained`` / every ``ernievil2`` command loads. A checkpoint adds
``trainer_state.pt`` (optimizer, scheduler, step, RNG state and the data stream's position: tensors and plain values
only, read back with ``torch.load(weights_only=True)``, so loading a checkpoint runs no pickled code). A LoRA run
(:mod:`.lora`) writes merged weights plus the adapter into ``best/`` and ``final/``, and checkpoints of its trainable
tensors only (:data:`~.lora.TRAINABLE_NAME` + ``trainer_state.pt``). Before each directory is written, the free
space for all of it is checked (:mod:`.disk`). Directories are published with
:func:`~ernievil2torch.storage.atomic.atomic_directory`: a run killed at any instant leaves each one complete or
absent, and :func:`latest_checkpoint` only ever returns a complete one.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from ..constants import (BEST_DIR, CHECKPOINTS_DIR, CONFIG_NAME, FINAL_DIR, METRICS_LOG_NAME, TRAINER_STATE_NAME,
                         WEIGHTS_NAME)
from ..errors import CheckpointError
from ..modeling import ErnieViL2
from ..storage.atomic import atomic_directory, atomic_write_bytes
from ..storage.model_dir import fill_model_dir
from .disk import check_free_space, estimated_bytes, out_of_space_is_clear, tensor_bytes
from .lora import TRAINABLE_NAME, has_adapters, merged_state_dict, save_adapter, trainable_state

_STEP_DIR = re.compile(r"step-(\d{8})")


def path_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_path(out: Path, step: int) -> Path:
    return Path(out) / CHECKPOINTS_DIR / path_name(step)


def _model_metadata(source: str, step: int) -> Dict[str, str]:
    return {"finetuned_from": str(source), "step": str(step)}


def write_model(dst: Path, model: ErnieViL2, vocab_file: Optional[Path], source: str, step: int,
                extra: Optional[Mapping[str, Any]] = None, what: Optional[str] = None) -> Path:
    """Publish ``model`` as a converted directory at ``dst`` (replacing it), with ``extra`` files:
    ``{name: tensors-and-plain-values}`` saved with ``torch.save``, or ``{name.json: dict}`` as JSON. A model
    with LoRA adapters is written merged, with the adapter in ``peft``'s format beside (:mod:`.lora`).
    :class:`~ernievil2torch.errors.DiskSpaceError` before anything is written when the disk lacks room for it."""
    adapted = has_adapters(model)
    state = merged_state_dict(model) if adapted else model.state_dict()
    payload = tensor_bytes(state.values()) + tensor_bytes((extra or {}).values())
    if adapted:
        payload += tensor_bytes(p for name, p in model.named_parameters() if ".lora_" in name)
    what = what or f"{Path(dst).name}/"
    needed = estimated_bytes(payload, [vocab_file])
    check_free_space(Path(dst).parent, needed, what)
    with atomic_directory(dst, overwrite=True) as tmp, out_of_space_is_clear(tmp, needed, what):
        fill_model_dir(tmp, model.config, state, vocab_file, _model_metadata(source, step))
        _write_extra(tmp, extra)
        if adapted:
            save_adapter(tmp, model, source)
    return dst


def _write_extra(directory: Path, extra: Optional[Mapping[str, Any]]) -> None:
    for name, value in (extra or {}).items():
        if name.endswith(".json"):
            (directory / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        else:
            torch.save(value, directory / name)


def write_trainable(dst: Path, model: ErnieViL2, trainer_state: Dict[str, Any]) -> Path:
    """A LoRA checkpoint at ``dst``: the trainable tensors (adapters, temperature) and the trainer state, no base
    weights (a resume rebuilds them from ``--model``)."""
    from safetensors.torch import save_file

    state = trainable_state(model)
    needed = estimated_bytes(tensor_bytes(state.values()) + tensor_bytes(trainer_state.values()))
    what = f"checkpoint {Path(dst).name}/"
    check_free_space(Path(dst).parent, needed, what)
    with atomic_directory(dst, overwrite=True) as tmp, out_of_space_is_clear(tmp, needed, what):
        save_file(state, str(tmp / TRAINABLE_NAME))
        torch.save(trainer_state, tmp / TRAINER_STATE_NAME)
    return dst


def save_checkpoint(out: Path, step: int, model: ErnieViL2, vocab_file: Optional[Path], source: str,
                    trainer_state: Dict[str, Any], keep_last: int) -> Path:
    """``out/checkpoints/step-XXXXXXXX`` (a converted directory + trainer state, or for a LoRA model its trainable
    tensors + trainer state); then all but the ``keep_last`` newest checkpoints are removed. The old ones stand
    while the new one is written, so the free-space check counts the whole new checkpoint."""
    if has_adapters(model):
        path = write_trainable(checkpoint_path(out, step), model, trainer_state)
    else:
        path = write_model(checkpoint_path(out, step), model, vocab_file, source, step,
                           {TRAINER_STATE_NAME: trainer_state}, what=f"checkpoint {path_name(step)}/")
    for old in list_checkpoints(out)[:-max(1, keep_last)]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def save_best(out: Path, model: ErnieViL2, vocab_file: Optional[Path], source: str, step: int,
              metrics: Mapping[str, Any]) -> Path:
    return write_model(Path(out) / BEST_DIR, model, vocab_file, source, step,
                       {"best.json": {"step": step, "validation": dict(metrics)}})


def save_final(out: Path, model: ErnieViL2, vocab_file: Optional[Path], source: str, step: int) -> Path:
    return write_model(Path(out) / FINAL_DIR, model, vocab_file, source, step)


def _complete(path: Path) -> bool:
    """A full checkpoint (converted directory + trainer state) or a LoRA one (trainable tensors + trainer state)."""
    return any(all((path / name).is_file() for name in names)
               for names in ((CONFIG_NAME, WEIGHTS_NAME, TRAINER_STATE_NAME), (TRAINABLE_NAME, TRAINER_STATE_NAME)))


def list_checkpoints(out: Path) -> List[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(out) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.fullmatch(p.name)) and _complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: Path) -> Optional[Path]:
    checkpoints = list_checkpoints(out)
    return checkpoints[-1] if checkpoints else None


#: The layout of ``trainer_state.pt`` this version writes and reads (its ``"format"`` entry). A change to what a
#: resume needs from it raises the number, so a run is never resumed from a state it would misread.
TRAINER_STATE_FORMAT = 1


def load_trainer_state(checkpoint: Path) -> Dict[str, Any]:
    """The trainer state of a checkpoint (no pickled code is run: ``weights_only=True``).

    Raises :class:`CheckpointError` for a damaged or foreign file, and for a state of another
    :data:`TRAINER_STATE_FORMAT` (written by another version of the trainer)."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file
        raise CheckpointError(f"{path}: cannot read the trainer state ({exc})") from None
    found = state.get("format") if isinstance(state, dict) else None
    if found != TRAINER_STATE_FORMAT:
        raise CheckpointError(f"{path}: trainer state format {found!r}, this version resumes format "
                              f"{TRAINER_STATE_FORMAT} only: resume with the version that wrote it, or start a new "
                              "run from the checkpoint's weights (a plain converted directory)")
    return state


class MetricsLog:
    """``out/metrics.jsonl``: one JSON object per line, flushed as written (``tail -f`` friendly)."""

    def __init__(self, out: Path, enabled: bool = True) -> None:
        self.path = Path(out) / METRICS_LOG_NAME
        self.enabled = enabled

    def write(self, record: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after ``step`` (written by a run that was then killed), atomically."""
        if not (self.enabled and self.path.is_file()):
            return
        kept = [json.dumps(r, ensure_ascii=False) + "\n" for r in self.records() if r.get("step", 0) <= step]
        atomic_write_bytes(self.path, "".join(kept).encode("utf-8"))

    def records(self) -> List[Dict[str, Any]]:
        """Every complete record (a line cut short by a kill is left out)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out
