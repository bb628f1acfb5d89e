"""The fine-tuning loop behind ``ernievil2 finetune`` and :func:`finetune`.

One step = ``grad_accum`` micro-batches of ``batch_size`` pairs per process (features gathered over processes, see
:mod:`~ernievil2torch.training.distributed`), gradients clipped, one AdamW step, one schedule step. Everything random
is a function of the run seed and the position in the run: the pair order of epoch ``e`` (seed, e), each sample's
crop and flip (seed, e, pair), the dropout masks of step ``s`` (seed, s, rank). That, plus the optimizer and
scheduler state in every checkpoint, is why ``--resume`` reproduces the uninterrupted run exactly, and why the
result does not depend on the number of loader workers.

The output folder ``OUT``::

    run.json                      the settings (a resume must not change those that affect the result)
    metrics.jsonl                 {"step", "epoch", "loss", "lr", "grad_norm", "items_per_s", ...} every log_every
                                  steps; {"step", "validation": {...}} per validation; skipped images
    checkpoints/step-00000050/    converted directory + trainer_state.pt (the newest keep_last are kept)
    best/                         converted directory with the best validation mean recall (+ best.json)
    final/                        converted directory after the last step
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..runtime.encoding import progress_bar
from ..constants import BEST_DIR, DEFAULT_MAX_LENGTH, FINAL_DIR, OFFICIAL_TEMPERATURE_INIT, RUN_SETTINGS_NAME
from ..errors import InputError, OutputExistsError
from ..modeling import ErnieViL2
from ..pretrained import load_pretrained
from ..processing.vocab import resolve_vocab
from .checkpoints import (MetricsLog, latest_checkpoint, load_trainer_state, save_best, save_checkpoint,
                          save_final)
from .data import Batch, CollatePairs, PairBatches, PairDataset, load_pairs
from .distributed import ContrastiveObjective, ProcessGroup, init_process_group
from .optim import make_optimizer, make_scheduler
from .validation import Validation, validate

PRECISIONS = ("auto", "fp32", "bf16")
TOWERS = ("vision", "text")


@dataclass(frozen=True)
class FinetuneSettings:
    """Every setting of a run (see :func:`finetune` for their meaning). Defaults: PaddleNLP's recipe."""

    model: str
    train: str
    out: str
    images: Optional[str] = None
    val: Optional[str] = None
    val_images: Optional[str] = None
    vocab: Optional[str] = None
    epochs: int = 5
    max_steps: Optional[int] = None
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 5e-5
    warmup_steps: int = 100
    weight_decay: float = 0.001
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_length: int = DEFAULT_MAX_LENGTH
    seed: int = 1
    precision: str = "auto"
    gradient_checkpointing: bool = True
    freeze: Optional[str] = None
    eval_every: int = 50
    save_every: int = 50
    log_every: int = 50
    keep_last: int = 2
    eval_at_start: bool = True
    eval_batch_size: int = 64
    num_workers: int = 2
    device: Optional[str] = None
    overwrite: bool = False
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        # Paths may arrive as Path objects or, from fire, as numbers ("--out 2024"); they are kept as absolute
        # strings, so a resume compares the same paths however they were spelled.
        for name in ("model", "train", "out", "images", "val", "val_images", "vocab"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.path.abspath(str(value)))

    #: Settings a resumed run may change: they do not affect the weights.
    FREE_ON_RESUME = ("out", "eval_every", "save_every", "log_every", "keep_last", "eval_at_start",
                      "eval_batch_size", "num_workers", "device", "overwrite", "resume", "progress",
                      "gradient_checkpointing")

    def check(self) -> None:
        """:class:`InputError` for values no run can use."""
        positive = ("epochs", "batch_size", "grad_accum", "max_length", "eval_every", "save_every", "log_every",
                    "keep_last", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name} must be a positive integer, got {value!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
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

    def result_settings(self) -> Dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.FREE_ON_RESUME}


