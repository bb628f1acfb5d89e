"""The ``.pdparams`` format: read without Paddle and without running arbitrary pickle code; write it plainly.

A ``.pdparams`` is a pickle of ``{name: numpy.ndarray}``. Unpickling runs whatever callables the file names, so we
use an unpickler that resolves only the handful of globals numpy arrays are rebuilt from, each behind a shim that
validates its arguments (no object dtypes, no pre-allocated shapes), and refuses everything else by name.
"""
from __future__ import annotations

import collections
import contextvars
import inspect
import io
import math
import os
import pickle
import queue
import stat
import struct
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from ..errors import CheckpointError, UnsafePickleError
from ..storage.atomic import atomic_file

STRUCTURE_KEY = "StructuredToParameterName@@"
BIG_PARAM_KEY = "UnpackBigParamInfor@@"

# dtypes a weight file may hold: bool, signed/unsigned ints, float16/32/64 (uint16 carries bf16 bits). No long
# double, complex, strings, objects, records or sub-arrays.
_ALLOWED_DTYPES = frozenset(np.dtype(c) for c in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                                  "f2", "f4", "f8"))
# Largest array a shim may create from its own shape argument before data arrives (numpy pickles use (0,)).
_MAX_PREALLOCATED = 0
# No dimension of a real weight comes near this; it keeps shape arithmetic exact and cheap.
_MAX_DIM = 1 << 48


def _short(value: Any, limit: int = 120) -> str:
    """``repr`` capped in length (names and shapes in a hostile file can be megabytes long)."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int too large to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "...'"


def _check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"expected a numpy dtype, got {type(dtype).__name__}")
    native = dtype.newbyteorder("=")
    if (native not in _ALLOWED_DTYPES or dtype.fields is not None or dtype.subdtype is not None
            or dtype.hasobject or dtype.flags != np.dtype(native.str).flags):
        raise UnsafePickleError(f"refusing numpy dtype {_short(dtype)} (only plain numeric dtypes are allowed)")
    return dtype


def _check_shape(shape: Any) -> Tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            type(d) is int and 0 <= d <= _MAX_DIM for d in shape):
        raise UnsafePickleError(f"bad array shape {_short(shape)} in pickle")
    return shape


class _DTypeSpec:
    """What ``numpy.dtype(...)`` gives inside the pickle: a plain numeric dtype whose pickled state (``BUILD``) may
    change nothing but the byte order. numpy's own ``dtype.__setstate__`` accepts forged flags (e.g. "holds
    object pointers") that turn later array reads into memory corruption, so a real dtype is never exposed."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError("refusing to set attributes on a dtype")

    def __setstate__(self, state: Any) -> None:
        expected = self.dtype.__reduce__()[2]
        if (not isinstance(state, tuple) or len(state) != len(expected)
                or not all(type(a) is type(b) and a == b for a, b in zip(state[2:], expected[2:]))
                or type(state[0]) is not int or state[0] != expected[0] or state[1] not in ("<", ">", "|", "=")):
            raise UnsafePickleError(f"refusing dtype state {_short(state)} (only a byte order may be set)")
        if self.dtype.itemsize > 1 and state[1] in "<>":
            object.__setattr__(self, "dtype", self.dtype.newbyteorder(state[1]))


def _resolve_dtype(spec: Any) -> np.dtype:
    return _check_dtype(spec.dtype if isinstance(spec, _DTypeSpec) else spec)


def _native_copy(array: np.ndarray) -> np.ndarray:
    """A writable, native-byte-order copy (torch cannot take big-endian or read-only buffers)."""
    return array.astype(array.dtype.newbyteorder("="), copy=True)


# Byte buffers the unpickler read from the file into fresh ``bytearray``s during the current load (id -> buffer;
# the dict keeps them alive, so an id cannot be reused). The first array built from such a buffer adopts it
# without a copy (a 1 GB checkpoint is then held once, not twice: the pickle memo keeps every buffer alive until
# the load ends); any later use of the same buffer (a memo reference) gets a copy, so no two arrays share memory.
_FRESH_BUFFERS: "contextvars.ContextVar[Optional[Dict[int, bytearray]]]" = contextvars.ContextVar(
    "_FRESH_BUFFERS", default=None)
