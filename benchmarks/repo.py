"""The repository a benchmark script runs from, and importing one of its files that is not a package module.

Scripts run as ``python benchmarks/X.py``: their own folder is on ``sys.path`` (so ``import benchlib`` works) and
the package is installed. Test modules and oracles (``tests/...``) are not importable by name; :func:`load_file`
imports one by its path, without changing ``sys.path``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_file(relative: str) -> ModuleType:
    """The module of ``ROOT / relative`` (e.g. ``"tests/serve_helpers.py"``), imported once and registered in
    ``sys.modules`` under its file stem (dataclasses and pickling look their module up there)."""
    path = ROOT / relative
    if path.stem in sys.modules and getattr(sys.modules[path.stem], "__file__", None) == str(path):
        return sys.modules[path.stem]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
