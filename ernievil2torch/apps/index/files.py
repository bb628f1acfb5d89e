"""The photo files an index follows: finding them under the roots, their stable ids, content hashes, and the facts
read from their headers (size in pixels, EXIF capture time).

A row's id is derived from where the file is (its root and its path inside), never from a counter, so the same
library indexed twice, or re-indexed after a crash, gets the same ids: every write can be an idempotent upsert.
"""
from __future__ import annotations

import calendar
import hashlib
import io
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

#: File kinds indexed: JPEG, PNG, WebP, and the HEIC/HEIF files phones write (read with pillow-heif).
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")
#: EXIF tags of the capture time, most specific first (DateTimeOriginal, DateTimeDigitized in the Exif IFD; then
#: the IFD0 DateTime, which editors rewrite).
_EXIF_IFD, _TAKEN_TAGS, _IFD0_DATETIME = 0x8769, (0x9003, 0x9004), 0x0132
HASH_CHUNK = 1 << 20


def register_heif() -> bool:
    """Teach Pillow to open HEIC/HEIF (pillow-heif); False when pillow-heif is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


@dataclass(frozen=True)
class PhotoFile:
    """One file found under a root: ``root`` (absolute, resolved), ``path`` (relative, ``/``-separated)."""

    root: str
    path: str
    size: int
    mtime_ns: int

    @property
    def id(self) -> str:
        return photo_id(self.root, self.path)

    @property
    def absolute(self) -> Path:
        return Path(self.root) / self.path

    @property
    def folders(self) -> List[str]:
        """The folders it is in, relative to its root, outermost first ('' is the root itself)."""
        return [""] + folder_and_above(self.path.rpartition("/")[0])


def folder_and_above(folder: str) -> List[str]:
    """``folder`` (relative, ``/``-separated) and the folders above it, outermost first; none for the root ('')."""
    parts = folder.split("/") if folder else []
    return ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]


def photo_id(root: str, path: str) -> str:
    """The stable id of the file at ``path`` under ``root``: 32 hex digits of SHA-256 over both."""
    return hashlib.sha256(f"{root}\x00{path}".encode("utf-8", "surrogateescape")).hexdigest()[:32]


def scan(roots: Sequence[Path], skip: Sequence[Path] = ()) -> Iterator[PhotoFile]:
    """Every photo file (by extension, any case) under each root, sorted by path; symlinks are not followed (a
    link could lead out of the root or into a loop), hidden folders (``.name``) and the folders in ``skip`` (the
    database and its thumbnail cache, when they sit inside a photo folder) are skipped."""
    skipped = {os.path.realpath(path) for path in skip}
    for root in roots:
        base = str(root)
        found = []
        for folder, subfolders, names in os.walk(base, followlinks=False):
            subfolders[:] = sorted(name for name in subfolders if not name.startswith(".")
                                   and os.path.realpath(os.path.join(folder, name)) not in skipped)
            for name in names:
                if name.startswith(".") or os.path.splitext(name)[1].lower() not in PHOTO_EXTENSIONS:
                    continue
                full = os.path.join(folder, name)
                try:
                    stat = os.lstat(full)
                except OSError:
                    continue  # vanished while listing
                if not os.path.stat.S_ISREG(stat.st_mode):
                    continue
                relative = os.path.relpath(full, base).replace(os.sep, "/")
                found.append(PhotoFile(base, relative, stat.st_size, stat.st_mtime_ns))
        yield from sorted(found, key=lambda item: item.path)


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PhotoFacts:
    """What the header says: size in pixels (as displayed: EXIF rotation applied) and the capture time."""

    width: int
    height: int
    taken: Optional[str]  # ISO 8601, the camera's local time, no zone (EXIF 2.2 records none)
    taken_ts: Optional[int]  # the same read as UTC, in seconds: what date-range filters compare


def read_facts(data: bytes) -> PhotoFacts:
    """:class:`PhotoFacts` of an encoded photo (raises what Pillow raises for a file it cannot read)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        exif = image.getexif()
        if exif.get(0x0112) in (5, 6, 7, 8):  # rotated by 90 or 270 degrees when shown
            width, height = height, width
        taken = None
        sub = exif.get_ifd(_EXIF_IFD)
        for value in [sub.get(tag) for tag in _TAKEN_TAGS] + [exif.get(_IFD0_DATETIME)]:
            taken = parse_exif_time(value)
            if taken is not None:
                break
    if taken is None:
        return PhotoFacts(width, height, None, None)
    return PhotoFacts(width, height, taken.isoformat(), calendar.timegm(taken.timetuple()))


def parse_exif_time(value: object) -> Optional[datetime]:
    """An EXIF ``YYYY:MM:DD HH:MM:SS`` value as a datetime; None for a missing, blank or malformed one."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def by_hash(rows: Dict[str, dict]) -> Dict[str, List[str]]:
    """Row ids grouped by content hash (metadata ``sha256``)."""
    groups: Dict[str, List[str]] = {}
    for row_id, metadata in rows.items():
        groups.setdefault(metadata.get("sha256", ""), []).append(row_id)
    return groups


#: The keys of a file record (:func:`file_record`): what a row says about its file, besides the model.
RECORD_KEYS = ("root", "path", "size", "mtime_ns", "sha256", "width", "height", "taken", "taken_ts")


def file_record(root: str, path: str) -> Dict[str, object]:
    """What an index row says about the file at ``path`` (relative, ``/``-separated) under ``root`` (absolute,
    resolved): :data:`RECORD_KEYS`. ``embed`` writes one per image so that ``index --from_embeddings`` can load
    its vectors as rows equal to a folder run's. The size and mtime are read before the content, as a folder run
    does, so a file rewritten meanwhile looks changed to the next run. Raises ``OSError`` when the file cannot be
    read and what Pillow raises when its header cannot be parsed."""
    full = Path(root) / path
    stat = os.lstat(full)
    data = full.read_bytes()
    facts = read_facts(data)
    return {"root": root, "path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": hashlib.sha256(data).hexdigest(), "width": facts.width, "height": facts.height,
            "taken": facts.taken, "taken_ts": facts.taken_ts}


def is_followed(path: str) -> bool:
    """Whether a folder run follows a file at ``path`` (relative to its root): a photo extension and no hidden
    part, as :func:`scan` decides (symlinks, which it skips too, are for the caller's ``lstat`` to see)."""
    parts = path.split("/")
    return (os.path.splitext(parts[-1])[1].lower() in PHOTO_EXTENSIONS
            and not any(part.startswith(".") for part in parts))
