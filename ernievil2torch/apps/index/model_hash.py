"""The hash that names a model's embeddings: ``index`` keys its collection by it and refuses rows of another model;
``embed`` records it in its output so that ``index --from_embeddings`` loads only vectors of the same model."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ...errors import InputError

#: The files of a model directory that decide its embeddings, hashed in this order.
HASHED_FILES = ("config.json", "model.safetensors")


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 (hex) over the model's ``config.json`` and ``model.safetensors``: two directories hash alike exactly
    when they compute the same embeddings (the tokenizer's vocabulary is not part of it: images only need these).
    :class:`~ernievil2torch.errors.InputError` when either file is missing."""
    digest = hashlib.sha256()
    for name in HASHED_FILES:
        path = Path(model_dir) / name
        if not path.is_file():
            raise InputError(f"{model_dir} has no {name}: give a directory written by convert.py")
        digest.update(name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()
