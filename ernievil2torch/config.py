"""Dataclass configs for the two towers and the dual model.

Every hyper-parameter of the released ERNIE-ViL 2.0 Base (ViT, Chinese) checkpoint is spelled out here, so a
converted directory's ``config.json`` is the complete description of the network it holds.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .constants import DTYPE_ALIASES, KEEP_DTYPE
from .errors import InputError

CUSTOM_MODEL_TYPE = "ernie_vil_2.0_custom"  # any size other than the released Base model


@dataclass(frozen=True)
class TextConfig:
    """ERNIE 3.0 Base text tower (post-norm BERT-style encoder with a tanh pooler)."""

    vocab_size: int = 40000
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 2048
    # Paddle's LayerNorm default. PaddleNLP >= 2.6 (1e-12) and the seed port (1e-12) got this wrong.
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 0
    # Training only (``model.train()``); eval output does not depend on them. The official ERNIE 3.0 config:
    # ``hidden_dropout_prob`` 0.1 after the embedding LayerNorm and on the attention and FFN outputs before each
    # residual add, ``attention_probs_dropout_prob`` 0.1 on the attention probabilities.
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1


@dataclass(frozen=True)
class VisionConfig:
    """CLIP-style ViT-B/16 image tower (pre-norm blocks, QuickGELU, ln_pre and ln_post)."""

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-6
    # Training only. The released ViT has no dropout and no drop-path (Baidu's and PaddleNLP's code); the fields
    # exist so a fine-tuning run may add some (on the residual branches and the attention probabilities).
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_positions(self) -> int:
        return self.num_patches + 1


@dataclass(frozen=True)
class ErnieViL2Config:
    """The dual encoder: both towers plus the contrastive temperature flag."""

    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    # Whether the checkpoint carried a temperature; without one the model scores by plain cosine.
    has_temperature: bool = True
    model_type: str = "ernie_vil_2.0_base_vit"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ErnieViL2Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        data = dict(data)
        text = TextConfig(**data.pop("text", {}))
        vision = VisionConfig(**data.pop("vision", {}))
        return cls(text=text, vision=vision, **data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "ErnieViL2Config":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def base_config() -> ErnieViL2Config:
    """The released ERNIE-ViL 2.0 Base (ViT) model."""
    return ErnieViL2Config()


def tiny_config() -> ErnieViL2Config:
    """A two-layer model of the same architecture (head size 64 like Base, so it can be inferred), for tests."""
    return ErnieViL2Config(
        text=TextConfig(vocab_size=120, hidden_size=128, num_layers=2, num_heads=2,
                        intermediate_size=256, max_position_embeddings=64),
        vision=VisionConfig(image_size=32, patch_size=8, hidden_size=128, num_layers=2, num_heads=2,
                            intermediate_size=256),
        model_type=CUSTOM_MODEL_TYPE,
    )


def tiny224_config() -> ErnieViL2Config:
    """Tiny dims with the released input geometry (224 px / 16 px patches, 40000-token vocab): for tests of the
    front ends and commands, which feed real 224x224 pixels and real-vocab ids."""
    tiny = tiny_config()
    return dataclasses.replace(
        tiny, text=dataclasses.replace(tiny.text, vocab_size=40000),
        vision=dataclasses.replace(tiny.vision, image_size=224, patch_size=16))


def canonical_dtype(name: Any, allow_keep: bool = False) -> str:
    """The canonical dtype name (``"float32"``, ``"float16"``, ``"bfloat16"``; ``"keep"`` where ``allow_keep``)
    of any spelling in :data:`~ernievil2torch.constants.DTYPE_ALIASES`, case-insensitive.

    The one resolver of dtype names for every command and for ``from_pretrained``: it imports neither torch nor
    numpy, so a command can refuse a bad spelling before any work. Raises :class:`InputError` naming the accepted
    spellings.
    """
    text = str(name).strip().lower()
    if allow_keep and text == KEEP_DTYPE:
        return KEEP_DTYPE
    canonical = DTYPE_ALIASES.get(text)
    if canonical is None:
        accepted = sorted(DTYPE_ALIASES) + ([KEEP_DTYPE] if allow_keep else [])
        raise InputError(f"dtype must be one of {', '.join(accepted)}, not {name!r}")
    return canonical
