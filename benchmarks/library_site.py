"""The photo library that ``python benchmarks/serve_load.py --library`` serves: built through the real paths and
kept under ``--workdir`` (building a million rows takes long; a later run at the same size reuses it).

What is built, deterministically (seeded):

* **Vectors**: ``rows`` unit vectors with the cluster structure of real photo embeddings, drawn as
  ``benchmarks/milvus_ann.py`` draws them (:func:`milvus_ann.clustered`: ``ALBUMS`` centres, Zipf-sized clusters,
  cosine ~0.75 to the own centre). Each cluster is one album: the photos of one album look alike, as they do.
* **Files**: album ``a`` is the folder ``YEAR/album_AAAA`` (YEAR: the year its photos were taken), so a search
  filtered by one album or by a year is selective and nested. Every row is a file on disk (``index
  --from_embeddings`` looks at each file again): the first ``real`` rows are real small JPEGs with an EXIF capture
  time (thumbnails and image uploads need real photos), the others stub files of a few bytes with a
  ``.jpg`` name (what they hold is never decoded: their size, mtime and hash are recorded as ``embed`` would).
* **Dates**: an album's photos are taken within ``ALBUM_DAYS`` days of its start, the starts uniform over ten years
  (from ``milvus_ann.START_TS``); a real JPEG's EXIF time is its row's.
* **An ``embed`` output** (``write_embed_output``: embeddings.npy, ids.txt, files.jsonl, manifest with the model's
  hash), made for a synthetic model (``serve_load.build_model``), loaded by the real command ``ernievil2 index MODEL
  --from_embeddings OUT --db photos.db`` (or ``--uri`` against a ``milvus-lite server`` process).

The filters the load run sends are picked from the data: the album and the date range (``FILTER_DAYS`` long) whose
row counts come nearest to ``FILTER_SHARE`` of the rows; their exact counts are reported.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from PIL import Image

from milvus_ann import START_TS, YEARS, clustered
from repo import load_file

ALBUMS = 1000
SPREAD = 0.75
ALBUM_DAYS = 20
FILTER_SHARE = 0.01
FILTER_DAYS = 36
CHUNK = 10_000
#: Bumped when what is built changes: a cached site of another version is rebuilt.
SITE_VERSION = 1
SITE_FILE = "site.json"
DAY = 86_400


@dataclass
class Site:
    """A built library: where its parts are and the facts the load run needs (ids to ask for, filters)."""

    folder: str
    size: str
    rows: int
    dim: int
    real: int
    version: int = SITE_VERSION
    real_ids: List[str] = field(default_factory=list)  # ids of the real JPEG rows (thumbnails)
    real_paths: List[str] = field(default_factory=list)  # their paths under photos/ (uploads)
    sample_ids: List[str] = field(default_factory=list)  # ids of rows across the library (more like this)
    album: str = ""  # the folder filter
    album_rows: int = 0
    date_from: str = ""  # the date filter, inclusive days
    date_to: str = ""
    date_rows: int = 0
    build_seconds: float = 0.0
    loads: Dict[str, dict] = field(default_factory=dict)  # "db" / "uri" -> seconds, peak RSS, the command
    built_now: bool = False  # built by this run (not a cached site)

    def part(self, name: str) -> Path:
        """A part of the site: ``model``, ``photos`` (the files), ``embeddings`` (the embed output), ``photos.db``
        (the embedded database of ``--db``), ``server.db`` (the ``milvus-lite server`` data folder of ``--uri``),
        ``thumbs`` (the service's thumbnail cache)."""
        return Path(self.folder) / name

    def save(self) -> None:
        (Path(self.folder) / SITE_FILE).write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")


def site_folder(workdir: Path, size: str, rows: int, real: int) -> Path:
    return workdir / f"library-{size}-{rows}-{real}"


def cached_site(folder: Path) -> "Site | None":
    """The site built in ``folder`` (None when none was finished there, or one of another version)."""
    try:
        facts = json.loads((folder / SITE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Site(**dict(facts, built_now=False)) if facts.get("version") == SITE_VERSION else None


def build_library(workdir: Path, size: str, rows: int, real: int, log) -> Site:
    """The site of ``rows`` rows (``real`` of them real JPEGs) for a ``size`` model under ``workdir``: the cached
    one, or built anew (a half-built folder is removed first)."""
    from serve_load import build_model

    from ernievil2torch.apps.index.indexer import model_dim
    from ernievil2torch.apps.index.model_hash import model_fingerprint

    folder = site_folder(workdir, size, rows, real)
    site = cached_site(folder)
    if site is not None:
        log(f"reusing the library built in {folder} ({site.build_seconds:.0f} s to build)")
        return site
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    model = build_model(folder, size)
    site = Site(str(folder.resolve()), size, rows, model_dim(model), min(real, rows))
    log(f"writing {rows} files ({site.real} real JPEGs) and an embed output of {site.dim}-d rows in {folder}")
    _write_library(site, model_fingerprint(model), log)
    site.build_seconds = time.perf_counter() - started
    site.built_now = True
    site.save()
    log(f"built in {site.build_seconds:.0f} s")
    return site


# ---- what is written --------------------------------------------------------------------------------------------
def _vector_chunks(rows: int, dim: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``(unit vectors, album of each)`` in row order, ``CHUNK`` rows at a time; the same every call (seeded)."""
    rng = np.random.default_rng(18)
    centres = rng.standard_normal((ALBUMS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for start in range(0, rows, CHUNK):
        yield clustered(rng, min(CHUNK, rows - start), dim, centres, SPREAD)


def _album_folders(rng: np.random.Generator) -> Tuple[np.ndarray, List[str]]:
    """Each album's first day (a timestamp) and folder ``YEAR/album_AAAA``."""
    starts = START_TS + rng.integers(0, YEARS - ALBUM_DAYS * DAY, ALBUMS)
    folders = [f"{_utc(ts).year}/album_{album:04d}" for album, ts in enumerate(starts)]
    return starts, folders


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc)


def _real_jpeg(seed: int, taken: datetime) -> bytes:
    """A 480x360 JPEG (a colour gradient, a disc and noise chosen by ``seed``) with its EXIF capture time."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.2, 1.0, 480, dtype=np.float32)[None, :, None] * rng.integers(60, 256, 3)
    yy, xx = np.mgrid[0:360, 0:480]
    disc = ((xx - rng.integers(100, 380)) ** 2 + (yy - rng.integers(80, 280)) ** 2) < rng.integers(40, 120) ** 2
    pixels = np.where(disc[..., None], rng.integers(0, 256, 3), ramp) + rng.normal(0, 12, (360, 480, 3))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85, exif=exif)
    return buffer.getvalue()


def _write_library(site: Site, model_hash: str, log) -> None:
    from ernievil2torch.apps.index.files import PhotoFile, file_record
    from ernievil2torch.storage.embeddings import write_embed_output

    rng = np.random.default_rng(1018)
    starts, folders = _album_folders(rng)
    photos = site.part("photos")
    photos.mkdir()
    root = str(photos.resolve())
    for folder in set(folders):
        (photos / folder).mkdir(parents=True, exist_ok=True)
    paths, records, albums, taken_ts = [], [], [], []
    for start, (_, labels) in zip(range(0, site.rows, CHUNK), _vector_chunks(site.rows, site.dim)):
        offsets = rng.integers(0, ALBUM_DAYS * DAY, len(labels))
        for row, (album, offset) in enumerate(zip(labels.tolist(), offsets.tolist()), start):
            ts = int(starts[album]) + offset
            path = f"{folders[album]}/IMG_{row:07d}.jpg"
            full = photos / path
            if row < site.real:
                full.write_bytes(_real_jpeg(row, _utc(ts)))
                records.append(file_record(root, path))
                site.real_ids.append(PhotoFile(root, path, 0, 0).id)
                site.real_paths.append(path)
            else:
                content = row.to_bytes(4, "little")
                full.write_bytes(content)
                stat = full.lstat()
                records.append({"root": root, "path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                "sha256": hashlib.sha256(content).hexdigest(), "width": 4000, "height": 3000,
                                "taken": _utc(ts).replace(tzinfo=None).isoformat(), "taken_ts": ts})
            paths.append(path)
            albums.append(album)
            taken_ts.append(ts)
        log(f"  {min(start + CHUNK, site.rows)} / {site.rows} files")
    picks = np.random.default_rng(5).choice(site.rows, size=min(64, site.rows), replace=False)
    site.sample_ids = [PhotoFile(root, paths[i], 0, 0).id for i in picks.tolist()]
    _pick_filters(site, np.asarray(albums), np.asarray(taken_ts), folders)
    log("writing the embed output")
    site.part("embeddings").mkdir()
    vectors = (chunk for chunk, _ in _vector_chunks(site.rows, site.dim))
    write_embed_output(site.part("embeddings"), vectors, paths, [], "image", site.dim, np.float32, records=records,
                       normalized=True, model_name="model", model_hash=model_hash, model_dir=str(site.part("model")))


def _pick_filters(site: Site, albums: np.ndarray, taken_ts: np.ndarray, folders: List[str]) -> None:
    """The album and the ``FILTER_DAYS``-day range whose row counts are nearest ``FILTER_SHARE`` of the rows."""
    target = FILTER_SHARE * site.rows
    counts = np.bincount(albums, minlength=ALBUMS)
    album = int(np.argmin(np.abs(counts - target)))
    site.album, site.album_rows = folders[album], int(counts[album])
    first_day = START_TS - START_TS % DAY
    days = np.sort(taken_ts)
    candidates = np.arange(first_day, START_TS + YEARS, 7 * DAY)  # weekly starts over the ten years
    held = (np.searchsorted(days, candidates + FILTER_DAYS * DAY, side="left")
            - np.searchsorted(days, candidates, side="left"))
    best = int(np.argmin(np.abs(held - target)))
    site.date_from = _utc(candidates[best]).date().isoformat()
    site.date_to = _utc(candidates[best] + (FILTER_DAYS - 1) * DAY).date().isoformat()
    site.date_rows = int(held[best])


# ---- loading ----------------------------------------------------------------------------------------------------
def load_library(site: Site, key: str, target: Sequence[str], log) -> dict:
    """Load the site's embed output with ``ernievil2 index MODEL --from_embeddings OUT *target`` (``target``:
    ``--db PATH`` or ``--uri URL``) in a child process, unless ``site.loads[key]`` records a finished load there.
    Returns (and keeps in the site) the load's seconds and the loader's peak resident memory (the kernel's count,
    from ``wait4``). A load cut short is finished by the next call (the loader resumes)."""
    if key in site.loads:
        log(f"the library is already loaded ({key}: {site.loads[key]['seconds']:.0f} s when it was)")
        return site.loads[key]
    arguments = ["index", str(site.part("model")), "--from_embeddings", str(site.part("embeddings")), *target]
    log("loading: ernievil2 " + " ".join(arguments))
    started = time.perf_counter()
    process = subprocess.Popen(load_file("tests/serve_helpers.py").console_command(*arguments), stdout=sys.stderr)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"the load failed (exit status {process.returncode}): see its output above")
    site.loads[key] = {"seconds": time.perf_counter() - started, "peak_rss": usage.ru_maxrss * 1024,
                       "command": "ernievil2 " + " ".join(arguments[:2] + ["--from_embeddings", "OUT", target[0],
                                                                            "..."])}
    site.save()
    return dict(site.loads[key], now=True)
