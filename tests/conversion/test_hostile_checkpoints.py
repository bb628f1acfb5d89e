"""Hostile and damaged ``.pdparams`` files, all made here (no shipped blobs), plus the valid variants that must load.

Every bad file must end in the project's own error (``CheckpointError`` / ``UnsafePickleError`` / ``KeyMapError``)
with a message naming the problem, must run nothing (a payload would have created a marker file) and must leave no
output directory behind. The counts in RELIABILITY.md are derived from the constants below.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import pickletools
import random
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ernievil2torch.conversion import pdparams
from ernievil2torch.config import tiny_config
from ernievil2torch.conversion import convert_checkpoint
from ernievil2torch.errors import CheckpointError, KeyMapError, UnsafePickleError
from ernievil2torch.conversion.pdparams import BIG_PARAM_KEY, STRUCTURE_KEY, load_pdparams, save_pdparams
from ernievil2torch.verify.synthetic import layout_state

REPO = Path(__file__).resolve().parents[2]

# ---- pickle crafting ---------------------------------------------------------------------------------------------


def frag(obj) -> bytes:
    """Opcodes that push ``obj`` (protocol 2, no PROTO/STOP, no memo use), for splicing into hand-made pickles."""
    return pickletools.optimize(pickle.dumps(obj, protocol=2))[2:-1]


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call(module: str, name: str, *args_frags: bytes) -> bytes:
    """``module.name(*args)`` as opcodes; each argument is an opcode fragment."""
    return glob(module, name) + b"(" + b"".join(args_frags) + b"tR"


def whole(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def array_frag(shape_frag: bytes, dtype_frag: bytes, data_frag: bytes, module: str = "numpy._core.multiarray",
               code_frag: bytes = None) -> bytes:
    """An ndarray as numpy pickles it (protocol 2): ``_reconstruct(ndarray, (0,), b'b')`` + BUILD state."""
    code_frag = frag(b"b") if code_frag is None else code_frag
    head = call(module, "_reconstruct", glob("numpy", "ndarray"), frag((0,)), code_frag)
    return head + b"(" + frag(1) + shape_frag + dtype_frag + b"\x89" + data_frag + b"tb"


def dtype_frag(code: str = "f4", state: tuple = (3, "<", None, None, None, -1, -1, 0)) -> bytes:
    return call("numpy", "dtype", frag(code), b"\x89\x88") + frag(state) + b"b"


GOOD_ARRAY = array_frag(frag((2,)), dtype_frag(), frag(np.arange(2, dtype=np.float32).tobytes()))


def state_dict(*items: Tuple[str, bytes]) -> bytes:
    return whole(b"}(" + b"".join(frag(k) + v for k, v in items) + b"u")


# ---- 1. code-execution payloads ------------------------------------------------------------------------------------

def _payload_calls(marker: Path) -> List[Tuple[str, str, bytes]]:
    """(module, name, pushed arguments) of calls that would create ``marker`` (or do other harm) if run."""
    m = str(marker)
    inner = pickle.dumps(_Touch(m), protocol=2)  # itself a payload: pickle.loads(<os.system pickle>)
    return [
        ("os", "system", frag(f"touch {m}")),
        ("posix", "system", frag(f"touch {m}")),
        ("nt", "system", frag(f"touch {m}")),
        ("subprocess", "Popen", frag(["touch", m])),
        ("subprocess", "check_call", frag(["touch", m])),
        ("builtins", "eval", frag(f"open({m!r}, 'w')")),
        ("builtins", "exec", frag(f"open({m!r}, 'w')")),
        ("__builtin__", "eval", frag(f"open({m!r}, 'w')")),
        ("builtins", "open", frag(m) + frag("w")),
        ("builtins", "__import__", frag("os")),
        ("builtins", "getattr", frag(1) + frag("real")),
        ("importlib", "import_module", frag("antigravity")),
        ("pickle", "loads", frag(inner)),
        ("_pickle", "loads", frag(inner)),
        ("runpy", "run_path", frag(m)),
        ("pty", "spawn", frag(f"touch {m}")),
        ("shutil", "rmtree", frag(m)),
        ("torch", "load", frag(m)),
        ("numpy", "load", frag(m)),
        ("numpy.testing._private.utils", "runstring", frag(f"open({m!r}, 'w')") + frag({})),
    ]


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


# Where a payload hides inside an otherwise plain state dict.
PLACEMENTS: Dict[str, Callable[[bytes], bytes]] = {
    "top level": whole,
    "dict value": lambda p: state_dict(("w", GOOD_ARRAY), ("x", p)),
    "dict key": lambda p: whole(b"}(" + p + GOOD_ARRAY + b"u"),
    "(name, array) tuple": lambda p: state_dict(("x", frag("var_x") + p + b"\x86")),
    "wrapped state dict": lambda p: whole(b"}(" + frag("model") + b"}(" + frag("x") + p + b"uu"),
    "array reconstruct args": lambda p: state_dict(("x", call("numpy._core.multiarray", "_reconstruct",
                                                              glob("numpy", "ndarray"), p, frag(b"b")))),
    "array BUILD state (data)": lambda p: state_dict(("x", array_frag(frag((2,)), dtype_frag(), p))),
    "array BUILD state (shape)": lambda p: state_dict(("x", array_frag(p, dtype_frag(), frag(b"")))),
    "dtype args": lambda p: state_dict(("x", array_frag(frag((2,)), call("numpy", "dtype", p, b"\x89\x88"),
                                                        frag(b"\0" * 8)))),
    "dtype BUILD state": lambda p: state_dict(("x", array_frag(
        frag((2,)), call("numpy", "dtype", frag("f4"), b"\x89\x88") + p + b"b", frag(b"\0" * 8)))),
    "numpy-1 array": lambda p: state_dict(("x", array_frag(frag((2,)), dtype_frag(), p,
                                                           module="numpy.core.multiarray"))),
    "split-tensor record": lambda p: state_dict(("w@@.0", GOOD_ARRAY), (BIG_PARAM_KEY, b"}(" + frag("w") + p + b"u")),
    "StructuredToParameterName@@": lambda p: state_dict(("w", GOOD_ARRAY), (STRUCTURE_KEY, b"}(" + frag("w") + p
                                                                            + b"u")),
    "list inside list": lambda p: state_dict(("x", b"]](" + p + b"ea")),
}

# Globals from arbitrary modules that are refused by name, whatever they would do.
FOREIGN_GLOBALS = [
    ("collections", "Counter"), ("numpy", "ones"), ("numpy", "frombuffer"), ("numpy", "memmap"),
    ("numpy.core.multiarray", "fromstring"), ("numpy._core.multiarray", "empty"), ("numpy.lib.format", "read_array"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"), ("paddle", "to_tensor"),
    ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"), ("builtins", "object"), ("builtins", "type"),
    ("builtins", "bytes.fromhex"), ("sys", "modules"), ("os", "environ"), ("functools", "partial"),
    ("operator", "attrgetter"), ("ctypes", "CDLL"), ("webbrowser", "open"), ("socket", "socket"),
    ("http.client", "HTTPConnection"), ("codecs", "open"), ("_codecs", "decode"), ("io", "open"),
    ("tempfile", "mkdtemp"), ("glob", "glob"), ("types", "FunctionType"), ("marshal", "loads"),
]


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a pickle payload was executed"


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_code_execution_payloads_never_run(placement, marker, tmp_path):
    for module, name, args in _payload_calls(marker):
        blob = PLACEMENTS[placement](call(module, name, args))
        with pytest.raises(UnsafePickleError, match=rf"refusing to load global '{module}\.{name}'"):
            load_pdparams(blob)
        assert not marker.exists(), f"{module}.{name} ran ({placement})"


@pytest.mark.parametrize("module,name", FOREIGN_GLOBALS)
def test_foreign_globals_are_refused_by_name(module, name):
    for blob in (whole(call(module, name, frag(1))), state_dict(("x", call(module, name, frag(1))))):
        with pytest.raises(UnsafePickleError, match=r"refusing to load global .*nothing from it was run"):
            load_pdparams(blob)
        # protocol 4 spelling (STACK_GLOBAL) is checked the same way
    blob = b"\x80\x04\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)]) + name.encode()
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        load_pdparams(blob + b"\x93K\x01\x85R.")


def test_payload_checkpoint_via_convert_leaves_nothing(marker, tmp_path):
    src = tmp_path / "evil.pdparams"
    src.write_bytes(PLACEMENTS["dict value"](call("os", "system", frag(f"touch {marker}"))))
    with pytest.raises(UnsafePickleError, match="os.system"):
        convert_checkpoint(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pdparams"]


def _unsafe_constructs() -> Dict[str, Tuple[bytes, str]]:
    """Tricks that use only the allowed globals: label -> (pickle, text the error must contain)."""
    return {
        "persistent id (torch-style)": (whole(frag("x") + b"Q"), "persistent ids"),
        "ndarray called directly": (whole(call("numpy", "ndarray", frag((1 << 20, 1 << 20)))), "numpy.ndarray"),
        "ndarray via NEWOBJ": (whole(glob("numpy", "ndarray") + frag(((1 << 20, 1 << 20),)) + b"\x81"), "not a type"),
        "reconstruct non-ndarray": (whole(call("numpy._core.multiarray", "_reconstruct", glob("builtins", "dict"),
                                               frag((0,)), frag(b"b"))), "array of type"),
        "bytearray(n)": (whole(call("builtins", "bytearray", frag(1 << 40))), "bytearray"),
        "bytes(n)": (whole(call("builtins", "bytes", frag(1 << 40))), "bytes()"),
        "_codecs.encode other codec": (whole(call("_codecs", "encode", frag("x"), frag("rot13"))), "_codecs"),
        "dtype flags claim object refs": (state_dict(("x", array_frag(
            frag((1,)), dtype_frag("f8", (3, "<", None, None, None, -1, -1, 0x19)), frag(b"A" * 8)))),
            "dtype state"),
        "dtype state adds fields": (state_dict(("x", array_frag(
            frag((1,)), dtype_frag("f8", (3, "<", None, ("a",), {"a": (None, 0)}, 8, 1, 0)), frag(b"A" * 8)))),
            "dtype state"),
        "BUILD on an allowed global": (whole(glob("numpy", "dtype") + frag({"__defaults__": (True,)}) + b"b"),
                                       "corrupt or truncated pickle (AttributeError: '_Shim' object has no "
                                       "attribute '__dict__')"),
        "BUILD slot state on a shim": (whole(glob("numpy", "dtype") + frag((None, {"_fn": 1})) + b"b"),
                                       "refusing to set attributes on an allowed global"),
    }


UNSAFE_CONSTRUCTS = _unsafe_constructs()


def test_other_unsafe_constructs():
    for label, (blob, needle) in UNSAFE_CONSTRUCTS.items():
        with pytest.raises(CheckpointError) as info:
            load_pdparams(blob)
        assert needle in str(info.value), (label, str(info.value))
    # the shims are untouched: a plain file still loads
    assert load_pdparams(pickle.dumps({"w": np.ones(2, np.float32)})).keys() == {"w"}


BAD_DTYPES = ["O", "V8", "U4", "S4", "c8", "c16", "g", "M8[s]", "m8[s]", "f4,f4", "(2,)f4", "i4,(3,)f8", "=O",
              "object", "float128", "complex64", "datetime64", "bogus"]


@pytest.mark.parametrize("code", BAD_DTYPES)
def test_non_numeric_dtypes_refused(code):
    blob = state_dict(("x", array_frag(frag((1,)), call("numpy", "dtype", frag(code), b"\x89\x88"), frag(b"\0" * 8))))
    with pytest.raises(UnsafePickleError, match="dtype"):
        load_pdparams(blob)


# ---- 1b. memory bombs ----------------------------------------------------------------------------------------------

HUGE = (1 << 20, 1 << 20, 1 << 10)  # 2**50 elements


def _memory_bombs() -> Dict[str, Tuple[bytes, type, str]]:
    one_mb = np.zeros(1 << 18, np.float32)
    alias = pickle.dumps(one_mb, protocol=2)[2:-1]  # memoised: BINGET repeats it for free
    alias_body = b"}(" + frag("a0") + alias + b"q\xff"  # BINPUT 255
    alias_body += b"".join(frag(f"a{i}") + b"h\xff" for i in range(1, 2000)) + b"u"
    slices = {"w": {"OriginShape": [1 << 18, 2000], "slices": ["a0"] * 2000}}
    return {
        "_reconstruct with a huge shape": (state_dict(("x", call("numpy._core.multiarray", "_reconstruct",
                                                                 glob("numpy", "ndarray"), frag(HUGE), frag(b"b")))),
                                           UnsafePickleError, "pre-allocate"),
        "BUILD state: huge shape, 8 bytes": (state_dict(("x", array_frag(frag(HUGE), dtype_frag(), frag(b"\0" * 8)))),
                                             CheckpointError, "memory bomb"),
        "BUILD state: shape overflows int64": (state_dict(("x", array_frag(frag((1 << 40,) * 4), dtype_frag(),
                                                                           frag(b"")))), CheckpointError, "memory bomb"),
        "BUILD state: 10**100 dimension": (state_dict(("x", array_frag(frag((10 ** 100,)), dtype_frag(), frag(b"")))),
                                           UnsafePickleError, "shape"),
        "BUILD state: negative dimension": (state_dict(("x", array_frag(frag((-1, 2)), dtype_frag(), frag(b"")))),
                                            UnsafePickleError, "shape"),
        "BUILD state: float dimension": (state_dict(("x", array_frag(frag((2.0,)), dtype_frag(), frag(b"\0" * 8)))),
                                         UnsafePickleError, "shape"),
        "protocol-5 _frombuffer: huge shape": (state_dict(("x", call("numpy._core.numeric", "_frombuffer",
                                                                     frag(b"\0" * 8), dtype_frag(), frag(HUGE),
                                                                     frag("C")))), CheckpointError, "memory bomb"),
        "scalar with wrong payload": (state_dict(("x", call("numpy._core.multiarray", "scalar", dtype_frag(),
                                                            frag(b"\0" * 1000)))), UnsafePickleError, "scalar"),
        "BINBYTES8 declaring 2**62 bytes": (b"\x80\x04}\x8c\x01x\x8e" + struct.pack("<Q", 1 << 62) + b"abc",
                                            CheckpointError, f"declares {1 << 62} bytes but the file has only 18"),
        "one array aliased under 2000 names": (whole(alias_body), CheckpointError, "reuses the same data"),
        "split tensor listing one slice 2000 times": (whole(alias_body[:-1] + frag(BIG_PARAM_KEY) + frag(slices)
                                                            + b"u"), CheckpointError, "reuses the same data"),
        "split tensor listing a slice twice": (state_dict(("w@@.0", GOOD_ARRAY), (BIG_PARAM_KEY, frag(
            {"w": {"OriginShape": [4], "slices": ["w@@.0", "w@@.0"]}}))), CheckpointError, "twice"),
        "split tensor with a huge OriginShape": (state_dict(("w@@.0", GOOD_ARRAY), (BIG_PARAM_KEY, frag(
            {"w": {"OriginShape": [10 ** 30], "slices": ["w@@.0"]}}))), CheckpointError, "bad shape"),
        "split tensor with negative dims": (state_dict(("w@@.0", GOOD_ARRAY), (BIG_PARAM_KEY, frag(
            {"w": {"OriginShape": [-1, -2], "slices": ["w@@.0"]}}))), CheckpointError, "bad shape"),
        "split tensor with unhashable slices": (state_dict(("w@@.0", GOOD_ARRAY), (BIG_PARAM_KEY, frag(
            {"w": {"OriginShape": [2], "slices": [["w@@.0"]]}}))), CheckpointError, "malformed"),
        "lists nested 100,000 deep": (whole(b"]" * 100_000 + b"a" * 99_999), CheckpointError, "not a state dict"),
    }


MEMORY_BOMBS = _memory_bombs()
MEMORY_BOMB_LIMIT_MB = 32  # what loading one bomb may allocate (its own file is at most ~1 MB)

# Loads each bomb in a fresh interpreter and measures what that load alone allocates: the Python/numpy allocations
# (tracemalloc peak, reset before each load) and the resident set (Linux's high-water mark, reset to the current
# RSS before each load by writing 5 to /proc/self/clear_refs). A plain ru_maxrss difference inside the test
# session would miss any allocation below an earlier, unrelated peak.
_PEAK_SCRIPT = r"""
import json, pickle, sys, tracemalloc
from ernievil2torch.conversion.pdparams import load_pdparams

