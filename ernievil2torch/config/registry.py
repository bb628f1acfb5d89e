"""Named model configurations: a new size is one :func:`register_model` call (open_clip's ``list_models``).

Built in: ``base`` (the released ERNIE-ViL 2.0 Base, ViT-B/16 + ERNIE 3.0 Base), ``tiny`` (two layers of 128
wide, 32 px images, a 120-token vocab: for tests) and ``tiny224`` (tiny dims with the released input geometry:
224 px / 16 px patches, 40000-token vocab). Entries are architectures: whether a checkpoint carries a temperature
is the checkpoint's business (:func:`match_shapes` sets it from the shapes it is given).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, List, Mapping, Optional, TypeVar, Union

from ..errors import InputError, KeyMapError
from .schema import CUSTOM_MODEL_TYPE, RELEASED_MODEL_TYPE, ErnieViL2Config, TextConfig, VisionConfig, check_config
from .shapes import Shape, parameter_shapes

#: The registry name of the released model (the only entry labelled :data:`RELEASED_MODEL_TYPE`).
RELEASED_MODEL_NAME = "base"
#: What a registry name may look like: never a path (no ``/``), so a name and a directory cannot be confused.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

_REGISTRY: Dict[str, ErnieViL2Config] = {}

ConfigFactory = TypeVar("ConfigFactory", bound=Callable[[], ErnieViL2Config])


def _labelled(name: str, config: ErnieViL2Config) -> ErnieViL2Config:
    model_type = RELEASED_MODEL_TYPE if name == RELEASED_MODEL_NAME else CUSTOM_MODEL_TYPE
    return dataclasses.replace(config, name=name, model_type=model_type)


def register_model(name: str, config: Optional[ErnieViL2Config] = None
                   ) -> Union[ErnieViL2Config, Callable[[ConfigFactory], ConfigFactory]]:
    """Add a named configuration; returns it as stored (``name`` set, ``model_type`` :data:`CUSTOM_MODEL_TYPE`
    unless ``name`` is :data:`RELEASED_MODEL_NAME`).

    Without ``config`` it is a decorator for a function that returns one (``@register_model("small")``); the
    function is called once, at registration, and returned unchanged.

    Raises :class:`InputError` for a name that is taken or is not ``[A-Za-z0-9][A-Za-z0-9._-]*`` (a name never
    looks like a path), and for a config that could not describe a network (zero sizes, a hidden size that is
    not a multiple of the head count, ...).
    """
    if config is None:
        def decorator(factory: ConfigFactory) -> ConfigFactory:
            register_model(name, factory())
            return factory
        return decorator
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"model name {name!r} must be letters, digits, '.', '_' or '-' (and not start with "
                         "one of the last three)")
    if name in _REGISTRY:
        raise InputError(f"model name {name!r} is already registered (unregister_model({name!r}) first)")
    if not isinstance(config, ErnieViL2Config):
        raise InputError(f"register_model({name!r}, ...) needs an ErnieViL2Config, not {type(config).__name__}")
    try:
        check_config(config)
    except ValueError as exc:
        raise InputError(f"model {name!r}: {exc}") from None
    stored = _labelled(name, config)
    _REGISTRY[name] = stored
    return stored


def unregister_model(name: str) -> None:
    """Remove a named configuration (:class:`InputError` when there is none by that name)."""
    if name not in _REGISTRY:
        raise InputError(f"no model named {name!r} is registered")
    del _REGISTRY[name]


def list_models() -> List[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def is_registered(name: object) -> bool:
    return isinstance(name, str) and name in _REGISTRY


def get_model_config(name: str) -> ErnieViL2Config:
    """The configuration registered as ``name`` (its ``name`` field set); :class:`InputError` naming the
    registered ones otherwise."""
    if not is_registered(name):
        raise InputError(f"unknown model name {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def match_shapes(shapes: Mapping[str, Shape]) -> Optional[ErnieViL2Config]:
    """The registered configuration whose :func:`parameter_shapes` are exactly ``shapes`` (our parameter names;
    a ``temperature`` entry sets ``has_temperature``), or None when no entry has them.

    What shapes cannot tell (head counts, LayerNorm epsilons, dropout) comes from the entry. Two entries with the
    same shapes make the answer ambiguous: :class:`KeyMapError` naming both (pass the config explicitly).
    """
    wanted = {key: tuple(shape) for key, shape in shapes.items()}
    has_temperature = "temperature" in wanted
    candidates = []
    for name in list_models():
        config = dataclasses.replace(_REGISTRY[name], has_temperature=has_temperature)
        if parameter_shapes(config) == wanted:
            candidates.append(config)
    if len(candidates) > 1:
        names = ", ".join(c.name or "?" for c in candidates)
        raise KeyMapError(f"the checkpoint's shapes fit several registered models ({names}): head counts and "
                          "LayerNorm epsilons cannot be read off shapes, so name the model to convert it as")
    return candidates[0] if candidates else None


# ---- the built-in entries ---------------------------------------------------------------------------------------
register_model(RELEASED_MODEL_NAME, ErnieViL2Config())
register_model("tiny", ErnieViL2Config(
    text=TextConfig(vocab_size=120, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256,
                    max_position_embeddings=64),
    vision=VisionConfig(image_size=32, patch_size=8, hidden_size=128, num_layers=2, num_heads=2,
                        intermediate_size=256)))
register_model("tiny224", dataclasses.replace(
    _REGISTRY["tiny"], text=dataclasses.replace(_REGISTRY["tiny"].text, vocab_size=40000),
    vision=dataclasses.replace(_REGISTRY["tiny"].vision, image_size=224, patch_size=16)))


def base_config() -> ErnieViL2Config:
    """``get_model_config("base")``: the released ERNIE-ViL 2.0 Base (ViT) model."""
    return get_model_config(RELEASED_MODEL_NAME)


def tiny_config() -> ErnieViL2Config:
    """``get_model_config("tiny")``: two layers, head size 64 like Base, for tests."""
    return get_model_config("tiny")


def tiny224_config() -> ErnieViL2Config:
    """``get_model_config("tiny224")``: tiny dims with 224 px / 16 px patches and a 40000-token vocab, for tests
    of the front ends and commands, which feed real 224x224 pixels and real-vocab ids."""
    return get_model_config("tiny224")
