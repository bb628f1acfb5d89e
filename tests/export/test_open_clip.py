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
import random
import subprocess
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
#: Of the tokenizer suite's corpus: how many texts open_clip's cleaning leaves unchanged (all of them get our ids).
TOKENIZER_CORPUS = 3000
TOKENIZER_UNCHANGED = 2209
#: Random texts of code points from every plane (assigned, unassigned, private use; no lone surrogates, which no
#: Rust string holds), and how many of them open_clip's cleaning leaves unchanged.
FUZZ_TEXTS = 2000
FUZZ_UNCHANGED = 839
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
    return module.make_corpus(vocab)


def fuzz_texts(n: int = FUZZ_TEXTS, seed: int = 17) -> list:
    """Texts of 1-24 random code points: uniform over all planes (mostly unassigned or private use), the BMP, the
    CJK extensions around U+2B820 (where BERT's and HF's Chinese blocks differ), and marks after letters (where a
    character map that works per grapheme cluster could lose a mark). No lone surrogates."""
    rng = random.Random(seed)
    marks = "\u0301\u0308\u20dd\u0488\u0903\u0bbe\uff9e\U0001f3fb\u0e33\U0001d165\u302e"
    draws = [lambda: rng.randint(0, 0x10FFFF), lambda: rng.randint(0, 0xFFFF), lambda: rng.randint(0x2A000, 0x2FFFF),
             lambda: rng.randint(0x20, 0x24F), lambda: ord(rng.choice(marks)),
             lambda: ord(rng.choice("AΣÉǅİ가Ａ "))]

    def code_point() -> str:
        while True:
            cp = rng.choice(draws)()
            if not 0xD800 <= cp <= 0xDFFF:
                return chr(cp)

    return ["".join(code_point() for _ in range(rng.randint(1, 24))) for _ in range(n)]


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
                     "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((real_vocab_package / "tokenizer_config.json").read_text())["split_special_tokens"] is True
    config = json.loads((real_vocab_package / "open_clip_config.json").read_text())
    text = config["model_cfg"]["text_cfg"]
    assert text["hf_model_name"] == text["hf_tokenizer_name"] == str(real_vocab_package.resolve())
    assert (text["hf_proj_type"], text["hf_pooler_type"], text["context_length"]) == (None, "cls_pooler",
                                                                                    DEFAULT_MAX_LENGTH)
    assert json.loads((real_vocab_package / "config.json").read_text())["model_type"] == "bert"


def test_open_clip_tokens_equal_ours_where_its_cleaning_leaves_the_text(real_vocab_package, tmp_path):
    ours = ErnieViL2Tokenizer(shared_file("vocab.txt"))
    corpus = _make_corpus(ours.vocab)
    fuzz = fuzz_texts()
    long_texts = ["一只猫" * 30, "a photo of " * 20, "x" * 101 + " 猫" * 50, "Ünïcödé " * 40 + "，。"]
    texts = corpus + fuzz + long_texts + REALISTIC_CAPTIONS
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    run_open_clip("tokenize", f"local-dir:{real_vocab_package}", tmp_path / "texts.json", tmp_path / "ids.json")
    result = json.loads((tmp_path / "ids.json").read_text())
    assert (result["class"], result["backend"], result["context_length"]) == ("HFTokenizer", "TokenizersBackend",
                                                                              DEFAULT_MAX_LENGTH)
    records = result["records"]
    assert not [r for r in records if "error" in r]
    expected = ours(texts, max_length=DEFAULT_MAX_LENGTH, padding="max_length")["input_ids"].tolist()
    short = ours(texts, max_length=result["short_context"], padding="max_length")["input_ids"].tolist()

    # The package's tokenizer alone gives our ids on every text a Rust string can hold (not lone surrogates).
    surrogates = [i for i, text in enumerate(texts) if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)]
    assert [i for i, r in enumerate(records) if "raw_error" in r] == surrogates
    raw_differ = [texts[i] for i, r in enumerate(records) if "raw_ids" in r and r["raw_ids"] != expected[i]]
    assert not raw_differ, raw_differ[:10]

    # Through open_clip (its cleaning first): our ids wherever the cleaning leaves the text as it is.
    def unchanged(indices):
        return [i for i in indices if records[i]["cleaned"] == texts[i]]

    in_corpus = unchanged(range(len(corpus)))
    in_fuzz = unchanged(range(len(corpus), len(corpus) + len(fuzz)))
    differ = [texts[i] for i in in_corpus + in_fuzz if records[i]["ids"] != expected[i]]
    print(f"tokenizer: {len(in_corpus)} of {len(corpus)} suite texts and {len(in_fuzz)} of {len(fuzz)} random "
          f"texts unchanged by open_clip's cleaning; {len(differ)} of those differ from our ids")
    assert not differ, differ[:10]
    assert (len(corpus), len(in_corpus), len(fuzz), len(in_fuzz)) == (TOKENIZER_CORPUS, TOKENIZER_UNCHANGED,
                                                                      FUZZ_TEXTS, FUZZ_UNCHANGED)
    specials = [i for i in in_corpus if any(t in texts[i] for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"))]
    assert len(specials) > 100 and all(records[i]["ids"] == expected[i] for i in specials)

    # Over-long texts: open_clip truncates as we do, [CLS] + the first context - 2 pieces + [SEP], at both lengths.
    cut = [i for i in unchanged(range(len(texts))) if len(ours.encode(texts[i])) > DEFAULT_MAX_LENGTH - 2]
    assert len(cut) >= len(long_texts) and all(records[i]["ids"] == expected[i] for i in cut)
    assert all(records[i]["ids"][-1] == ours.sep_token_id and ours.pad_token_id not in records[i]["ids"]
               for i in cut)
    assert all(records[i]["ids_short"] == short[i] for i in unchanged(range(len(texts))))

    captions = range(len(texts) - len(REALISTIC_CAPTIONS), len(texts))
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
