"""``ernievil2 export --format open_clip``: open_clip's own code (open-clip-torch 3.x in ``.venv-openclip``, without
our package) loads the package and computes our features, tokens and (near) our preprocessing.

Each open_clip run is ``tests/oracles/open_clip_run.py`` in that environment, started in a temporary folder with
no ``PYTHONPATH`` (the script asserts ``ernievil2torch`` is not importable) and ``HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from ernievil2torch.config import base_config, get_model_config
from ernievil2torch.constants import DEFAULT_MAX_LENGTH
from ernievil2torch.data.demo import demo_images
from ernievil2torch.export.registry import export_model
from ernievil2torch.processing import ErnieViL2ImageProcessor, ErnieViL2Tokenizer
from ernievil2torch.verify.synthetic import random_model

from captions import REALISTIC_CAPTIONS
from helpers import REPO_ROOT, openclip_python, shared_file
from hub_cache import HubCache

HUB_ID = "ernie-test/ernie-vil-2.0-open-clip"
#: Image and text features of open_clip vs ours (max abs, full size, every parameter random, padded texts).
FEATURE_ATOL = 1e-5
#: Of the tokenizer suite's corpus: how many texts open_clip's cleaning leaves unchanged, and how many of those get
#: other ids than ours (all on characters whose Unicode tables differ between HF tokenizers and Python).
TOKENIZER_CORPUS = 3000
TOKENIZER_UNCHANGED = 2209
TOKENIZER_DIFFERENT = 91
#: Of REALISTIC_CAPTIONS, how many open_clip's text cleaning rewrites (ftfy: full-width punctuation and curly
#: quotes to ASCII), and how many token ids that changes in all (measured with ftfy 6.3.1, the real vocab).
FTFY_CHANGED_CAPTIONS = 25
FTFY_CHANGED_IDS = 34
#: open_clip's preprocess (torchvision bilinear resize with antialiasing, floor crop) vs the official pipeline on
#: the demo images: the largest difference of one pixel value, in grey levels (0-255), and the lowest cosine of
#: the image features the two give (full-size random model). The demo images are drawn shapes with hard edges: a
#: one-pixel shift of an edge (Baidu resizes a square to 225x224 and crops at ceil offsets) is a large local
#: difference; the mean difference is printed beside it.
PREPROCESS_MAX_GREY_LEVELS = 192
PREPROCESS_MIN_COSINE = 0.9999


def _make_corpus(vocab):
    """The tokenizer suite's corpus (tests/processing/test_tokenizer.py: accents, CJK, punctuation, control
    characters, over-long texts, ...)."""
    path = REPO_ROOT / "tests" / "processing" / "test_tokenizer.py"
    spec = importlib.util.spec_from_file_location("tokenizer_suite", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_corpus(vocab), module._CJK


def run_open_clip(mode: str, spec: str, inputs: Path, out: Path, cache: Path = None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HOME")}
    env.update(HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2",
               HF_HUB_CACHE=str(cache or out.parent / "empty_hf_cache"))
    proc = subprocess.run([str(openclip_python()), str(REPO_ROOT / "tests" / "oracles" / "open_clip_run.py"), mode,
                           spec, str(inputs), str(out)], capture_output=True, text=True, timeout=900, env=env,
                          cwd=str(out.parent))
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def real_vocab_package(model_folder, tmp_path_factory):
    """A small model's package with the real vocab (for the tokenizer: weights play no part)."""
    out = tmp_path_factory.mktemp("oc_vocab") / "package"
    export_model("open_clip", str(model_folder("tiny224", 5, None)), str(out),
                 vocab=str(shared_file("vocab.txt")))
    return out


def test_the_package_is_what_open_clip_reads(real_vocab_package):
    files = sorted(p.name for p in real_vocab_package.iterdir())
    assert files == ["config.json", "open_clip_config.json", "open_clip_model.safetensors", "special_tokens_map.json",
                     "tokenizer_config.json", "vocab.txt"]
    config = json.loads((real_vocab_package / "open_clip_config.json").read_text())
    text = config["model_cfg"]["text_cfg"]
    assert text["hf_model_name"] == text["hf_tokenizer_name"] == str(real_vocab_package.resolve())
    assert (text["hf_proj_type"], text["hf_pooler_type"], text["context_length"]) == (None, "cls_pooler",
                                                                                    DEFAULT_MAX_LENGTH)
    assert json.loads((real_vocab_package / "config.json").read_text())["model_type"] == "bert"