def resident_peak_kb():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])

def load(blob):
    try:
        load_pdparams(blob)
        return "loaded"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

with open(sys.argv[1], "rb") as handle:
    bombs = pickle.load(handle)
results = {}
for label, blob in bombs.items():  # resident set first, without tracemalloc's own bookkeeping in it
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = resident_peak_kb()
    outcome = load(blob)
    results[label] = {"resident_mb": (resident_peak_kb() - before) / 1024, "outcome": outcome}
tracemalloc.start()
for label, blob in bombs.items():
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    load(blob)
    results[label]["allocated_mb"] = (tracemalloc.get_traced_memory()[1] - current) / 2 ** 20
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def bomb_memory(tmp_path_factory) -> Dict[str, dict]:
    path = tmp_path_factory.mktemp("bombs") / "bombs.pickle"
    path.write_bytes(pickle.dumps({label: blob for label, (blob, _, _) in MEMORY_BOMBS.items()}))
    proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("label", list(MEMORY_BOMBS))
def test_memory_bombs_fail_fast_without_allocating(label, bomb_memory):
    blob, error, needle = MEMORY_BOMBS[label]
    with pytest.raises(error) as info:
        load_pdparams(blob)
    assert needle in str(info.value)
    measured = bomb_memory[label]
    assert measured["outcome"].startswith(f"{error.__name__}: ") and needle in measured["outcome"], measured
    print(f"{label}: allocated {measured['allocated_mb']:.2f} MB, resident peak +{measured['resident_mb']:.2f} MB")
    assert measured["allocated_mb"] < MEMORY_BOMB_LIMIT_MB and measured["resident_mb"] < MEMORY_BOMB_LIMIT_MB, \
        f"{label}: {measured}"


