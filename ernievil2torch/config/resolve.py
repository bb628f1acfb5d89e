"""Model names: what a name given to ``from_pretrained``, ``load_pretrained`` or ``create_model`` stands for."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import CheckpointError
from .registry import get_model_config, is_registered, list_models
from .schema import ErnieViL2Config

DIRECTORY, REGISTRY = "directory", "registry"


@dataclass(frozen=True)
class ModelSource:
    """Where a model name led: a local ``path`` (``kind == "directory"``: weights to read) or a registered
    ``config`` (``kind == "registry"``: an architecture without weights)."""

    kind: str
    name: str
    path: Optional[Path] = None
    config: Optional[ErnieViL2Config] = None

    @property
    def has_weights(self) -> bool:
        return self.kind == DIRECTORY

    def summary(self) -> str:
        if self.kind == DIRECTORY:
            return f"{self.name}: local model directory {self.path}"
        return f"{self.name}: registered configuration (no weights)"


def resolve_model(name: Union[str, os.PathLike]) -> ModelSource:
    """Resolve a model name, in this order:

    1. a local path that exists: a converted directory (or its ``model.safetensors``). A directory wins over a
       registry entry of the same name; the directory reader reports what is wrong with it.
    2. a registered name (:func:`~ernievil2torch.config.registry.list_models`): its configuration, no weights.
    3. a Hub id: not supported yet; this is the step where one would be downloaded into a local directory.

    Raises :class:`CheckpointError` when nothing matches (no such path, no such registered name).
    """
    text = os.fspath(name)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    path = Path(text)
    if path.exists():
        return ModelSource(DIRECTORY, text, path=path)
    if is_registered(text):
        return ModelSource(REGISTRY, text, config=get_model_config(text))
    raise CheckpointError(f"{text}: not a converted model directory (no such path), nor a registered model name "
                          f"({', '.join(list_models())}); Hub ids are not supported yet")