@dataclass
class FinetuneResult:
    """What a run did: where things are, its last and best validation, the images it had to skip."""

    out: Path
    steps: int
    final: Path
    best: Optional[Path] = None
    best_step: Optional[int] = None
    best_mean_recall: Optional[float] = None
    last_validation: Optional[Dict[str, Any]] = None
    skipped_images: List[Tuple[str, str]] = field(default_factory=list)
    resumed_from: Optional[int] = None

    def summary(self) -> str:
        lines = [f"fine-tuned {self.steps} steps" + (f" (resumed at step {self.resumed_from})"
                                                     if self.resumed_from else "") + f"; final model: {self.final}"]
        if self.best is not None:
            lines.append(f"best validation mean recall {self.best_mean_recall:.2f} at step {self.best_step}: "
                         f"{self.best}")
        if self.last_validation:
            v = self.last_validation
            lines.append(f"last validation: t2i R@1 {v['t2i']['R@1']:.2f}, i2t R@1 {v['i2t']['R@1']:.2f}, "
                         f"mean recall {v['mean_recall']:.2f}")
        if self.skipped_images:
            shown = "; ".join(f"{name}: {reason}" for name, reason in self.skipped_images[:5])
            lines.append(f"{len(self.skipped_images)} unreadable training image(s) skipped: {shown}")
        return "\n".join(lines)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of a step's dropout masks: a function of (run seed, step, rank) only."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def with_temperature(model: ErnieViL2) -> ErnieViL2:
    """The model itself, or a copy with a learnable temperature at the official initial value when its checkpoint
    had none (contrastive training needs the scale; plain cosine logits would hardly move the loss)."""
    if model.temperature is not None:
        return model
    config = dataclasses.replace(model.config, has_temperature=True)
    copy = ErnieViL2(config)
    missing, unexpected = copy.load_state_dict(model.state_dict(), strict=False)
    assert missing == ["temperature"] and not unexpected, (missing, unexpected)
    with torch.no_grad():
        copy.temperature.fill_(OFFICIAL_TEMPERATURE_INIT)
    return copy


