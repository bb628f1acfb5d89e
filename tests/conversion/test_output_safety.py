"""Output safety: atomic publication of the converted directory, cleanup after killed runs, refusal to overwrite,
and safe loading (safetensors only) of converted directories that were damaged afterwards.

The kill test runs ``convert.py`` in a subprocess on a checkpoint big enough (~34 MB) that conversion takes a
noticeable time, and interrupts it with SIGINT or SIGKILL at random moments while it writes. After every trial the
destination is either absent, the previous output byte for byte, or the complete new output: never a partial one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import pytest

from ernievil2torch.storage import model_dir as model_io
from ernievil2torch.config import tiny_config
from ernievil2torch.conversion import convert_checkpoint
from ernievil2torch.errors import CheckpointError
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.conversion.pdparams import save_pdparams
from ernievil2torch.verify.synthetic import layout_state

REPO = Path(__file__).resolve().parents[2]
KILL_TRIALS = 20  # half SIGINT, half SIGKILL, alternating
KILL_LANES = 2  # independent destinations interrupted side by side
STALE_NAMES = ("model", "out[1]*?", "with-dashes-9")  # destination names for the stale-leftover cleanup
WRITE_FAILURES = (OSError(28, "No space left on device"), KeyboardInterrupt())  # raised while writing
CORRUPT_SAFETENSORS = 5  # corrupted (not truncated) weight files, checked below
BIG_VOCAB = 60_000  # tiny model with a 60,000 x 128 word embedding: ~34 MB, a few tenths of a second to write
SAFETENSORS_TRUNCATIONS = (0, 4, 8, 20, 100, -1000, -4, -1)
BROKEN_CONFIGS = 8  # len(_broken_configs()), checked below


def big_config():
    config = tiny_config()
    return dataclasses.replace(config, text=dataclasses.replace(config.text, vocab_size=BIG_VOCAB))


def fingerprint(directory: Path) -> Optional[str]:
    """Hash of a converted directory's files, or None when it is absent."""
    if not directory.exists():
        return None
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def hidden_leftovers(parent: Path, name: str):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.fixture(scope="module")
def big_sources(tmp_path_factory):
    """Two different ~34 MB checkpoints and the fingerprints of their complete conversions."""
    root = tmp_path_factory.mktemp("big")
    state = layout_state(big_config(), "official", seed=0)
    sources = {"a": save_pdparams(state, root / "a.pdparams"),
               "b": save_pdparams({k: v + 1 for k, v in state.items()}, root / "b.pdparams")}
    done = {}
    for key, src in sources.items():
        convert_checkpoint(src, root / f"ref_{key}")
        done[key] = fingerprint(root / f"ref_{key}")
    model = ErnieViL2.from_pretrained(root / "ref_a")  # a complete conversion loads
    assert model.config.text.vocab_size == BIG_VOCAB
    return sources, done, root