def test_the_memory_measurement_sees_an_allocation(tmp_path):
    """The measurement itself can fail: a loader that allocates 64 MB is seen (both counters)."""
    script = _PEAK_SCRIPT.replace("        load_pdparams(blob)\n",
                                  "        junk = bytearray(64 << 20)\n        load_pdparams(blob)\n")
    assert script != _PEAK_SCRIPT
    path = tmp_path / "one.pickle"
    path.write_bytes(pickle.dumps({"good file": small_pickle()}))
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300)
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["good file"]
    assert measured["outcome"] == "loaded"
    assert measured["allocated_mb"] >= 64 and measured["resident_mb"] >= 60, measured


# ---- 2. damaged files ----------------------------------------------------------------------------------------------

TRUNCATION_OFFSETS_SMALL = "every offset"  # of the small pickle below
TRUNCATIONS_TINY = 300  # offsets into the tiny-model checkpoint
TRUNCATION_HEAD = 200  # of them, every offset of the first bytes (header and first opcodes)
CONVERT_EVERY = 50  # every 50th cut also goes through convert_checkpoint
RANDOM_BLOBS = 300


def small_pickle(protocol: int = 4) -> bytes:
    return pickle.dumps({"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float16),
                         "c": ("var_c", np.zeros(2, np.uint16)), STRUCTURE_KEY: {"a": "a", "b": "b"}},
                        protocol=protocol)


