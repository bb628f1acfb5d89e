"""The fine-tuning loop: :class:`Trainer` prepares a run (data, model, optimizer, the run folder) and runs it.

One step = ``grad_accum`` micro-batches of ``batch_size`` pairs per process (features gathered over processes, see
:mod:`~ernievil2torch.training.distributed`), or with ``grad_cache_chunk`` one batch of ``batch_size`` pairs encoded
in chunks (:mod:`~ernievil2torch.training.grad_cache`), gradients clipped, one AdamW step, one schedule step. With
``lora_rank`` the model carries LoRA adapters and only they and the temperature train (:mod:`.lora`). Everything random
is a function of the run seed and the position in the run: the pair order of epoch ``e`` (seed, e), each sample's
crop and flip (seed, e, pair), the dropout masks of step ``s`` (seed, s, rank). That, plus the optimizer and
scheduler state in every checkpoint, is why ``--resume`` reproduces the uninterrupted run exactly, and why the
result does not depend on the number of loader workers.

The trainer prints nothing: it writes ``metrics.jsonl`` and calls the hooks of
:class:`~ernievil2torch.training.reporting.TrainingEvents`; only its progress bar draws on the terminal. The folder
it writes is described in :mod:`~ernievil2torch.training.run_folder`.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import ErnieViL2Config, resolve_model
from ..constants import BEST_DIR, CONFIG_NAME, FINAL_DIR, METRICS_LOG_NAME
from ..data.stream import StreamPosition
from ..errors import DiskSpaceError, InputError
from ..modeling import ErnieViL2
from ..pretrained import load_pretrained
from ..processing.vocab import resolve_vocab
from ..modeling.kernels import REFERENCE
from ..runtime.distributed import DistributedContext, first_resolved_kernels, init_distributed_device
from ..runtime.progress import bar_cleared, progress_bar
from .checkpoints import (TRAINER_STATE_FORMAT, MetricsLog, load_trainer_state, save_best, save_checkpoint,
                          save_final)
from .data import Batch, CollatePairs, PairBatches, PairDataset, load_pairs
from .distributed import ContrastiveObjective
from .grad_cache import grad_cache_backward
from .lora import TRAINABLE_NAME, add_adapters, check_rank, load_trainable_state
from .model_setup import train_mode, trainable_model
from .optim import make_optimizer, make_scheduler
from .reporting import TrainingEvents
from .result import FinetuneResult
from .run_folder import check_run_folder, start_run_folder
from .settings import FinetuneSettings
from .validation import Validation, validate


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of a step's dropout masks: a function of (run seed, step, rank) only."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class Trainer:
    """One run: set up by :meth:`prepare` (every input checked before anything is written), executed by :meth:`run`."""

    def __init__(self, settings: FinetuneSettings, events: Optional[TrainingEvents] = None) -> None:
        settings.check()
        self.settings = settings
        self.events = events or TrainingEvents()
        self.out = Path(settings.out)
        self.group: DistributedContext = init_distributed_device(settings.device)
        self.log = MetricsLog(self.out, enabled=self.group.is_main)
        self.bar: Any = None
        self.skipped: List[Tuple[str, str]] = []
        self.best: Tuple[Optional[int], Optional[float]] = (None, None)
        self.last_validation: Optional[Dict[str, Any]] = None

    # ---- setup ------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check OUT, load the data, the model (or the checkpoint a resume continues) and build the optimizer and
        schedule; only then start OUT. Bad input raises :class:`InputError` / :class:`OutputExistsError` before
        anything is written."""
        s = self.settings
        # The CPU inference kernels, the same in every process; recorded, so a resume never mixes kernels.
        self.kernels = first_resolved_kernels(self.group) if self.group.device.type == "cpu" else REFERENCE
        checkpoint = check_run_folder(s, self.group.world_size, self.kernels)
        self.lora = s.lora()
        if self.lora is not None:
            check_rank(self.lora, self._model_config())
        self.group.barrier()  # every process has checked OUT before the main one writes into it
        self.train_data = load_pairs(s.train, s.images, "training", s.data_format)
        self.val_data = (load_pairs(s.val, s.val_images, "validation", s.val_data_format, images_flag="--val_images")
                         if s.val else None)
        loaded = load_pretrained(s.model, dtype=torch.float32, vocab=s.vocab, kernels=self.kernels)
        self.tokenizer = loaded.require_tokenizer()
        self.vocab_file = resolve_vocab(loaded.path, s.vocab)
        model = loaded.model
        self.start_step, trainer_state = 0, None
        if checkpoint is not None:
            if self.lora is None:
                model = ErnieViL2.from_pretrained(checkpoint, dtype=torch.float32, kernels=self.kernels)
            trainer_state = load_trainer_state(checkpoint)
            self.start_step = int(trainer_state["step"])
        self.model = trainable_model(model, self.group.device, s.gradient_checkpointing, s.freeze)
        if self.lora is not None:
            # peft draws lora_A at random: seeded by the run, so every process (the gradient cache does not use
            # DDP, whose first broadcast would hide a difference) and every rerun starts from the same adapters.
            cuda = [self.group.device] if self.group.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(s.seed)
                add_adapters(self.model, self.lora)
            if checkpoint is not None:  # the base weights are --model's; the checkpoint holds what trains
                load_trainable_state(self.model, checkpoint / TRAINABLE_NAME)
        micro_per_epoch = len(self.train_data.texts) // (s.batch_size * self.group.world_size)
        steps_per_epoch = micro_per_epoch // s.grad_accum
        if steps_per_epoch < 1:
            raise InputError(f"{len(self.train_data.texts)} training pairs do not fill one step of "
                             f"{s.batch_size} pairs x {self.group.world_size} process(es) x {s.grad_accum} "
                             "accumulation: lower --batch_size or --grad_accum")
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = s.max_steps or s.epochs * steps_per_epoch
        self.start_micro = self.start_step * s.grad_accum
        if trainer_state is not None and "data_position" in trainer_state:  # where the pairs' stream stood
            self.start_micro = self.order(0, 0).micro_batch_at(StreamPosition.from_dict(trainer_state["data_position"]))
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
        if self.group.distributed and s.grad_cache_chunk is None:  # the gradient cache averages by itself
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.group.device.index] if self.group.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.objective, device_ids=ids)
        self._start_output(trainer_state)

    def _model_config(self) -> ErnieViL2Config:
        """``--model``'s configuration, read alone (no weights) so the LoRA rank is checked before any work."""
        source = resolve_model(self.settings.model)
        try:
            return ErnieViL2Config.load(source.path / CONFIG_NAME) if source.has_weights else source.config
        except (OSError, ValueError, TypeError, AttributeError):
            return load_pretrained(self.settings.model, dtype=torch.float32).model.config  # its own clear error

    def _start_output(self, trainer_state: Optional[Dict[str, Any]]) -> None:
        """Only now, with every input checked, is the output folder touched (by the main process)."""
        if self.group.is_main:
            start_run_folder(self.settings, self.group.world_size, self.log,
                             None if trainer_state is None else self.start_step, self.kernels)
        self.group.barrier()

    # ---- reporting --------------------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        """A line for a person, to the ``on_message`` hook (main process, bar cleared)."""
        if self.group.is_main and self.events.on_message is not None:
            with bar_cleared(self.bar):
                self.events.on_message(text)

    def log_record(self, record: Dict[str, Any]) -> None:
        """A ``log_every`` record: to ``metrics.jsonl`` and the ``on_log`` hook (main process, bar cleared)."""
        self.log.write(record)
        if self.group.is_main and self.events.on_log is not None:
            with bar_cleared(self.bar):
                self.events.on_log(record)

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
        train_mode(self.model, self.settings.freeze)

    def order(self, start: int, count: int) -> PairBatches:
        """This process's micro-batches ``start .. start + count`` of the run's seeded order of pairs."""
        s = self.settings
        return PairBatches(len(self.train_data.texts), s.batch_size, self.group.world_size, self.group.rank, s.seed,
                           start, count)

    def loader(self) -> DataLoader:
        s = self.settings
        sampler = self.order(self.start_micro, (self.total_steps - self.start_step) * s.grad_accum)
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

    def report_damaged(self) -> None:
        """The samples the training set's reader skipped when it was opened (damaged webdataset members): one
        ``skipped_sample`` record each in ``metrics.jsonl`` and one message line for all."""
        problems = getattr(self.train_data, "problems", [])
        if not problems or not self.group.is_main:
            return
        for where, reason in problems:
            self.log.write({"step": 0, "event": "skipped_sample", "sample": where, "reason": reason})
        shown = "; ".join(f"{where}: {reason}" for where, reason in problems[:3])
        self.message(f"skipped {len(problems)} damaged training sample(s) or shard(s) (listed in "
                     f"{METRICS_LOG_NAME}): {shown}" + (" ..." if len(problems) > 3 else ""))

    def grad_cache_step(self, batch: Batch) -> float:
        """The whole batch's gradient, encoded ``grad_cache_chunk`` pairs at a time (see :mod:`.grad_cache`)."""
        device = self.group.device
        step = grad_cache_backward(self.objective, batch.pixel_values.to(device), batch.input_ids.to(device),
                                   batch.attention_mask.to(device), self.settings.grad_cache_chunk, self.autocast)
        return float(step.loss)

    def report_skipped(self, step: int, skipped: List[Tuple[str, str]]) -> None:
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
            self.message(f"skipped unreadable training image {name} ({reason}); the next readable pair took "
                         "its place")

    def run_validation(self, step: int) -> Optional[Validation]:
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
            write = self.message
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
                try:
                    save_best(self.out, self.model, self.vocab_file, s.model, step, record)
                except DiskSpaceError as exc:
                    self.train_mode()
                    self.after_main_wrote(exc)
        self.train_mode()
        self.after_main_wrote(None)
        return result

    def trainer_state(self, step: int) -> Dict[str, Any]:
        return {"format": TRAINER_STATE_FORMAT, "step": step, "total_steps": self.total_steps,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "best_step": self.best[0],
                "best_mean_recall": self.best[1], "skipped": [list(item) for item in self.skipped],
                "rng": {"seed": self.settings.seed, "torch": torch.get_rng_state()},
                "data_position": self.order(0, 0).position(step * self.settings.grad_accum).to_dict()}

    def checkpoint(self, step: int) -> None:
        error = None
        if self.group.is_main:
            try:
                save_checkpoint(self.out, step, self.model, self.vocab_file, self.settings.model,
                                self.trainer_state(step), self.settings.keep_last)
            except DiskSpaceError as exc:
                error = exc
        self.after_main_wrote(error)

    def after_main_wrote(self, error: Optional[DiskSpaceError]) -> None:
        """The barrier after the main process wrote an output: every process learns whether the disk was too full
        and stops with the same :class:`DiskSpaceError` (instead of waiting for a process that has stopped)."""
        if self.group.distributed:
            import torch.distributed as dist

            message = [None if error is None else str(error)]
            dist.broadcast_object_list(message, src=0)
            if error is None and message[0] is not None:
                raise DiskSpaceError(message[0])
        if error is not None:
            raise error

    def optimizer_step(self, step: int, batches) -> Tuple[float, float, float, List[Tuple[str, str]]]:
        """Step ``step`` (0-based): its micro-batches, clipping, AdamW, the schedule. Returns the mean loss, the
        gradient norm before clipping, the learning rate used and the images skipped in its batches."""
        s = self.settings
        torch.manual_seed(step_seed(s.seed, step, self.group.rank))
        losses, skipped = [], []
        for micro in range(s.grad_accum):
            batch = next(batches)
            skipped += batch.skipped
            if s.grad_cache_chunk is not None:
                losses.append(self.grad_cache_step(batch))
            else:
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
        if step == 0:
            self.report_damaged()
        if step == 0 and s.eval_at_start:
            self.run_validation(0)
        self.train_mode()
        bar = self.bar = progress_bar(self.total_steps, "finetune", s.progress and self.group.is_main, unit="step")
        bar.update(step)
        pairs_per_step = s.pairs_per_step(self.group.world_size)
        batches = iter(self.loader())
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        while step < self.total_steps:
            started = time.perf_counter()
            loss, grad_norm, lr, skipped = self.optimizer_step(step, batches)
            step += 1
            self.report_skipped(step, skipped)
            window_loss, window_steps = window_loss + loss, window_steps + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                            items_s=f"{pairs_per_step / max(time.perf_counter() - started, 1e-9):.1f}")
            if step % s.log_every == 0 or step == self.total_steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": step, "epoch": round(step / self.steps_per_epoch, 4),
                          "loss": window_loss / window_steps, "lr": lr, "grad_norm": grad_norm,
                          "items_per_s": window_steps * pairs_per_step / max(elapsed, 1e-9)}
                self.log_record(record)
                window_loss, window_steps = 0.0, 0
            if step % s.eval_every == 0 or step == self.total_steps:
                self.run_validation(step)
            if step % s.save_every == 0 or step == self.total_steps:
                self.checkpoint(step)
            if window_steps == 0:  # items/s counts training only, not validation or checkpointing
                window_start = time.perf_counter()
        bar.close()
        self.bar = None
        final = self.out / FINAL_DIR
        error = None
        if self.group.is_main:
            try:
                final = save_final(self.out, self.model, self.vocab_file, s.model, step)
            except DiskSpaceError as exc:
                error = exc
        self.after_main_wrote(error)
        best_step, best_recall = self.best
        return FinetuneResult(self.out, step, final, self.out / BEST_DIR if best_step is not None else None,
                              best_step, best_recall, self.last_validation, list(self.skipped),
                              self.start_step or None)
