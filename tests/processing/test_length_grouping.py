"""Length-grouped text encoding: the same rows, in input order, as encoding each text alone (within 1e-6), with
every batch padded only to its own longest text; through the shared mechanism, ``embed``, ``similarity`` and
zero-shot prompts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ernievil2torch import ErnieViL2
from ernievil2torch.apps.embed import embed
from ernievil2torch.storage.embeddings import read_embed_output
from ernievil2torch.apps.similarity import image_text_similarity
from ernievil2torch.apps.zero_shot import build_classifier
from ernievil2torch.constants import DEFAULT_MAX_LENGTH
from ernievil2torch.errors import InputError
from ernievil2torch.processing.length_groups import LengthGroupedTexts
from ernievil2torch.processing.tokenizer import ErnieViL2Tokenizer

CHARS = list("一只猫狗的照片张赛博朋克边缘行者红蓝绿圆方形车飞机鸟")
ATOL = 1e-6


@pytest.fixture(scope="module")
def model_dir(model_folder):
    return model_folder("tiny224", seed=7, vocab=["[PAD]", "[CLS]", "[SEP]", "[MASK]"] + CHARS
                        + ["a", "photo", "of", "##s", "[UNK]"])


@pytest.fixture(scope="module")
def model(model_dir):
    return ErnieViL2.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return ErnieViL2Tokenizer(model_dir / "vocab.txt")


def mixed_texts(count: int = 41, seed: int = 0) -> list:
    """Texts of 0 to 70 characters (past the 46-token cap), a whitespace-only one and repeated lengths."""
    rng = np.random.default_rng(seed)
    texts = ["", " ", "a photo of cats", "".join(CHARS) * 3]  # empty-ish, English, over-long
    for _ in range(count - len(texts)):
        texts.append("".join(rng.choice(CHARS, int(rng.integers(1, 71)))))
    return texts


def one_by_one(model, tokenizer, texts, normalize=False) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.encode_text(**tokenizer([t]), normalize=normalize) for t in texts])


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_grouped_rows_equal_one_by_one_in_input_order(model, tokenizer, batch_size):
    texts = mixed_texts()
    groups = LengthGroupedTexts(tokenizer, texts, batch_size)
    with torch.no_grad():
        got = groups.encode(model.encode_text)
    want = one_by_one(model, tokenizer, texts)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= ATOL


def test_each_batch_is_padded_to_its_own_longest(tokenizer):
    texts = mixed_texts()
    lengths = [min(len(tokenizer.encode(t)), DEFAULT_MAX_LENGTH - 2) + 2 for t in texts]
    groups = LengthGroupedTexts(tokenizer, texts, batch_size=5)
    seen, widths = [], []
    for batch in groups.batches():
        own = [lengths[p] for p in batch.positions]
        assert batch.input_ids.shape == (len(own), max(own)) and max(own) <= DEFAULT_MAX_LENGTH
        assert batch.attention_mask.sum(1).tolist() == own  # masks stay right
        for row, p in enumerate(batch.positions):  # the same ids as the tokenizer gives the text alone
            alone = tokenizer([texts[p]], padding="longest")["input_ids"][0]
            assert batch.input_ids[row, :own[row]].tolist() == alone.tolist()
            assert not batch.input_ids[row, own[row]:].any()
        seen += batch.positions
        widths.append(max(own))
    assert sorted(seen) == list(range(len(texts)))
    assert widths == sorted(widths, reverse=True)  # longest first
    assert sum(widths) < len(widths) * max(lengths)  # grouping saved padding on these texts


def test_restore_undoes_the_length_order(tokenizer):
    texts = mixed_texts()
    groups = LengthGroupedTexts(tokenizer, texts, batch_size=4)
    lengths = groups.encode(lambda ids, mask: mask.sum(1, keepdim=True))[:, 0].tolist()
    assert lengths == [min(len(tokenizer.encode(t)), DEFAULT_MAX_LENGTH - 2) + 2 for t in texts]


def test_refused_texts_fail_alone_or_raise(model, tokenizer):
    texts = ["一只猫", None, "赛博朋克边缘行者", 5, "狗"]
    with pytest.raises(InputError):
        LengthGroupedTexts(tokenizer, texts, batch_size=2)
    groups = LengthGroupedTexts(tokenizer, texts, batch_size=2, skip_failures=True)
    assert [p for p, _ in groups.failed] == [1, 3]
    with torch.no_grad():
        got = groups.encode(model.encode_text)
    want = one_by_one(model, tokenizer, ["一只猫", "赛博朋克边缘行者", "狗"])
    assert (got - want).abs().max().item() <= ATOL
    with pytest.raises(InputError):
        LengthGroupedTexts(tokenizer, [], batch_size=2)


def test_embed_texts_grouped_in_input_order(model, model_dir, tokenizer, tmp_path, monkeypatch):
    texts = mixed_texts(53, seed=1)[2:]  # embed refuses empty texts: keep those out of the comparison
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    widths = []
    real = ErnieViL2.encode_text

    def recording(self, input_ids, attention_mask=None, normalize=False):
        widths.append((input_ids.shape[0], input_ids.shape[1]))
        return real(self, input_ids, attention_mask, normalize)

    monkeypatch.setattr(ErnieViL2, "encode_text", recording)
    embed(str(tmp_path / "t.txt"), str(model_dir), str(tmp_path / "out"), kind="text", batch_size=4,
          shard_size=13, num_workers=0, progress=False)
    monkeypatch.setattr(ErnieViL2, "encode_text", real)
    array, ids = (output := read_embed_output(tmp_path / "out")).embeddings, output.ids
    assert ids == [str(i) for i in range(len(texts))]
    assert np.abs(array - one_by_one(model, tokenizer, texts).numpy()).max() <= ATOL
    # every batch is padded to its own longest text: columns paid = the length-sorted plan, shard by shard
    lengths = [min(len(tokenizer.encode(t)), DEFAULT_MAX_LENGTH - 2) + 2 for t in texts]
    expected = 0
    for start in range(0, len(texts), 13):
        shard = sorted(lengths[start:start + 13], reverse=True)
        expected += sum(len(shard[b:b + 4]) * shard[b] for b in range(0, len(shard), 4))
    assert sum(rows * width for rows, width in widths) == expected


def test_similarity_and_zero_shot_grouped(model, model_dir, tokenizer, tmp_path):
    texts = mixed_texts(19, seed=2)
    images = []
    for i in range(2):
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (230, 240, 3), dtype=np.uint8)).save(images[-1])
    result = image_text_similarity(str(model_dir), [str(p) for p in images], texts, batch_size=3)
    loaded = ErnieViL2.from_pretrained(model_dir)
    from ernievil2torch.processing.image import ErnieViL2ImageProcessor

    with torch.no_grad():
        image_features = loaded.encode_image(ErnieViL2ImageProcessor()([str(p) for p in images]), normalize=True)
    want = one_by_one(loaded, tokenizer, texts, normalize=True) @ image_features.T
    assert (result.similarity - want).abs().max().item() <= ATOL

    labels = ["猫", "赛博朋克边缘行者" * 4, "狗", "红色的圆形"]
    templates = ("一张{}的照片", "{}", "蓝色的{}和绿色的方形车")
    got = build_classifier(model, tokenizer, labels, templates, batch_size=2)
    prompts = [t.format(label) for label in labels for t in templates]
    per_prompt = one_by_one(model, tokenizer, prompts, normalize=True).view(len(labels), len(templates), -1)
    want = torch.nn.functional.normalize(per_prompt.mean(1), dim=-1)
    assert (got - want).abs().max().item() <= ATOL