# The reader's own message for data that ends inside an opcode (the stdlib unpickler's errors are wrapped likewise).
_TRUNCATED = "corrupt or truncated pickle (the data ends inside an opcode)"
# Read size for byte strings from a stream whose length is unknown (no allocation beyond what arrives).
_STREAM_CHUNK = 1 << 24
# Byte strings at least this long are read into an adoptable bytearray; shorter ones stay ``bytes`` as usual.
_ADOPT_MIN_BYTES = 1 << 16


def _array_from_bytes(buf: Any, dtype: np.dtype, shape: Tuple[int, ...], fortran: bool) -> np.ndarray:
    if not isinstance(buf, (bytes, bytearray)):
        raise UnsafePickleError(f"array data is a {type(buf).__name__}, not bytes")
    count = math.prod(shape)
    if count * dtype.itemsize != len(buf):
        raise CheckpointError(f"array data of {len(buf)} bytes does not fill the declared shape {_short(shape)} of "
                              f"{dtype} ({count * dtype.itemsize} bytes): corrupt, or a memory bomb")
    flat = np.frombuffer(buf, dtype=dtype, count=count)
    array = flat.reshape(shape, order="F" if fortran else "C")
    fresh = _FRESH_BUFFERS.get()
    if (fresh is not None and fresh.get(id(buf)) is buf and array.dtype.isnative and array.flags.writeable
            and array.flags.aligned):
        del fresh[id(buf)]  # adopted: any other array from this buffer is a copy
        return array
    return _native_copy(array)