class Trainer:
    """One run: set up by :meth:`prepare` (every input checked before anything is written), executed by :meth:`run`."""

    def __init__(self, settings: FinetuneSettings) -> None:
        settings.check()
        self.settings = settings
        self.out = Path(settings.out)
        self.group: ProcessGroup = init_process_group(settings.device)
        self.log = MetricsLog(self.out, enabled=self.group.is_main)
        self.skipped: List[Tuple[str, str]] = []
        self.best: Tuple[Optional[int], Optional[float]] = (None, None)
        self.last_validation: Optional[Dict[str, Any]] = None

    # ---- setup ------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        s = self.settings
        checkpoint = self._check_output_dir()
        self.group.barrier()  # every process has checked OUT before the main one writes into it
        self.train_data = load_pairs(s.train, s.images, "training")
        self.val_data = load_pairs(s.val, s.val_images, "validation") if s.val else None
        loaded = load_pretrained(s.model, dtype=torch.float32, vocab=s.vocab)
        self.tokenizer = loaded.require_tokenizer()
        self.vocab_file = resolve_vocab(s.model, s.vocab)
        model = loaded.model
        self.start_step, trainer_state = 0, None
        if checkpoint is not None:
            model = ErnieViL2.from_pretrained(checkpoint, dtype=torch.float32)
            trainer_state = load_trainer_state(checkpoint)
            self.start_step = int(trainer_state["step"])
        self.model = with_temperature(model).to(self.group.device)
        self.model.set_gradient_checkpointing(s.gradient_checkpointing)
        for tower in TOWERS:
            getattr(self.model, tower).requires_grad_(s.freeze != tower)
        micro_per_epoch = len(self.train_data.texts) // (s.batch_size * self.group.world_size)
        steps_per_epoch = micro_per_epoch // s.grad_accum
        if steps_per_epoch < 1:
            raise InputError(f"{len(self.train_data.texts)} training pairs do not fill one step of "
                             f"{s.batch_size} pairs x {self.group.world_size} process(es) x {s.grad_accum} "
                             "accumulation: lower --batch_size or --grad_accum")
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = s.max_steps or s.epochs * steps_per_epoch
        self.optimizer = make_optimizer(self.model, s.lr, s.weight_decay, (s.adam_beta1, s.adam_beta2), s.adam_eps)
        self.scheduler = make_scheduler(self.optimizer, s.warmup_steps, self.total_steps)
        if trainer_state is not None:
            self.optimizer.load_state_dict(trainer_state["optimizer"])
            self.scheduler.load_state_dict(trainer_state["scheduler"])
            self.best = (trainer_state["best_step"], trainer_state["best_mean_recall"])
            self.skipped = [tuple(item) for item in trainer_state["skipped"]]
            torch.set_rng_state(trainer_state["rng"]["torch"])
        self.objective = ContrastiveObjective(self.model, s.freeze)
        self.step_module: torch.nn.Module = self.objective
        if self.group.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.group.device.index] if self.group.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.objective, device_ids=ids)
        self._start_output(trainer_state)

    def _check_output_dir(self) -> Optional[Path]:
        """Refuse an existing run without --overwrite/--resume; return the checkpoint to resume from."""
        s = self.settings
        exists = self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir()))
        if self.out.exists() and not self.out.is_dir():
            raise OutputExistsError(f"{self.out} exists and is not a directory")
        if exists and not (s.overwrite or s.resume):
            raise OutputExistsError(f"{self.out} already exists; pass --overwrite to replace it or --resume to "
                                    "continue the run in it")
        if not (exists and s.resume):
            return None
        settings_file = self.out / RUN_SETTINGS_NAME
        if not settings_file.is_file():
            raise InputError(f"{self.out} holds no fine-tuning run ({RUN_SETTINGS_NAME} missing): nothing to resume")
        previous = json.loads(settings_file.read_text(encoding="utf-8"))
        now = {**s.result_settings(), "world_size": self.group.world_size}
        changed = sorted(k for k in now if previous.get(k) != now[k])
        if changed:
            shown = ", ".join(f"{k}: {previous.get(k)!r} -> {now[k]!r}" for k in changed)
            raise InputError(f"--resume with different settings than the run in {self.out} ({shown}); the result "
                             "would not be the run's: use the original settings or a new output directory")
        return latest_checkpoint(self.out)

    def _start_output(self, trainer_state: Optional[Dict[str, Any]]) -> None:
        """Only now, with every input checked, is the output folder touched (by the main process)."""
        s = self.settings
        if self.group.is_main:
            if s.overwrite and self.out.is_dir():
                shutil.rmtree(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            if trainer_state is None:
                self.log.truncate_after(-1)  # a fresh start (also --resume before the first checkpoint)
                settings = {**s.result_settings(), "world_size": self.group.world_size}
                (self.out / RUN_SETTINGS_NAME).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
            else:
                self.log.truncate_after(self.start_step)
                self.log.write({"step": self.start_step, "event": "resumed"})
        self.group.barrier()

    # ---- pieces of a step -------------------------------------------------------------------------------------
    def autocast(self) -> ContextManager:
        device = self.group.device
        precision = self.settings.precision
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        if precision == "fp32":
            return contextlib.nullcontext()
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise InputError("--precision bf16: this GPU does not support bfloat16")
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def train_mode(self) -> None:
        """Training mode, except a frozen tower, which stays in eval mode (no dropout)."""
        self.model.train()
        if self.settings.freeze:
            getattr(self.model, self.settings.freeze).eval()

    def loader(self) -> DataLoader:
        s = self.settings
        sampler = PairBatches(len(self.train_data.texts), s.batch_size, self.group.world_size, self.group.rank,
                              s.seed, self.start_step * s.grad_accum,
                              (self.total_steps - self.start_step) * s.grad_accum)
        dataset = PairDataset(self.train_data, self.model.config.vision.image_size, s.seed)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=s.num_workers,
                          collate_fn=CollatePairs(self.tokenizer, s.max_length),
                          generator=torch.Generator().manual_seed(s.seed))

    def micro_step(self, batch: Batch, sync: bool) -> float:
        device = self.group.device
        no_sync = getattr(self.step_module, "no_sync", None)
        with (contextlib.nullcontext() if sync or no_sync is None else no_sync()):
            with self.autocast():
                loss = self.step_module(batch.pixel_values.to(device), batch.input_ids.to(device),
                                        batch.attention_mask.to(device))
            (loss / self.settings.grad_accum).backward()
        return float(loss.detach())

    def report_skipped(self, step: int, skipped: List[Tuple[str, str]], bar) -> None:
        if self.group.distributed:
            import torch.distributed as dist

            everyone: List[Any] = [None] * self.group.world_size
            dist.all_gather_object(everyone, skipped)
            skipped = [tuple(item) for part in everyone for item in part]
        known = {name for name, _ in self.skipped}
        for name, reason in skipped:
            if name in known:
                continue
            known.add(name)
            self.skipped.append((name, reason))
            self.log.write({"step": step, "event": "skipped_image", "image": name, "reason": reason})
            if self.group.is_main:
                bar.write(f"skipped unreadable training image {name} ({reason}); the next readable pair took "
                          "its place")

    def run_validation(self, step: int, bar=None) -> Optional[Validation]:
        """Validate on the main process; the others wait. Before the first step, any unreadable validation
        image is an error (bad input); later it is skipped and reported."""
        s = self.settings
        result = None
        if self.val_data is not None and self.group.is_main:
            result = validate(self.model, self.tokenizer, self.val_data, s.eval_batch_size, s.num_workers,
                              s.max_length, self.autocast())
            if result.skipped and step == 0:
                shown = "; ".join(f"{n}: {r}" for n, r in result.skipped[:5])
                raise InputError(f"validation data: {len(result.skipped)} item(s) cannot be read: {shown}")
            record = result.record()
            self.log.write({"step": step, "validation": record})
            write = bar.write if bar is not None else print
            if result.skipped:
                write(f"step {step}: validation skipped {len(result.skipped)} unreadable item(s): "
                      + "; ".join(f"{n}: {r}" for n, r in result.skipped[:3]))
            if result.metrics is None:
                write(f"step {step}: validation has no readable pair left: no metrics")
            else:
                self.last_validation = record
                write(f"step {step}: validation t2i R@1 {record['t2i']['R@1']:.2f} i2t R@1 "
                      f"{record['i2t']['R@1']:.2f} mean recall {record['mean_recall']:.2f}")
            if step > 0 and result.metrics is not None and (self.best[1] is None
                                                            or record["mean_recall"] > self.best[1]):
                self.best = (step, record["mean_recall"])
                save_best(self.out, self.model, self.vocab_file, s.model, step, record)
        self.train_mode()
        self.group.barrier()
        return result

    def trainer_state(self, step: int) -> Dict[str, Any]:
        return {"format": 1, "step": step, "total_steps": self.total_steps, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "best_step": self.best[0],
                "best_mean_recall": self.best[1], "skipped": [list(item) for item in self.skipped],
                "rng": {"seed": self.settings.seed, "torch": torch.get_rng_state()}}

    def checkpoint(self, step: int) -> None:
        if self.group.is_main:
            save_checkpoint(self.out, step, self.model, self.vocab_file, self.settings.model,
                            self.trainer_state(step), self.settings.keep_last)
        self.group.barrier()

    def optimizer_step(self, step: int, batches) -> Tuple[float, float, float, List[Tuple[str, str]]]:
        """Step ``step`` (0-based): its micro-batches, clipping, AdamW, the schedule. Returns the mean loss, the
        gradient norm before clipping, the learning rate used and the images skipped in its batches."""
        s = self.settings
        torch.manual_seed(step_seed(s.seed, step, self.group.rank))
        losses, skipped = [], []
        for micro in range(s.grad_accum):
            batch = next(batches)
            skipped += batch.skipped
            losses.append(self.micro_step(batch, sync=micro == s.grad_accum - 1))
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, s.max_grad_norm))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(np.mean(losses)), grad_norm, lr, skipped

    # ---- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        s = self.settings
        step = self.start_step
        if step == 0 and s.eval_at_start:
            self.run_validation(0)
        self.train_mode()
        bar = progress_bar(self.total_steps, "finetune", s.progress and self.group.is_main, unit="step")
        bar.update(step)
        pairs_per_step = s.batch_size * self.group.world_size * s.grad_accum
        batches = iter(self.loader())
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        while step < self.total_steps:
            started = time.perf_counter()
            loss, grad_norm, lr, skipped = self.optimizer_step(step, batches)
            step += 1
            self.report_skipped(step, skipped, bar)
            window_loss, window_steps = window_loss + loss, window_steps + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                            items_s=f"{pairs_per_step / max(time.perf_counter() - started, 1e-9):.1f}")
            if step % s.log_every == 0 or step == self.total_steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": step, "epoch": round(step / self.steps_per_epoch, 4),
                          "loss": window_loss / window_steps, "lr": lr, "grad_norm": grad_norm,
                          "items_per_s": window_steps * pairs_per_step / max(elapsed, 1e-9)}
                self.log.write(record)
                if not s.progress and self.group.is_main:
                    print(json.dumps(record))
                window_loss, window_steps = 0.0, 0
            if step % s.eval_every == 0 or step == self.total_steps:
                self.run_validation(step, bar)
            if step % s.save_every == 0 or step == self.total_steps:
                self.checkpoint(step)
            if window_steps == 0:  # items/s counts training only, not validation or checkpointing
                window_start = time.perf_counter()
        bar.close()
        final = self.out / FINAL_DIR
        if self.group.is_main:
            final = save_final(self.out, self.model, self.vocab_file, s.model, step)
        self.group.barrier()
        best_step, best_recall = self.best
        return FinetuneResult(self.out, step, final, self.out / BEST_DIR if best_step is not None else None,
                              best_step, best_recall, self.last_validation, list(self.skipped),
                              self.start_step or None)


