"""What the allow-listed globals of a ``.pdparams`` pickle turn into: validated stand-ins for ``numpy.dtype``,
``numpy.core.multiarray._reconstruct`` / ``scalar`` / ``_frombuffer`` and the byte-string builtins.

Each checks its arguments (plain numeric dtypes only, no object or record dtypes, shapes that the file's own bytes
fill exactly, no pre-allocation) and raises :class:`UnsafePickleError` or :class:`CheckpointError` by name. The
allow-list itself, which maps pickle globals to these, is :mod:`~ernievil2torch.conversion.unpickler`'s.
"""
from __future__ import annotations

import contextvars
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import CheckpointError, UnsafePickleError

# dtypes a weight file may hold: bool, signed/unsigned ints, float16/32/64 (uint16 carries bf16 bits). No long
# double, complex, strings, objects, records or sub-arrays.
ALLOWED_DTYPES = frozenset(np.dtype(c) for c in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                                  "f2", "f4", "f8"))
# Largest array a shim may create from its own shape argument before data arrives (numpy pickles use (0,)).
_MAX_PREALLOCATED = 0
# No dimension of a real weight comes near this; it keeps shape arithmetic exact and cheap.
_MAX_DIM = 1 << 48


def short_repr(value: Any, limit: int = 120) -> str:
    """``repr`` capped in length (names and shapes in a hostile file can be megabytes long)."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int too large to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "...'"


def check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"expected a numpy dtype, got {type(dtype).__name__}")
    native = dtype.newbyteorder("=")
    if (native not in ALLOWED_DTYPES or dtype.fields is not None or dtype.subdtype is not None
            or dtype.hasobject or dtype.flags != np.dtype(native.str).flags):
        raise UnsafePickleError(f"refusing numpy dtype {short_repr(dtype)} (only plain numeric dtypes are allowed)")
    return dtype


def check_shape(shape: Any) -> Tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            type(d) is int and 0 <= d <= _MAX_DIM for d in shape):
        raise UnsafePickleError(f"bad array shape {short_repr(shape)} in pickle")
    return shape


class DTypeSpec:
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
            raise UnsafePickleError(f"refusing dtype state {short_repr(state)} (only a byte order may be set)")
        if self.dtype.itemsize > 1 and state[1] in "<>":
            object.__setattr__(self, "dtype", self.dtype.newbyteorder(state[1]))


def _resolve_dtype(spec: Any) -> np.dtype:
    return check_dtype(spec.dtype if isinstance(spec, DTypeSpec) else spec)


def _native_copy(array: np.ndarray) -> np.ndarray:
    """A writable, native-byte-order copy (torch cannot take big-endian or read-only buffers)."""
    return array.astype(array.dtype.newbyteorder("="), copy=True)


# Byte buffers the unpickler read from the file into fresh ``bytearray``s during the current load (id -> buffer;
# the dict keeps them alive, so an id cannot be reused). The first array built from such a buffer adopts it
# without a copy (a 1 GB checkpoint is then held once, not twice: the pickle memo keeps every buffer alive until
# the load ends); any later use of the same buffer (a memo reference) gets a copy, so no two arrays share memory.
FRESH_BUFFERS: "contextvars.ContextVar[Optional[Dict[int, bytearray]]]" = contextvars.ContextVar(
    "FRESH_BUFFERS", default=None)


def _array_from_bytes(buf: Any, dtype: np.dtype, shape: Tuple[int, ...], fortran: bool) -> np.ndarray:
    if not isinstance(buf, (bytes, bytearray)):
        raise UnsafePickleError(f"array data is a {type(buf).__name__}, not bytes")
    count = math.prod(shape)
    if count * dtype.itemsize != len(buf):
        raise CheckpointError(f"array data of {len(buf)} bytes does not fill the declared shape {short_repr(shape)} of "
                              f"{dtype} ({count * dtype.itemsize} bytes): corrupt, or a memory bomb")
    flat = np.frombuffer(buf, dtype=dtype, count=count)
    array = flat.reshape(shape, order="F" if fortran else "C")
    fresh = FRESH_BUFFERS.get()
    if (fresh is not None and fresh.get(id(buf)) is buf and array.dtype.isnative and array.flags.writeable
            and array.flags.aligned):
        del fresh[id(buf)]  # adopted: any other array from this buffer is a copy
        return array
    return _native_copy(array)


class ArraySpec:
    """What ``numpy.core.multiarray._reconstruct`` gives inside the pickle: an empty placeholder that its ``BUILD``
    state fills with a validated array (data must exactly fill the declared shape)."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        object.__setattr__(self, "array", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError("refusing to set attributes on an array")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError(f"bad array state {short_repr(state)}")
        if len(state) == 5:
            if type(state[0]) is not int or state[0] != 1:
                raise UnsafePickleError(f"unsupported array state version {short_repr(state[0])}")
            state = state[1:]
        shape, dtype, fortran, data = state
        if not isinstance(fortran, (bool, int)):
            raise UnsafePickleError("bad array order flag")
        array = _array_from_bytes(data, _resolve_dtype(dtype), check_shape(shape), bool(fortran))
        object.__setattr__(self, "array", array)


class NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: only ``_reconstruct`` may receive it; it cannot be called."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("refusing to call numpy.ndarray directly (allocates memory the file does not hold)")

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError("refusing to set attributes on numpy.ndarray")


NDARRAY = NdarrayToken()


def safe_dtype(obj: Any, align: Any = False, copy: Any = False) -> DTypeSpec:
    if not isinstance(obj, str) or len(obj) > 8:
        raise UnsafePickleError(f"numpy.dtype called with {short_repr(obj)}, not a short type code")
    if not isinstance(align, bool) or not isinstance(copy, bool):
        raise UnsafePickleError("numpy.dtype called with non-boolean flags")
    try:
        dtype = np.dtype(obj)
    except (TypeError, ValueError):
        raise UnsafePickleError(f"unknown numpy dtype {short_repr(obj)}") from None
    return DTypeSpec(check_dtype(dtype))


def safe_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> ArraySpec:
    if subtype is not NDARRAY:
        raise UnsafePickleError(f"refusing to rebuild an array of type {short_repr(subtype)}")
    shape = check_shape(shape)
    if math.prod(shape) > _MAX_PREALLOCATED:
        raise UnsafePickleError(f"refusing to pre-allocate an array of shape {short_repr(shape)}")
    if not isinstance(dtype_code, (bytes, str)) or len(dtype_code) > 8:
        raise UnsafePickleError("bad dtype code in array reconstruction")
    return ArraySpec()


def safe_scalar(dtype: Any, data: Any = None) -> np.ndarray:
    dtype = _resolve_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafePickleError("bad numpy scalar payload")
    return _native_copy(np.frombuffer(data, dtype=dtype).reshape(()))


def safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> np.ndarray:
    if axis_order is not None or order not in ("C", "F", "A", "K"):
        raise UnsafePickleError("unsupported memory layout in numpy _frombuffer")
    return _array_from_bytes(buf, _resolve_dtype(dtype), check_shape(shape), order == "F")


def _latin1_bytes(text: str) -> bytes:
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise CheckpointError("a latin-1 byte string holds characters beyond U+00FF (corrupt pickle)") from None


def latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as `_codecs.encode(str, 'latin1')`.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refusing _codecs.encode with arguments other than (str, 'latin1')")
    return _latin1_bytes(text)


def safe_bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    # Only copies of data present in the file: bytearray(n) would allocate n zero bytes from nothing.
    if isinstance(data, (bytes, bytearray)) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return bytearray(_latin1_bytes(data))
    raise UnsafePickleError("refusing bytearray() of anything but bytes or a latin-1 string")


def empty_bytes(*args: Any) -> bytes:
    # Protocol-2 pickles written by Python 3 store an empty bytes object as `bytes()`.
    if args:
        raise UnsafePickleError("refusing bytes() with arguments")
    return b""