SMALL_PROTOCOLS = (2, 3, 4, 5)


def count_small_truncations() -> int:
    return sum(len(small_pickle(p)) for p in SMALL_PROTOCOLS)


@pytest.mark.parametrize("protocol", SMALL_PROTOCOLS)
def test_truncated_small_pickle_at_every_offset(protocol):
    blob = small_pickle(protocol)
    assert load_pdparams(blob).keys() == {"a", "b", "c"}
    for cut in range(len(blob)):
        with pytest.raises(CheckpointError, match="truncated|empty|does not start like a pickle|not a state dict"):
            load_pdparams(blob[:cut])


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_pdparams(layout_state(tiny_config(), "official", seed=0),
                         tmp_path_factory.mktemp("tiny") / "tiny.pdparams")


@pytest.fixture(scope="module")
def reference(tiny_ckpt, tmp_path_factory) -> Dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref") / "converted"
    convert_checkpoint(tiny_ckpt, out)
    return load_file(str(out / "model.safetensors"))


def truncation_offsets(size: int, count: int = TRUNCATIONS_TINY, seed: int = 0) -> List[int]:
    """``count`` distinct cut points: every offset of the first ``TRUNCATION_HEAD`` bytes (the header and the first
    opcodes), the last byte (a file missing only its STOP), and random offsets in between."""
    offsets = set(range(TRUNCATION_HEAD)) | {size - 1}
    rng = random.Random(seed)
    while len(offsets) < count:
        offsets.add(rng.randrange(TRUNCATION_HEAD, size - 1))
    return sorted(offsets)


