"""Retrieval metrics (official eval_retri.py semantics), chunked exact top-k, end-to-end evaluate().

The dataset readers eval uses are tested in ``test_data_readers.py``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ernievil2torch import ErnieViL2
from ernievil2torch.processing.image import ErnieViL2ImageProcessor
from ernievil2torch.apps.retrieval import evaluate
from ernievil2torch.data import CocoCnTsvReader
from ernievil2torch.errors import InputError
from ernievil2torch.retrieval.metrics import format_table, retrieval_metrics, retrieval_ranks
from ernievil2torch.retrieval.topk import search_embeddings
from ernievil2torch.processing.tokenizer import ErnieViL2Tokenizer

from captions import write_caption_dataset


def _brute_rank(scores_row, correct):
    """Independent reference: best (lowest) 0-based position among correct items, counting only strictly
    higher scores above it (official tie rule), by explicit loops."""
    best = None
    for c in correct:
        above = sum(1 for j, s in enumerate(scores_row) if s > scores_row[c])
        best = above if best is None else min(best, above)
    return best


def _brute_metrics(text, image, links, protocol="grouped"):
    # float64: a repeated image gets bit-identical scores, so exact ties stay ties (strict '>' keeps them hits)
    text = text.astype(np.float64) / np.linalg.norm(text.astype(np.float64), axis=1, keepdims=True)
    image = image.astype(np.float64) / np.linalg.norm(image.astype(np.float64), axis=1, keepdims=True)
    def row(q, gallery):  # one dot product at a time: identical vectors give identical scores
        return [float(np.dot(q, g)) for g in gallery]

    if protocol == "pairs":
        image = image[links]
        t2i = [_brute_rank(row(text[t], image), [t]) for t in range(len(text))]
        i2t = [_brute_rank(row(image[t], text), [t]) for t in range(len(text))]
    else:
        t2i = [_brute_rank(row(text[t], image), [links[t]]) for t in range(len(text))]
        i2t = [_brute_rank(row(image[i], text), [t for t in range(len(text)) if links[t] == i])
               for i in range(len(image)) if i in links]
    rec = lambda ranks, k: 100.0 * np.mean([r < k for r in ranks])  # noqa: E731
    six = [rec(t2i, k) for k in (1, 5, 10)] + [rec(i2t, k) for k in (1, 5, 10)]
    return six, float(np.mean(six))


# ---- hand-crafted embeddings with known ranks -----------------------------------------------------------------
def test_known_ranks_by_construction():
    """12 orthonormal images; caption t scores 1.0 on its image and 2.0 on exactly r_t other images, so its
    text->image rank is r_t by construction."""
    n_img, dim = 12, 12
    images = np.eye(n_img, dim, dtype=np.float32)
    wanted = [0, 0, 1, 4, 5, 9, 10, 11, 0, 3]
    links = [0, 1, 2, 3, 4, 5, 6, 7, 8, 8]
    texts = np.zeros((len(wanted), dim), np.float32)
    for t, (r, img) in enumerate(zip(wanted, links)):
        texts[t, img] = 1.0
        others = [j for j in range(n_img) if j != img][:r]
        texts[t, others] = 2.0
    ranks = retrieval_ranks(texts / np.linalg.norm(texts, axis=1, keepdims=True), images, [[i] for i in links])
    assert ranks.tolist() == wanted
    m = retrieval_metrics(texts, images, links)
    assert m["t2i"]["R@1"] == pytest.approx(30.0)   # ranks 0,0,0
    assert m["t2i"]["R@5"] == pytest.approx(60.0)   # + 1,4,3 (5 is not < 5)
    assert m["t2i"]["R@10"] == pytest.approx(80.0)  # + 5,9
    assert m["t2i"]["mean_recall"] == pytest.approx(170 / 3)
    # image->text, ANY caption: image 8 has captions 8 (rank 0 for t2i) and 9; images 9..11 have no caption.
    six, mr = _brute_metrics(texts, images, links)
    got = [m["t2i"][f"R@{k}"] for k in (1, 5, 10)] + [m["i2t"][f"R@{k}"] for k in (1, 5, 10)]
    assert got == pytest.approx(six) and m["mean_recall"] == pytest.approx(mr)
    assert m["num_images"] == 12 and m["num_texts"] == 10


def test_hand_computed_small_case_and_ties():
    # 3 images in 2-D, 4 captions. Image 1 and 2 are identical (a tie); caption 3 belongs to image 2.
    images = np.array([[1, 0], [0, 1], [0, 1]], np.float32)
    texts = np.array([[1, 0.1], [0.2, 1], [1, 0.5], [0, 1]], np.float32)
    links = [0, 1, 0, 2]
    m = retrieval_metrics(texts, images, links)
    # t2i: caption 0 -> image 0 top (rank 0); caption 1 -> image 1 ties image 2 (strict '>' -> rank 0);
    # caption 2 ([1, .5]) -> image 0 top (rank 0); caption 3 -> image 2 ties image 1 -> rank 0.
    assert m["t2i"]["R@1"] == 100.0
    # i2t: image 0 captions {0, 2}: scores 1/|t| of t0 = .995, t2 = .894; best correct t0 is top -> rank 0.
    # image 1 caption {1}: scores t3 = 1.0 > t1 = .98 -> rank 1.  image 2 caption {3}: rank 0.
    assert m["i2t"]["R@1"] == pytest.approx(200 / 3)
    assert m["i2t"]["R@5"] == 100.0
    assert m["i2t"]["MRR"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    # pairs protocol: gallery = [img0, img1, img0, img2]; image row 0 (img0) -> its caption 0 only ...
    p = retrieval_metrics(texts, images, links, protocol="pairs")
    six, mr = _brute_metrics(texts, images, links, "pairs")
    got = [p["t2i"][f"R@{k}"] for k in (1, 5, 10)] + [p["i2t"][f"R@{k}"] for k in (1, 5, 10)]
    assert got == pytest.approx(six) and p["mean_recall"] == pytest.approx(mr)
    # ... for line 2 (img0 again) caption 0 scores higher than its own caption 2: a miss in 'pairs'.
    assert p["i2t"]["R@1"] == pytest.approx(50.0)
    assert "| Text2Image | 100.00 |" in format_table(m)


def test_the_table_stays_aligned_from_0_to_100():
    for value in (0.0, 9.5, 100.0):
        side = {"R@1": value, "R@5": value, "R@10": value, "mean_recall": value}
        lines = format_table({"t2i": side, "i2t": side, "mean": side}).split("\n")
        assert len({len(line) for line in lines}) == 1, lines
        assert len({tuple(i for i, c in enumerate(line) if c == "|") for line in lines}) == 1, lines


def test_random_embeddings_match_brute_force_and_chunks():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((40, 16)).astype(np.float32)
    links = rng.integers(0, 35, 90).tolist()  # some images without captions, some with several
    texts = images[links] + 1.5 * rng.standard_normal((90, 16)).astype(np.float32)
    for protocol in ("grouped", "pairs"):
        six, mr = _brute_metrics(texts, images, links, protocol)
        for chunk in (None, 1, 7):
            m = retrieval_metrics(texts, images, links, protocol=protocol, chunk_size=chunk)
            got = [m["t2i"][f"R@{k}"] for k in (1, 5, 10)] + [m["i2t"][f"R@{k}"] for k in (1, 5, 10)]
            assert got == pytest.approx(six, abs=1e-9) and m["mean_recall"] == pytest.approx(mr)


# ---- chunked exact top-k --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 10, 50])
def test_chunked_topk_equals_full_with_ties(k):
    rng = np.random.default_rng(1)
    # Small integers: every dot product is exact in float32, so ties are real ties for every chunking.
    gallery = rng.integers(-1, 2, (1000, 4)).astype(np.float32)
    queries = rng.integers(-1, 2, (37, 4)).astype(np.float32)
    full = queries @ gallery.T
    want_i = np.argsort(-full, axis=1, kind="stable")[:, :k]  # score desc, index asc
    want_s = np.take_along_axis(full, want_i, 1)
    for chunk, qchunk in [(1000, 1024), (1, 5), (7, 1), (64, 16), (999, 37)]:
        s, i = search_embeddings(queries, gallery, k=k, chunk_size=chunk, query_chunk_size=qchunk)
        assert np.array_equal(i, want_i), (chunk, qchunk)
        assert np.array_equal(s, want_s)
    # a memory-mapped gallery works the same
    s, i = search_embeddings(queries, np.asarray(gallery), k=k, chunk_size=100)
    assert np.array_equal(i, want_i)


def test_topk_k_larger_than_gallery():
    s, i = search_embeddings(np.ones((2, 3), np.float32), np.eye(3, dtype=np.float32), k=10, chunk_size=2)
    assert i.tolist() == [[0, 1, 2], [0, 1, 2]] and s.shape == (2, 3)


# ---- end to end --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(model_folder):
    return model_folder("tiny224", seed=7, vocab=["[PAD]", "[CLS]", "[SEP]", "[MASK]"]
                        + list("一二三四五六七八九十猫狗鸟鱼马牛羊红绿蓝的照片只张") + ["[UNK]"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_caption_dataset(tmp_path_factory.mktemp("coco"))


def test_evaluate_end_to_end_matches_brute_force(model_dir, dataset, tmp_path):
    model = ErnieViL2.from_pretrained(model_dir)
    tok = ErnieViL2Tokenizer(model_dir / "vocab.txt")
    proc = ErnieViL2ImageProcessor()
    coco = CocoCnTsvReader(dataset / "test.coco_cn.data")
    with torch.no_grad():
        text = np.concatenate([model.encode_text(**tok([t])).numpy() for t in coco.texts])
        image = np.concatenate([model.encode_image(proc([b])).numpy() for b in coco.images])
    for protocol in ("grouped", "pairs"):
        six, mr = _brute_metrics(text, image, coco.text_image, protocol)
        result = evaluate(str(model_dir), str(dataset / "test.coco_cn.data"), protocol=protocol, batch_size=4,
                          num_workers=0, out=str(tmp_path / f"{protocol}.json"), progress=False)
        m = result.metrics
        got = [m["t2i"][f"R@{k}"] for k in (1, 5, 10)] + [m["i2t"][f"R@{k}"] for k in (1, 5, 10)]
        assert got == pytest.approx(six) and m["mean_recall"] == pytest.approx(mr)
        assert json.loads((tmp_path / f"{protocol}.json").read_text())["mean_recall"] == pytest.approx(mr)
        # eval's report: the counts line, the recall table, the mean-recall line
        assert result.summary().split("\n") == [
            f"{len(coco.texts)} captions, 8 images, protocol {protocol}", *format_table(m).split("\n"),
            f"MR (mean of the six recalls): {m['mean_recall']:.2f}"]
        assert (result.num_texts, result.num_images, result.out) == (len(coco.texts), 8,
                                                                     str(tmp_path / f"{protocol}.json"))
    # The folder + captions format of the same data gives the same grouped metrics.
    m_folder = evaluate(str(model_dir), str(dataset / "captions.jsonl"), images=str(dataset / "imgs"),
                        batch_size=4, num_workers=0, progress=False).metrics
    m_coco = evaluate(str(model_dir), str(dataset / "test.coco_cn.data"), batch_size=4, num_workers=0,
                      progress=False).metrics
    assert m_folder["t2i"] == pytest.approx(m_coco["t2i"]) and m_folder["i2t"] == pytest.approx(m_coco["i2t"])


def test_search_returns_what_it_wrote(tmp_path):
    from ernievil2torch.apps.retrieval import SearchResult, search

    rng = np.random.default_rng(0)
    np.save(tmp_path / "q.npy", rng.standard_normal((4, 8)).astype(np.float32))
    np.save(tmp_path / "g.npy", rng.standard_normal((5, 8)).astype(np.float32))
    result = search(str(tmp_path / "q.npy"), str(tmp_path / "g.npy"), str(tmp_path / "hits.tsv"), k=3)
    assert result == SearchResult(str(tmp_path / "hits.tsv"), 4, 5, 3)
    assert result.summary() == str(tmp_path / "hits.tsv")
    rows = [line.split("\t") for line in (tmp_path / "hits.tsv").read_text().splitlines()]
    assert len(rows) == 12 and [r[1] for r in rows[:3]] == ["1", "2", "3"]


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol": "bogus"}, "protocol must be 'grouped' or 'pairs', got 'bogus'"),
    ({"dtype": "float64"}, "dtype must be one of"),
    ({"data_format": "wds"}, "unknown dataset format 'wds'"),
    ({"images": "somewhere"}, "image folder somewhere not found"),
])
def test_evaluate_refuses_bad_arguments_before_loading_the_model(tmp_path, dataset, kwargs, message):
    """The model directory does not exist: each refusal comes before the model (or any image) is read."""
    with pytest.raises(InputError, match=message):
        evaluate(str(tmp_path / "no-model"), str(dataset / "test.coco_cn.data"), progress=False, **kwargs)


def test_evaluate_fast_decode_encodes_with_the_fast_processor(model_dir, dataset, tmp_path):
    """--fast_decode reaches the image decoding of eval: its saved image features are the fast processor's."""
    import shutil

    large = tmp_path / "large"
    (large / "imgs").mkdir(parents=True)
    shutil.copyfile(dataset / "captions.jsonl", large / "captions.jsonl")
    for path in sorted((dataset / "imgs").glob("*.jpg")):
        with Image.open(path) as img:
            img.resize((img.width * 4, img.height * 4), Image.Resampling.BICUBIC).save(large / "imgs" / path.name,
                                                                                      quality=90)
    model = ErnieViL2.from_pretrained(model_dir)
    names = [json.loads(line)["image"] for line in (large / "captions.jsonl").read_text().splitlines()]
    features = {}
    for fast in (False, True):
        saved = tmp_path / f"fast{fast}.npz"
        evaluate(str(model_dir), str(large / "captions.jsonl"), images=str(large / "imgs"), batch_size=4,
                 num_workers=0, progress=False, save_embeddings=str(saved), fast_decode=fast)
        processor = ErnieViL2ImageProcessor(fast_decode=fast)
        with torch.no_grad():
            want = np.concatenate([model.encode_image(processor([large / "imgs" / n])).numpy() for n in names])
        features[fast] = np.load(saved)["image_embeds"]
        np.testing.assert_allclose(features[fast], want, atol=1e-6, rtol=0)
    assert not np.allclose(features[False], features[True], atol=1e-6)


def test_cosine_rows_is_the_cosine_of_each_row_pair_whatever_the_norms():
    from ernievil2torch.retrieval.metrics import cosine_rows

    a = np.array([[3.0, 4.0], [1.0, 0.0], [2.0, 2.0]], np.float32)
    b = np.array([[6.0, 8.0], [0.0, 5.0], [-1.0, -1.0]], np.float32)
    assert np.allclose(cosine_rows(a, b), [1.0, 0.0, -1.0], atol=1e-12)
    assert cosine_rows(a, b).dtype == np.float64
