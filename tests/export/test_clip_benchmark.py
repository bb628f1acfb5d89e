"""CLIP_benchmark's own ``clip_benchmark eval`` (in ``.venv-openclip``, without our package) on ``wds/`` datasets
the project draws itself, with the open_clip package of a model: its zero-shot accuracy and retrieval recalls
equal what ``ernievil2 eval`` computes on the same data.

Like with like: CLIP_benchmark tokenizes through open_clip's ``HFTokenizer``, which cleans every text with ftfy
first (full-width punctuation becomes ASCII, other token ids), so our side reads a copy of each dataset whose texts
went through the same cleaning; both sides then see the same pixels (224 x 224 PNGs, which neither pipeline
resizes), the same token ids and features within 1e-5. Protocols: CLIP_benchmark's text->image recall@k is ours
(one image per caption); its image->text recall counts an image as found when any of its captions is in the top k,
as our ``grouped`` protocol does; ties are broken by ``torch.topk`` there and in the query's favour here (random
continuous features have none). Accuracy: top-1, top-5 and mean per-class recall, as CLIP_benchmark defines them.
What our eval gives on the texts as written is printed beside it.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest
import torch

from ernievil2torch.apps.retrieval import evaluate
from ernievil2torch.config import get_model_config
from ernievil2torch.data.demo import SHAPE_COLOURS, SHAPES
from ernievil2torch.export.registry import export_model
from ernievil2torch.processing import ErnieViL2Tokenizer
from ernievil2torch.verify.synthetic import random_model

from helpers import REPO_ROOT, openclip_python, shared_file
from hub_cache import HubCache
from shapes import random_shape_image

HUB_ID = "ernie-test/ernie-vil-2.0-clip-benchmark"
SIDE = 224
TEMPLATES = ["一张{c}的照片。", "这是一个{c}！", "图片里有一个{c}（画在浅色背景上）。"]


def _clean() -> Callable[[str], str]:
    spec = importlib.util.spec_from_file_location("open_clip_cleaning", REPO_ROOT / "benchmarks" / "open_clip_cleaning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.open_clip_clean


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.crop((0, 0, SIDE, SIDE)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_split(root: Path, samples: List[dict], per_shard: int) -> None:
    split = root / "test"
    split.mkdir(parents=True)
    shards = [samples[i:i + per_shard] for i in range(0, len(samples), per_shard)]
    for number, shard in enumerate(shards):
        with tarfile.open(split / f"{number}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for index, sample in enumerate(shard):
                for ext, data in sample.items():
                    info = tarfile.TarInfo(f"s{number:02d}{index:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (split / "nshards.txt").write_text(f"{len(shards)}\n")


def write_sets(root: Path, clean: Callable[[str], str] = lambda text: text) -> tuple:
    """The classification set (6 classes, 2 images each, shards of 7 and 5) and the retrieval set (10 images,
    2 captions each, shards of 6 and 4) under ``root``, every text passed through ``clean``."""
    rng = np.random.default_rng(0)
    colours = list(SHAPE_COLOURS)[:2]
    classes = [(shape, colour) for shape in SHAPES[:3] for colour in colours]
    classification = root / "classification"
    classification.mkdir(parents=True)
    (classification / "classnames.txt").write_text(
        "".join(clean(f"{colour}的{shape}") + "\n" for shape, colour in classes), encoding="utf-8")
    (classification / "zeroshot_classification_templates.txt").write_text(
        "".join(clean(t) + "\n" for t in TEMPLATES), encoding="utf-8")
    samples = [{"png": _png(random_shape_image(shape, SHAPE_COLOURS[colour], SIDE, rng)), "cls": str(c).encode()}
               for _ in range(2) for c, (shape, colour) in enumerate(classes)]
    _write_split(classification, samples, 7)

    retrieval = root / "retrieval"
    retrieval.mkdir()
    (retrieval / "dataset_type.txt").write_text("retrieval\n")
    samples = []
    for index in range(10):
        shape, colour = SHAPES[index % len(SHAPES)], colours[index % 2]
        captions = [f"一个{colour}的{shape}，画在浅色背景上。", f"图中：{shape}（{colour}）！第{index}张"]
        samples.append({"png": _png(random_shape_image(shape, SHAPE_COLOURS[colour], SIDE, rng)),
                        "txt": "\n".join(clean(c) for c in captions).encode("utf-8")})
    _write_split(retrieval, samples, 6)
    return classification, retrieval


def clip_benchmark(task: str, dataset_root: Path, out: Path, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HOME")}
    env.update(HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2", HF_HUB_CACHE=str(cache))
    command = [str(openclip_python().with_name("clip_benchmark")), "eval", "--model_type", "open_clip", "--model",
               f"hf-hub:{HUB_ID}", "--dataset", "wds/shapes", "--dataset_root", str(dataset_root), "--task", task,
               "--language", "cn", "--no_amp", "--batch_size", "8", "--num_workers", "0", "--recall_k", "1", "5",
               "10", "--output", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=str(out.parent))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text())["metrics"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_benchmark")
    model = random_model(get_model_config("tiny224"), seed=11)
    model.save_pretrained(root / "model")
    ErnieViL2Tokenizer(shared_file("vocab.txt")).save_pretrained(root / "model")
    export_model("open_clip", str(root / "model"), str(root / "package"), hub_id=HUB_ID)
    with pytest.MonkeyPatch.context() as monkeypatch:
        HubCache(root / "hf_cache", monkeypatch).add(HUB_ID, root / "package")
    written = write_sets(root / "as_written")
    cleaned = write_sets(root / "cleaned", _clean())
    return root, written, cleaned


def test_clip_benchmark_zero_shot_classification_equals_ours(setup):
    root, (written, _), (cleaned, _) = setup
    theirs = clip_benchmark("zeroshot_classification", written, root / "classification.json", root / "hf_cache")
    ours = evaluate(str(root / "model"), str(cleaned), task="classification", num_workers=0, progress=False)
    as_written = evaluate(str(root / "model"), str(written), task="classification", num_workers=0, progress=False)
    print(f"CLIP_benchmark {theirs}\nours (texts cleaned as open_clip does) {ours.metrics()}\n"
          f"ours (texts as written) {as_written.metrics()}")
    assert ours.num_images == 12 and ours.num_classes == 6 and not ours.skipped
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert abs(theirs[key] - getattr(ours, key)) < 1e-9, key


def test_clip_benchmark_zero_shot_retrieval_equals_ours(setup):
    root, (_, written), (_, cleaned) = setup
    theirs = clip_benchmark("zeroshot_retrieval", written, root / "retrieval.json", root / "hf_cache")
    ours = evaluate(str(root / "model"), str(cleaned / "test"), num_workers=0, progress=False).metrics
    as_written = evaluate(str(root / "model"), str(written / "test"), num_workers=0, progress=False).metrics
    print(f"CLIP_benchmark {theirs}\nours (cleaned) t2i {ours['t2i']} i2t {ours['i2t']}\n"
          f"ours (as written) t2i {as_written['t2i']} i2t {as_written['i2t']}")
    assert (ours["num_texts"], ours["num_images"]) == (20, 10)
    for k in (1, 5, 10):
        assert abs(theirs[f"image_retrieval_recall@{k}"] - ours["t2i"][f"R@{k}"] / 100) < 1e-6, k
        assert abs(theirs[f"text_retrieval_recall@{k}"] - ours["i2t"][f"R@{k}"] / 100) < 1e-6, k


def test_eval_classification_refuses_retrieval_flags_before_loading(tmp_path):
    from ernievil2torch.errors import InputError

    classification, _ = write_sets(tmp_path)
    for flags, needle in (({"images": str(tmp_path)}, "--images applies to --task retrieval only"),
                          ({"task": "detection"}, "task must be 'retrieval' or 'classification'")):
        with pytest.raises(InputError, match=needle):
            evaluate(str(tmp_path / "no_model"), str(classification), **{"task": "classification", **flags})
