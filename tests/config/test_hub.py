"""Hugging Face Hub ids: ``from_pretrained``, ``load_pretrained``, ``create_model`` and the commands read a model
through ``huggingface_hub``'s cache, built here by the test (:mod:`hub_cache`); nothing is downloaded."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from ernievil2torch import ErnieViL2, create_model, load_pretrained
from ernievil2torch.config import HubId, parse_hub_id, resolve_model
from ernievil2torch.constants import VOCAB_NAME
from ernievil2torch.errors import CheckpointError, InputError
from ernievil2torch.processing.vocab import load_vocab

REPO = "ernie-test/ernie_vil-2.0-tiny"
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + list("一只猫狗的照片")


@pytest.fixture
def tiny(model_folder):
    return model_folder("tiny", 3, VOCAB)


def _same_weights(a: ErnieViL2, b: ErnieViL2) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("text, expected", [
    ("ORG/NAME", HubId("ORG/NAME")), ("PaddlePaddle/ernie_vil-2.0-base-zh", HubId("PaddlePaddle/ernie_vil-2.0-base-zh")),
    ("org/name@v1.0", HubId("org/name", "v1.0")), ("hf-hub:org/name", HubId("org/name")),
    ("hf-hub:legacy-model", HubId("legacy-model")), ("hf-hub:org/name@refs/pr/1", HubId("org/name", "refs/pr/1")),
    ("name", None), ("./org/name", None), ("a/b/c", None), ("/abs/name", None), ("org\\name", None),
    ("org/na me", None), ("org--x/name", None), ("org/na..me", None), ("org/", None), ("-org/name", None),
])
def test_which_names_are_hub_ids(text, expected):
    assert parse_hub_id(text) == expected


def test_a_cached_id_loads_offline_as_the_directory_does(tiny, hub_cache):
    snapshot = hub_cache.add(REPO, tiny)
    source = resolve_model(REPO)
    assert source.kind == "hub" and source.has_weights and source.path == snapshot and REPO in source.summary()
    _same_weights(ErnieViL2.from_pretrained(REPO), ErnieViL2.from_pretrained(tiny))
    loaded = load_pretrained(REPO, dtype="bf16")
    assert loaded.path == snapshot and loaded.model.dtype == torch.bfloat16
    assert loaded.tokenizer is not None and Path(loaded.tokenizer.vocab_file) == snapshot / VOCAB_NAME
    assert create_model(f"hf-hub:{REPO}").config == loaded.model.config


def test_a_revision_picks_its_own_snapshot(tiny, model_folder, hub_cache):
    other = model_folder("tiny", 4, VOCAB)
    hub_cache.add(REPO, tiny)
    tagged = hub_cache.add(REPO, other, revision="v2")
    assert resolve_model(f"{REPO}@v2").path == tagged
    _same_weights(ErnieViL2.from_pretrained(f"hf-hub:{REPO}@v2"), ErnieViL2.from_pretrained(other))
    with pytest.raises(AssertionError):
        _same_weights(ErnieViL2.from_pretrained(REPO), ErnieViL2.from_pretrained(other))


def test_an_uncached_id_offline_is_one_error_naming_it(hub_cache):
    started = time.monotonic()
    with pytest.raises(CheckpointError) as caught:
        load_pretrained("nobody/absent-model")
    message = str(caught.value)
    assert "nobody/absent-model" in message and "not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message
    assert time.monotonic() - started < 10


def test_an_unreachable_hub_falls_back_to_the_cache_and_names_the_id_otherwise(tiny, hub_cache):
    hub_cache.set_offline(False)  # requests go to a closed local port: refused, like a machine without network
    hub_cache.add(REPO, tiny)
    assert resolve_model(REPO).kind == "hub"
    _same_weights(ErnieViL2.from_pretrained(REPO), ErnieViL2.from_pretrained(tiny))
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=r"nobody/absent-model is not in the local Hugging Face cache and "
                                              r"could not be downloaded \(LocalEntryNotFoundError"):
        ErnieViL2.from_pretrained("nobody/absent-model")
    assert time.monotonic() - started < 30


def test_a_local_directory_wins_over_a_hub_id(tiny, model_folder, hub_cache, tmp_path, monkeypatch):
    hub_cache.add(REPO, model_folder("tiny", 4, VOCAB))
    monkeypatch.chdir(tmp_path)
    (tmp_path / REPO.split("/")[0]).mkdir()
    os.symlink(tiny, tmp_path / REPO)
    source = resolve_model(REPO)
    assert source.kind == "directory" and source.path == Path(REPO)
    _same_weights(ErnieViL2.from_pretrained(REPO), ErnieViL2.from_pretrained(tiny))


def test_a_registered_name_still_has_no_weights(hub_cache):
    with pytest.raises(InputError, match="registered model configuration without weights"):
        load_pretrained("tiny")


def test_save_pretrained_writes_what_from_pretrained_and_load_pretrained_read(tiny, tmp_path, hub_cache):
    loaded = load_pretrained(tiny)
    model_only = tmp_path / "model_only"
    loaded.model.save_pretrained(model_only)
    _same_weights(ErnieViL2.from_pretrained(model_only), loaded.model)
    full = loaded.save_pretrained(tmp_path / "full")
    assert (full / VOCAB_NAME).is_file() and not (model_only / VOCAB_NAME).exists()
    again = load_pretrained(full)
    _same_weights(again.model, loaded.model)
    assert again.tokenizer.vocab == loaded.tokenizer.vocab == load_vocab(tiny / VOCAB_NAME)
    hub_cache.add("me/saved", full)  # the same folder, uploaded as a Hub repository, loads by its id
    from_hub = load_pretrained("me/saved")
    _same_weights(from_hub.model, loaded.model)
    assert from_hub.tokenizer.vocab == loaded.tokenizer.vocab
