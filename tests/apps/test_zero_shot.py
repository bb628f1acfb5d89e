"""Zero-shot helpers and the combined processor on a tiny random model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ernievil2torch.config import tiny_config
from ernievil2torch.errors import InputError
from ernievil2torch.processing.image import ErnieViL2ImageProcessor
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.processing import ErnieViL2Processor
from ernievil2torch.processing.tokenizer import ErnieViL2Tokenizer
from ernievil2torch.apps.zero_shot import build_classifier, classify

CHARS = "一张的照片猫狗鸟车船飞机图像"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = ErnieViL2(tiny_config()).eval()
    d = tmp_path_factory.mktemp("tiny_vocab")
    tokens = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"] + list(CHARS) + ["[UNK]"]
    (d / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")  # one token per line
    tok = ErnieViL2Tokenizer.from_pretrained(d)
    assert max(tok.vocab.values()) < model.config.text.vocab_size
    return model, tok, d


def test_build_classifier(tiny):
    model, tok, _ = tiny
    labels = ["猫", "狗", "飞机"]
    templates = ("一张{}的照片", "{}的图像")
    clf = build_classifier(model, tok, labels, templates)
    assert clf.shape == (3, model.config.text.hidden_size)
    assert torch.allclose(clf.norm(dim=-1), torch.ones(3), atol=1e-5)
    # by hand: normalise each prompt, average per label, normalise again
    enc = tok([t.format(label) for label in labels for t in templates], padding="longest")
    with torch.no_grad():
        emb = F.normalize(model.encode_text(enc["input_ids"], enc["attention_mask"]), dim=-1)
    expected = F.normalize(emb.view(3, 2, -1).mean(1), dim=-1)
    assert torch.allclose(clf, expected, atol=1e-5)
    for bad in ([], "猫", [1]):
        with pytest.raises(InputError):
            build_classifier(model, tok, bad)
    with pytest.raises(InputError):
        build_classifier(model, tok, ["猫"], templates=("no placeholder",))
    for bad in ("{}{}", "{0}的{}", "一张{}的照片}", "{label}"):
        with pytest.raises(InputError, match="exactly one|no '{}'"):
            build_classifier(model, tok, ["猫"], templates=(bad,))


def test_classify_probabilities(tiny):
    model, tok, _ = tiny
    clf = build_classifier(model, tok, ["猫", "狗", "鸟", "车"])
    images = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(3)]
    pixels = ErnieViL2ImageProcessor(image_size=32)(images)
    probs = classify(model, pixels, clf)
    assert probs.shape == (3, 4)
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5) and (probs >= 0).all()
    with torch.no_grad():
        cos = F.normalize(model.encode_image(pixels), dim=-1) @ clf.T
    assert torch.allclose(probs, (model.logit_scale * cos).softmax(-1), atol=1e-5)
    with pytest.raises(InputError):
        classify(model, pixels[0], clf)


def test_classify_without_temperature_uses_100(tiny):
    model, tok, _ = tiny
    cfg = tiny_config()
    from dataclasses import replace

    torch.manual_seed(0)
    plain = ErnieViL2(replace(cfg, has_temperature=False)).eval()
    assert plain.logit_scale is None
    clf = build_classifier(plain, tok, ["猫", "狗"])
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cos = F.normalize(plain.encode_image(pixels), dim=-1) @ clf.T
    assert torch.allclose(classify(plain, pixels, clf), (100.0 * cos).softmax(-1), atol=1e-5)


def test_processor(tiny):
    model, tok, d = tiny
    proc = ErnieViL2Processor.from_pretrained(d, image_size=32)
    img = np.zeros((40, 40, 3), np.uint8)
    out = proc(text=["一张猫的照片", "狗"], images=[img, img], max_length=16)
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    assert out["input_ids"].shape == (2, 16) and out["pixel_values"].shape == (2, 3, 32, 32)
    assert set(proc(text="猫")) == {"input_ids", "attention_mask"}
    assert set(proc(images=img)) == {"pixel_values"}
    with pytest.raises(InputError):
        proc()
    with torch.no_grad():
        res = model(out["pixel_values"], out["input_ids"], out["attention_mask"])
    assert res.logits_per_image.shape == (2, 2)