class _ArraySpec:
    """What ``numpy.core.multiarray._reconstruct`` gives inside the pickle: an empty placeholder that its ``BUILD``
    state fills with a validated array (data must exactly fill the declared shape)."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        object.__setattr__(self, "array", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError("refusing to set attributes on an array")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError(f"bad array state {_short(state)}")
        if len(state) == 5:
            if type(state[0]) is not int or state[0] != 1:
                raise UnsafePickleError(f"unsupported array state version {_short(state[0])}")
            state = state[1:]
        shape, dtype, fortran, data = state
        if not isinstance(fortran, (bool, int)):
            raise UnsafePickleError("bad array order flag")
        array = _array_from_bytes(data, _resolve_dtype(dtype), _check_shape(shape), bool(fortran))
        object.__setattr__(self, "array", array)


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: only ``_reconstruct`` may receive it; it cannot be called."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("refusing to call numpy.ndarray directly (allocates memory the file does not hold)")

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError("refusing to set attributes on numpy.ndarray")


_NDARRAY = _NdarrayToken()


def _safe_dtype(obj: Any, align: Any = False, copy: Any = False) -> _DTypeSpec:
    if not isinstance(obj, str) or len(obj) > 8:
        raise UnsafePickleError(f"numpy.dtype called with {_short(obj)}, not a short type code")
    if not isinstance(align, bool) or not isinstance(copy, bool):
        raise UnsafePickleError("numpy.dtype called with non-boolean flags")
    try:
        dtype = np.dtype(obj)
    except (TypeError, ValueError):
        raise UnsafePickleError(f"unknown numpy dtype {_short(obj)}") from None
    return _DTypeSpec(_check_dtype(dtype))


def _safe_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> _ArraySpec:
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"refusing to rebuild an array of type {_short(subtype)}")
    shape = _check_shape(shape)
    if math.prod(shape) > _MAX_PREALLOCATED:
        raise UnsafePickleError(f"refusing to pre-allocate an array of shape {_short(shape)}")
    if not isinstance(dtype_code, (bytes, str)) or len(dtype_code) > 8:
        raise UnsafePickleError("bad dtype code in array reconstruction")
    return _ArraySpec()


def _safe_scalar(dtype: Any, data: Any = None) -> np.ndarray:
    dtype = _resolve_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafePickleError("bad numpy scalar payload")
    return _native_copy(np.frombuffer(data, dtype=dtype).reshape(()))


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> np.ndarray:
    if axis_order is not None or order not in ("C", "F", "A", "K"):
        raise UnsafePickleError("unsupported memory layout in numpy _frombuffer")
    return _array_from_bytes(buf, _resolve_dtype(dtype), _check_shape(shape), order == "F")


def _latin1_bytes(text: str) -> bytes:
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise CheckpointError("a latin-1 byte string holds characters beyond U+00FF (corrupt pickle)") from None


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as `_codecs.encode(str, 'latin1')`.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refusing _codecs.encode with arguments other than (str, 'latin1')")
    return _latin1_bytes(text)


def _safe_bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    # Only copies of data present in the file: bytearray(n) would allocate n zero bytes from nothing.
    if isinstance(data, (bytes, bytearray)) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return bytearray(_latin1_bytes(data))
    raise UnsafePickleError("refusing bytearray() of anything but bytes or a latin-1 string")


def _empty_bytes(*args: Any) -> bytes:
    # Protocol-2 pickles written by Python 3 store an empty bytes object as `bytes()`.
    if args:
        raise UnsafePickleError("refusing bytes() with arguments")
    return b""


class _Shim:
    """A callable the unpickler may resolve a global to; immutable, so ``BUILD`` cannot tamper with it.

    The arguments are bound to the function's signature before the call, so a corrupt argument count is a
    :class:`UnsafePickleError` while a ``TypeError`` raised inside the function stays what it is: a bug.
    """

    __slots__ = ("_fn", "_signature")

    def __init__(self, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_signature", inspect.signature(fn))

    def __call__(self, *args: Any) -> Any:
        try:
            self._signature.bind(*args)
        except TypeError:
            raise UnsafePickleError(f"{self._fn.__name__.lstrip('_')} called with {len(args)} arguments "
                                    "(corrupt or hostile pickle)") from None
        return self._fn(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError("refusing to set attributes on an allowed global")


_ALLOWED_GLOBALS: Dict[tuple, Any] = {}
for _numpy_core in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_numpy_core}.multiarray", "_reconstruct")] = _Shim(_safe_reconstruct)
    _ALLOWED_GLOBALS[(f"{_numpy_core}.multiarray", "scalar")] = _Shim(_safe_scalar)
    _ALLOWED_GLOBALS[(f"{_numpy_core}.numeric", "_frombuffer")] = _Shim(_safe_frombuffer)
_ALLOWED_GLOBALS.update({
    ("numpy", "ndarray"): _NDARRAY,   # only ever accepted as _reconstruct's first argument
    ("numpy", "dtype"): _Shim(_safe_dtype),
    # built-in types cannot be modified, and creating empty containers costs nothing
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "bytearray"): _Shim(_safe_bytearray),
    ("_codecs", "encode"): _Shim(_latin1_encode),
    ("builtins", "bytes"): _Shim(_empty_bytes),
})
for _name in ("dict", "list", "tuple", "bytearray", "bytes"):  # protocol-2 spelling of builtins
    _ALLOWED_GLOBALS[("__builtin__", _name)] = _ALLOWED_GLOBALS[("builtins", _name)]


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """An unpickler that knows only numpy arrays and plain containers; any other global is refused by name.

    Built on the pure-Python unpickler: its memo is a dict, whereas the C one grows a flat array to the largest memo
    index a file names (``LONG_BINPUT 2**31`` in a 10-byte file costs gigabytes and minutes). The Python loop costs
    nothing measurable here: a checkpoint is a few thousand opcodes around a few hundred large byte strings.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"refusing to load global {_short(f'{module}.{name}')}: a Paddle state dict holds only numpy "
                "arrays, so this file is not a plain .pdparams (it may be malicious); nothing from it was run")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids (not a .pdparams)")

    def __init__(self, file: Any, size: Optional[int] = None) -> None:
        super().__init__(file)
        self._size = size
        self.dispatch = dict(self.dispatch)
        self.dispatch[pickle.BYTEARRAY8[0]] = RestrictedUnpickler._load_bytearray8
        self.dispatch[pickle.BINBYTES8[0]] = RestrictedUnpickler._load_binbytes8
        self.dispatch[pickle.BINBYTES[0]] = RestrictedUnpickler._load_binbytes
        self.dispatch[pickle.GLOBAL[0]] = RestrictedUnpickler._load_global
        self.dispatch[pickle.INST[0]] = RestrictedUnpickler._load_inst
        self._fresh: Dict[int, bytearray] = {}

    def load(self) -> Any:
        token = _FRESH_BUFFERS.set(self._fresh)
        try:
            return super().load()
        finally:
            _FRESH_BUFFERS.reset(token)
            self._fresh.clear()

    def _text_line(self) -> str:
        line = self.readline()
        if not line.endswith(b"\n"):
            raise CheckpointError(_TRUNCATED)
        try:
            return line[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("a global's name is not UTF-8 text (corrupt pickle)") from None

    def _read_exact(self, length: int) -> bytes:
        data = self.read(length)
        if len(data) != length:
            raise CheckpointError(_TRUNCATED)
        return data

    def _load_global(self) -> None:
        module = self._text_line()
        self.append(self.find_class(module, self._text_line()))

    def _load_inst(self) -> None:
        module = self._text_line()
        klass = self.find_class(module, self._text_line())
        self._instantiate(klass, self.pop_mark())

    def _read_buffer(self, length: int) -> bytearray:
        # The stock loaders allocate (and zero-fill) the declared length before reading: refuse lengths that
        # cannot be in the file rather than letting 9 bytes of header cost gigabytes.
        if self._size is None:  # a stream of unknown length: grow with the data that really arrives
            data = bytearray()
            while len(data) < length:
                chunk = self.read(min(length - len(data), _STREAM_CHUNK))
                if not chunk:
                    raise CheckpointError(_TRUNCATED)
                data += chunk
            return data
        if length > self._size:
            raise CheckpointError(f"a byte string declares {length} bytes but the file has only {self._size} "
                                  "(corrupt or truncated pickle)")
        data = bytearray(length)
        if self.readinto(data) != length:
            raise CheckpointError(_TRUNCATED)
        return data

    def _load_bytearray8(self) -> None:
        (length,) = struct.unpack("<Q", self._read_exact(8))
        buffer = self._read_buffer(length)
        self._fresh[id(buffer)] = buffer  # protocol 5 array data: adoptable like BINBYTES data
        self.append(buffer)

    def _load_large_bytes(self, length: int) -> None:
        # Array data: read into a bytearray the array can adopt (see _FRESH_BUFFERS) instead of a bytes object it
        # would have to copy. Short strings (dtype codes, scalars, keys) stay bytes.
        if length < _ADOPT_MIN_BYTES:
            if self._size is not None and length > self._size:
                raise CheckpointError(f"a byte string declares {length} bytes but the file has only {self._size} "
                                      "(corrupt or truncated pickle)")
            self.append(self._read_exact(length))
            return
        buffer = self._read_buffer(length)
        self._fresh[id(buffer)] = buffer
        self.append(buffer)

    def _load_binbytes8(self) -> None:
        (length,) = struct.unpack("<Q", self._read_exact(8))
        self._load_large_bytes(length)

    def _load_binbytes(self) -> None:
        (length,) = struct.unpack("<I", self._read_exact(4))
        self._load_large_bytes(length)


# What the stdlib's pure-Python unpickler (the base of RestrictedUnpickler) raises on a malformed opcode stream:
# an unknown opcode (KeyError), a stack or mark underflow (IndexError), an opcode applied to the wrong kind of
# object (TypeError, AttributeError: BUILD on an int, APPEND to a tuple, ...), bad numbers, protocols, frames or
# text (ValueError, UnicodeDecodeError), short reads (EOFError, struct.error) and its own UnpicklingError.
# tests/test_reader_errors.py makes each of them happen. They count as a damaged file only when the
# ``pickle`` module itself raised them: the same types raised by this module's shims and checks are bugs.
MALFORMED_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, struct.error, KeyError, IndexError, TypeError,
                           AttributeError, ValueError)


