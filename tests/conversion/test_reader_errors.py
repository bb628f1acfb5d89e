"""What the ``.pdparams`` reader's errors mean: damage is a ``CheckpointError``, a bug in the reader is itself.

* Each exception type the reader treats as "corrupt or truncated" (``pdparams.MALFORMED_PICKLE_ERRORS``) is shown to
  come from the stdlib unpickler on a real damaged file, and the list is closed: a type added without such a case
  fails here.
* A bug planted in the reader (monkeypatched inside the test) surfaces as that bug, through ``load_pdparams``, the
  converter, the 10,000-case fuzz property and the ``convert.py`` command (a traceback and "internal error", exit 3).
* The globals a ``.pdparams`` may name are pinned as a closed set: adding one (``builtins.setattr``, say) fails here.
"""
from __future__ import annotations

import collections
import io
import operator
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ernievil2torch.config import tiny_config
from ernievil2torch.conversion import convert_checkpoint, paddle_state, pickle_shims, unpickler
from ernievil2torch.conversion.pdparams import MALFORMED_PICKLE_ERRORS, load_pdparams, save_pdparams
from ernievil2torch.errors import CheckpointError
from ernievil2torch.verify.synthetic import layout_state

import test_fuzz_reader as fuzz

REPO = Path(__file__).resolve().parents[2]
GOOD = pickle.dumps({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, protocol=4)

# One damaged input per exception type the stdlib unpickler raises on it (bytes: size known; BytesIO: a stream of
# unknown length, which reaches the short-read errors).
DAMAGE = {
    pickle.UnpicklingError: b"\x80\x02h\x05.",                 # BINGET of a memo slot never written
    EOFError: io.BytesIO(b"\x80\x02"),                         # ends right after PROTO
    struct.error: io.BytesIO(b"\x80\x02X\x01\x00"),            # BINUNICODE whose 4-byte length is cut
    KeyError: b"\x80\x02\xff.",                                # 0xff is no opcode
    IndexError: b"\x80\x020.",                                 # POP on an empty stack
    TypeError: b"\x80\x02K\x01)R.",                            # REDUCE: calling the int 1
    AttributeError: b"\x80\x02K\x01}K\x01K\x02sb.",           # BUILD on an int with dict state
    ValueError: b"\x80\xff.",                                  # unsupported protocol 255
}


def test_the_malformed_error_types_are_exactly_those_damage_raises():
    assert set(DAMAGE) == set(MALFORMED_PICKLE_ERRORS)


@pytest.mark.parametrize("error", MALFORMED_PICKLE_ERRORS, ids=lambda e: e.__name__)
def test_each_malformed_error_type_comes_from_a_damaged_file(error):
    source = DAMAGE[error]
    if isinstance(source, io.BytesIO):
        source.seek(0)
    with pytest.raises(CheckpointError, match=rf"corrupt or truncated pickle \({error.__name__}: "):
        load_pdparams(source)


def planted(error: type):
    """A stand-in for ``pickle_shims.check_dtype`` with a programming error in it."""
    def broken_check_dtype(dtype):
        raise error("planted bug in _check_dtype")
    return broken_check_dtype


# Every type the reader catches from the unpickler, and one it never catches.
PLANTED_ERRORS = MALFORMED_PICKLE_ERRORS + (RuntimeError,)


@pytest.mark.parametrize("error", PLANTED_ERRORS, ids=lambda e: e.__name__)
def test_a_bug_planted_in_the_reader_surfaces_as_that_bug(error, monkeypatch, tmp_path):
    assert load_pdparams(GOOD).keys() == {"w"}
    monkeypatch.setattr(pickle_shims, "check_dtype", planted(error))
    for source in (GOOD, io.BytesIO(GOOD)):
        with pytest.raises(error, match="planted bug") as info:
            load_pdparams(source)
        assert type(info.value) is error  # not a CheckpointError (itself a ValueError) saying "corrupt file"
    src = save_pdparams(layout_state(tiny_config(), "official", seed=0), tmp_path / "tiny.pdparams")
    with pytest.raises(error, match="planted bug") as info:
        convert_checkpoint(src, tmp_path / "out")
    assert type(info.value) is error and not (tmp_path / "out").exists()


def test_a_bug_in_the_state_dict_checks_surfaces_too(monkeypatch):
    """The same holds after unpickling (the split-tensor join of ``paddle_state.normalise_state``)."""
    blob = pickle.dumps({"w@@.0": np.ones(2, np.float32), "w@@.1": np.ones(2, np.float32),
                         paddle_state.BIG_PARAM_KEY: {"w": {"OriginShape": [4], "slices": ["w@@.0", "w@@.1"]}}})
    assert load_pdparams(blob)["w"].shape == (4,)

    def broken(state):
        raise KeyError("planted bug in unpack_big_params")

    monkeypatch.setattr(paddle_state, "unpack_big_params", broken)
    with pytest.raises(KeyError, match="planted bug"):
        load_pdparams(blob)


def test_the_reader_fuzz_fails_on_a_planted_bug(monkeypatch):
    """The fuzz property of ``test_fuzz_reader.py``, run on 200 of its inputs with the bug planted, fails with
    that bug (a reader that relabelled every exception as damage would let it pass)."""
    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(blob=fuzz.mutated())
    def run(blob):
        fuzz.check_reader_outcome(blob)

    run()  # passes on the real reader
    monkeypatch.setattr(pickle_shims, "check_dtype", planted(AttributeError))
    with pytest.raises(AttributeError, match="planted bug"):
        run()


def test_convert_py_shows_a_traceback_for_a_bug_and_one_line_for_damage(tmp_path):
    """The CLI side of the same distinction: a planted bug prints its traceback and "internal error" (exit 3);
    a damaged file is one ``error:`` line (exit 2)."""
    src = save_pdparams(layout_state(tiny_config(), "official", seed=0), tmp_path / "tiny.pdparams")
    damaged = tmp_path / "cut.pdparams"
    damaged.write_bytes(src.read_bytes()[:3000])
    plant = ("import sys; sys.argv[0] = 'convert.py'; from ernievil2torch.conversion import pickle_shims\n"
             "def _check_dtype(dtype): raise AttributeError('planted bug in _check_dtype')\n"
             "pickle_shims.check_dtype = _check_dtype\n"
             "from ernievil2torch.cli import convert, run_command; run_command(convert)")
    bug = subprocess.run([sys.executable, "-c", plant, "--src", str(src), "--dst", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bug.returncode == 3, bug.stderr
    assert "Traceback (most recent call last)" in bug.stderr and "in _check_dtype" in bug.stderr
    assert "AttributeError: planted bug in _check_dtype" in bug.stderr
    assert bug.stderr.rstrip().endswith("internal error: this is a bug in ernievil2torch; please report it with "
                                        "the traceback above")
    assert "corrupt" not in bug.stderr and not (tmp_path / "out").exists()
    bad = subprocess.run([sys.executable, str(REPO / "convert.py"), "--src", str(damaged), "--dst",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: ") and "corrupt or truncated pickle" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ---- the allow-list, pinned ------------------------------------------------------------------------------------

def _numpy_shims(core: str) -> dict:
    return {(f"{core}.multiarray", "_reconstruct"): "shim safe_reconstruct",
            (f"{core}.multiarray", "scalar"): "shim safe_scalar",
            (f"{core}.numeric", "_frombuffer"): "shim safe_frombuffer"}


ALLOWED_GLOBALS = {
    **_numpy_shims("numpy.core"), **_numpy_shims("numpy._core"),  # numpy 1.x and 2.x spellings
    ("numpy", "ndarray"): "token (only as _reconstruct's first argument)",
    ("numpy", "dtype"): "shim safe_dtype",
    ("collections", "OrderedDict"): "type OrderedDict",
    **{(module, "dict"): "type dict" for module in ("builtins", "__builtin__")},
    **{(module, "list"): "type list" for module in ("builtins", "__builtin__")},
    **{(module, "tuple"): "type tuple" for module in ("builtins", "__builtin__")},
    **{(module, "bytearray"): "shim safe_bytearray" for module in ("builtins", "__builtin__")},
    **{(module, "bytes"): "shim empty_bytes" for module in ("builtins", "__builtin__")},
    ("_codecs", "encode"): "shim latin1_encode",
}


def describe_allowed_globals() -> dict:
    """What each allowed global resolves to, in words (a shim and its function, a plain type, the ndarray token)."""
    described = {}
    for key, target in unpickler._ALLOWED_GLOBALS.items():
        if isinstance(target, unpickler._Shim):
            described[key] = f"shim {target._fn.__name__}"
        elif target is pickle_shims.NDARRAY:
            described[key] = "token (only as _reconstruct's first argument)"
        elif target in (dict, list, tuple, collections.OrderedDict):
            described[key] = f"type {target.__name__}"
        else:
            described[key] = f"UNEXPECTED {target!r}"
    return described


def assert_allowed_globals_pinned() -> None:
    found = describe_allowed_globals()
    assert found == ALLOWED_GLOBALS, {"added": sorted(set(found) - set(ALLOWED_GLOBALS)),
                                      "removed": sorted(set(ALLOWED_GLOBALS) - set(found)),
                                      "changed": sorted(k for k in found if k in ALLOWED_GLOBALS
                                                        and found[k] != ALLOWED_GLOBALS[k])}


def test_the_allowed_globals_are_exactly_these():
    assert len(ALLOWED_GLOBALS) == 20
    assert_allowed_globals_pinned()


@pytest.mark.parametrize("added", [("builtins", "setattr", setattr), ("operator", "getitem", operator.getitem)],
                         ids=lambda a: f"{a[0]}.{a[1]}")
def test_adding_a_global_breaks_the_pin(added, monkeypatch):
    module, name, target = added
    monkeypatch.setitem(unpickler._ALLOWED_GLOBALS, (module, name), target)
    with pytest.raises(AssertionError, match=rf"'{module}', '{name}'"):
        assert_allowed_globals_pinned()


def test_retargeting_a_global_breaks_the_pin(monkeypatch):
    monkeypatch.setitem(unpickler._ALLOWED_GLOBALS, ("builtins", "dict"), unpickler._Shim(eval))
    with pytest.raises(AssertionError, match="changed"):
        assert_allowed_globals_pinned()
