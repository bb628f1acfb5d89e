"""The settings of a fine-tuning run: every flag of ``ernievil2 finetune``, its default and its valid values.

:class:`FinetuneSettings` is the one place the defaults are written (``finetune``'s signature is read off it) and
:meth:`FinetuneSettings.check` refuses values no run can use before any work. Defaults: PaddleNLP's recipe.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..config import parse_hub_id
from ..constants import DEFAULT_MAX_LENGTH, PRECISIONS, TOWERS
from ..errors import InputError
from .lora import DEFAULT_LORA_TARGETS, LoraSpec, lora_spec
from .optim import ADAM_BETA1, ADAM_BETA2, ADAM_EPS


@dataclass(frozen=True)
class FinetuneSettings:
    """Every setting of a run (see :func:`finetune` for their meaning). Defaults: PaddleNLP's recipe."""

    model: str
    train: str
    out: str
    images: Optional[str] = None
    val: Optional[str] = None
    val_images: Optional[str] = None
    data_format: Optional[str] = None
    val_data_format: Optional[str] = None
    vocab: Optional[str] = None
    epochs: int = 5
    max_steps: Optional[int] = None
    batch_size: int = 128
    grad_accum: int = 1
    grad_cache_chunk: Optional[int] = None
    lr: float = 5e-5
    warmup_steps: int = 100
    weight_decay: float = 0.001
    max_grad_norm: float = 1.0
    adam_beta1: float = ADAM_BETA1
    adam_beta2: float = ADAM_BETA2
    adam_eps: float = ADAM_EPS
    max_length: int = DEFAULT_MAX_LENGTH
    seed: int = 1
    precision: str = "auto"
    gradient_checkpointing: bool = True
    freeze: Optional[str] = None
    lora_rank: Optional[int] = None
    lora_alpha: Optional[float] = None
    lora_dropout: float = 0.0
    lora_targets: str = DEFAULT_LORA_TARGETS
    eval_every: int = 50
    save_every: int = 50
    log_every: int = 50
    keep_last: int = 1
    eval_at_start: bool = True
    eval_batch_size: int = 64
    num_workers: int = 2
    device: Optional[str] = None
    overwrite: bool = False
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        # Paths may arrive as Path objects or, from the command line, as numbers ("--out 2024"); they are kept as
        # absolute strings, so a resume compares the same paths however they were spelled. A model that is no
        # local path but a Hub id (ORG/NAME) stays as written.
        for name in ("model", "train", "out", "images", "val", "val_images", "vocab"):
            value = getattr(self, name)
            hub_id = name == "model" and not os.path.exists(str(value)) and parse_hub_id(str(value)) is not None
            if value is not None and not hub_id:
                object.__setattr__(self, name, os.path.abspath(str(value)))

    #: Settings a resumed run may change: they do not affect the weights.
    FREE_ON_RESUME = ("out", "eval_every", "save_every", "log_every", "keep_last", "eval_at_start",
                      "eval_batch_size", "num_workers", "device", "overwrite", "resume", "progress",
                      "gradient_checkpointing")

    def pairs_per_step(self, world_size: int) -> int:
        """The pairs one optimizer step consumes (what ``items_per_s`` counts): ``batch_size`` per process x
        ``world_size`` processes x ``grad_accum`` micro-batches."""
        return self.batch_size * world_size * self.grad_accum

    def check(self) -> None:
        """:class:`InputError` for values no run can use."""
        positive = ("epochs", "batch_size", "grad_accum", "max_length", "eval_every", "save_every", "log_every",
                    "keep_last", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name} must be a positive integer, got {value!r}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            raise InputError(f"--max_steps must be a positive integer, got {self.max_steps!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise InputError(f"--warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise InputError(f"--num_workers must be >= 0, got {self.num_workers!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise InputError(f"--lr must be positive, got {self.lr!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.freeze is not None and self.freeze not in TOWERS:
            raise InputError(f"--freeze must be 'vision' or 'text' (the tower kept fixed), got {self.freeze!r}")
        if self.overwrite and self.resume:
            raise InputError("--overwrite and --resume contradict each other: pick one")
        if self.val_images and not self.val:
            raise InputError("--val_images needs --val (the validation captions file)")
        if self.grad_cache_chunk is not None:
            chunk = self.grad_cache_chunk
            if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
                raise InputError(f"--grad_cache_chunk must be a positive integer (pairs encoded at once), got "
                                 f"{chunk!r}")
            if self.grad_accum != 1:
                raise InputError("--grad_cache_chunk with --grad_accum: the gradient cache already makes the whole "
                                 "--batch_size one batch of negatives; raise --batch_size instead of accumulating")
        self.lora()

    def lora(self) -> Optional[LoraSpec]:
        """The checked LoRA configuration (None without ``--lora_rank``); :class:`InputError` for bad values."""
        if self.lora_rank is None:
            defaults = (self.lora_alpha is None, self.lora_dropout == 0.0, self.lora_targets == DEFAULT_LORA_TARGETS)
            if not all(defaults):
                raise InputError("--lora_alpha / --lora_dropout / --lora_targets need --lora_rank (the adapters' "
                                 "rank)")
            return None
        return lora_spec(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets, self.freeze)

    def result_settings(self) -> Dict[str, Any]:
        """The settings that decide the result (all but :attr:`FREE_ON_RESUME`), by name."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.FREE_ON_RESUME}

    def run_record(self, world_size: int) -> Dict[str, Any]:
        """What ``OUT/run.json`` holds for this run, and what ``--resume`` must match: the settings that decide the
        result and the number of processes (it sets the global batch and the pair order)."""
        return {**self.result_settings(), "world_size": world_size}

    @classmethod
    def from_arguments(cls, model: Any, train: Any, out: Any, **options: Any) -> "FinetuneSettings":
        """The settings of ``finetune(model, train, out, **options)``, checked (:meth:`check`).

        :class:`InputError` naming the option for an option this class does not have, or a value no run can use."""
        try:
            settings = cls(model=model, train=train, out=out, **options)
        except TypeError as exc:  # an option FinetuneSettings does not have
            raise InputError(f"finetune: {exc}") from None
        settings.check()
        return settings
