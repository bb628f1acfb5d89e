"""``finetune``: the Python entry point of a fine-tuning run, one keyword argument per ``ernievil2 finetune`` flag.

Its signature is read off :class:`~ernievil2torch.training.settings.FinetuneSettings` (names, defaults, and each
flag's value type as a class), so ``inspect.signature(finetune)`` lists every flag with its default and type, and a
front end can refuse an unknown or mistyped flag before any work. :func:`run_finetune` runs checked settings with
hooks for the per-step records and messages (:class:`~ernievil2torch.training.reporting.TrainingEvents`).
"""
from __future__ import annotations

import dataclasses
import gc
import inspect
import typing
from typing import Any, Optional

from .reporting import TrainingEvents
from .result import FinetuneResult
from .settings import FinetuneSettings
from .trainer import Trainer


def run_finetune(settings: FinetuneSettings, events: Optional[TrainingEvents] = None) -> FinetuneResult:
    """Run a fine-tuning with ``settings`` (checked first, before any work), reporting through ``events``.

    Under ``torchrun`` every process calls it; the process group it set up is closed when the run ends."""
    trainer = Trainer(settings, events)
    trainer.prepare()
    result = trainer.run()
    group = trainer.group
    del trainer  # the DDP module holds the process group: released while the interpreter is whole (see close)
    gc.collect()
    group.close()
    return result


def finetune(model: str, train: str, out: str, **options: Any) -> FinetuneResult:
    """Fine-tune a converted model contrastively on image-caption pairs; several processes under ``torchrun``.

    Defaults follow PaddleNLP's ERNIE-ViL 2.0 recipe (AdamW lr 5e-5, 100 warm-up steps then cosine decay, weight
    decay 0.001, batch 128 per process, 5 epochs, recompute, seed 1); text length 48 as in the official code.

    Args:
        model: a converted model directory (with vocab.txt, or pass --vocab) or a Hub id (ORG/NAME).
        train: training pairs: a COCO-CN style TSV (text<TAB>image_id<TAB>base64), or with --images a captions
            file (.jsonl {"image", "caption"} / .tsv caption<TAB>image), or a folder of webdataset .tar shards, as
            `ernievil2 eval` reads.
        out: output folder (checkpoints, best/, final/, metrics.jsonl); refused if it exists, unless --overwrite
            or --resume; never the current directory, a folder above it, or an input or a folder holding one.
        images: image folder of a captions-file training set.
        val: validation captions (same formats); retrieval recall every --eval_every steps, best model kept.
        val_images: image folder of a captions-file validation set.
        data_format: the training set's dataset format (coco_cn_tsv, caption_folder, webdataset), as `ernievil2
            eval --data_format` takes it; default: caption_folder with --images, webdataset for .tar shards, else
            coco_cn_tsv.
        val_data_format: the same for the validation set (default: read off --val_images the same way).
        vocab: vocab.txt, when the model directory has none.
        epochs: passes over the training pairs (ignored with --max_steps).
        max_steps: optimizer steps to run instead of --epochs.
        batch_size: pairs per process per micro-batch; every process's pairs are negatives for all.
        grad_accum: micro-batches per optimizer step (negatives stay within a micro-batch).
        grad_cache_chunk: encode each batch in chunks of this many pairs (gradient cache): the exact gradient of
            the whole --batch_size with one chunk's activation memory, for about one more forward pass per step.
        lr: peak learning rate.
        warmup_steps: linear warm-up steps, then cosine decay to 0.
        weight_decay: AdamW decay of Linear/Conv weights (none on biases, LayerNorms, embeddings, temperature).
        max_grad_norm: clip gradients to this global norm.
        max_length: text length in tokens incl. [CLS]/[SEP].
        seed: seed of the pair order, augmentation and dropout.
        precision: auto (bf16 autocast on a GPU that supports it, else fp32), fp32 or bf16.
        gradient_checkpointing: recompute activations in backward (less memory, one more forward pass per step).
        freeze: 'vision' or 'text': keep that tower fixed (LiT-style when 'vision').
        lora_rank: train rank-R LoRA adapters (and the temperature) instead of the weights; best/ and final/
            hold the merged weights plus the adapter (peft format) in lora_adapter/.
        lora_alpha: the adapters' scale is alpha / rank (default: alpha = 2 x rank).
        lora_dropout: dropout on the adapters' input.
        lora_targets: adapted layers, comma-separated: qkv, out_proj, fc1, fc2 (both towers), or
            vision.NAME / text.NAME (text.pooler too).
        eval_every: validate every this many steps (and at the end).
        save_every: checkpoint every this many steps (and at the end).
        log_every: write a metrics.jsonl record every this many steps.
        keep_last: checkpoints kept (best/ is kept apart); one suffices to resume, as each is written completely
            before the previous is removed. Full size: 2.4 GB a checkpoint (weights + AdamW state).
        eval_at_start: validate before the first step (a baseline; also checks the validation images).
        eval_batch_size: batch size of validation encoding.
        num_workers: DataLoader worker processes (the result does not depend on it).
        device: cpu / cuda (default: cuda when available).
        overwrite: discard an existing OUT (after every input was checked).
        resume: continue the run in OUT from its newest checkpoint, exactly (same settings required).
        progress: show a progress bar (loss, lr, items/s).
        adam_beta1: AdamW's first-moment decay (beta1).
        adam_beta2: AdamW's second-moment decay (beta2).
        adam_eps: AdamW's epsilon.

    Returns:
        a :class:`FinetuneResult` (its ``summary()`` is what the command shows at the end). Raises
        :class:`~ernievil2torch.errors.InputError` for an unknown option or a value no run can use, before any work.
    """
    return run_finetune(FinetuneSettings.from_arguments(model, train, out, **options))


def flag_type(annotation: Any) -> Any:
    """The type a flag's value has when given: ``X`` for ``Optional[X]`` (the ``None`` default already says the flag
    may be left out, and help texts show such a flag as ``Optional[X]``), else the annotation itself."""
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(arguments) == 1:
        return arguments[0]
    return annotation


def settings_signature() -> inspect.Signature:
    """``finetune``'s signature read off :class:`FinetuneSettings`: the fields without a default are positional,
    the others keyword-only with their default; every parameter is annotated with the type its value has
    (:func:`flag_type` of the field's type: a class such as ``str`` or ``int``, never a string), the return with
    :class:`FinetuneResult`."""
    types = typing.get_type_hints(FinetuneSettings)
    parameters = []
    for item in dataclasses.fields(FinetuneSettings):
        annotation = flag_type(types[item.name])
        if item.default is dataclasses.MISSING:
            parameters.append(inspect.Parameter(item.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                annotation=annotation))
        else:
            parameters.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=item.default,
                                                annotation=annotation))
    return inspect.Signature(parameters, return_annotation=FinetuneResult)


finetune.__signature__ = settings_signature()  # type: ignore[attr-defined]
finetune.__annotations__ = {**{name: p.annotation for name, p in finetune.__signature__.parameters.items()},
                            "return": FinetuneResult}
