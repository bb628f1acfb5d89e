"""``eval`` reads its images as it encodes them: over a COCO-CN TSV of photo-sized images (each >= 100 KB), the peak
memory of 2,000 captions/images exceeds that of 500 by at most the extra features plus 50 MB, and the metrics equal
those of the eager path (every image decoded up front) on the same file.

Each run is a fresh process that reports its own peak resident size (``ru_maxrss``), so the interpreter, torch and
the model cancel out of the difference. The runs fix glibc's mmap threshold at its default, 128 KiB
(``MALLOC_MMAP_THRESHOLD_``): left adaptive, glibc raises it after the first large block is freed, and where the
blocks of the next thousands of transient decodes then land makes the peak of two identical runs of the same file
differ by up to ~75 MB. Fixed, the peak measures the memory that live objects hold, which is what grows when a
reader keeps images.
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ernievil2torch.config import tiny224_config
from ernievil2torch.data.inputs import Item
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.processing.tokenizer import ErnieViL2Tokenizer
from ernievil2torch.retrieval.metrics import retrieval_metrics
from ernievil2torch.runtime.encoding import encode_items
from ernievil2torch.verify.synthetic import random_model

from captions import WORDS, eager_coco_cn

ROOT = Path(__file__).resolve().parents[2]
SMALL, LARGE, BATCH = 500, 2000, 32
ALLOWANCE = 50 * 2 ** 20

CHILD = """
import json, resource, sys
from ernievil2torch.apps.retrieval import evaluate
result = evaluate(sys.argv[1], sys.argv[2], batch_size=int(sys.argv[3]), num_workers=0, device="cpu",
                  progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
print(json.dumps({"peak": peak, "metrics": result.metrics}))
"""

EAGER_CHILD = """
import json, sys
sys.path[:0] = [sys.argv[4], sys.argv[4] + '/..']
from test_data_eval_memory import eager_metrics
print(json.dumps({"metrics": eager_metrics(sys.argv[1], sys.argv[2], int(sys.argv[3]))}))
"""


def noise_jpeg(rng: np.random.Generator) -> bytes:
    """A 224 x 240 JPEG of noise, about 105 KB: no resize before the centre crop, so it decodes fast."""
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (240, 224, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=100)
    return buf.getvalue()


def write_tsv(path: Path, count: int, pool: list, rng: np.random.Generator) -> int:
    """``count`` lines, one caption per image, distinct image ids; the images' bytes come from ``pool``. Returns
    the decoded image bytes the file holds."""
    encoded = [base64.b64encode(image).decode("ascii") for image in pool]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            caption = "".join(rng.choice(WORDS, int(rng.integers(2, 9))))
            handle.write(f"{caption}\t{i}\t{encoded[i % len(pool)]}\n")
    return sum(len(pool[i % len(pool)]) for i in range(count))


def run_child(code: str, *args: object) -> dict:
    """Run ``code`` in a fresh interpreter on one thread (several compete for few cores when tests run in
    parallel) with a fixed mmap threshold (see the module docstring); its last stdout line is JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_=str(128 * 1024))
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def eager_metrics(model_dir: str, data: str, batch_size: int) -> dict:
    """The eager path: every image of the file decoded into memory first, then the same encoding and metrics."""
    eager = eager_coco_cn(Path(data))
    model = ErnieViL2.from_pretrained(model_dir)
    tokenizer = ErnieViL2Tokenizer(Path(model_dir) / "vocab.txt")
    images, _, failed = encode_items(model, [Item(i, b) for i, b in zip(eager["image_ids"], eager["images"])],
                                     "image", batch_size)
    texts, _, failed_t = encode_items(model, [Item(str(t), x) for t, x in enumerate(eager["texts"])], "text",
                                      batch_size, tokenizer=tokenizer)
    assert not failed and not failed_t
    return retrieval_metrics(texts, images, eager["text_image"])


def test_eval_memory_does_not_grow_with_the_images(tmp_path):
    model_dir = tmp_path / "model"
    random_model(tiny224_config(), seed=7).save_pretrained(model_dir)
    tokens = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["[UNK]"]
    (model_dir / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    pool = [noise_jpeg(rng) for _ in range(64)]
    assert min(len(image) for image in pool) >= 100_000
    small, large = tmp_path / "small.data", tmp_path / "large.data"
    small_bytes = write_tsv(small, SMALL, pool, np.random.default_rng(1))
    large_bytes = write_tsv(large, LARGE, pool, np.random.default_rng(2))
    # Holding the extra images would break the bound many times over: the test can fail.
    assert large_bytes - small_bytes > 2 * ALLOWANCE

    got_small, got_large = (run_child(CHILD, model_dir, data, BATCH) for data in (small, large))
    dim = tiny224_config().text.hidden_size + tiny224_config().vision.hidden_size  # one caption + one image
    extra_features = (LARGE - SMALL) * dim * 4
    growth = got_large["peak"] - got_small["peak"]
    assert growth <= extra_features + ALLOWANCE, (growth / 2 ** 20, extra_features / 2 ** 20)
    assert got_small["metrics"]["num_texts"] == SMALL and got_large["metrics"]["num_images"] == LARGE
    # the same file through the eager path (the smaller one: the encoding is the same code for both)
    assert got_small["metrics"] == run_child(EAGER_CHILD, model_dir, small, BATCH, Path(__file__).parent)["metrics"]