def test_open_clip_tokens_equal_ours_where_its_cleaning_leaves_the_text(real_vocab_package, tmp_path):
    ours = ErnieViL2Tokenizer(shared_file("vocab.txt"))
    corpus, ours_cjk = _make_corpus(ours.vocab)
    texts = corpus + REALISTIC_CAPTIONS
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    run_open_clip("tokenize", f"local-dir:{real_vocab_package}", tmp_path / "texts.json", tmp_path / "ids.json")
    result = json.loads((tmp_path / "ids.json").read_text())
    assert (result["class"], result["context_length"]) == ("HFTokenizer", DEFAULT_MAX_LENGTH)
    records = result["records"]
    assert not [r for r in records if "error" in r]
    expected = ours(texts, max_length=DEFAULT_MAX_LENGTH, padding="max_length")["input_ids"].tolist()

    # HF's BertNormalizer treats as Chinese U+2B920.. where BERT's (and ERNIE's) code says U+2B820.., and its
    # Unicode tables are newer than Python's: texts with such characters are the only ones allowed to differ.
    hf_cjk = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))

    def within(ch, ranges):
        return any(low <= ord(ch) <= high for low, high in ranges)

    def tables_differ(text):
        return any(unicodedata.category(ch) in ("Cn", "Co", "Cs") or within(ch, ours_cjk) != within(ch, hf_cjk)
                   or (ord(ch) > 0xFFFF and unicodedata.category(ch) == "Mn") for ch in text)

    unchanged = [i for i, r in enumerate(records[:len(corpus)]) if r["cleaned"] == texts[i]]
    differ = [i for i in unchanged if records[i]["ids"] != expected[i]]
    unexplained = [texts[i] for i in differ if not tables_differ(texts[i])]
    print(f"tokenizer: {len(unchanged)} of {len(corpus)} suite texts unchanged by open_clip's cleaning; "
          f"{len(unchanged) - len(differ)} give our ids exactly, {len(differ)} differ, all on code points whose "
          "Unicode tables differ")
    assert not unexplained, unexplained[:10]
    assert (len(corpus), len(unchanged), len(differ)) == (TOKENIZER_CORPUS, TOKENIZER_UNCHANGED, TOKENIZER_DIFFERENT)
    assert all(records[i]["ids"] == expected[i] for i in unchanged if "[CLS]" in texts[i] or "[SEP]" in texts[i])

    captions = range(len(corpus), len(texts))
    rewritten = [i for i in captions if records[i]["cleaned"] != texts[i]]
    changed_ids = sum(sum(a != b for a, b in zip(expected[i], records[i]["ids"])) for i in captions)
    print(f"ftfy: {len(rewritten)} of {len(REALISTIC_CAPTIONS)} realistic captions rewritten, {changed_ids} token "
          "ids changed")
    assert all(records[i]["ids"] == expected[i] for i in captions if i not in rewritten)
    assert (len(rewritten), changed_ids) == (FTFY_CHANGED_CAPTIONS, FTFY_CHANGED_IDS)


def _inputs(config, tokenizer, seed: int):
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((3, 3, config.vision.image_size, config.vision.image_size)).astype(np.float32)
    texts = ["一只猫的照片", "狗", "一只猫的照片一只猫的照片，一只狗的照片"]  # padded batch: lengths differ
    ids = tokenizer(texts, max_length=DEFAULT_MAX_LENGTH, padding="max_length")["input_ids"].numpy()
    return pixels, ids


def _features_through_open_clip(model, folder: Path, tmp_path: Path, monkeypatch, images=()):
    """Save ``model`` (+ vocab), export it, put the package in a test-built HF cache as HUB_ID, and run open_clip
    on ``hf-hub:HUB_ID`` offline: (our features, theirs)."""
    model.save_pretrained(folder)
    ErnieViL2Tokenizer(shared_file("vocab.txt")).save_pretrained(folder) if model.config.text.vocab_size > 30000 \
        else (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
                                                         + list("一只猫狗的照片，")) + "\n", encoding="utf-8")
    package = tmp_path / "package"
    export_model("open_clip", str(folder), str(package), hub_id=HUB_ID)
    cache = HubCache(tmp_path / "hf_cache", monkeypatch)
    cache.add(HUB_ID, package)
    tokenizer = ErnieViL2Tokenizer(folder / "vocab.txt")
    pixels, ids = _inputs(model.config, tokenizer, seed=0)
    np.savez(tmp_path / "inputs.npz", pixel_values=pixels, input_ids=ids,
             images=np.asarray(json.dumps([str(p) for p in images])))
    run_open_clip("features", f"hf-hub:{HUB_ID}", tmp_path / "inputs.npz", tmp_path / "out.npz", tmp_path / "hf_cache")
    theirs = dict(np.load(tmp_path / "out.npz"))
    with torch.no_grad():
        ours = {"image": model.encode_image(torch.from_numpy(pixels)).numpy(),
                "text": model.encode_text(torch.from_numpy(ids), torch.from_numpy(ids != 0)).numpy()}
    return ours, theirs, tokenizer


