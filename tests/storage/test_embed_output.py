""""Is this an embed output": ``ernievil2torch.storage.embeddings``, the one writer and reader of the folder
``embed`` writes, and every caller refusing the same broken folders with the same message (the service's gallery,
``dedup``, ``search``, which also checks a bare ``.npy`` alike), and refusing text embeddings where images are
needed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ernievil2torch.apps.dedup import dedup
from ernievil2torch.apps.retrieval.commands import search
from ernievil2torch.apps.serve.gallery import Gallery
from ernievil2torch.errors import InputError
from ernievil2torch.storage.embeddings import (EmbedOutput, read_embed_output, read_embeddings_npy,
                                               read_file_records, write_embed_output)


def is_embed_output(folder: Path) -> bool:
    """Whether ``folder`` holds both files of an embed output (what the readers look for first)."""
    return (folder / "embeddings.npy").is_file() and (folder / "ids.txt").is_file()


def write_output(folder: Path, array: np.ndarray, ids, manifest=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", array)
    (folder / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    if manifest is not None:
        (folder / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return folder


def test_reads_a_valid_output_with_and_without_mmap(tmp_path):
    array = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    folder = write_output(tmp_path / "out", array, ["a", "b", "c", "相册/d.jpg", "e"], {"count": 5, "dim": 8})
    assert is_embed_output(folder) and not is_embed_output(tmp_path)
    for mmap in (False, True):
        output = read_embed_output(folder, mmap=mmap)
        assert isinstance(output, EmbedOutput) and isinstance(output.embeddings, np.memmap) == mmap
        assert np.array_equal(output.embeddings, array) and output.ids[3] == "相册/d.jpg"
        assert (output.count, output.dim, output.manifest) == (5, 8, {"count": 5, "dim": 8})
        assert "5 embeddings of dimension 8" in output.summary()
    assert read_embed_output(write_output(tmp_path / "plain", array, list("abcde"))).manifest is None
    float16 = read_embed_output(write_output(tmp_path / "half", array.astype(np.float16), list("abcde")))
    assert float16.embeddings.dtype == np.float16


def _broken(tmp_path: Path):
    """(folder, the message every reader must give) for each way an embed output can be broken."""
    good = np.ones((3, 4), np.float32)
    nan = good.copy()
    nan[2, 1] = np.nan
    inf = good.copy()
    inf[1, 0] = np.inf
    tmp_path.mkdir()
    (tmp_path / "a_file").write_text("x")
    no_ids = tmp_path / "no_ids"
    no_ids.mkdir()
    np.save(no_ids / "embeddings.npy", good)
    no_array = tmp_path / "no_array"
    no_array.mkdir()
    (no_array / "ids.txt").write_text("a\n")
    not_npy = write_output(tmp_path / "not_npy", good, "abc")
    (not_npy / "embeddings.npy").write_bytes(b"not an npy file")
    bad_utf8 = write_output(tmp_path / "bad_utf8", good, "abc")
    (bad_utf8 / "ids.txt").write_bytes(b"a\n\xff\xfe\nc\n")
    return [
        (tmp_path / "missing", "it does not exist"),
        (tmp_path / "a_file", "it is a file, not a folder"),
        (no_ids, "ids.txt is missing"),
        (no_array, "embeddings.npy is missing"),
        (not_npy, "is not a readable .npy array"),
        (write_output(tmp_path / "one_d", np.ones(3, np.float32), "abc"), "must be a 2-D [N, D] array"),
        (write_output(tmp_path / "three_d", np.ones((3, 2, 2), np.float32), "abc"), "must be a 2-D [N, D] array"),
        (write_output(tmp_path / "no_columns", np.ones((3, 0), np.float32), "abc"), "with D > 0"),
        (write_output(tmp_path / "ints", np.ones((3, 4), np.int64), "abc"), "floating point numbers, got int64"),
        (write_output(tmp_path / "more_ids", good, "abcd"), "3 embeddings but 4 ids"),
        (write_output(tmp_path / "fewer_ids", good, "ab"), "3 embeddings but 2 ids"),
        (write_output(tmp_path / "nan", nan, "abc"), "NaN or infinity (first in row 2)"),
        (write_output(tmp_path / "inf", inf, "abc"), "NaN or infinity (first in row 1)"),
        (bad_utf8, "is not UTF-8 text"),
        (write_output(tmp_path / "bad_manifest", good, "abc", "{not json"), "manifest.json is not valid JSON"),
        (write_output(tmp_path / "list_manifest", good, "abc", "[1, 2]"), "must hold a JSON object"),
    ]


def test_every_reader_refuses_a_broken_output_with_the_same_message(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    readers = {
        "read_embed_output": lambda folder: read_embed_output(folder),
        "read_embed_output(mmap)": lambda folder: read_embed_output(folder, mmap=True),
        "Gallery.load": lambda folder: Gallery.load(folder, images),
        "dedup": lambda folder: dedup(str(folder), out=str(tmp_path / "dedup_out")),
        "search (gallery)": lambda folder: search(str(good), str(folder), str(tmp_path / "hits.tsv")),
    }
    good = write_output(tmp_path / "good", np.ones((2, 4), np.float32), "xy")
    for folder, message in _broken(tmp_path / "cases"):
        for name, read in readers.items():
            if name.startswith("search") and not folder.is_dir():
                continue  # `search` also takes a bare .npy file, so a path that is not a folder means that
            with pytest.raises(InputError) as caught:
                read(folder)
            assert message in str(caught.value), (name, folder.name, str(caught.value))
            if "missing" in message or "exist" in message or "file, not" in message:
                assert "is not an `ernievil2 embed` output" in str(caught.value)
    assert not (tmp_path / "dedup_out").exists() and not (tmp_path / "hits.tsv").exists()


def test_the_finite_check_can_be_skipped_and_arrays_given_directly_are_checked(tmp_path):
    from ernievil2torch.data.image_root import ImageRoot

    array = np.ones((3, 4), np.float32)
    array[0, 0] = np.nan
    folder = write_output(tmp_path / "nan", array, "abc")
    assert np.isnan(read_embed_output(folder, check_finite=False).embeddings[0, 0])
    with pytest.raises(InputError, match="NaN or infinity"):
        Gallery.from_embeddings(array, list("abc"), ImageRoot(tmp_path))


def test_write_embed_output_is_what_read_embed_output_reads(tmp_path):
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 4)).astype(np.float32) for n in (2, 0, 3)]
    ids = ["a", "tab\there", "b", "line\nbreak", "相册/c.jpg"]
    manifest = write_embed_output(tmp_path, iter(parts), ids, [("bad\tid", "broken\nfile")], "image", 4,
                                  np.float16, normalized=True, model_dir="/m", shards=[{"rows": 5}])
    output = read_embed_output(tmp_path, kind="image")
    assert output.embeddings.dtype == np.float16
    assert np.array_equal(output.embeddings, np.concatenate(parts).astype(np.float16))
    assert output.ids == ["a", "tab here", "b", "line break", "相册/c.jpg"] and output.manifest == manifest
    assert (tmp_path / "failed.tsv").read_text(encoding="utf-8") == "bad id\tbroken file\n"
    assert {k: manifest[k] for k in ("kind", "count", "failed", "dim", "dtype", "normalized", "model_dir",
                                     "embeddings", "ids", "failures", "shards")} == {
        "kind": "image", "count": 5, "failed": 1, "dim": 4, "dtype": "float16", "normalized": True,
        "model_dir": "/m", "embeddings": "embeddings.npy", "ids": "ids.txt", "failures": "failed.tsv",
        "shards": [{"rows": 5}]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.npy", "failed.tsv", "ids.txt", "manifest.json"]
    short = tmp_path / "short"
    short.mkdir()
    with pytest.raises(ValueError, match="2 rows but there are 5 ids"):
        write_embed_output(short, [parts[0]], ids, [], "image", 4, np.float32)
    assert list(short.iterdir()) == []


def test_text_embeddings_are_refused_where_images_are_needed(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    array = np.eye(3, 4, dtype=np.float32)
    text = write_output(tmp_path / "text", array, "abc", {"kind": "text"})
    image = write_output(tmp_path / "image", array, "abc", {"kind": "image"})
    no_kind = write_output(tmp_path / "no_kind", array, "abc", {"count": 3})
    no_manifest = write_output(tmp_path / "no_manifest", array, "abc")
    message = "holds text embeddings (manifest.json kind 'text'); image embeddings are needed"
    for read in (lambda f: read_embed_output(f, kind="image"), lambda f: Gallery.load(f, images),
                 lambda f: dedup(str(f), out=str(tmp_path / "dedup_out"), images=str(images))):
        with pytest.raises(InputError) as caught:
            read(text)
        assert message in str(caught.value) and str(text) in str(caught.value)
    assert not (tmp_path / "dedup_out").exists()
    with pytest.raises(InputError, match="holds image embeddings .* text embeddings are needed"):
        read_embed_output(image, kind="text")
    for folder in (image, no_kind, no_manifest):  # without a kind in the manifest nothing says it is not images
        assert read_embed_output(folder, kind="image").count == 3
        assert len(Gallery.load(folder, images)) == 3
    assert read_embed_output(text).count == 3  # no kind asked for: any kind
    with pytest.raises(ValueError, match="kind must be one of"):
        read_embed_output(text, kind="texts")


def test_search_checks_a_bare_npy_like_an_embed_output(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.ones((2, 4), np.float32))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[CLS]\n", encoding="utf-8")
    cases = [(tmp_path / "missing.npy", "does not exist")]
    cases.append((vocab, "is not a readable .npy array: it does not start like a .npy file"))
    for name, array, message in (("one_d", np.ones(3, np.float32), "must be a 2-D [N, D] array"),
                                 ("ints", np.ones((3, 4), np.int64), "floating point numbers, got int64"),
                                 ("nan", np.full((3, 4), np.nan, np.float32), "NaN or infinity (first in row 0)"),
                                 ("objects", np.array([{"a": 1}], dtype=object), "it holds Python objects")):
        np.save(tmp_path / f"{name}.npy", array)
        cases.append((tmp_path / f"{name}.npy", message))
    for path, message in cases:
        for queries, gallery in ((path, good), (good, path)):
            with pytest.raises(InputError) as caught:
                search(str(queries), str(gallery), str(tmp_path / "hits.tsv"))
            assert message in str(caught.value) and str(caught.value).count(str(path)) == 1, str(caught.value)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            read_embeddings_npy(path)
    with pytest.raises(InputError, match="is a folder"):
        read_embeddings_npy(tmp_path)
    assert not (tmp_path / "hits.tsv").exists()


def test_search_refuses_sides_of_different_dimensions(tmp_path):
    np.save(tmp_path / "q8.npy", np.ones((2, 8), np.float32))
    folder = write_output(tmp_path / "g128", np.ones((3, 128), np.float32), "abc")
    for queries, gallery in ((tmp_path / "q8.npy", folder), (folder, tmp_path / "q8.npy")):
        with pytest.raises(InputError, match="dimension (8|128) but the gallery .* has (128|8): both must come from "
                                             "the same model"):
            search(str(queries), str(gallery), str(tmp_path / "hits.tsv"))
    assert not (tmp_path / "hits.tsv").exists()


def test_file_records_are_written_with_the_output_and_older_outputs_read_as_before(tmp_path):
    parts = [np.eye(3, dtype=np.float32)]
    records = [{"root": "/photos", "path": "相册/a.jpg", "size": 1}, None, {"root": "/photos", "path": "b.png"}]
    for name in ("new", "old", "short"):
        (tmp_path / name).mkdir()
    manifest = write_embed_output(tmp_path / "new", parts, ["a", "b", "c"], [], "image", 3, np.float32,
                                  records=records, model_hash="f" * 64)
    output = read_embed_output(tmp_path / "new", kind="image")
    assert manifest["files"] == "files.jsonl" and read_file_records(output) == records
    older = write_embed_output(tmp_path / "old", parts, ["a", "b", "c"], [], "image", 3, np.float32)
    assert "files" not in older and read_file_records(read_embed_output(tmp_path / "old")) is None
    lines = (tmp_path / "new" / "files.jsonl").read_text(encoding="utf-8").splitlines()
    for damage, message in ((lines[:2], "3 embeddings but 2 lines"), (lines[:1] + ["[1]"] + lines[2:], "line 2"),
                            (["{"] + lines[1:], "line 1 is not JSON")):
        (tmp_path / "new" / "files.jsonl").write_text("\n".join(damage) + "\n", encoding="utf-8")
        with pytest.raises(InputError, match=message):
            read_file_records(output)
    (tmp_path / "new" / "files.jsonl").unlink()
    with pytest.raises(InputError, match="names files.jsonl but it is missing"):
        read_file_records(output)
    with pytest.raises(ValueError, match="2 file records but 3 ids"):
        write_embed_output(tmp_path / "short", parts, ["a", "b", "c"], [], "image", 3, np.float32, records=records[:2])
    assert list((tmp_path / "short").iterdir()) == []  # refused before any file is written
