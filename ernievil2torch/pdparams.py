"""Read Paddle ``.pdparams`` files without Paddle and without running arbitrary pickle code.

A ``.pdparams`` is a pickle of ``{name: numpy.ndarray}``. Unpickling runs whatever callables the file names, so we
use an unpickler that resolves only the handful of globals numpy arrays are rebuilt from, each behind a shim that
validates its arguments (no object dtypes, no pre-allocated shapes), and refuses everything else by name.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Union

import numpy as np

from .errors import CheckpointError, UnsafePickleError

STRUCTURE_KEY = "StructuredToParameterName@@"
BIG_PARAM_KEY = "UnpackBigParamInfor@@"

# dtype kinds a weight file may hold: bool, signed/unsigned ints, floats (uint16 carries bf16 bits).
_ALLOWED_DTYPE_KINDS = frozenset("biuf")
# Largest array a shim may create from its own shape argument before data arrives (numpy pickles use (0,)).
_MAX_PREALLOCATED = 0


def _safe_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(obj, str):
        raise UnsafePickleError(f"numpy.dtype called with a non-string argument {type(obj).__name__}")
    dtype = np.dtype(obj, align, copy)
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafePickleError(f"refusing numpy dtype {obj!r} (only plain numeric dtypes are allowed)")
    return dtype


def _safe_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to rebuild an array of type {subtype!r}")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UnsafePickleError(f"bad array shape {shape!r} in pickle")
    if int(np.prod(shape, dtype=np.int64)) > _MAX_PREALLOCATED:
        raise UnsafePickleError(f"refusing to pre-allocate an array of shape {shape}")
    if not isinstance(dtype_code, (bytes, str)):
        raise UnsafePickleError("bad dtype code in array reconstruction")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _ALLOWED_DTYPE_KINDS:
        raise UnsafePickleError(f"refusing numpy scalar of dtype {dtype!r}")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafePickleError("bad numpy scalar payload")
    return np.frombuffer(data, dtype=dtype)[0]


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype):
        raise UnsafePickleError("bad arguments to numpy _frombuffer")
    if dtype.kind not in _ALLOWED_DTYPE_KINDS:
        raise UnsafePickleError(f"refusing numpy dtype {dtype!r}")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UnsafePickleError(f"bad array shape {shape!r} in pickle")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(buf):
        raise CheckpointError(f"array data of {len(buf)} bytes does not fill shape {shape} of {dtype}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if order == "F" else "C")


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as `_codecs.encode(str, 'latin1')`.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refusing _codecs.encode with arguments other than (str, 'latin1')")
    return text.encode("latin1")


_ALLOWED_GLOBALS: Dict[tuple, Callable[..., Any]] = {}
for _numpy_core in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_numpy_core}.multiarray", "_reconstruct")] = _safe_reconstruct
    _ALLOWED_GLOBALS[(f"{_numpy_core}.multiarray", "scalar")] = _safe_scalar
    _ALLOWED_GLOBALS[(f"{_numpy_core}.numeric", "_frombuffer")] = _safe_frombuffer
_ALLOWED_GLOBALS.update({
    ("numpy", "ndarray"): np.ndarray,   # only ever passed to _safe_reconstruct, which checks it
    ("numpy", "dtype"): _safe_dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _latin1_encode,
})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only numpy arrays and plain containers; any other global is refused by name."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global '{module}.{name}': a Paddle state dict holds only numpy arrays, "
                "so this file is not a plain .pdparams (it may be malicious)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids (not a .pdparams)")


def _describe_non_pickle(head: bytes) -> str:
    stripped = head.lstrip().lower()
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):
        return "the file is a zip archive (a torch .pt/.bin or a zipped download?), not a .pdparams pickle"
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "the file is an HTML/XML page (a failed or login-walled download?), not a .pdparams pickle"
    if head.startswith(b"\x1f\x8b"):
        return "the file is gzip-compressed; decompress it first"
    return "the file does not start like a pickle (wrong or corrupt file)"


def _unpack_big_params(state: dict) -> None:
    """Re-join tensors Paddle split into ``name@@.0..n`` slices (old protocols cannot pickle >4 GB objects)."""
    info = state.pop(BIG_PARAM_KEY, None)
    if info is None:
        return
    if not isinstance(info, dict):
        raise CheckpointError(f"'{BIG_PARAM_KEY}' is not a dict")
    for name, meta in info.items():
        try:
            slices, shape = list(meta["slices"]), tuple(int(d) for d in meta["OriginShape"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"malformed split-tensor record for '{name}'") from None
        missing = [s for s in slices if s not in state]
        if missing:
            raise CheckpointError(f"split tensor '{name}' lacks slices {missing}")
        parts = [np.ravel(_as_array(s, state.pop(s))) for s in slices]
        total = sum(p.size for p in parts)
        if total != int(np.prod(shape, dtype=np.int64)):
            raise CheckpointError(f"split tensor '{name}': {total} values do not fill shape {shape}")
        state[name] = np.concatenate(parts).reshape(shape)


def _as_array(name: str, value: Any) -> np.ndarray:
    # Paddle sometimes stores (variable_name, ndarray) pairs instead of bare arrays.
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        value = value[1]
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise CheckpointError(f"entry '{name}' is a {type(value).__name__}, not an array")
    return value


def _normalise_state(obj: Any) -> Dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"the pickle holds a {type(obj).__name__}, not a state dict")
    # A dict wrapping the state dict (e.g. {"model": {...}}): descend when it is the only entry.
    if len(obj) == 1:
        (only,) = obj.values()
        if isinstance(only, dict):
            obj = only
    state = dict(obj)
    state.pop(STRUCTURE_KEY, None)
    _unpack_big_params(state)
    arrays: Dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"state dict key {name!r} is not a string")
        arrays[name] = _as_array(name, value)
    if not arrays:
        raise CheckpointError("the state dict is empty")
    return arrays


class _HashingReader:
    """File wrapper that feeds everything the unpickler reads into a hash (one pass over the file, not two)."""

    def __init__(self, raw: Any, hasher: Any) -> None:
        self._raw, self._hasher = raw, hasher

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hasher.update(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._raw.readline(size)
        self._hasher.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)
        self._hasher.update(memoryview(buffer)[:count])
        return count

    def peek(self, size: int = 0) -> bytes:
        return self._raw.peek(size)

    def drain(self) -> None:
        """Hash whatever follows the pickle's STOP opcode, so the digest covers the whole file."""
        while self.read(1 << 20):
            pass