def test_hf_hub_loads_the_package_offline_from_a_cache(tmp_path, monkeypatch):
    model = random_model(get_model_config("tiny224"), seed=6)
    ours, theirs, _ = _features_through_open_clip(model, tmp_path / "model", tmp_path, monkeypatch)
    assert str(theirs["model_class"]) == "CustomTextCLIP"
    for kind in ("image", "text"):
        assert np.abs(ours[kind] - theirs[kind]).max() <= FEATURE_ATOL, kind
    assert float(theirs["logit_scale"]) == model.temperature.item()
    # local-dir: reads the same folder; its text config comes from HUB_ID, here found in the cache
    run_open_clip("features", f"local-dir:{tmp_path / 'package'}", tmp_path / "inputs.npz", tmp_path / "local.npz",
                  tmp_path / "hf_cache")
    local = dict(np.load(tmp_path / "local.npz"))
    assert all(np.array_equal(local[kind], theirs[kind]) for kind in ("image", "text"))


@pytest.mark.fullsize
def test_full_size_features_logit_scale_and_preprocess(tmp_path, monkeypatch):
    model = random_model(base_config(), seed=7)
    paths = []
    for i, image in enumerate(demo_images()):
        paths.append(tmp_path / f"demo{i}.png")
        image.save(paths[-1])
    ours, theirs, _ = _features_through_open_clip(model, tmp_path / "model", tmp_path, monkeypatch, paths)
    differences = {kind: float(np.abs(ours[kind] - theirs[kind]).max()) for kind in ("image", "text")}
    print(f"open_clip vs ours, full size: max abs diff {differences}")
    assert max(differences.values()) <= FEATURE_ATOL
    assert float(theirs["logit_scale"]) == model.temperature.item()

    official = ErnieViL2ImageProcessor()([str(p) for p in paths])
    their_pixels = torch.from_numpy(theirs["preprocessed"])
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    grey_levels = ((official - their_pixels) * std * 255).abs()
    grey = float(grey_levels.max())
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(model.encode_image(official), model.encode_image(their_pixels))
    print(f"open_clip preprocess vs official on the demo images: max {grey:.1f} grey levels (mean "
          f"{float(grey_levels.mean()):.2f}), feature cosine "
          f"{[round(float(c), 6) for c in cosine]}")
    assert grey <= PREPROCESS_MAX_GREY_LEVELS and float(cosine.min()) >= PREPROCESS_MIN_COSINE


def test_the_cli_refuses_a_bad_hub_id_before_any_work():
    from ernievil2torch.cli.checks import HUB_ID as check
    from ernievil2torch.errors import InputError

    assert check("org/name") == "org/name"
    for bad in ("org/name@v1", "hf-hub:org/name", "name", "a/b/c"):
        with pytest.raises(InputError):
            check(bad)
    commands = importlib.import_module("ernievil2torch.cli.commands")
    assert commands.COMMANDS["export"].checks["hub_id"] is check


def test_the_cleaning_benchmark_measures_rewritten_captions(model_folder):
    spec = importlib.util.spec_from_file_location("open_clip_cleaning", REPO_ROOT / "benchmarks" / "open_clip_cleaning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = model_folder("tiny", 8, ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + list("一只猫狗的照片，,"))
    effect = module.cleaning_effect(str(folder), ["一只猫，一只狗", "一只猫的照片"])
    assert [(caption, cleaned) for caption, cleaned, _ in effect] == [("一只猫，一只狗", "一只猫,一只狗")]
    assert -1.0 <= effect[0][2] < 1.0 - 1e-6  # "，" and "," are different tokens: the feature moves
