"""embed(): generated images and texts -> embeddings equal to per-item encoding; torchrun; resume after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ernievil2torch import ErnieViL2
from ernievil2torch.apps.embed import embed
from ernievil2torch.apps.index.model_hash import model_fingerprint
from ernievil2torch.storage.embeddings import read_embed_output
from ernievil2torch.data.inputs import list_images, list_texts
from ernievil2torch.errors import InputError
from ernievil2torch.processing.image import ErnieViL2ImageProcessor
from ernievil2torch.processing.tokenizer import ErnieViL2Tokenizer

from helpers import torch_threads

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 1000
SMALL = 60  # images for the torchrun and resume runs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


#: A small vocab (ids = line numbers) covering the test texts.
TOKENS = (["[PAD]", "[CLS]", "[SEP]", "[MASK]"] + list("一只猫狗的照片张赛博朋克边缘行者")
          + ["a", "photo", "of", "cat", "dog", "##s", ",", "!", "[UNK]"])


@pytest.fixture(scope="module")
def model_dir(model_folder):
    return model_folder("tiny224", seed=5, vocab=TOKENS)


@pytest.fixture(scope="module")
def model(model_dir):
    return ErnieViL2.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """N_IMAGES generated images (sizes around 224, PNG and JPEG, in sub-folders) plus two broken files."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        h, w = int(rng.integers(200, 260)), int(rng.integers(200, 260))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        sub = root / f"part{i % 3}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(arr).save(sub / f"img{i:04d}.{'png' if i % 2 else 'jpg'}")
    (root / "part0" / "broken.jpg").write_bytes(b"not an image at all")
    (root / "part1" / "empty.png").write_bytes(b"")
    return root


def _reference(model, paths):
    processor = ErnieViL2ImageProcessor()
    with torch.no_grad():
        return np.concatenate([model.encode_image(processor([p])).numpy() for p in paths])


def test_embed_1000_images_matches_per_item(model, model_dir, image_dir, tmp_path):
    start = time.time()
    result = embed(str(image_dir), str(model_dir), str(tmp_path / "out"), kind="image", batch_size=64,
                   num_workers=2, shard_size=300, progress=False)
    elapsed = time.time() - start
    array, ids = (output := read_embed_output(tmp_path / "out")).embeddings, output.ids
    items = list_images(str(image_dir))
    good = [it for it in items if not it.id.endswith(("broken.jpg", "empty.png"))]
    assert result.count == N_IMAGES and result.failed == 2
    assert ids == [it.id for it in good]  # input order (sorted relative paths), failures left out
    failed = (tmp_path / "out" / "failed.tsv").read_text(encoding="utf-8").splitlines()
    assert sorted(line.split("\t")[0] for line in failed) == ["part0/broken.jpg", "part1/empty.png"]
    assert all("InputError" in line for line in failed)
    reference = _reference(model, [it.source for it in good])
    diff = float(np.abs(array - reference).max())
    print(f"embed {N_IMAGES} images in {elapsed:.1f}s; vs per-item encode_image: max abs diff {diff:.3g}")
    assert array.dtype == np.float32 and array.shape == (N_IMAGES, 128)
    assert diff <= 1e-5
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [299, 299, 300, 102]  # 1002 inputs; broken in shards 0, 1


