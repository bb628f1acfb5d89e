"""The COCO-CN style TSV (e.g. the official ``test.coco_cn.data``): ``text<TAB>image_id<TAB>base64 image`` per line.

One caption per line; an image is repeated on the line of each of its captions. As in the official reader, a line is
stripped and split on tabs: text = first field, image = last field, id = second field (``line<N>`` when there are
only two fields); blank lines are skipped. Lines end at ``\\n``, ``\\r\\n`` or ``\\r``, as Python's text files read
them. Two lines show the same image when both the id and the base64 text agree.

The reader scans the file once, keeping the captions, the links and, per image, where its base64 text lies in the
file (byte offset and length) and a CRC-32 of it. The base64 is decoded once while scanning, to refuse a bad image
up front, and again each time the image is asked for, from the bytes read at that place; the decoded bytes are never
kept.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
import zlib
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple, Union

from ..errors import InputError
from .readers import IndexedCaptions

_LONE_CR = re.compile(rb"\r(?!\n)")


def _lines_with_offsets(handle: IO[bytes]) -> Iterator[Tuple[int, bytes]]:
    """``(byte offset, line)`` of a binary file, lines split where universal newlines split them."""
    offset = 0
    for raw in handle:
        if b"\r" not in raw:
            yield offset, raw
        else:
            start = 0
            for match in _LONE_CR.finditer(raw):
                yield offset + start, raw[start:match.end()]
                start = match.end()
            if start < len(raw):
                yield offset + start, raw[start:]
        offset += len(raw)


def _decode_base64(b64: str, where: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{where}: bad base64 image ({exc})") from None


def _fields(line: bytes) -> List[str]:
    return line.decode("utf-8").strip().split("\t")


def _image_key(image_id: str, b64: str) -> Tuple[str, bytes]:
    """Two lines show the same image when this agrees: the id and a SHA-1 of the base64 text."""
    return image_id, hashlib.sha1(b64.encode("ascii", "replace")).digest()


class CocoCnTsvReader(IndexedCaptions):
    """``CocoCnTsvReader(path)``: the captions of a COCO-CN style TSV, its images read from the file on demand.

    Raises :class:`InputError` for a missing file, a line with fewer than two fields (the first such line), a bad
    base64 image or a file without captions; ``UnicodeDecodeError`` for a file that is not UTF-8, whichever line
    is the first bad one. :meth:`image` returns the encoded bytes.
    """

    format = "coco_cn_tsv"

    def __init__(self, path: Union[str, Path]) -> None:
        super().__init__()
        self.path = Path(path)
        self._offsets: List[int] = []  # per image: where its base64 text starts in the file
        self._lengths: List[int] = []  # ... its length in bytes
        self._checksums: List[int] = []  # ... and its CRC-32
        self._line_numbers: List[int] = []
        self._handle: Optional[IO[bytes]] = None
        self._buffer = bytearray()  # this process's buffer for one image's base64 text
        self._handle_pid = -1
        self._lock = threading.Lock()
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        first_error: Optional[InputError] = None
        with open(self.path, "rb") as handle:
            for num, (offset, raw) in enumerate(_lines_with_offsets(handle), 1):
                if first_error is None:
                    try:
                        self._read_line(num, offset, raw)
                    except InputError as exc:
                        first_error = exc
                else:  # a file that is not UTF-8 is reported as such, wherever its first bad line is
                    raw.decode("utf-8")
        if first_error is not None:
            raise first_error
        self._finish_index(str(path))

    def _read_line(self, num: int, offset: int, raw: bytes) -> None:
        fields = _fields(raw)
        if fields == [""]:
            return
        if len(fields) < 2:
            raise InputError(f"{self.path} line {num}: expected 'text<TAB>image_id<TAB>base64', got 1 field")
        text, b64 = fields[0], fields[-1]
        image_id = fields[1] if len(fields) >= 3 else f"line{num}"

        def remember() -> None:
            _decode_base64(b64, f"{self.path} line {num}")  # refused here unless ASCII base64 (see image())
            encoded = b64.encode("ascii")
            start = raw.rfind(encoded)  # the last field: only stripped whitespace follows it
            self._offsets.append(offset + start)
            self._lengths.append(len(encoded))
            self._checksums.append(zlib.crc32(encoded))
            self._line_numbers.append(num)

        self._add_caption(text, _image_key(image_id, b64), image_id, remember)

    def image(self, number: int) -> bytes:
        """The encoded bytes of image ``number``: its base64 text read from the file and decoded now.
        :class:`InputError` if the file no longer holds that text where it was when the file was scanned.

        The scan accepted only ASCII base64, for which decoding the bytes read equals decoding the text. The span is
        read into one buffer kept for the next image, so the only new allocation per image is the image's bytes:
        allocating and freeing two more blocks of that size per image fragments the heap until the process holds
        tens of megabytes per thousand images that it no longer uses."""
        length = self._lengths[number]
        with self._lock:
            handle = self._open()
            if len(self._buffer) < length:
                self._buffer = bytearray(length)
            encoded = memoryview(self._buffer)[:length]
            handle.seek(self._offsets[number])
            done = 0
            while done < length:
                got = handle.readinto(encoded[done:])
                if not got:
                    break
                done += got
            if done != length or zlib.crc32(encoded) != self._checksums[number]:
                raise InputError(f"{self.path} line {self._line_numbers[number]}: the file changed since it was "
                                 "read")
            return binascii.a2b_base64(encoded)

    def _open(self) -> IO[bytes]:
        """This process's handle on the file (a worker process opens its own)."""
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle, self._buffer = open(self.path, "rb", buffering=0), bytearray()
            self._handle_pid = os.getpid()
        return self._handle

    def close(self) -> None:
        """Close this process's handle (reopened if an image is asked for again)."""
        if self._handle is not None and self._handle_pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_handle=None, _handle_pid=-1, _lock=None, _buffer=bytearray())
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