def test_truncated_tiny_checkpoint(tiny_ckpt, tmp_path):
    blob = tiny_ckpt.read_bytes()
    offsets = truncation_offsets(len(blob))
    assert len(offsets) == TRUNCATIONS_TINY and offsets[-1] == len(blob) - 1
    assert offsets[:TRUNCATION_HEAD] == list(range(TRUNCATION_HEAD))
    for cut in offsets:
        with pytest.raises(CheckpointError):
            load_pdparams(blob[:cut])
    # through the whole convert path, a few of them
    for cut in offsets[::CONVERT_EVERY]:
        src = tmp_path / "cut.pdparams"
        src.write_bytes(blob[:cut])
        with pytest.raises(CheckpointError):
            convert_checkpoint(src, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pdparams"]


def test_random_bytes():
    rng = np.random.default_rng(1)
    for i in range(RANDOM_BLOBS):
        blob = rng.integers(0, 256, size=int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        if i % 2:  # half look like a pickle header, to get past the magic-byte check
            blob = b"\x80" + bytes([int(rng.integers(2, 6))]) + blob
        with pytest.raises(CheckpointError):
            load_pdparams(blob)


def _wrong_files(tiny_ckpt: Path) -> Dict[str, Tuple[bytes, str]]:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("model.pdparams", tiny_ckpt.read_bytes()[:1000])
    torch_file = io.BytesIO()
    torch.save({"w": torch.ones(2)}, torch_file)
    html = (b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body><h1>Access denied</h1>"
            b"</body></html>\n")
    return {
        "zero-length file": (b"", "empty"),
        "zip archive": (zipped.getvalue(), "zip archive"),
        "torch.save file": (torch_file.getvalue(), "zip archive"),
        "HTML error page": (html, "HTML"),
        "HTML with leading whitespace": (b"\n  " + html.lower(), "HTML"),
        "XML error page": (b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>", "HTML/XML"),
        "gzip-compressed pdparams": (gzip.compress(small_pickle()), "gzip"),
        "JSON text": (b'{"error": "not found"}', "does not start like a pickle"),
        "protocol-0 pickle": (pickle.dumps({"a": 1}, protocol=0), "does not start like a pickle"),
        "pickle of a list": (pickle.dumps([np.ones(2)]), "not a state dict"),
        "pickle of a plain array": (pickle.dumps(np.ones(2)), "not a state dict"),
        "empty state dict": (pickle.dumps({}), "empty"),
        "only the bookkeeping entry": (pickle.dumps({STRUCTURE_KEY: {}}), "empty"),
        "non-array value": (pickle.dumps({"w": [1.0, 2.0]}), "'w' is a list, not an array"),
        "non-string key": (pickle.dumps({3: np.ones(2)}), "not a string"),
        "bytes value": (pickle.dumps({"w": b"abc"}), "'w' is a bytes"),
        "trailing garbage after STOP": (small_pickle() + b"garbage", None),
    }


def test_wrong_kinds_of_file(tiny_ckpt, tmp_path):
    for label, (blob, needle) in _wrong_files(tiny_ckpt).items():
        if needle is None:  # harmless: the pickle ends at STOP
            assert load_pdparams(blob).keys() == {"a", "b", "c"}
            continue
        src = tmp_path / "model.pdparams"
        src.write_bytes(blob)
        with pytest.raises(CheckpointError, match=needle):
            load_pdparams(src)
        with pytest.raises(CheckpointError, match=needle):
            convert_checkpoint(src, tmp_path / "out")
        assert not (tmp_path / "out").exists(), label


WRONG_MODEL_CASES = 5


def test_wrong_model_and_bad_tensors(tiny_ckpt, tmp_path):
    good = layout_state(tiny_config(), "official", seed=0)
    key = "text_model.encoder_stack.block.0.attn.q.weight"
    bad_shape = dict(good, **{key: good[key][:, :-1]})
    bad_dtype = dict(good, **{key: good[key].astype(np.int64)})
    gone = "text_model.encoder_stack.block.1.ffn.o.bias"
    missing = {k: v for k, v in good.items() if k != gone}
    extra = dict(good, **{"some.unrelated.weight": np.ones(3, np.float32)})
    cases = {
        "unrelated arrays": ({"encoder.weight": np.ones((4, 4), np.float32), "decoder.bias": np.zeros(4, np.float32)},
                             KeyMapError, "not an ERNIE-ViL 2.0 checkpoint"),
        "one tensor of the wrong shape": (bad_shape, KeyMapError, f"wrong shape for '{key}'"),
        "one tensor int64": (bad_dtype, CheckpointError, f"'{key}' \\(int64\\)"),
        "one tensor missing": (missing, KeyMapError, f"missing key '{gone}'"),
        "one unexpected tensor": (extra, KeyMapError, "unexpected key 'some.unrelated.weight'"),
    }
    assert len(cases) == WRONG_MODEL_CASES
    for label, (state, error, needle) in cases.items():
        src = save_pdparams(state, tmp_path / "model.pdparams")
        with pytest.raises(error, match=needle):
            convert_checkpoint(src, tmp_path / "out")
        assert not (tmp_path / "out").exists(), label
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pdparams"]


def test_non_finite_weights_convert_with_a_warning(tmp_path):
    state = layout_state(tiny_config(), "official", seed=0)
    state["text_model.pooler.bias"][:3] = [np.nan, np.inf, -np.inf]
    state["visual.norm_post.weight"][0] = np.nan
    src = save_pdparams(state, tmp_path / "nan.pdparams")
    report = convert_checkpoint(src, tmp_path / "out")
    assert report.non_finite == {"text_model.pooler.bias": 3, "visual.norm_post.weight": 1}
    assert "WARNING non-finite weights" in report.summary()
    assert (tmp_path / "out" / "model.safetensors").is_file()


BAD_PATH_CASES = 5


def test_bad_paths(tmp_path, monkeypatch):
    src = tmp_path / "locked.pdparams"
    src.write_bytes(small_pickle())
    missing = tmp_path / "missing.pdparams"
    cases = [
        ("directory", lambda: load_pdparams(tmp_path), "is a directory"),
        ("missing file", lambda: load_pdparams(missing), "no such file"),
        ("missing file, converter", lambda: convert_checkpoint(missing, tmp_path / "out"), "no such file"),
        ("unreadable file", lambda: load_pdparams(src), "cannot open \\(Permission denied\\)"),
        ("unreadable file, converter", lambda: convert_checkpoint(src, tmp_path / "out"), "Permission denied"),
    ]
    assert len(cases) == BAD_PATH_CASES
    if os.geteuid() != 0:
        src.chmod(0)
    else:  # root reads through chmod 000: simulate the refusal the OS would give anyone else
        def refuse(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(pdparams, "open", refuse, raising=False)
    try:
        for label, action, needle in cases:
            with pytest.raises(CheckpointError, match=needle):
                action()
    finally:
        src.chmod(0o644)
    assert not (tmp_path / "out").exists()


# ---- 3. valid variants that must load and convert to the same weights -------------------------------------------

class Numpy1Pickler(pickle._Pickler):
    """Writes ``numpy.core...`` globals, as numpy 1.x did (any protocol), instead of numpy 2's ``numpy._core``."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            module, name = module.replace("numpy._core", "numpy.core", 1), name or obj.__qualname__
            if self.proto >= 4:
                self.save(module)
                self.save(name)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def numpy1_dumps(obj, protocol: int) -> bytes:
    buffer = io.BytesIO()
    Numpy1Pickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def _with_structure(state):
    return dict(state, **{STRUCTURE_KEY: {k: k for k in state}})


def _split_big(state, key: str, parts: int):
    out = dict(state)
    flat = out.pop(key).ravel()
    names = [f"{key}@@.{i}" for i in range(parts)]
    for name, chunk in zip(names, np.array_split(flat, parts)):
        out[name] = chunk
    out[BIG_PARAM_KEY] = dict(out.get(BIG_PARAM_KEY, {}), **{key: {"OriginShape": list(state[key].shape),
                                                                   "slices": names}})
    return out


def _bf16_bits(state):
    return {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in state.items()}


VALID_VARIANTS: Dict[str, Callable[[dict], Tuple[bytes, Callable[[dict], dict]]]] = {
    **{f"protocol {p}": (lambda p: lambda s: (pickle.dumps(_with_structure(s), protocol=p), None))(p)
       for p in (2, 3, 4, 5)},
    **{f"numpy-1 globals, protocol {p}": (lambda p: lambda s: (numpy1_dumps(_with_structure(s), p), None))(p)
       for p in (2, 3, 4, 5)},
    "numpy-1 globals by rewriting protocol-2 bytes": lambda s: (
        pickle.dumps(_with_structure(s), protocol=2).replace(b"numpy._core", b"numpy.core"), None),
    "(name, ndarray) tuple values": lambda s: (pickle.dumps({k: (f"var_{i}", v) for i, (k, v) in
                                                             enumerate(s.items())}), None),
    "state dict wrapped in a dict": lambda s: (pickle.dumps({"state_dict": _with_structure(s)}), None),
    "split big params, protocol 2": lambda s: (pickle.dumps(_split_big(s, "text_model.word_emb.weight", 3),
                                                            protocol=2), None),
    "split big params, numpy-1, protocol 3": lambda s: (numpy1_dumps(_split_big(
        _split_big(s, "text_model.word_emb.weight", 4), "visual.blocks.0.attn.qkv.weight", 2), 3), None),
    "float16 weights": lambda s: (pickle.dumps({k: v.astype(np.float16) for k, v in s.items()}),
                                  lambda ref: {k: v.to(torch.float16).to(torch.float32) for k, v in ref.items()}),
    "bf16 weights as uint16 bits": lambda s: (pickle.dumps(_bf16_bits(s), protocol=2), "bf16"),
    "big-endian float32": lambda s: (pickle.dumps({k: v.astype(">f4") for k, v in s.items()}), None),
    "float64 weights": lambda s: (pickle.dumps({k: v.astype(np.float64) for k, v in s.items()}), None),
    "Fortran-ordered arrays": lambda s: (pickle.dumps({k: np.asfortranarray(v) for k, v in s.items()}), None),
}


@pytest.mark.parametrize("variant", list(VALID_VARIANTS))
def test_valid_variants_load_and_convert_identically(variant, tmp_path, reference):
    state = layout_state(tiny_config(), "official", seed=0)
    blob, expect = VALID_VARIANTS[variant](state)
    loaded = load_pdparams(blob)
    assert set(loaded) == set(state)
    for value in loaded.values():
        assert value.flags.writeable and value.dtype.isnative
    src = tmp_path / "model.pdparams"
    src.write_bytes(blob)
    report = convert_checkpoint(src, tmp_path / "out")
    assert report.non_finite == {}
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    if expect == "bf16":
        bits = _bf16_bits(state)
        expected_state = {k: np.asarray(v, np.uint32) << 16 for k, v in bits.items()}
        converted_ref = tmp_path / "bf16_ref"
        convert_checkpoint(save_pdparams({k: v.view(np.float32) for k, v in expected_state.items()},
                                         tmp_path / "bf16_as_f32.pdparams"), converted_ref)
        want = load_file(str(converted_ref / "model.safetensors"))
    else:
        want = expect(reference) if expect else reference
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=f"{variant}: {key}")


# ---- 4. the CLI: one error line, exit 2, no traceback, nothing left behind -----------------------------------------

def _cli_cases(tmp_path: Path, marker: Path, tiny_ckpt: Path) -> Dict[str, Tuple[Path, str, bool]]:
    """label -> (src, text the error must contain)."""
    def write(name: str, blob: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(blob)
        return path

    good = layout_state(tiny_config(), "official", seed=0)
    key = "text_model.encoder_stack.block.0.attn.q.weight"
    (tmp_path / "a_directory").mkdir()
    return {
        "os.system payload": (write("evil.pdparams", PLACEMENTS["dict value"](
            call("os", "system", frag(f"touch {marker}")))), "refusing to load global 'os.system'"),
        "builtins.exec payload in dtype args": (write("evil2.pdparams", PLACEMENTS["dtype args"](
            call("builtins", "exec", frag(f"open({str(marker)!r}, 'w')")))), "'builtins.exec'"),
        "memory bomb": (write("bomb.pdparams", MEMORY_BOMBS["BUILD state: huge shape, 8 bytes"][0]), "memory bomb"),
        "truncated": (write("cut.pdparams", tiny_ckpt.read_bytes()[:5000]), "corrupt or truncated pickle"),
        "zero-length": (write("empty.pdparams", b""), "the file is empty"),
        "zip": (write("zip.pdparams", _wrong_files(tiny_ckpt)["zip archive"][0]), "zip archive"),
        "HTML page": (write("page.pdparams", _wrong_files(tiny_ckpt)["HTML error page"][0]), "HTML"),
        "wrong model": (save_pdparams({"encoder.weight": np.ones((4, 4), np.float32)}, tmp_path / "other.pdparams"),
                        "not an ERNIE-ViL 2.0 checkpoint"),
        "int64 tensor": (save_pdparams(dict(good, **{key: good[key].astype(np.int64)}),
                                       tmp_path / "int.pdparams"), "(int64)"),
        "wrong shape": (save_pdparams(dict(good, **{key: good[key][:, :-1]}), tmp_path / "shape.pdparams"),
                        f"wrong shape for '{key}'"),
        "directory": (tmp_path / "a_directory", "is a directory"),
        "missing path": (tmp_path / "missing.pdparams", "no such file"),
    }


CLI_CASES = 12  # len(_cli_cases(...)); checked below


def test_cli_reports_bad_checkpoints_in_one_line(tmp_path, marker, tiny_ckpt):
    work = tmp_path / "inputs"
    work.mkdir()
    cases = _cli_cases(work, marker, tiny_ckpt)
    assert len(cases) == CLI_CASES
    before = set(os.listdir(work))
    procs = {}
    for label, (src, _) in cases.items():
        dst = tmp_path / "out" / label.replace(" ", "_")
        procs[label] = (dst, subprocess.Popen(
            [sys.executable, str(REPO / "convert.py"), "--src", str(src), "--dst", str(dst)], cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for label, (dst, proc) in procs.items():
        out, err = proc.communicate(timeout=120)
        needle = cases[label][1]
        assert proc.returncode == 2, (label, out, err)
        assert "Traceback" not in err and out == "", (label, err)
        assert err.startswith("error: ") and needle in err, (label, err)
        if label != "wrong shape":  # KeyMapError lists each problem on an indented line of its own
            assert len(err.strip().splitlines()) == 1, (label, err)
        assert not dst.exists() and not (tmp_path / "out").exists(), label
    assert set(os.listdir(work)) == before


def test_cli_non_finite_warning_and_refusal_to_overwrite(tmp_path):
    state = layout_state(tiny_config(), "official", seed=0)
    state["text_model.pooler.bias"][0] = np.nan
    src = save_pdparams(state, tmp_path / "nan.pdparams")
    dst = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "convert.py"), "--src", str(src), "--dst", str(dst)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "WARNING non-finite weights: text_model.pooler.bias (1 values)" in first.stdout
    stamp = (dst / "model.safetensors").stat().st_mtime_ns
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.startswith("error: ") and "--overwrite" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert (dst / "model.safetensors").stat().st_mtime_ns == stamp
