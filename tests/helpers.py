"""Shared test helpers: where the shared data and the oracle interpreter are, and how to run an oracle.

* ``shared_data_dir()``: ``$ERNIEVIL2_SHARED_DATA``, else ``<repo>/../shared/data``; skips the test when absent.
* ``oracle_python()``: ``$ERNIEVIL2_ORACLE_PYTHON``, else ``<repo>/.venv-paddlenlp/bin/python`` when it exists;
  skips when there is none, but fails when ``ERNIEVIL2_REQUIRE_ORACLES=1``.
* ``run_oracle(script, payload_path, *args)``: runs ``<oracle python> tests/oracles/<script> <payload_path> args``.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional, Sequence, Union

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ORACLE_DIR = Path(__file__).resolve().parent / "oracles"


def oracles_required() -> bool:
    return os.environ.get("ERNIEVIL2_REQUIRE_ORACLES", "") == "1"


def shared_data_dir() -> Path:
    """The shared test data folder (vocab.txt, images/); skips the calling test when it is absent."""
    env = os.environ.get("ERNIEVIL2_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared test data not found at '{path}' (set ERNIEVIL2_SHARED_DATA or provide ../shared/data)")
    return path


def shared_file(*parts: str) -> Path:
    """A file under the shared data folder; skips when missing."""
    path = shared_data_dir().joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared test file '{path}' is missing")
    return path


def oracle_python() -> Path:
    """The interpreter with PaddleNLP/Paddle for oracle scripts; skip (or fail under ERNIEVIL2_REQUIRE_ORACLES=1)."""
    env = os.environ.get("ERNIEVIL2_ORACLE_PYTHON")
    path = Path(env) if env else REPO_ROOT / ".venv-paddlenlp" / "bin" / "python"
    if not (path.is_file() and os.access(path, os.X_OK)):
        reason = (f"oracle interpreter '{path}' not found (set ERNIEVIL2_ORACLE_PYTHON to a Python with paddlenlp "
                  "2.8.1)")
        if oracles_required():
            pytest.fail(reason + " and ERNIEVIL2_REQUIRE_ORACLES=1")
        pytest.skip(reason)
    return path


def run_oracle(script: Union[str, Path], payload_path: Union[str, Path, None], *args: Union[str, Path],
               timeout: float = 900, env: Optional[dict] = None,
               python: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run an oracle script under :func:`oracle_python` and return the finished process.

    ``script`` is a file name in ``tests/oracles`` (or any path); the command line is
    ``python script [payload_path] *args`` (``payload_path`` omitted when None). A non-zero exit status fails the
    calling test with the oracle's stderr.
    """
    python = python or oracle_python()
    script = Path(script)
    if not script.is_absolute() and not script.exists():
        script = ORACLE_DIR / script
    cmd: Sequence[str] = [str(python), str(script)]
    if payload_path is not None:
        cmd = [*cmd, str(payload_path)]
    cmd = [*cmd, *(str(a) for a in args)]
    full_env = dict(os.environ)
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    full_env.setdefault("PYTHONWARNINGS", "ignore")
    if env:
        full_env.update(env)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if proc.returncode != 0:
        pytest.fail(f"oracle {script.name} exited with status {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc
