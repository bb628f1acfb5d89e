"""Where a converted directory's weights came from, as far as the tools that load it need to know.

A directory converted from a checkpoint made by :mod:`ernievil2torch.verify.synthetic` records a source file name
starting with :data:`~ernievil2torch.constants.SYNTHETIC_SOURCE_PREFIX`; every tool that shows similarities
(``similarity``, the web service) reads that mark and warns with :data:`SYNTHETIC_NOTICE`, because the numbers
of a random-weight model mean nothing.
"""
from __future__ import annotations

import os
from typing import Union

from ..constants import SYNTHETIC_SOURCE_PREFIX
from .model_dir import read_metadata

SYNTHETIC_NOTICE = ("SYNTHETIC CHECKPOINT: every weight is random (seeded). Its similarities are meaningless; "
                    "it only proves that conversion and the PyTorch model reproduce Paddle's computation.")


def is_synthetic_source(source_file: str) -> bool:
    """Whether a converted directory's recorded source file name marks it as a synthetic (random) checkpoint."""
    return source_file.startswith(SYNTHETIC_SOURCE_PREFIX)


def has_synthetic_weights(model_dir: Union[str, os.PathLike]) -> bool:
    """Whether the converted directory ``model_dir`` was made from a synthetic checkpoint (its metadata says so)."""
    return is_synthetic_source(read_metadata(model_dir).get("source_file", ""))
