"""The ``.pdparams`` format: read without Paddle and without running arbitrary pickle code; write it plainly.

A ``.pdparams`` is a pickle of ``{name: numpy.ndarray}``. :func:`load_pdparams` reads it with the restricted
unpickler (:mod:`~ernievil2torch.conversion.unpickler`), which resolves only the handful of globals numpy arrays are
rebuilt from, each behind a validating shim (:mod:`~ernievil2torch.conversion.pickle_shims`), bounds every read by
the file's size and hashes the bytes on the way (:mod:`~ernievil2torch.conversion.streams`), then applies Paddle's
state-dict conventions (:mod:`~ernievil2torch.conversion.paddle_state`). :func:`save_pdparams` writes one.
"""
from __future__ import annotations

import io
import os
import pickle
import stat
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from ..errors import CheckpointError
from ..storage.atomic import atomic_file
from .paddle_state import BIG_PARAM_KEY, STRUCTURE_KEY, normalise_state
from .pickle_shims import ALLOWED_DTYPES
from .streams import BoundedReader, HashingReader
from .unpickler import MALFORMED_PICKLE_ERRORS, RestrictedUnpickler, raised_by_stdlib_unpickler

__all__ = ["BIG_PARAM_KEY", "MALFORMED_PICKLE_ERRORS", "STRUCTURE_KEY", "load_pdparams", "save_pdparams"]


def describe_non_pickle(head: bytes) -> str:
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
        raise CheckpointError(f"{label}: {describe_non_pickle(head)}")
    hashing = HashingReader(stream, hasher) if hasher is not None else None
    source = hashing or stream
    if available_bytes is not None:
        source = BoundedReader(source, available_bytes)
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
        return normalise_state(obj, available_bytes)
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
        if not isinstance(key, str) or type(array) is not np.ndarray or array.dtype not in ALLOWED_DTYPES:
            raise TypeError(f"{key!r}: only plain numeric numpy arrays under string keys are written")
        payload[key] = array
    payload[STRUCTURE_KEY] = {k: k for k in state}
    path = Path(path)
    with atomic_file(path) as handle:
        pickle.dump(payload, handle, protocol=protocol)
    return path
