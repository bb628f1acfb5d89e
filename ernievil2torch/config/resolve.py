"""Model names: what a name given to ``from_pretrained``, ``load_pretrained`` or ``create_model`` stands for."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import CheckpointError, InputError
from .hub import hub_snapshot, parse_hub_id
from .registry import get_model_config, is_registered, list_models
from .schema import ErnieViL2Config

DIRECTORY, REGISTRY, HUB = "directory", "registry", "hub"


@dataclass(frozen=True)
class ModelSource:
    """Where a model name led: a local ``path`` with weights to read (``kind == "directory"``, or ``"hub"``: the
    Hugging Face cache's snapshot folder of a Hub id) or a registered ``config`` (``kind == "registry"``: an
    architecture without weights)."""

    kind: str
    name: str
    path: Optional[Path] = None
    config: Optional[ErnieViL2Config] = None

    @property
    def has_weights(self) -> bool:
        return self.kind in (DIRECTORY, HUB)

    def summary(self) -> str:
        if self.kind == DIRECTORY:
            return f"{self.name}: local model directory {self.path}"
        if self.kind == HUB:
            return f"{self.name}: Hugging Face Hub id, snapshot {self.path}"
        return f"{self.name}: registered configuration (no weights)"


def resolve_model(name: Union[str, os.PathLike]) -> ModelSource:
    """Resolve a model name, in this order:

    1. a local path that exists: a converted directory (or its ``model.safetensors``). A directory wins over a
       registry entry or a Hub id of the same name; the directory reader reports what is wrong with it.
    2. a registered name (:func:`~ernievil2torch.config.registry.list_models`): its configuration, no weights.
    3. a Hugging Face Hub id (``ORG/NAME``, ``ORG/NAME@REVISION``, ``hf-hub:ORG/NAME``; see
       :mod:`~ernievil2torch.config.hub`): its snapshot folder in the Hugging Face cache, downloaded there first
       when not cached and the Hub is reachable (never with ``HF_HUB_OFFLINE=1``).

    Raises :class:`CheckpointError` when nothing matches (no such path, no such registered name, not a Hub id) and
    when a Hub id is neither cached nor reachable (the message names the id).
    """
    text = os.fspath(name)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    path = Path(text)
    if path.exists():
        return ModelSource(DIRECTORY, text, path=path)
    if is_registered(text):
        return ModelSource(REGISTRY, text, config=get_model_config(text))
    hub_id = parse_hub_id(text)
    if hub_id is None:
        raise CheckpointError(f"{text}: not a converted model directory (no such path), nor a registered model "
                              f"name ({', '.join(list_models())}), nor a Hugging Face Hub id (ORG/NAME)")
    try:
        folder = hub_snapshot(hub_id)
    except CheckpointError as exc:
        raise CheckpointError(f"{text}: not a converted model directory (no such path), nor a registered model "
                              f"name; as a Hugging Face Hub id: {exc}") from None
    return ModelSource(HUB, str(hub_id), path=folder)


def model_path(name: Union[str, os.PathLike]) -> Path:
    """The local folder holding the weights ``name`` stands for (:func:`resolve_model`: a directory, or a Hub
    id's snapshot). A registered name has no weights: :class:`InputError` pointing at ``create_model``."""
    source = resolve_model(name)
    if not source.has_weights:
        raise InputError(f"{source.name!r} is a registered model configuration without weights: pass a "
                         "converted directory or a Hub id, or use create_model() for randomly initialised weights")
    assert source.path is not None
    return source.path
