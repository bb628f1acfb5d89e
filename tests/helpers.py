"""Shared test helpers: where the shared data and the oracles are, and what happens when one is missing.

Whatever a test needs beyond the runtime requirements (``../shared/data``, Paddle, OpenCV, transformers, the PaddleNLP
interpreter, a C compiler for torch.compile, ...) is looked up here. When it is missing, the test is *skipped* with
the reason on a developer's partial setup, and *fails* with the same reason under ``ERNIEVIL2_REQUIRE_ORACLES=1``
(what ``scripts/test.sh`` and CI set), so a CI run can never pass by skipping. ``tests/conftest.py`` backs this up:
in required mode any other skip is turned into a failure too.

* ``shared_data_dir()`` / ``shared_file(*parts)``: ``$ERNIEVIL2_SHARED_DATA``, else ``<repo>/../shared/data``.
* ``require_module(name)``: import an optional dependency (usable at module level).
* ``oracle_python()``: ``$ERNIEVIL2_ORACLE_PYTHON``, else ``<repo>/.venv-paddlenlp/bin/python`` when it exists.
* ``run_oracle(script, payload_path, *args)``: runs ``<oracle python> tests/oracles/<script> <payload_path> args``.
* ``openclip_python()``: ``$ERNIEVIL2_OPENCLIP_PYTHON``, else ``<repo>/.venv-openclip/bin/python``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Iterator, NoReturn, Optional, Sequence, Union

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ORACLE_DIR = Path(__file__).resolve().parent / "oracles"
REQUIRE_ENV = "ERNIEVIL2_REQUIRE_ORACLES"
SHARED_DATA_ENV = "ERNIEVIL2_SHARED_DATA"


def oracles_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test (or module) because ``reason``; fail instead under ``ERNIEVIL2_REQUIRE_ORACLES=1``."""
    if oracles_required():
        pytest.fail(f"{reason} [{REQUIRE_ENV}=1: a missing oracle or test input is a failure, not a skip]",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """``import name``, or :func:`unavailable` with the import error (replaces ``pytest.importorskip``)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"the test dependency '{name}' cannot be imported ({exc}); pip install -r requirements-dev.txt")


def shared_data_dir() -> Path:
    """The shared test data folder (vocab.txt, images/)."""
    env = os.environ.get(SHARED_DATA_ENV)
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        unavailable(f"shared test data not found at '{path}' (set {SHARED_DATA_ENV} or provide ../shared/data)")
    return path


def shared_file(*parts: str) -> Path:
    """A file under the shared data folder."""
    path = shared_data_dir().joinpath(*parts)
    if not path.is_file():
        unavailable(f"shared test file '{path}' is missing")
    return path


def oracle_python() -> Path:
    """The interpreter with PaddleNLP/Paddle for oracle scripts."""
    env = os.environ.get("ERNIEVIL2_ORACLE_PYTHON")
    path = Path(env) if env else REPO_ROOT / ".venv-paddlenlp" / "bin" / "python"
    if not (path.is_file() and os.access(path, os.X_OK)):
        unavailable(f"oracle interpreter '{path}' not found (set ERNIEVIL2_ORACLE_PYTHON to a Python with "
                    "paddlenlp 2.8.1, or run scripts/setup.sh --dev)")
    return path


def openclip_python() -> Path:
    """The interpreter of ``.venv-openclip`` (open-clip-torch, CLIP_benchmark; no ernievil2torch)."""
    env = os.environ.get("ERNIEVIL2_OPENCLIP_PYTHON")
    path = Path(env) if env else REPO_ROOT / ".venv-openclip" / "bin" / "python"
    if not (path.is_file() and os.access(path, os.X_OK)):
        unavailable(f"open_clip interpreter '{path}' not found (set ERNIEVIL2_OPENCLIP_PYTHON, or run "
                    "scripts/setup.sh --dev)")
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


def run_pytest_on_copy(workdir: Path, *pytest_args: str, edits: Optional[dict] = None,
                       new_files: Optional[dict] = None, hidden_modules: Sequence[str] = (),
                       env: Optional[dict] = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run pytest in a copy of the package and the tests under ``workdir``, with planted changes.

    This is how the suite shows that a test *fails* on a planted mistake (a mutation) and how it runs itself in a
    fake environment:

    * ``edits`` maps a path relative to the repo (``"ernievil2torch/config/schema.py"``) to ``(old, new)``; ``old`` must
      occur exactly once;
    * ``new_files`` maps a relative path to the text of a file to add (e.g. an extra test module);
    * ``hidden_modules`` are made unimportable (a stub package that raises ImportError comes first on the path);
    * ``env`` is merged into the environment (a value of None removes the variable).

    The copy's package is the one imported (checked); ``../shared`` is absent beside the copy unless
    ``ERNIEVIL2_SHARED_DATA`` points somewhere. Returns the finished process (stdout and stderr together).
    """
    import shutil
    import sys

    copy = Path(workdir) / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("ernievil2torch", "tests"):
        shutil.copytree(REPO_ROOT / part, copy / part, ignore=ignore)
    shutil.copy2(REPO_ROOT / "pyproject.toml", copy / "pyproject.toml")
    for rel, (old, new) in (edits or {}).items():
        path = copy / rel
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{rel}: expected exactly one {old!r}"
        path.write_text(text.replace(old, new), encoding="utf-8")
    for rel, text in (new_files or {}).items():
        (copy / rel).write_text(text, encoding="utf-8")
    hidden = Path(workdir) / "hidden_modules"
    for name in hidden_modules:
        (hidden / name).mkdir(parents=True)
        (hidden / name / "__init__.py").write_text(f"raise ImportError('{name} is hidden by the test')\n")
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), str(copy)]),
                "PYTHONDONTWRITEBYTECODE": "1"}
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    where = subprocess.run([sys.executable, "-c", "import ernievil2torch; print(ernievil2torch.__file__)"],
                           cwd=copy, env=full_env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(copy / "ernievil2torch" / "__init__.py"), where.stdout + where.stderr
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", *pytest_args],
                          cwd=copy, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


@functools.lru_cache(maxsize=None)
def can_mount_tmpfs() -> bool:
    """Whether this process can mount (and unmount) a small tmpfs: root with the capability to mount."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as where:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", where],
                                 capture_output=True).returncode == 0
        if mounted:
            subprocess.run(["umount", where], capture_output=True)
    return mounted


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside the block and restored after it: the tiny test models run
    fastest on one thread, and on a shared 2-core machine two threads are much slower and less steady."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