def _wait_for_partial(parent: Path, name: str, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    prefix = f".{name}.partial-{proc.pid}-"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.startswith(prefix) for p in os.listdir(parent)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("convert.py did not start writing")


def _kill_lane(lane: int, trials: int, sources, done, root: Path, work: Path, write_phase: float) -> Dict[str, int]:
    """Run ``trials`` interrupted conversions into ``work/model`` and check what each leaves behind."""
    dst = work / "model"
    rng = random.Random(20240501 + lane)
    outcomes = {"previous kept": 0, "new published": 0, "none (no previous)": 0}
    killed_pids = []
    for trial in range(trials):
        sig = signal.SIGINT if trial % 2 == 0 else signal.SIGKILL
        if rng.random() < 0.3:
            shutil.rmtree(dst, ignore_errors=True)
        elif not dst.exists():
            shutil.copytree(root / f"ref_{rng.choice('ab')}", dst)
        previous = fingerprint(dst)
        if previous is None:  # a run killed between its two renames left the output aside: the next run restores it
            aside = [work / p / "model" for p in hidden_leftovers(work, "model") if p.startswith(".model.old-")]
            previous = fingerprint(aside[0]) if aside else None
        assert previous in (None, done["a"], done["b"])
        new = "a" if previous == done["b"] else "b" if previous == done["a"] else rng.choice("ab")
        proc = subprocess.Popen([sys.executable, str(REPO / "convert.py"), "--src", str(sources[new]), "--dst",
                                 str(dst), "--overwrite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = _wait_for_partial(work, "model", proc)
        if started:
            # this run's cleanup has already removed what earlier killed runs left behind
            stale = [p for p in hidden_leftovers(work, "model") if any(f"-{pid}-" in p for pid in killed_pids)]
            assert not stale, (lane, trial, stale)
            time.sleep(rng.uniform(0, write_phase) if rng.random() < 0.75 else
                       rng.uniform(write_phase, 4 * write_phase))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        # a SIGINT that lands after the work is done, in torch's atexit finalizers, makes Python print an
        # "Exception ignored" traceback while exiting; before that, an interrupt is one line and exit code 130
        finished = out.startswith("converted ")
        assert "Traceback" not in err or finished or not started, (lane, trial, err)
        if sig == signal.SIGINT:
            # 130: interrupted and cleaned up; 0: finished first; -SIGINT: arrived while the interpreter was exiting
            assert proc.returncode in (0, 130, -signal.SIGINT), (lane, trial, proc.returncode, err)
            if proc.returncode == 130:
                assert "interrupted; no partial output was left behind" in err
            # an interrupted run cleans up after itself
            assert not [p for p in hidden_leftovers(work, "model") if f"-{proc.pid}-" in p], (lane, trial)
        else:
            killed_pids.append(proc.pid)
        now = fingerprint(dst)
        if now is None and previous is not None:
            # killed between the two renames of --overwrite: the previous output waits in .model.old-PID-*
            kept = [work / p / "model" for p in hidden_leftovers(work, "model") if p.startswith(".model.old-")]
            assert kept and fingerprint(kept[0]) == previous, (lane, trial)
            outcomes["previous kept"] += 1
        elif now is None:
            outcomes["none (no previous)"] += 1
        elif now == previous:
            outcomes["previous kept"] += 1
        else:
            assert now == done[new], f"lane {lane} trial {trial}: {dst} is neither the previous nor the new output"
            outcomes["new published"] += 1
    # the next, uninterrupted run publishes and removes every leftover of the killed ones
    subprocess.run([sys.executable, str(REPO / "convert.py"), "--src", str(sources["b"]), "--dst", str(dst),
                    "--overwrite"], check=True, capture_output=True, timeout=300)
    assert os.listdir(work) == ["model"] and fingerprint(dst) == done["b"]
    return outcomes


def test_interrupted_conversions_leave_previous_or_complete_output(big_sources, tmp_path):
    sources, done, root = big_sources
    # how long a run takes from creating its partial directory to renaming it into place: most kills land inside
    # that window, the rest just after it (publishing, exiting)
    calibrate = tmp_path / "calibrate"
    calibrate.mkdir()
    proc = subprocess.Popen([sys.executable, str(REPO / "convert.py"), "--src", str(sources["a"]), "--dst",
                             str(calibrate / "model")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for_partial(calibrate, "model", proc)
    start = time.monotonic()
    while hidden_leftovers(calibrate, "model"):
        time.sleep(0.001)
    write_phase = max(0.02, time.monotonic() - start)
    assert proc.wait(timeout=300) == 0
    # two independent lanes (own destination each) run side by side to halve the wall time
    lanes = KILL_LANES
    works = [tmp_path / f"lane{i}" for i in range(lanes)]
    for work in works:
        work.mkdir()
    with ThreadPoolExecutor(lanes) as pool:
        futures = [pool.submit(_kill_lane, i, KILL_TRIALS // lanes, sources, done, root, works[i], write_phase)
                   for i in range(lanes)]
        results = [f.result() for f in futures]
    outcomes = {k: sum(r[k] for r in results) for k in results[0]}
    ErnieViL2.from_pretrained(works[0] / "model")
    print("kill trials:", outcomes, f"write phase {write_phase:.2f} s")
    assert sum(outcomes.values()) == KILL_TRIALS
    assert outcomes["previous kept"] + outcomes["none (no previous)"] > 0  # some kills did land mid-write


# ---- deterministic checks of the same guarantees ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_src")
    return save_pdparams(layout_state(tiny_config(), "official", seed=0), root / "tiny.pdparams")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


REFUSAL_CASES = 3


def test_refuses_to_overwrite_without_flag(tiny_src, tmp_path):
    dst = tmp_path / "out"
    convert_checkpoint(tiny_src, dst)
    before = fingerprint(dst)

    def open_atomic_directory():
        with model_io.atomic_directory(dst):
            pass

    refusals = [
        ("converter", lambda: convert_checkpoint(tiny_src, dst), "--overwrite"),
        ("atomic_directory", open_atomic_directory, "--overwrite"),
        ("DST is a file", lambda: convert_checkpoint(tiny_src, tmp_path / "file", overwrite=True), "not a directory"),
    ]
    assert len(refusals) == REFUSAL_CASES
    for label, action, needle in refusals[:2]:
        with pytest.raises(FileExistsError, match=needle):
            action()
    assert fingerprint(dst) == before
    convert_checkpoint(tiny_src, dst, overwrite=True)
    assert fingerprint(dst) == before and os.listdir(tmp_path) == ["out"]
    (tmp_path / "file").write_text("x")
    label, action, needle = refusals[2]
    with pytest.raises(FileExistsError, match=needle):
        action()


@pytest.mark.parametrize("name", STALE_NAMES)
def test_stale_leftovers_are_cleaned_up_by_pid(tiny_src, tmp_path, name):
    dst = tmp_path / name
    dead = _dead_pid()
    stale = tmp_path / f".{name}.partial-{dead}-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")
    live = tmp_path / f".{name}.partial-{os.getpid()}-xyz789"  # a conversion still running: left alone
    live.mkdir()
    unrelated = tmp_path / f".{name}.partial-notapid"
    unrelated.mkdir()
    convert_checkpoint(tiny_src, dst)
    assert not stale.exists() and live.is_dir() and unrelated.is_dir()
    ErnieViL2.from_pretrained(dst)


def test_killed_overwrite_between_renames_is_restored(tiny_src, tmp_path):
    dst = tmp_path / "model"
    convert_checkpoint(tiny_src, dst)
    previous = fingerprint(dst)
    # what SIGKILL between the two renames leaves: DST moved aside into .DST.old-PID-*, new output not yet in place
    aside = tmp_path / f".model.old-{_dead_pid()}-q1w2e3"
    aside.mkdir()
    os.replace(dst, aside / "model")
    half = tmp_path / f".model.partial-{_dead_pid()}-r4t5y6"
    half.mkdir()
    with pytest.raises(FileExistsError):  # the next run puts the previous output back first
        convert_checkpoint(tiny_src, dst)
    assert fingerprint(dst) == previous and os.listdir(tmp_path) == ["model"]
    # ... and when DST exists, an .old leftover is simply deleted
    aside.mkdir()
    (aside / "model").mkdir()
    convert_checkpoint(tiny_src, dst, overwrite=True)
    assert fingerprint(dst) == previous and os.listdir(tmp_path) == ["model"]


def test_failures_while_writing_keep_previous_output(tiny_src, tmp_path, monkeypatch):
    dst = tmp_path / "model"
    convert_checkpoint(tiny_src, dst)
    previous = fingerprint(dst)
    real_write = model_io.write_safetensors_streaming

    for exc in WRITE_FAILURES:
        def failing(path, specs, produce, metadata=None):
            real_write(path, specs[:3], produce, metadata)
            raise exc
        monkeypatch.setattr(model_io, "write_safetensors_streaming", failing)
        with pytest.raises(type(exc)):
            convert_checkpoint(tiny_src, dst, overwrite=True)
        assert fingerprint(dst) == previous and os.listdir(tmp_path) == ["model"]
    monkeypatch.setattr(model_io, "write_safetensors_streaming", real_write)

    # an interrupt (or error) inside the publishing renames puts the previous output back
    real_replace = os.replace
    calls = []

    def flaky_replace(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(a, b)

    monkeypatch.setattr(model_io.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(tiny_src, dst, overwrite=True)
    monkeypatch.setattr(model_io.os, "replace", real_replace)
    # dst -> .old, tmp -> dst (interrupted), .old/dst -> dst (restored), emptied .old -> .trash (discarded)
    assert len(calls) == 4 and fingerprint(dst) == previous and os.listdir(tmp_path) == ["model"]


# ---- loading a converted directory: safetensors only, damage detected ---------------------------------------------

@pytest.fixture(scope="module")
def converted(tiny_src, tmp_path_factory):
    dst = tmp_path_factory.mktemp("converted") / "model"
    convert_checkpoint(tiny_src, dst)
    return dst


def _copy(converted: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(converted, target)
    return target


@pytest.mark.parametrize("cut", SAFETENSORS_TRUNCATIONS)
def test_truncated_safetensors_raise_checkpoint_error(converted, tmp_path, cut):
    target = _copy(converted, tmp_path)
    weights = target / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[:cut] if cut else b"")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        ErnieViL2.from_pretrained(target)


def test_corrupted_safetensors_raise_checkpoint_error(converted, tiny_src, tmp_path):
    target = _copy(converted, tmp_path)
    weights = target / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    header_len = int.from_bytes(blob[:8], "little")
    cases = {
        "header length beyond file": (len(blob) * 2).to_bytes(8, "little") + blob[8:],
        "header not JSON": blob[:8] + b"\xff" * header_len + blob[8 + header_len:],
        "random bytes": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "pickle instead": tiny_src.read_bytes(),
    }
    header = json.loads(blob[8:8 + header_len])
    first = next(k for k in header if k != "__metadata__")
    header[first]["data_offsets"][1] += 10 ** 9
    bad = json.dumps(header).encode()
    cases["offsets beyond data"] = len(bad).to_bytes(8, "little") + bad + blob[8 + header_len:]
    assert len(cases) == CORRUPT_SAFETENSORS
    for label, data in cases.items():
        weights.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="cannot read weights"):
            ErnieViL2.from_pretrained(target)


MISMATCH = "weights do not match config.json: "
INVALID = "config.json: invalid config "


def _broken_configs(config: dict) -> Dict[str, Tuple[dict, str]]:
    """label -> (edited config, the exact fragment the error must contain)."""
    def edit(path, value):
        new = json.loads(json.dumps(config))
        node = new
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return new

    return {
        "fewer text layers than the weights": (edit(("text", "num_layers"), 1),
                                               MISMATCH + "unexpected 'text.layers.1."),
        "other hidden size": (edit(("vision", "hidden_size"), 64),
                              MISMATCH + "'vision.class_embedding' has shape (128,), config says (64,)"),
        "other vocab size": (edit(("text", "vocab_size"), 121), MISMATCH + "'text.embeddings.word_embeddings.weight' "
                             "has shape (120, 128), config says (121, 128)"),
        "no temperature although the weights have one": (edit(("has_temperature",), False),
                                                         MISMATCH + "unexpected 'temperature'"),
        "hidden size as a string": (edit(("text", "hidden_size"), "128"),
                                    INVALID + "(hidden_size = '128' is not a valid size)"),
        "negative layers": (edit(("vision", "num_layers"), -2), INVALID + "(num_layers = -2 is not a valid size)"),
        "unknown field": (edit(("bogus",), 1), INVALID + "(unknown config fields: ['bogus'])"),
        "heads not dividing hidden": (edit(("text", "num_heads"), 3),
                                      INVALID + "(hidden_size 128 is not a multiple of num_heads 3)"),
    }


BAD_CONFIG_TEXTS = {"": "(Expecting value", "{": "(Expecting property name", "[1, 2]": "(unknown config fields",
                    "null": "('NoneType' object is not iterable)",
                    '{"text": 5}': "(ernievil2torch.config.TextConfig() argument after ** must be a mapping, not int)"}


def test_config_not_matching_weights_raises_checkpoint_error(converted, tmp_path):
    target = _copy(converted, tmp_path)
    config = json.loads((target / "config.json").read_text())
    broken = _broken_configs(config)
    assert len(broken) == BROKEN_CONFIGS
    for label, (data, needle) in broken.items():
        (target / "config.json").write_text(json.dumps(data))
        with pytest.raises(CheckpointError) as info:
            ErnieViL2.from_pretrained(target)
        assert needle in str(info.value), (label, str(info.value))
    for text, needle in BAD_CONFIG_TEXTS.items():
        (target / "config.json").write_text(text)
        with pytest.raises(CheckpointError) as info:
            ErnieViL2.from_pretrained(target)
        assert INVALID + needle in str(info.value), (text, str(info.value))


MISSING_FILE_CASES = 3


def test_missing_files_and_wrong_paths(converted, tmp_path, tiny_src):
    target = _copy(converted, tmp_path)
    (target / "config.json").unlink()
    cases = [(target, "missing config.json"), (tiny_src, "must be converted first"),
             (tmp_path / "nowhere", "not a converted model directory")]
    assert len(cases) == MISSING_FILE_CASES
    for path, needle in cases:
        with pytest.raises(CheckpointError, match=needle):
            ErnieViL2.from_pretrained(path)


def test_half_deleted_old_output_is_never_restored(tiny_src, tmp_path):
    """A run killed while deleting the replaced output leaves a .trash dir; if DST is then removed, the next run
    must not resurrect a half-deleted copy (it converts afresh instead)."""
    dst = tmp_path / "model"
    convert_checkpoint(tiny_src, dst)
    complete = fingerprint(dst)
    dead = _dead_pid()
    trash = tmp_path / f".model.trash-{dead}-abc"
    shutil.copytree(dst, trash / "x")
    (trash / "x" / "model.safetensors").unlink()  # deletion interrupted half-way
    shutil.rmtree(dst)
    convert_checkpoint(tiny_src, dst)
    assert fingerprint(dst) == complete and os.listdir(tmp_path) == ["model"]
