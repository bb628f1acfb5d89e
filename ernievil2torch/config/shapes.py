"""Every parameter's shape as a function of the config: the one source the converter, the layouts, config
inference and the tests read (torch-free, so ``convert.py`` runs where torch cannot be imported).

The modules in :mod:`ernievil2torch.modeling` build the same parameters from the same config;
``tests/config/test_registry.py`` holds :func:`parameter_shapes` equal to ``ErnieViL2(config).state_dict()`` (names,
shapes and order) for every registered config.
"""
from __future__ import annotations

from typing import Dict, Tuple

from .schema import ErnieViL2Config, TextConfig, VisionConfig

Shape = Tuple[int, ...]


def _linear(prefix: str, out_features: int, in_features: int) -> Dict[str, Shape]:
    """A torch Linear: weight [out, in], bias [out]."""
    return {f"{prefix}.weight": (out_features, in_features), f"{prefix}.bias": (out_features,)}


def _norm(prefix: str, size: int) -> Dict[str, Shape]:
    return {f"{prefix}.weight": (size,), f"{prefix}.bias": (size,)}


def vision_shapes(cfg: VisionConfig) -> Dict[str, Shape]:
    """The image tower's parameters (``vision.*``), in ``state_dict()`` order."""
    d = cfg.hidden_size
    shapes: Dict[str, Shape] = {"vision.class_embedding": (d,), "vision.positional_embedding": (cfg.num_positions, d),
                                "vision.patch_embed.weight": (d, cfg.num_channels, cfg.patch_size, cfg.patch_size)}
    shapes.update(_norm("vision.norm_pre", d))
    for i in range(cfg.num_layers):
        block = f"vision.layers.{i}"
        shapes.update({**_norm(f"{block}.norm1", d), **_linear(f"{block}.attn.qkv", 3 * d, d),
                       **_linear(f"{block}.attn.out_proj", d, d), **_norm(f"{block}.norm2", d),
                       **_linear(f"{block}.mlp.fc1", cfg.intermediate_size, d),
                       **_linear(f"{block}.mlp.fc2", d, cfg.intermediate_size)})
    shapes.update(_norm("vision.norm_post", d))
    return shapes


def text_shapes(cfg: TextConfig) -> Dict[str, Shape]:
    """The text tower's parameters (``text.*``), in ``state_dict()`` order."""
    d = cfg.hidden_size
    shapes: Dict[str, Shape] = {"text.embeddings.word_embeddings.weight": (cfg.vocab_size, d),
                                "text.embeddings.position_embeddings.weight": (cfg.max_position_embeddings, d)}
    shapes.update(_norm("text.embeddings.norm", d))
    for i in range(cfg.num_layers):
        block = f"text.layers.{i}"
        shapes.update({**_linear(f"{block}.attn.qkv", 3 * d, d), **_linear(f"{block}.attn.out_proj", d, d),
                       **_norm(f"{block}.norm1", d), **_linear(f"{block}.mlp.fc1", cfg.intermediate_size, d),
                       **_linear(f"{block}.mlp.fc2", d, cfg.intermediate_size), **_norm(f"{block}.norm2", d)})
    shapes.update(_linear("text.pooler", d, d))
    return shapes


def parameter_shapes(config: ErnieViL2Config) -> Dict[str, Shape]:
    """``{name: shape}`` of every parameter of ``ErnieViL2(config)``, in ``state_dict()`` order: the temperature
    (``(1,)``, only when ``config.has_temperature``), then the image tower, then the text tower.

    Head counts, LayerNorm epsilons and dropout rates change no shape: a checkpoint cannot reveal them, which is
    why :func:`~ernievil2torch.config.registry.match_shapes` lets a registry entry decide.
    """
    shapes: Dict[str, Shape] = {"temperature": (1,)} if config.has_temperature else {}
    shapes.update(vision_shapes(config.vision))
    shapes.update(text_shapes(config.text))
    return shapes