def raised_by_stdlib_unpickler(exc: BaseException) -> bool:
    """Whether the innermost Python frame of ``exc``'s traceback is in the stdlib ``pickle`` module.

    C functions add no frame, so an error from a builtin the unpickler called on corrupt data (``dict[key] = v``
    with an unhashable key, ``int(b"...")``) counts as the unpickler's; one raised in a shim of this module does not.
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__") == "pickle"


def _describe_non_pickle(head: bytes) -> str:
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):
        return "the file is a zip archive (a torch .pt/.bin or a zipped download?), not a .pdparams pickle"
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body", b"<!--")):
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
            slices, shape = list(meta["slices"]), tuple(meta["OriginShape"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError(f"malformed split-tensor record for {_short(name)}") from None
        if not isinstance(name, str) or not slices or not all(isinstance(s, str) for s in slices):
            raise CheckpointError(f"malformed split-tensor record for {_short(name)}")
        if len(set(slices)) != len(slices):
            raise CheckpointError(f"split tensor {_short(name)} lists a slice twice")
        if name in state:
            raise CheckpointError(f"split tensor {_short(name)} is also stored whole")
        try:
            shape = _check_shape(tuple(shape))
        except UnsafePickleError:
            raise CheckpointError(f"split tensor {_short(name)} has a bad shape {_short(shape)}") from None
        missing = [s for s in slices if s not in state]
        if missing:
            raise CheckpointError(f"split tensor {_short(name)} lacks slices {_short(missing)}")
        parts = [np.ravel(_as_array(s, state.pop(s))) for s in slices]
        total = sum(p.size for p in parts)
        if total != math.prod(shape):
            raise CheckpointError(f"split tensor {_short(name)}: {total} values do not fill shape {_short(shape)}")
        if len({p.dtype for p in parts}) != 1:
            raise CheckpointError(f"split tensor {_short(name)}: slices of different dtypes")
        state[name] = np.concatenate(parts).reshape(shape)


def _kind(value: Any) -> str:
    return {_ArraySpec: "single array", _DTypeSpec: "dtype"}.get(type(value), type(value).__name__)


def _as_array(name: str, value: Any) -> np.ndarray:
    # Paddle sometimes stores (variable_name, ndarray) pairs instead of bare arrays.
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        value = value[1]
    if isinstance(value, _ArraySpec):
        if value.array is None:
            raise CheckpointError(f"entry {_short(name)} is an array without data")
        value = value.array
    if not isinstance(value, np.ndarray):
        raise CheckpointError(f"entry {_short(name)} is a {_kind(value)}, not an array")
    _check_dtype(value.dtype)
    return value


def _normalise_state(obj: Any, available_bytes: Optional[int] = None) -> Dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"the pickle holds a {_kind(obj)}, not a state dict")
    # A dict wrapping the state dict (e.g. {"model": {...}}): descend when it is the only entry.
    if len(obj) == 1:
        (only,) = obj.values()
        if isinstance(only, dict):
            obj = only
    state = dict(obj)
    state.pop(STRUCTURE_KEY, None)
    big = state.pop(BIG_PARAM_KEY, None)
    arrays: Dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"state dict key {_short(name)} is not a string")
        arrays[name] = _as_array(name, value)
    # Every byte of every array comes from the file, unless the pickle reuses one array (memo) under many names:
    # a legitimate checkpoint never does, and a hostile one could multiply a small file into huge work or memory.
    declared = sum(a.nbytes for a in arrays.values())
    if available_bytes is not None and declared > available_bytes:
        raise CheckpointError(f"the arrays hold {declared} bytes but the file has only {available_bytes}: the "
                              "pickle reuses the same data under several names (hostile or corrupt)")
    if big is not None:
        arrays[BIG_PARAM_KEY] = big
        _unpack_big_params(arrays)  # type: ignore[arg-type]
    if not arrays:
        raise CheckpointError("the state dict is empty")
    return arrays


class _BoundedReader:
    """File wrapper that refuses reads past the known end of the file before they allocate a buffer for them."""

    def __init__(self, raw: Any, size: int) -> None:
        self._raw, self._left = raw, size

    def _claim(self, size: int) -> None:
        if size is not None and size > self._left:
            raise CheckpointError(f"the pickle declares {size} more bytes but the file has only {self._left} "
                                  "left (corrupt or truncated pickle)")

    def read(self, size: int = -1) -> bytes:
        if size is not None and size >= 0:
            self._claim(size)
        data = self._raw.read(size)
        self._left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._raw.readline(size)
        self._left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        self._claim(memoryview(buffer).nbytes)
        count = self._raw.readinto(buffer)
        self._left -= count
        return count


class _BackgroundHasher:
    """Feeds a hash on a second thread, in submission order (hashlib releases the GIL on large updates, so the
    hash of a chunk overlaps the reading of the next one).

    Submitted data must not change until :meth:`finish` returns: here it is either ``bytes`` or a view of a
    fresh buffer the unpickler has just read into and never writes again. :meth:`finish` waits for the queue to
    drain and re-raises a failure of the hash thread.
    """

    _STOP = object()

    def __init__(self, hasher: Any) -> None:
        self._hasher, self._queue = hasher, queue.SimpleQueue()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="pdparams-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is self._STOP:
                return
            if self._error is None:
                try:
                    self._hasher.update(data)
                except BaseException as exc:  # reported by finish(), in the reading thread
                    self._error = exc

    def update(self, data: Any) -> None:
        if data:
            self._queue.put(data)

    def finish(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _HashingReader:
    """File wrapper that feeds everything the unpickler reads into a hash (one pass over the file, not two); the
    hashing runs on a :class:`_BackgroundHasher` thread, and :meth:`close` must be called (it joins it)."""

    def __init__(self, raw: Any, hasher: Any) -> None:
        self._raw, self._hasher = raw, _BackgroundHasher(hasher)

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

    def close(self) -> None:
        """Wait until every byte read so far is hashed (the caller's hasher is then final)."""
        self._hasher.finish()


def load_pdparams(source: Union[str, os.PathLike, bytes, io.BufferedIOBase],
                  hasher: Any = None) -> Dict[str, np.ndarray]:
    """Read a ``.pdparams`` (path, bytes or binary file object) into ``{name: ndarray}``.

    Raises :class:`CheckpointError` (or its subclass :class:`UnsafePickleError`) for anything that is not a
    plain Paddle state dict; any other exception is a bug in the reader and propagates unchanged. Nothing in the
    file is executed beyond rebuilding numpy arrays. ``hasher`` (e.g. ``hashlib.sha256()``) is updated with every
    byte of the file on the way. Arrays come back writable, in native byte order, with one of the plain numeric
    dtypes (bool, int, uint, float16/32/64).
    """
    if isinstance(source, (bytes, bytearray)):
        return _load_stream(io.BufferedReader(io.BytesIO(bytes(source))), "<bytes>", hasher, len(source))
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
            try:
                info = os.fstat(handle.fileno())
            except OSError as exc:
                raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
            size = info.st_size if stat.S_ISREG(info.st_mode) else None
            return _load_stream(io.BufferedReader(handle, buffer_size=1 << 20), str(path), hasher, size)
    return _load_stream(source, "<stream>", hasher)


def _load_stream(stream: Any, label: str, hasher: Any = None,
                 available_bytes: Optional[int] = None) -> Dict[str, np.ndarray]:
    try:
        head = stream.peek(256)[:256] if hasattr(stream, "peek") else b""
    except OSError as exc:
        raise CheckpointError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if hasattr(stream, "peek") and (not head or head[0] != 0x80):
        raise CheckpointError(f"{label}: {_describe_non_pickle(head)}")
    hashing = _HashingReader(stream, hasher) if hasher is not None else None
    source = hashing or stream
    if available_bytes is not None:
        source = _BoundedReader(source, available_bytes)
    try:
        try:
            obj = RestrictedUnpickler(source, available_bytes).load()
            if hashing is not None:
                hashing.drain()
        finally:
            if hashing is not None:
                hashing.close()
    except CheckpointError as exc:
        raise type(exc)(f"{label}: {exc}") from None
    except MemoryError:
        raise CheckpointError(f"{label}: the pickle asks for more memory than is available (corrupt?)") from None
    except RecursionError:
        raise CheckpointError(f"{label}: the pickle nests too deeply (corrupt or hostile)") from None
    except MALFORMED_PICKLE_ERRORS as exc:
        if not raised_by_stdlib_unpickler(exc):
            raise  # raised by this module's own code: a bug, shown as what it is
        raise CheckpointError(f"{label}: corrupt or truncated pickle "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None
    try:
        return _normalise_state(obj, available_bytes)
    except CheckpointError as exc:
        raise type(exc)(f"{label}: {exc}") from None
    except MemoryError:
        raise CheckpointError(f"{label}: the state dict needs more memory than is available") from None


def save_pdparams(state: Dict[str, np.ndarray], path: Union[str, os.PathLike], protocol: int = 4) -> Path:
    """Pickle a state dict the way ``paddle.save`` does: a plain dict of numpy arrays plus the name-map entry.

    Nothing but a dict, strings and arrays is pickled, so :func:`load_pdparams` (and ``paddle.load``) read it back.
    Written atomically (:func:`~ernievil2torch.storage.atomic.atomic_file`): ``path`` holds its previous content
    or the complete new file, never a part.
    """
    payload: Dict[str, Any] = {}
    for key, array in state.items():
        if not isinstance(key, str) or type(array) is not np.ndarray or array.dtype not in _ALLOWED_DTYPES:
            raise TypeError(f"{key!r}: only plain numeric numpy arrays under string keys are written")
        payload[key] = array
    payload[STRUCTURE_KEY] = {k: k for k in state}
    path = Path(path)
    with atomic_file(path) as handle:
        pickle.dump(payload, handle, protocol=protocol)
    return path
