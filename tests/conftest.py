"""Shared fixtures: seeded synthetic checkpoints in both layouts, written once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from ernievil2torch.config import base_config, tiny_config
from ernievil2torch.conversion.pdparams import save_pdparams
from ernievil2torch.verify.synthetic import layout_state

CONFIGS = {"tiny": tiny_config, "base": base_config}


@pytest.fixture(scope="session")
def synthetic_pdparams(tmp_path_factory):
    """``synthetic_pdparams(size, layout) -> Path``: a random checkpoint (seed 0), cached for the session."""
    cache: dict = {}
    root = Path(tmp_path_factory.mktemp("synthetic_checkpoints"))

    def make(size: str = "tiny", layout: str = "official") -> Path:
        key = (size, layout)
        if key not in cache:
            cache[key] = save_pdparams(layout_state(CONFIGS[size](), layout, seed=0), root / f"{size}_{layout}.pdparams")
        return cache[key]

    return make
