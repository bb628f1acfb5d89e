"""Dataclass configs for the two towers and the dual model.

The defaults are every hyper-parameter of the released ERNIE-ViL 2.0 Base (ViT, Chinese) checkpoint, so a
converted directory's ``config.json`` is the complete description of the network it holds. Named sizes live in
:mod:`~ernievil2torch.config.registry`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

#: ``model_type`` of the released Base model's registry entry.
RELEASED_MODEL_TYPE = "ernie_vil_2.0_base_vit"
#: ``model_type`` of every other size: registered ones and sizes read off a checkpoint that no entry describes.
CUSTOM_MODEL_TYPE = "ernie_vil_2.0_custom"


@dataclass(frozen=True)
class TextConfig:
    """ERNIE 3.0 Base text tower (post-norm BERT-style encoder with a tanh pooler)."""

    vocab_size: int = 40000
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 2048
    # Paddle's LayerNorm default, which the released weights were trained with (PaddleNLP >= 2.6 writes 1e-12).
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
    """The dual encoder: both towers plus the contrastive temperature flag.

    ``name`` is the registry entry this configuration was taken from (``"base"``, ``"tiny"``, ...; see
    :func:`~ernievil2torch.config.registry.get_model_config`), None for a size no entry describes and in
    ``config.json`` files written before names were recorded. ``model_type`` labels the family:
    :data:`RELEASED_MODEL_TYPE` for the released Base model, :data:`CUSTOM_MODEL_TYPE` for any other size.
    Neither changes the network: two configs that differ only there build the same model.
    """

    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    # Whether the checkpoint carried a temperature; without one the model scores by plain cosine.
    has_temperature: bool = True
    model_type: str = RELEASED_MODEL_TYPE
    name: Optional[str] = None

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


def check_config(config: ErnieViL2Config) -> None:
    """``ValueError`` naming the first value that could not describe a network: a wrong type, a zero size, an
    epsilon outside (0, 1), a dropout outside [0, 1), a hidden size not divisible by its head count, a pad id
    outside the vocabulary, an image size not divisible by the patch size."""
    if not isinstance(config.has_temperature, bool) or not isinstance(config.model_type, str):
        raise ValueError("has_temperature must be true/false and model_type a string")
    if config.name is not None and not isinstance(config.name, str):
        raise ValueError(f"name = {config.name!r} is not a string or null")
    for part in (config.text, config.vision):
        for item in dataclasses.fields(part):
            value = getattr(part, item.name)
            if item.name.endswith("eps"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                    raise ValueError(f"{item.name} = {value!r} is not a small positive number")
            elif item.name.endswith("dropout"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                    raise ValueError(f"{item.name} = {value!r} is not a probability in [0, 1)")
            elif isinstance(value, bool) or not isinstance(value, int) or value < (0 if item.name == "pad_token_id"
                                                                                   else 1):
                raise ValueError(f"{item.name} = {value!r} is not a valid size")
    for part in (config.text, config.vision):
        if part.hidden_size % part.num_heads:
            raise ValueError(f"hidden_size {part.hidden_size} is not a multiple of num_heads {part.num_heads}")
    if config.text.pad_token_id >= config.text.vocab_size:
        raise ValueError("pad_token_id is outside the vocabulary")
    if config.vision.image_size % config.vision.patch_size:
        raise ValueError("image_size is not a multiple of patch_size")
