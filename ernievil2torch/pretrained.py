"""One loader: a converted directory -> the model, its tokenizer and its image processor, in one call.

Every command and app loads through :func:`load_pretrained`, so "where is the vocab" and "which dtype/device" are
answered in one place (open_clip's ``create_model_and_transforms``, HF's ``from_pretrained`` + processor).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from .config import model_path, resolve_model
from .constants import VOCAB_NAME
from .errors import InputError
from .modeling import ErnieViL2
from .modeling.dtypes import DTypeLike, optional_torch_dtype
from .modeling.kernels import KernelChoice
from .processing import ErnieViL2ImageProcessor, ErnieViL2Processor, ErnieViL2Tokenizer
from .processing.vocab import resolve_vocab

PathLike = Union[str, os.PathLike]


@dataclass
class Pretrained:
    """What :func:`load_pretrained` returns. ``tokenizer`` is None when the directory has no vocab (and none was
    given): image-only uses still work; :meth:`require_tokenizer` explains the fix to text uses."""

    model: ErnieViL2
    tokenizer: Optional[ErnieViL2Tokenizer]
    image_processor: ErnieViL2ImageProcessor
    path: Path

    def save_pretrained(self, path: PathLike) -> Path:
        """Write the model (``config.json``, ``model.safetensors``) and, when there is one, the tokenizer's
        ``vocab.txt`` into ``path``: the folder :func:`load_pretrained` reads back, here or as a Hub repository."""
        self.model.save_pretrained(path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        return Path(path)

    def require_tokenizer(self) -> ErnieViL2Tokenizer:
        """The tokenizer, or :class:`InputError` saying how to provide a vocab."""
        if self.tokenizer is None:
            raise InputError(f"{self.path} has no {VOCAB_NAME}: pass --vocab vocab.txt (or convert with --vocab)")
        return self.tokenizer

    @property
    def processor(self) -> ErnieViL2Processor:
        return ErnieViL2Processor(self.require_tokenizer(), self.image_processor)


def create_model(name: PathLike, *, dtype: DTypeLike = None,
                 device: Union[str, torch.device, None] = None) -> ErnieViL2:
    """The model a name stands for (:func:`~ernievil2torch.config.resolve_model`: a local directory, then a
    registered name, then a Hub id), in eval mode: a directory's weights (:meth:`ErnieViL2.from_pretrained`), or a registered
    configuration with the modules' own initialisation (random from torch's global RNG, so ``torch.manual_seed``
    makes it repeatable; call ``.train()`` to train it). ``dtype`` as in :func:`load_pretrained`.

    Raises :class:`~ernievil2torch.errors.CheckpointError` for a name that is neither, or a damaged directory.
    """
    compute_dtype = optional_torch_dtype(dtype)
    source = resolve_model(name)
    if source.has_weights:
        return ErnieViL2.from_pretrained(source.path, dtype=compute_dtype, device=device)
    model = ErnieViL2(source.config).to(device=device, dtype=compute_dtype)
    return model.eval()


def load_pretrained(path: PathLike, *, dtype: DTypeLike = None,
                    device: Union[str, torch.device, None] = None, vocab: Optional[PathLike] = None,
                    compile: bool = False, resample: str = "official",
                    kernels: Union[str, KernelChoice, None] = "auto") -> Pretrained:
    """Load a converted directory with :meth:`ErnieViL2.from_pretrained` plus its front ends.

    Args:
        path: a directory written by ``convert.py`` (``config.json``, ``model.safetensors``, maybe ``vocab.txt``)
            or a Hugging Face Hub id of one (``ORG/NAME``, read through the Hub's cache, offline mode honoured).
            Names resolve as in :func:`~ernievil2torch.config.resolve_model`; a registered name has no weights and
            is refused (use :func:`create_model`). ``Pretrained.path`` is the local folder it led to.
        dtype: compute dtype (``torch.bfloat16`` or a name such as ``"bf16"``, checked before anything is read);
            default: as stored.
        device: where the weights go (default CPU).
        vocab: a vocab file to use instead of ``<path>/vocab.txt``; an explicit one must exist.
        compile: ``torch.compile`` both towers.
        resample: the image processor's mode (``"official"`` or ``"paddlenlp"``).
        kernels: the CPU inference kernels, as :meth:`ErnieViL2.from_pretrained` takes them (default: this
            machine's measured choice or ``$ERNIEVIL2_KERNELS``).

    Raises :class:`~ernievil2torch.errors.CheckpointError` for a damaged directory and :class:`InputError` for a
    ``vocab`` that does not exist or holds token ids the model's word embedding does not have.
    """
    compute_dtype = optional_torch_dtype(dtype)
    folder = model_path(path)
    tokenizer: Optional[ErnieViL2Tokenizer] = None
    if vocab is not None or (folder / VOCAB_NAME).is_file():
        tokenizer = ErnieViL2Tokenizer(resolve_vocab(folder, vocab))
    model = ErnieViL2.from_pretrained(folder, dtype=compute_dtype, device=device, compile=compile, kernels=kernels)
    rows = model.config.text.vocab_size
    largest = max(tokenizer.vocab.values()) if tokenizer is not None else -1
    if largest >= rows:
        raise InputError(f"{tokenizer.vocab_file}: token ids up to {largest}, but the model's word embedding has "
                         f"{rows} rows: this vocab is not the model's")
    image_processor = ErnieViL2ImageProcessor(image_size=model.config.vision.image_size, resample=resample)
    return Pretrained(model, tokenizer, image_processor, folder)
