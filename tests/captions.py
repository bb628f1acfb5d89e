"""Caption datasets the tests write themselves, and an eager reference reader of the COCO-CN TSV format.

``write_caption_dataset`` draws 8 images with 1-3 Chinese captions each in both dataset formats;
``eager_coco_cn`` reads a TSV the simplest way (every image decoded up front, the file in text mode), as the
reference the streaming reader is compared with.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Dict, Hashable, List

import numpy as np
from PIL import Image

WORDS = list("一二三四五六七八九十猫狗鸟鱼马牛羊红绿蓝的照片只张")


def write_caption_dataset(root: Path) -> Path:
    """8 generated images, 1-3 captions each, as a COCO-CN style TSV (``test.coco_cn.data``, captions of one image
    not adjacent) and as an image folder ``imgs`` with ``captions.jsonl`` and ``captions.tsv`` (image<TAB>caption
    header)."""
    rng = np.random.default_rng(3)
    tsv_lines, jsonl_lines, tsv2 = [], [], ["image\tcaption"]
    (root / "imgs").mkdir()
    for i in range(8):
        arr = rng.integers(0, 256, (int(rng.integers(200, 300)), int(rng.integers(200, 300)), 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG")
        (root / "imgs" / f"{i}.jpg").write_bytes(buf.getvalue())
        b64 = base64.b64encode(buf.getvalue()).decode()
        caps = ["".join(rng.choice(WORDS, int(rng.integers(2, 9)))) for _ in range(1 + i % 3)]
        for c in caps:
            tsv_lines.append(f"{c}\t{1000 + i}\t{b64}")
            tsv2.append(f"{i}.jpg\t{c}")
        jsonl_lines.append(json.dumps({"image": f"{i}.jpg", "captions": caps}, ensure_ascii=False))
    order = rng.permutation(len(tsv_lines))  # captions of one image need not be adjacent
    (root / "test.coco_cn.data").write_text("\n".join(tsv_lines[j] for j in order) + "\n", encoding="utf-8")
    (root / "captions.jsonl").write_text("\n".join(jsonl_lines) + "\n", encoding="utf-8")
    (root / "captions.tsv").write_text("\n".join(tsv2) + "\n", encoding="utf-8")
    return root


# ---- an eager reference: every image decoded up front, the file read in text mode --------------------------
def eager_coco_cn(path: Path) -> Dict[str, List[Any]]:
    texts, links, images, ids, index = [], [], [], [], {}  # type: ignore[var-annotated]
    with open(path, encoding="utf-8") as handle:
        for num, line in enumerate(handle, 1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            text, b64 = fields[0], fields[-1]
            image_id = fields[1] if len(fields) >= 3 else f"line{num}"
            key: Hashable = (image_id, hashlib.sha1(b64.encode("ascii", "replace")).hexdigest())
            if key not in index:
                index[key] = len(images)
                images.append(base64.b64decode(b64))
                ids.append(image_id)
            texts.append(text)
            links.append(index[key])
    return {"texts": texts, "text_image": links, "images": images, "image_ids": ids}
