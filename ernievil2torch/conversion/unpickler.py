"""The restricted unpickler: a pickle may name only the allow-listed globals, each behind a validating shim
(:mod:`~ernievil2torch.conversion.pickle_shims`); anything else is refused by name and nothing from it runs.
"""
from __future__ import annotations

import collections
import inspect
import pickle
import struct
from typing import Any, Callable, Dict, Optional

from ..errors import CheckpointError, UnsafePickleError
from .pickle_shims import (FRESH_BUFFERS, NDARRAY, empty_bytes, latin1_encode, safe_bytearray, safe_dtype,
                           safe_frombuffer, safe_reconstruct, safe_scalar, short_repr)

# The reader's own message for data that ends inside an opcode (the stdlib unpickler's errors are wrapped likewise).
_TRUNCATED = "corrupt or truncated pickle (the data ends inside an opcode)"
# Read size for byte strings from a stream whose length is unknown (no allocation beyond what arrives).
_STREAM_CHUNK = 1 << 24
# Byte strings at least this long are read into an adoptable bytearray; shorter ones stay ``bytes`` as usual.
_ADOPT_MIN_BYTES = 1 << 16
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
    _ALLOWED_GLOBALS[(f"{_numpy_core}.multiarray", "_reconstruct")] = _Shim(safe_reconstruct)
    _ALLOWED_GLOBALS[(f"{_numpy_core}.multiarray", "scalar")] = _Shim(safe_scalar)
    _ALLOWED_GLOBALS[(f"{_numpy_core}.numeric", "_frombuffer")] = _Shim(safe_frombuffer)
_ALLOWED_GLOBALS.update({
    ("numpy", "ndarray"): NDARRAY,   # only ever accepted as _reconstruct's first argument
    ("numpy", "dtype"): _Shim(safe_dtype),
    # built-in types cannot be modified, and creating empty containers costs nothing
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "bytearray"): _Shim(safe_bytearray),
    ("_codecs", "encode"): _Shim(latin1_encode),
    ("builtins", "bytes"): _Shim(empty_bytes),
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
                f"refusing to load global {short_repr(f'{module}.{name}')}: a Paddle state dict holds only numpy "
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
        token = FRESH_BUFFERS.set(self._fresh)
        try:
            return super().load()
        finally:
            FRESH_BUFFERS.reset(token)
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
        # Array data: read into a bytearray the array can adopt (see FRESH_BUFFERS) instead of a bytes object it
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
# tests/conversion/test_reader_errors.py makes each of them happen. They count as a damaged file only when the
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