def test_embed_texts_formats(model, model_dir, tmp_path):
    texts = ["一只猫的照片", "a photo of cats!", "", "赛博朋克边缘行者", "一张狗的照片"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    lines = [json.dumps({"id": f"q{i}", "caption": t}, ensure_ascii=False) for i, t in enumerate(texts)]
    lines.insert(2, "{broken json")
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "t.csv").write_text("key,caption\n" + "\n".join(f"k{i},\"{t}\"" for i, t in enumerate(texts)) + "\n",
                                    encoding="utf-8")
    tok = ErnieViL2Tokenizer(model_dir / "vocab.txt")
    with torch.no_grad():
        want = np.concatenate([model.encode_text(**tok([t])).numpy() for t in texts if t])
    for name, kwargs, ids in [("t.txt", {}, ["0", "1", "3", "4"]),
                              ("t.jsonl", {"field": "caption", "id_field": "id"}, ["q0", "q1", "q3", "q4"]),
                              ("t.csv", {"field": "caption", "id_field": "key"}, ["k0", "k1", "k3", "k4"])]:
        out = tmp_path / f"out_{name}"
        result = embed(str(tmp_path / name), str(model_dir), str(out), kind="text", batch_size=2,
                       num_workers=0, shard_size=3, progress=False, **kwargs)
        array, got_ids = (output := read_embed_output(out)).embeddings, output.ids
        assert got_ids == ids, name
        assert np.abs(array - want).max() <= 1e-5, name
        assert result.failed == (2 if name == "t.jsonl" else 1)
        shards = -(-(len(ids) + result.failed) // 3)
        assert result.joined and (result.rank, result.world_size, result.count, result.dim) == (0, 1, 4, 128)
        assert result.summary() == (f"embedded 4 texts ({result.failed} failed, listed in {out / 'failed.tsv'}) -> "
                                    f"{out / 'embeddings.npy'}; shards: {shards} computed, 0 reused")


def test_embed_nothing_succeeded(model_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(InputError, match="no image could be embedded"):
        embed(str(bad), str(model_dir), str(tmp_path / "out"), num_workers=0, progress=False)
    assert "a.jpg" in (tmp_path / "out" / "failed.tsv").read_text()


def test_list_inputs(image_dir, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"{image_dir}/part1/img0001.png\n\n{image_dir}/part0/img0000.jpg\nmissing.png\n")
    assert [i.id for i in list_images(str(listed))][:2] == [f"{image_dir}/part1/img0001.png",
                                                             f"{image_dir}/part0/img0000.jpg"]
    pattern = f"{image_dir}/part2/*.jpg"
    assert len(list_images(pattern)) == len([i for i in range(N_IMAGES) if i % 3 == 2 and i % 2 == 0])
    (tmp_path / "x.txt").write_text("a\n\nb\n")
    assert [(i.id, i.error) for i in list_texts(str(tmp_path / "x.txt"))] == [("0", None), ("1", "empty text"),
                                                                              ("2", None)]


def _small_set(image_dir, tmp_path):
    listed = tmp_path / "small.txt"
    items = list_images(str(image_dir))[:SMALL]
    listed.write_text("\n".join(i.source for i in items) + "\n")
    return listed


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return env


def test_torchrun_two_ranks_equals_one_process(model_dir, image_dir, tmp_path):
    listed = _small_set(image_dir, tmp_path)
    embed(str(listed), str(model_dir), str(tmp_path / "one"), batch_size=8, shard_size=16, num_workers=0,
          progress=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "ernievil2torch.embed",
           str(listed), str(model_dir), str(tmp_path / "two"), "--batch_size", "8", "--shard_size", "16",
           "--num_workers", "0"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, ids_one = (output := read_embed_output(tmp_path / "one")).embeddings, output.ids
    two, ids_two = (output := read_embed_output(tmp_path / "two")).embeddings, output.ids
    assert ids_one == ids_two and one.shape == (SMALL - 1, 128)  # part0/broken.jpg is among the first SMALL
    assert (tmp_path / "one" / "failed.tsv").read_text() == (tmp_path / "two" / "failed.tsv").read_text() != ""
    print(f"torchrun x2 vs one process: max abs diff {float(np.abs(one - two).max()):.3g}")
    assert np.array_equal(one, two)
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "two" / "shards").glob("*.json"))]
    assert len(metas) == 4
    # what `index --from_embeddings` needs came through the ranks' shards: the same records and model hash
    files_one, files_two = ((tmp_path / name / "files.jsonl").read_text() for name in ("one", "two"))
    records = [json.loads(line) for line in files_two.splitlines()]
    assert files_one == files_two and len(records) == SMALL - 1 and all(m["files"] for m in metas)
    first = Path(ids_two[0])  # a list file names files: each is its own folder's
    assert (records[0]["root"], records[0]["path"]) == (str(first.parent.resolve()), first.name)
    assert (records[0]["size"], len(records[0]["sha256"])) == (first.stat().st_size, 64)
    hashes = {json.loads((tmp_path / name / "manifest.json").read_text())["model_hash"] for name in ("one", "two")}
    assert hashes == {model_fingerprint(model_dir)}


