"""The one output check (storage.outputs) and every writer that uses it: an output path that could destroy the
user's files (empty, ".", the current directory or above, the root, an input or a folder holding one) is refused
before any work, and nothing is created or deleted."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ernievil2torch.config import tiny_config
from ernievil2torch.conversion import convert_checkpoint
from ernievil2torch.conversion.pdparams import save_pdparams
from ernievil2torch.errors import InputError, OutputExistsError
from ernievil2torch.storage.atomic import atomic_directory
from ernievil2torch.storage.outputs import check_output_dir, check_output_file, check_output_path
from ernievil2torch.verify.synthetic import layout_state, random_model


def snapshot(root: Path):
    """Every path under ``root`` with its size: what a refused command must leave as it was."""
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("user file")
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("path", ["", ".", "./", "..", "../..", "sub/..", "/"])
def test_current_directory_parents_root_and_empty_are_refused(in_tmp, path):
    (in_tmp / "sub").mkdir()
    with pytest.raises(InputError, match="empty|current directory|filesystem root"):
        check_output_path(path)
    with pytest.raises(InputError):
        check_output_dir(Path(path), overwrite=True)
    with pytest.raises(InputError):
        with atomic_directory(path, overwrite=True):
            pytest.fail("must not start")
    assert (in_tmp / "keep.txt").read_text() == "user file"


def test_inputs_and_folders_holding_them_are_refused(in_tmp):
    model = in_tmp / "models" / "m"
    model.mkdir(parents=True)
    with pytest.raises(InputError, match=r"^output '[^']*m' is the input"):  # a Path is shown as its text
        check_output_dir(model, overwrite=True, inputs=[model])
    with pytest.raises(InputError, match="holds the input"):
        check_output_dir(in_tmp / "models", overwrite=True, inputs=[None, str(model)])
    with pytest.raises(InputError, match="is the input"):
        check_output_file(in_tmp / "keep.txt", inputs=["keep.txt"])  # relative spelling of the same file
    assert check_output_dir(in_tmp / "models" / "m" / "sub", inputs=[model]) == (model / "sub").resolve()


def test_existing_output_message_is_one_and_names_the_way_out(in_tmp):
    (in_tmp / "out").mkdir()
    with pytest.raises(OutputExistsError, match=r"out already exists; pass --overwrite to replace it$"):
        check_output_dir(in_tmp / "out")
    with pytest.raises(OutputExistsError, match="--overwrite to replace it or --resume"):
        check_output_dir(in_tmp / "out", also=" or --resume")
    with pytest.raises(OutputExistsError, match="not a directory"):
        check_output_dir(in_tmp / "keep.txt", overwrite=True)
    with pytest.raises(OutputExistsError, match="already exists"):
        with atomic_directory(in_tmp / "out"):
            pytest.fail("must not start")


def test_output_file_needs_its_folder_and_is_not_a_folder(in_tmp):
    with pytest.raises(InputError, match="does not exist"):
        check_output_file("nodir/out.tsv")
    (in_tmp / "d").mkdir()
    with pytest.raises(OutputExistsError, match="is a directory"):
        check_output_file("d")
    with pytest.raises(OutputExistsError, match="already exists"):
        check_output_file("keep.txt", overwrite=False)
    assert check_output_file("new.tsv") == in_tmp / "new.tsv"
    assert not (in_tmp / "nodir").exists()


@pytest.fixture
def pdparams(in_tmp):
    path = in_tmp / "tiny.pdparams"
    save_pdparams(layout_state(tiny_config(), "official", seed=3), path)
    return path


@pytest.mark.parametrize("dst", ["", ".", "..", "."])
def test_convert_never_replaces_the_current_directory(in_tmp, pdparams, dst):
    before = snapshot(in_tmp.parent)
    with pytest.raises(InputError):
        convert_checkpoint(pdparams, dst, overwrite=True)
    assert snapshot(in_tmp.parent) == before


def test_convert_into_the_folder_holding_its_source_is_refused(in_tmp, pdparams):
    (in_tmp / "src").mkdir()
    src = in_tmp / "src" / "tiny.pdparams"
    os.replace(pdparams, src)
    before = snapshot(in_tmp)
    with pytest.raises(InputError, match="holds the input"):
        convert_checkpoint(src, in_tmp / "src", overwrite=True)
    assert snapshot(in_tmp) == before


@pytest.fixture
def model_copy(in_tmp):
    random_model(tiny_config(), seed=1).save_pretrained(in_tmp / "tinycopy")
    return in_tmp / "tinycopy"


@pytest.mark.parametrize("fmt, out", [(fmt, out) for fmt in ("hf", "onnx", "paddle") for out in ("", ".", "..")]
                         + [("hf", "tinycopy"), ("hf", "SELF/.."), ("onnx", "tinycopy"), ("paddle", "SELF/..")])
def test_export_never_replaces_its_source_or_the_current_directory(in_tmp, model_copy, fmt, out):
    from ernievil2torch.export import export_model

    out = out.replace("SELF", str(model_copy))
    before = snapshot(in_tmp)
    with pytest.raises((InputError, OutputExistsError)):
        export_model(fmt, str(model_copy), out, overwrite=True)
    assert snapshot(in_tmp) == before


def test_export_paddle_appends_the_suffix_and_needs_the_folder(in_tmp, model_copy):
    from ernievil2torch.export.paddle import export_paddle

    with pytest.raises(InputError, match="does not exist"):
        export_paddle(model_copy, "nodir/x.pdparams")
    assert not (in_tmp / "nodir").exists()
    result = export_paddle(model_copy, "exp")
    assert result.out == Path("exp.pdparams") and (in_tmp / "exp.pdparams").is_file()
    assert not (in_tmp / "exp").exists()
    (in_tmp / "d.pdparams").mkdir()
    with pytest.raises(OutputExistsError, match="is a directory"):
        export_paddle(model_copy, "d.pdparams", overwrite=True)


@pytest.fixture
def embeddings(in_tmp):
    from ernievil2torch.storage.atomic import atomic_save_npy

    folder = in_tmp / "emb"
    folder.mkdir()
    atomic_save_npy(folder / "embeddings.npy", np.eye(4, dtype=np.float32))
    (folder / "ids.txt").write_text("a\nb\nc\nd\n")
    return folder


def test_dedup_never_replaces_its_embeddings(in_tmp, embeddings):
    from ernievil2torch.apps.dedup import dedup

    before = snapshot(in_tmp)
    for out in (embeddings, in_tmp, "."):  # "" is no --out: the default EMBEDDINGS/dedup
        with pytest.raises(InputError):
            dedup(str(embeddings), out=str(out), overwrite=True)
    assert snapshot(in_tmp) == before


def test_search_output_file_is_checked_first(in_tmp, embeddings):
    from ernievil2torch.apps.retrieval.commands import search

    before = snapshot(in_tmp)
    with pytest.raises(InputError, match="does not exist"):
        search(str(embeddings), str(embeddings), "nodir/out.tsv")
    with pytest.raises(InputError, match="is the input"):
        search(str(embeddings), str(embeddings), str(embeddings))
    with pytest.raises(InputError, match="is the input"):
        search("missing_queries", "missing_gallery", "missing_queries")
    assert snapshot(in_tmp) == before


def test_eval_output_files_are_checked_before_any_work(in_tmp):
    from ernievil2torch.apps.retrieval.commands import evaluate

    # the model and the data do not exist: the output is refused before they are looked at
    with pytest.raises(InputError, match="does not exist"):
        evaluate("no_model", "no_data.tsv", out="nodir/m.json")
    with pytest.raises(InputError, match="does not exist"):
        evaluate("no_model", "no_data.tsv", save_embeddings="nodir/e")
    with pytest.raises(InputError, match="is the input"):
        evaluate("no_model", "keep.txt", out="keep.txt")
