"""Acceptance of ``ernievil2 serve`` on a converted FULL-SIZE model (203.7M parameters, every weight random).

A synthetic official-layout ``.pdparams`` is converted with the same code as ``convert.py``; the gallery of test
images is embedded by ``embed``; the service then answers over HTTP (FastAPI's TestClient):

* text -> image results equal the exact top-k over the gallery embeddings (rows, ids and scores), and the query
  embedding the service computes equals the model's own (``encode_text``) within 1e-5;
* image -> image returns the query image first for every gallery image.
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import require_module
import torch

require_module("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from ernievil2torch.storage.embeddings import read_embed_output  # noqa: E402
from ernievil2torch.retrieval.topk import search_embeddings  # noqa: E402
from ernievil2torch.apps.serve import Gallery  # noqa: E402
from ernievil2torch.apps.serve.app import create_app  # noqa: E402
from ernievil2torch.apps.serve.engine import SearchEngine  # noqa: E402
from ernievil2torch.conversion import convert_checkpoint  # noqa: E402
from ernievil2torch.pretrained import load_pretrained  # noqa: E402
from ernievil2torch.verify.synthetic import write_synthetic_vocab  # noqa: E402

from serve_helpers import QUERIES, embedded_gallery  # noqa: E402

pytestmark = pytest.mark.fullsize


@pytest.fixture(scope="module")
def fullsize(synthetic_pdparams, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_full")
    vocab = write_synthetic_vocab(root / "vocab.txt")
    report = convert_checkpoint(synthetic_pdparams("base", "official"), root / "model", vocab=vocab)
    assert report.summary()
    ids = embedded_gallery(root, root / "model")
    pretrained = load_pretrained(root / "model")
    assert pretrained.model.config.vision.num_layers == 12 and pretrained.model.config.text.num_layers == 12
    engine = SearchEngine(pretrained, Gallery.load(root / "gallery", root / "images"))
    with TestClient(create_app(engine), base_url="http://127.0.0.1:8000") as client:
        yield {"root": root, "ids": ids, "pretrained": pretrained, "client": client}


def test_fullsize_text_search_equals_exact_topk(fullsize):
    client, pretrained = fullsize["client"], fullsize["pretrained"]
    gallery, ids = (output := read_embed_output(fullsize["root"] / "gallery")).embeddings, output.ids
    assert gallery.shape == (len(fullsize["ids"]), 768) and ids == fullsize["ids"]
    normalized = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    worst = 0.0
    health = client.get("/healthz").json()
    assert health["gallery_size"] == len(ids) and health["dim"] == 768
    for q in QUERIES:
        served = np.asarray(client.post("/v1/embed/text", json={"texts": [q]}).json()["embeddings"], np.float32)
        batch = pretrained.tokenizer([q])
        with torch.no_grad():
            direct = pretrained.model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True)
        diff = float(np.abs(served - direct.numpy()).max())
        assert diff < 1e-5, diff
        worst = max(worst, diff)
        for k in (1, 3, len(ids)):
            got = client.get("/v1/search", params={"q": q, "k": k}).json()["results"]
            scores, rows = search_embeddings(served, normalized, k=k)
            assert [r["row"] for r in got] == rows[0].tolist(), q
            assert [r["id"] for r in got] == [ids[i] for i in rows[0]]
            assert np.abs(np.asarray([r["score"] for r in got]) - scores[0]).max() < 1e-6
    print(f"\nfull size, {len(QUERIES)} queries x k in (1, 3, {len(ids)}): results = exact top-k; served text "
          f"embedding vs encode_text max abs diff {worst:.2e}")


def test_fullsize_image_search_returns_the_query_image_first(fullsize):
    client = fullsize["client"]
    gaps = []
    for row, image_id in enumerate(fullsize["ids"]):
        data = (fullsize["root"] / "images" / image_id).read_bytes()
        got = client.post("/v1/search/image", params={"k": 2},
                          files={"file": (image_id.rsplit("/", 1)[-1], data, "image/jpeg")}).json()["results"]
        assert got[0]["row"] == row and got[0]["id"] == image_id, (image_id, got)
        assert got[0]["score"] > 0.99999 and got[0]["score"] > got[1]["score"]
        gaps.append((got[0]["score"], got[0]["score"] - got[1]["score"]))
    print(f"\nfull size, {len(gaps)} gallery images: each first for itself; self cosine >= "
          f"{min(g[0] for g in gaps):.7f}, smallest margin over the runner-up {min(g[1] for g in gaps):.2e}")