SLOW_RUN = """
import sys, time, torch
torch.set_num_threads(1)
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.apps.embed import embed
from ernievil2torch.apps.index.model_hash import model_fingerprint
original = ErnieViL2.encode_image
def slow(self, *a, **k):
    time.sleep(0.3)
    return original(self, *a, **k)
ErnieViL2.encode_image = slow
embed(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=8, shard_size=16, num_workers=0, progress=False)
"""


def test_killed_run_resumes(model_dir, image_dir, tmp_path):
    listed = _small_set(image_dir, tmp_path)
    out = tmp_path / "resumed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(listed), str(model_dir), str(out)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "shards" / "00001.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "embeddings.npy").exists()
    done = sorted(p.name for p in (out / "shards").glob("*.json"))
    assert 2 <= len(done) < 4
    result = embed(str(listed), str(model_dir), str(out), batch_size=8, shard_size=16, num_workers=0,
                   progress=False)
    assert result.shards_skipped == len(done) and result.shards_done_now == 4 - len(done)
    assert result.summary().endswith(f"shards: {4 - len(done)} computed, {len(done)} reused")
    fresh = tmp_path / "fresh"
    embed(str(listed), str(model_dir), str(fresh), batch_size=8, shard_size=16, num_workers=0, progress=False)
    a, ids_a = (output := read_embed_output(out)).embeddings, output.ids
    b, ids_b = (output := read_embed_output(fresh)).embeddings, output.ids
    assert ids_a == ids_b and np.array_equal(a, b)
    # A different run in the same folder is refused.
    with pytest.raises(InputError, match="different run"):
        embed(str(listed), str(model_dir), str(out), shard_size=8, num_workers=0, progress=False)


def _tree(root: Path):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.fixture
def few_images(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(photos / f"p{i}.png")
    return photos


def test_embed_never_writes_into_or_deletes_an_input_or_a_foreign_folder(model_dir, few_images, tmp_path,
                                                                         monkeypatch):
    from ernievil2torch.errors import OutputExistsError

    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    for out, overwrite, error in [(few_images, True, InputError), (few_images, False, InputError),
                                  (tmp_path, True, InputError), (model_dir, True, InputError),
                                  (user, True, OutputExistsError), (user, False, OutputExistsError)]:
        with pytest.raises(error):
            embed(str(few_images), str(model_dir), str(out), num_workers=0, progress=False, overwrite=overwrite)
    monkeypatch.chdir(user)
    for out in ("", ".", ".."):
        with pytest.raises(InputError, match="empty|current directory"):
            embed(str(few_images), str(model_dir), out, num_workers=0, progress=False, overwrite=True)
    assert _tree(tmp_path) == before


def test_embed_overwrite_replaces_only_an_embed_output(model_dir, few_images, tmp_path):
    out = tmp_path / "emb"
    out.mkdir()  # an empty folder is used as it is
    embed(str(few_images), str(model_dir), str(out), num_workers=0, progress=False)
    (out / "embeddings.npy").write_bytes(b"stale")
    embed(str(few_images), str(model_dir), str(out), num_workers=0, progress=False, overwrite=True)
    assert read_embed_output(out).embeddings.shape[0] == 3


def test_embed_checks_the_model_before_creating_out(few_images, tmp_path):
    from ernievil2torch.errors import ErnieViL2Error

    with pytest.raises(ErnieViL2Error):
        embed(str(few_images), str(tmp_path / "nosuch"), str(tmp_path / "emb8"), num_workers=0, progress=False)
    assert not (tmp_path / "emb8").exists()


# ---- --fast_decode ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory):
    """Four JPEGs large enough for a reduced DCT scale (1/2 to 1/8), with a smooth photo-like content."""
    root = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(1)
    for i, (w, h) in enumerate([(1800, 1000), (1000, 1800), (900, 700), (480, 470)]):
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        arr = np.stack([128 + 100 * np.sin(x / (60 + 20 * c) + c) * np.cos(y / 90) for c in range(3)], -1)
        arr = np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"photo{i}.jpg", quality=90)
    return root


