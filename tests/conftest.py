"""Shared fixtures (seeded synthetic checkpoints in both layouts, written once per session) and the required mode.

Under ``ERNIEVIL2_REQUIRE_ORACLES=1`` (``scripts/test.sh``, CI) a skip is a failure: the helpers in ``helpers.py``
already fail with a clear reason when an oracle, optional dependency or ``../shared/data`` is missing, and the hooks
below turn any other skip (a ``skipif`` marker, a stray ``pytest.importorskip``) into a failure that quotes the skip
reason. A test that cannot run on some machines must be deselected, never skipped: mark it ``@pytest.mark.gpu`` and
it is deselected (and counted in the summary line) where CUDA is unavailable, and run where it is;
``@pytest.mark.mounts`` likewise where this process cannot mount a small tmpfs (not root, or a container without
the capability).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from ernievil2torch.config import base_config, tiny_config
from ernievil2torch.conversion.pdparams import save_pdparams
from ernievil2torch.config import get_model_config
from ernievil2torch.constants import KERNELS_ENV, VOCAB_NAME
from ernievil2torch.verify.synthetic import layout_state, random_model, write_synthetic_vocab

from helpers import REQUIRE_ENV, can_mount_tmpfs, oracles_required

CONFIGS = {"tiny": tiny_config, "base": base_config}

# The suite computes with the reference kernels (results as before the per-machine choice existed) and never
# measures or writes the user's kernel cache; tests/modeling/test_kernels.py forces every choice itself.
os.environ[KERNELS_ENV] = "reference"


def pytest_configure(config):
    """Give the processes the tests start Ctrl-C as a terminal delivers it.

    A shell starts a background job with SIGINT ignored (``cmd &`` without job control, ``nohup``), and children
    inherit an ignored signal through exec: then a test's SIGINT reaches a server that ignores it, and the "Ctrl-C
    exits 130" contracts fail for the way pytest was launched, not for the code. Restoring Python's own handler here
    makes every child start with SIGINT at its default.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _skip_reason(longrepr) -> str:
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_instead_of_skip(report) -> None:
    if oracles_required() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"skipped under {REQUIRE_ENV}=1, where every skip is a failure: "
                           f"{_skip_reason(report.longrepr)}")


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        import torch

        if not torch.cuda.is_available():
            items[:] = [item for item in items if not item.get_closest_marker("gpu")]
            config.hook.pytest_deselected(items=gpu)
    mounts = [item for item in items if item.get_closest_marker("mounts")]
    if mounts and not can_mount_tmpfs():
        items[:] = [item for item in items if not item.get_closest_marker("mounts")]
        config.hook.pytest_deselected(items=mounts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_instead_of_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_instead_of_skip(outcome.get_result())


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


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    """``model_folder(size, seed, vocab) -> Path``: the directory ``save_pretrained`` writes for a random model
    (:func:`~ernievil2torch.verify.synthetic.random_model`) of the registered ``size``, with a vocab file: a list
    of tokens (one per line, ids = line numbers), ``"synthetic"`` (the 40000-token synthetic vocab) or None (no
    vocab). Written once per argument set in the session: treat it as read-only, tests asking for the same
    arguments share it."""
    cache: dict = {}

    def make(size: str, seed: int, vocab=None) -> Path:
        key = (size, seed, vocab if vocab is None or isinstance(vocab, str) else tuple(vocab))
        if key not in cache:
            path = Path(tmp_path_factory.mktemp(f"{size}_seed{seed}")) / "model"
            random_model(get_model_config(size), seed=seed).save_pretrained(path)
            if vocab == "synthetic":
                write_synthetic_vocab(path / VOCAB_NAME)
            elif vocab is not None:
                (path / VOCAB_NAME).write_text("\n".join(vocab) + "\n", encoding="utf-8")
            cache[key] = path
        return cache[key]

    return make


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache under ``tmp_path`` that ``huggingface_hub`` uses, offline
    (:class:`hub_cache.HubCache`; ``.add(repo_id, folder)`` puts a model in it)."""
    from hub_cache import HubCache

    return HubCache(tmp_path / "hf_cache", monkeypatch)
