"""The ERNIE-ViL 2.0 dual encoder: both towers, (scaled) cosine scoring, loading and saving converted directories."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ErnieViL2Config, base_config, model_path
from ..errors import CheckpointError
from ..storage.model_dir import read_model_dir, write_model_dir
from .dtypes import DTypeLike, optional_torch_dtype
from .kernel_choice import resolve_kernels
from .kernels import REFERENCE, KernelChoice, kernel_scope
from .loss import contrastive_loss
from .text import TextEncoder
from .vision import VisionEncoder


@dataclass
class ErnieViL2Output:
    """Scores of every image against every text (``logits_per_text`` is the transpose); the raw (unnormalised)
    features; with ``return_loss=True`` the contrastive loss of the batch (0-d), else None."""

    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    loss: Optional[torch.Tensor] = None


class ErnieViL2(nn.Module):
    """ViT-B/16 image tower + ERNIE 3.0 Base text tower; features are compared by (scaled) cosine.

    ``config`` defaults to the registered ``base`` configuration (the released model's architecture).
    """

    def __init__(self, config: Optional[ErnieViL2Config] = None) -> None:
        super().__init__()
        self.config = config or base_config()
        self.vision = VisionEncoder(self.config.vision)
        self.text = TextEncoder(self.config.text)
        # The stored value is log(scale) (Paddle's `temperature_b` / `temperature`); absent in some checkpoints.
        self.temperature = nn.Parameter(torch.zeros(1)) if self.config.has_temperature else None
        #: The CPU linear kernels :meth:`encode_image` / :meth:`encode_text` run at inference (see
        #: :mod:`~ernievil2torch.modeling.kernels`); the reference kernels unless set by :meth:`use_kernels`.
        self.kernels: KernelChoice = REFERENCE

    def use_kernels(self, choice: KernelChoice) -> "ErnieViL2":
        """Run inference with ``choice`` (a :class:`KernelChoice`, e.g. from
        :func:`~ernievil2torch.modeling.kernel_choice.resolve_kernels`); training paths are unaffected. Returns
        ``self``."""
        if not isinstance(choice, KernelChoice):
            raise TypeError(f"use_kernels takes a KernelChoice, got {type(choice).__name__}")
        self.kernels = choice
        return self

    @property
    def logit_scale(self) -> Optional[torch.Tensor]:
        """``exp(temperature)``, or None when the checkpoint carried no temperature."""
        return None if self.temperature is None else self.temperature.exp()

    @property
    def device(self) -> torch.device:
        return self.vision.class_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vision.class_embedding.dtype

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image features [B, 768]: the class token after norm_post."""
        with kernel_scope(self.kernels):
            features = self.vision(pixel_values.to(self.device))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                    normalize: bool = False) -> torch.Tensor:
        """Text features [B, 768]: ``tanh(pooler([CLS]))``; the mask defaults to ``input_ids != 0``."""
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        with kernel_scope(self.kernels):
            features = self.text(input_ids.to(self.device), attention_mask)
        return F.normalize(features, dim=-1) if normalize else features

    def score(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """[images, texts] cosine similarity, times ``logit_scale`` when the model has one."""
        logits = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T
        scale = self.logit_scale
        return logits if scale is None else logits * scale.to(logits.dtype)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, return_loss: bool = False) -> ErnieViL2Output:
        """Features and scores of a batch; ``return_loss=True`` adds the contrastive loss
        (:func:`~ernievil2torch.modeling.loss.contrastive_loss`), which needs image i paired with text i."""
        image_embeds = self.encode_image(pixel_values)
        text_embeds = self.encode_text(input_ids, attention_mask)
        logits_per_image = self.score(image_embeds, text_embeds)
        loss = contrastive_loss(image_embeds, text_embeds, self.logit_scale) if return_loss else None
        return ErnieViL2Output(logits_per_image, logits_per_image.T, image_embeds, text_embeds, loss)

    def set_gradient_checkpointing(self, enabled: bool = True) -> "ErnieViL2":
        """Recompute every block's activations during backward instead of storing them (both towers): less memory
        for about one more forward pass per step; gradients unchanged. Returns ``self``."""
        self.vision.gradient_checkpointing = self.text.gradient_checkpointing = bool(enabled)
        return self

    # ---- converted-directory format ------------------------------------------------------------------------
    def save_pretrained(self, path: Union[str, Path]) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically, see :mod:`ernievil2torch.storage`): the
        folder :meth:`from_pretrained` reads, here or uploaded as a Hub model repository. Text uses also need the
        vocab: :meth:`ernievil2torch.Pretrained.save_pretrained` writes it too."""
        write_model_dir(path, self.config, self.state_dict(), overwrite=True)

    def compile(self, *args, **kwargs) -> "ErnieViL2":
        """``torch.compile`` both towers in place (arguments go to ``torch.compile``); returns ``self``.

        ``encode_image``/``encode_text`` then run the compiled towers. The first call per input shape compiles
        (tens of seconds on CPU; inductor needs a C++ compiler there). On CPU, fp32 features stay within 1e-5 of
        the eager model; what it buys depends on the machine (see BENCHMARKS.md).
        """
        self.vision.compile(*args, **kwargs)
        self.text.compile(*args, **kwargs)
        return self

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], dtype: DTypeLike = None,
                        device: Union[str, torch.device, None] = None, compile: bool = False,
                        kernels: Union[str, KernelChoice, None] = "auto") -> "ErnieViL2":
        """Load a converted directory (safetensors only, no pickle) and return the model in eval mode.

        ``path`` is resolved by :func:`~ernievil2torch.config.resolve_model`: a local directory, or a Hugging Face
        Hub id (``ORG/NAME``) read through the Hub's cache; a registered name has no weights to load, so it is
        refused with :class:`InputError` (``pretrained.create_model(name)`` builds one with random weights).
        ``dtype`` (``torch.bfloat16`` or any name :func:`~ernievil2torch.config.canonical_dtype` accepts, such as
        ``"bf16"``; checked before anything is read) casts every weight at load time; inputs are cast by the towers. ``compile=True`` calls :meth:`compile` with default options.
        ``kernels``: the CPU inference kernels (:meth:`use_kernels`): ``"auto"`` (this machine's measured choice,
        or ``ERNIEVIL2_KERNELS``; see :func:`~ernievil2torch.modeling.kernel_choice.resolve_kernels`), a spec such
        as ``"float32=onednn"``, a :class:`KernelChoice`, or None for the reference kernels.
        """
        dtype = optional_torch_dtype(dtype)
        on_cpu = device is None or torch.device(device).type == "cpu"  # the choice is for CPU inference only
        choice = resolve_kernels(kernels) if isinstance(kernels, str) and on_cpu else (
            kernels if isinstance(kernels, KernelChoice) else REFERENCE)
        config, state = read_model_dir(model_path(path), device=device)
        with torch.device("meta"):
            model = cls(config)
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        found = {name: tuple(t.shape) for name, t in state.items()}
        if expected != found:
            problems = [f"missing '{k}'" for k in sorted(set(expected) - set(found))]
            problems += [f"unexpected '{k}'" for k in sorted(set(found) - set(expected))]
            problems += [f"'{k}' has shape {found[k]}, config says {expected[k]}"
                         for k in sorted(set(found) & set(expected)) if found[k] != expected[k]]
            raise CheckpointError(f"{path}: weights do not match config.json: " + "; ".join(problems[:20]))
        model.load_state_dict(state, strict=True, assign=True)
        if dtype is not None:
            model.to(dtype=dtype)
        model.eval()
        model.use_kernels(choice)
        return model.compile() if compile else model
