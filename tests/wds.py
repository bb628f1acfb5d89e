"""webdataset shards for tests, written the way img2dataset writes them: ``00000.tar`` ... each holding
``KEY.jpg`` + ``KEY.txt`` + ``KEY.json`` per sample, keys ``000000000``, ``000000001``, ... across shards."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import List, Sequence, Tuple


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shards(pairs: Sequence[Tuple[bytes, str]], root: Path, per_shard: int, extension: str = "jpg"
                 ) -> List[Path]:
    """Write ``(encoded image, caption)`` pairs as shards of ``per_shard`` samples under ``root``; returns them."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for number, start in enumerate(range(0, len(pairs), per_shard)):
        path = root / f"{number:05d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(start, min(start + per_shard, len(pairs))):
                image, caption = pairs[index]
                key = f"{index:09d}"
                _add(tar, f"{key}.{extension}", image)
                _add(tar, f"{key}.txt", caption.encode("utf-8"))
                _add(tar, f"{key}.json", json.dumps({"key": key, "caption": caption, "status": "success"},
                                                    ensure_ascii=False).encode("utf-8"))
        shards.append(path)
    return shards


def write_folder(pairs: Sequence[Tuple[bytes, str]], root: Path, extension: str = "jpg") -> Path:
    """The same pairs in the caption_folder format: ``root/images/KEY.jpg`` + ``root/captions.jsonl``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (image, caption) in enumerate(pairs):
        name = f"{index:09d}.{extension}"
        (root / "images" / name).write_bytes(image)
        lines.append(json.dumps({"image": name, "caption": caption}, ensure_ascii=False))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "captions.jsonl"
