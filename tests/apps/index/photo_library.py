"""A small photo library for the index tests: distinct JPEG/PNG/WebP/HEIC files, some with EXIF capture times, and
helpers that read back what an index holds."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from ernievil2torch.apps.index.catalog import Catalog, active_collection
from ernievil2torch.retrieval.milvus import connect, release


def photo_bytes(seed: int, fmt: str = "JPEG", taken: str = None, size=(40, 30)) -> bytes:
    """A distinct picture (a colour field plus noise chosen by ``seed``) encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.integers(-40, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    out = io.BytesIO()
    kwargs = {}
    if taken is not None:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = taken
        kwargs["exif"] = exif
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def write(path: Path, data: bytes, mtime: int = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))
    return path


def make_library(root: Path) -> Path:
    """Seven photos in three folders (JPEG with and without EXIF time, PNG, WebP, HEIC) and one broken file."""
    write(root / "2023" / "trip" / "a.jpg", photo_bytes(1, taken="2023:07:01 10:00:00"), 1_700_000_000_000_000_000)
    write(root / "2023" / "trip" / "b.jpg", photo_bytes(2, taken="2023:07:02 11:30:00"), 1_700_000_001_000_000_000)
    write(root / "2023" / "c.png", photo_bytes(3, "PNG"), 1_700_000_002_000_000_000)
    write(root / "2024" / "d.webp", photo_bytes(4, "WEBP"), 1_700_000_003_000_000_000)
    write(root / "2024" / "e.heic", photo_bytes(5, "HEIF"), 1_700_000_004_000_000_000)
    write(root / "2024" / "f.jpg", photo_bytes(6, taken="2024:01:15 08:00:00"), 1_700_000_005_000_000_000)
    write(root / "g.jpeg", photo_bytes(7), 1_700_000_006_000_000_000)
    write(root / "broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", 1_700_000_007_000_000_000)
    (root / "notes.txt").write_text("not a photo")
    return root


def index_rows(db: str) -> Tuple[str, Dict[str, dict], Dict[str, np.ndarray]]:
    """(active collection, id -> metadata, id -> vector) of the index at ``db`` (released afterwards)."""
    client = connect(db)
    try:
        active = active_collection(client)
        client.load_collection(active)
        rows = client.query(active, filter="", output_fields=["metadata", "vector"], limit=10_000,
                            consistency_level="Strong")
    finally:
        client.close()
        release(db)
    assert len({row["id"] for row in rows}) == len(rows), "duplicate rows under one id"
    return (active, {row["id"]: row["metadata"] for row in rows},
            {row["id"]: np.asarray(row["vector"], np.float32) for row in rows})


def listed_folders(db: str) -> List[str]:
    """The folder list the writers keep beside the active collection of ``db`` (released afterwards)."""
    catalog = Catalog.open(db)
    try:
        return catalog.folder_list(catalog.active).read()
    finally:
        catalog.close()