def test_embed_fast_decode_is_the_fast_processor_and_is_part_of_the_run(model, model_dir, large_jpegs, tmp_path):
    paths = sorted(str(p) for p in large_jpegs.glob("*.jpg"))
    fast = ErnieViL2ImageProcessor(image_size=model.config.vision.image_size, fast_decode=True)
    with torch.no_grad():
        want = np.concatenate([model.encode_image(fast([p])).numpy() for p in paths])
    out = tmp_path / "fast"
    embed(str(large_jpegs), str(model_dir), str(out), batch_size=3, num_workers=0, progress=False, fast_decode=True)
    got = read_embed_output(out)
    assert [str(large_jpegs / i) for i in got.ids] == paths
    np.testing.assert_allclose(got.embeddings, want, atol=1e-6, rtol=0)
    default = tmp_path / "default"
    embed(str(large_jpegs), str(model_dir), str(default), batch_size=3, num_workers=0, progress=False)
    np.testing.assert_allclose(read_embed_output(default).embeddings, _reference(model, paths), atol=1e-6, rtol=0)
    assert not np.allclose(read_embed_output(default).embeddings, got.embeddings, atol=1e-6)  # it does change pixels
    with pytest.raises(InputError, match="holds a different run .*fast_decode"):  # a resume never mixes decodings
        embed(str(large_jpegs), str(model_dir), str(out), batch_size=3, num_workers=0, progress=False)
    with pytest.raises(InputError, match="fast_decode applies only to --kind image"):
        embed(str(large_jpegs), str(model_dir), str(tmp_path / "t"), kind="text", fast_decode=True, progress=False)
    assert not (tmp_path / "t").exists()


def test_embed_records_its_kernels_and_never_mixes_them(model_dir, few_images, tmp_path, monkeypatch):
    """A non-reference kernel of the run's dtype is part of run.json; a resume computing with other kernels is
    refused (before the model loads), and the features agree with the reference kernels' within 1e-5."""
    from ernievil2torch.constants import KERNELS_ENV
    from ernievil2torch.storage.run_record import read_run_record

    reference = tmp_path / "reference"
    embed(str(few_images), str(model_dir), str(reference), num_workers=0, progress=False)
    assert "kernels" not in read_run_record(reference)  # the reference kernel: records as before the choice
    monkeypatch.setenv(KERNELS_ENV, "float32=onednn")
    out = tmp_path / "onednn"
    embed(str(few_images), str(model_dir), str(out), num_workers=0, progress=False)
    assert read_run_record(out)["kernels"] == "float32=onednn"
    np.testing.assert_allclose(read_embed_output(out).embeddings, read_embed_output(reference).embeddings,
                               atol=1e-5, rtol=0)
    monkeypatch.setenv(KERNELS_ENV, "reference")
    with pytest.raises(InputError, match=f"holds a different run .*kernels.*set {KERNELS_ENV}"):
        embed(str(few_images), str(model_dir), str(out), num_workers=0, progress=False)
    monkeypatch.setenv(KERNELS_ENV, "bfloat16=fp32")  # another dtype's kernel does not change an fp32 run
    embed(str(few_images), str(model_dir), str(reference), num_workers=0, progress=False)