def finetune(model: str, train: str, out: str, **options: Any) -> FinetuneResult:
    """Fine-tune a converted model contrastively on image-caption pairs; several processes under ``torchrun``.

    Defaults follow PaddleNLP's ERNIE-ViL 2.0 recipe (AdamW lr 5e-5, 100 warm-up steps then cosine decay, weight
    decay 0.001, batch 128 per process, 5 epochs, recompute, seed 1); text length 48 as in the official code.

    Args:
        model: a converted model directory (with vocab.txt, or pass --vocab).
        train: training pairs: a COCO-CN style TSV (text<TAB>image_id<TAB>base64), or with --images a captions
            file (.jsonl {"image", "caption"} / .tsv caption<TAB>image), as `ernievil2 eval` reads.
        out: output folder (checkpoints, best/, final/, metrics.jsonl); refused if it exists, unless --overwrite
            or --resume.
        images: image folder of a captions-file training set.
        val: validation captions (same formats); retrieval recall every --eval_every steps, best model kept.
        val_images: image folder of a captions-file validation set.
        vocab: vocab.txt, when the model directory has none.
        epochs: passes over the training pairs (ignored with --max_steps).
        max_steps: optimizer steps to run instead of --epochs.
        batch_size: pairs per process per micro-batch; every process's pairs are negatives for all.
        grad_accum: micro-batches per optimizer step (negatives stay within a micro-batch).
        lr: peak learning rate.
        warmup_steps: linear warm-up steps, then cosine decay to 0.
        weight_decay: AdamW decay of Linear/Conv weights (none on biases, LayerNorms, embeddings, temperature).
        max_grad_norm: clip gradients to this global norm.
        max_length: text length in tokens incl. [CLS]/[SEP].
        seed: seed of the pair order, augmentation and dropout.
        precision: auto (bf16 autocast on a GPU that supports it, else fp32), fp32 or bf16.
        gradient_checkpointing: recompute activations in backward (less memory, one more forward pass per step).
        freeze: 'vision' or 'text': keep that tower fixed (LiT-style when 'vision').
        eval_every: validate every this many steps (and at the end).
        save_every: checkpoint every this many steps (and at the end).
        log_every: write a metrics.jsonl record every this many steps.
        keep_last: checkpoints kept (best/ is kept apart).
        eval_at_start: validate before the first step (a baseline; also checks the validation images).
        eval_batch_size: batch size of validation encoding.
        num_workers: DataLoader worker processes (the result does not depend on it).
        device: cpu / cuda (default: cuda when available).
        overwrite: discard an existing OUT (after every input was checked).
        resume: continue the run in OUT from its newest checkpoint, exactly (same settings required).
        progress: show a progress bar (loss, lr, items/s).
        adam_beta1, adam_beta2, adam_eps: AdamW's betas and epsilon.
    """
    try:
        settings = FinetuneSettings(model=model, train=train, out=out, **options)
    except TypeError as exc:  # an option FinetuneSettings does not have
        raise InputError(f"finetune: {exc}") from None
    trainer = Trainer(settings)
    trainer.prepare()
    return trainer.run()


def _settings_signature() -> inspect.Signature:
    """``finetune``'s signature, read off :class:`FinetuneSettings` (one place for the defaults; fire and
    ``help()`` show it)."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = []
    for item in dataclasses.fields(FinetuneSettings):
        if item.default is dataclasses.MISSING:
            params.append(inspect.Parameter(item.name, positional))
        else:
            params.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=item.default))
    return inspect.Signature(params, return_annotation=FinetuneResult)


finetune.__signature__ = _settings_signature()  # type: ignore[attr-defined]