def load_pdparams(source: Union[str, os.PathLike, bytes, io.BufferedIOBase],
                  hasher: Any = None) -> Dict[str, np.ndarray]:
    """Read a ``.pdparams`` (path, bytes or binary file object) into ``{name: ndarray}``.

    Raises :class:`CheckpointError` (or its subclass :class:`UnsafePickleError`) for anything that is not a
    plain Paddle state dict. Nothing in the file is executed beyond rebuilding numpy arrays. ``hasher`` (e.g.
    ``hashlib.sha256()``) is updated with every byte of the file on the way.
    """
    if isinstance(source, (bytes, bytearray)):
        return _load_stream(io.BufferedReader(io.BytesIO(source)), "<bytes>", hasher)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise CheckpointError(f"{path}: no such file")
        if path.is_dir():
            raise CheckpointError(f"{path}: is a directory, expected a .pdparams file")
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot open ({exc.strerror or exc})") from None
        with handle:
            return _load_stream(io.BufferedReader(handle, buffer_size=1 << 20), str(path), hasher)
    return _load_stream(source, "<stream>", hasher)


def _load_stream(stream: Any, label: str, hasher: Any = None) -> Dict[str, np.ndarray]:
    head = stream.peek(16)[:16] if hasattr(stream, "peek") else b""
    if hasattr(stream, "peek") and (not head or head[0] != 0x80):
        raise CheckpointError(f"{label}: {_describe_non_pickle(head)}")
    if hasher is not None:
        stream = _HashingReader(stream, hasher)
    try:
        obj = RestrictedUnpickler(stream).load()
        if hasher is not None:
            stream.drain()
    except CheckpointError as exc:
        raise type(exc)(f"{label}: {exc}") from None
    except MemoryError:
        raise CheckpointError(f"{label}: the pickle asks for more memory than is available (corrupt?)") from None
    except RecursionError:
        raise CheckpointError(f"{label}: the pickle nests too deeply (corrupt or hostile)") from None
    except Exception as exc:  # truncation and corruption surface as many different exception types
        raise CheckpointError(f"{label}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from None
    try:
        return _normalise_state(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"{label}: {exc}") from None
