"""storage.run_record: ``run.json`` written atomically, compared with a fresh record, every difference named; the
files embed and finetune wrote before keep resuming."""
from __future__ import annotations

import json

import pytest

from ernievil2torch.apps.embed.shards import claim_output
from ernievil2torch.errors import InputError
from ernievil2torch.storage.run_record import (check_run_record, differing_settings, read_run_record,
                                               run_record_path, write_run_record)

SETTINGS = {"kind": "image", "dtype": "float32", "shard_size": 16, "normalize": False, "max_length": None}


def test_written_record_reads_back_and_matches_itself(tmp_path):
    path = write_run_record(tmp_path, SETTINGS)
    assert path == tmp_path / "run.json" == run_record_path(tmp_path)
    assert path.read_text(encoding="utf-8") == json.dumps(SETTINGS, indent=2) + "\n"
    assert read_run_record(tmp_path) == SETTINGS
    check_run_record(tmp_path, dict(SETTINGS), "start over")
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


def test_values_compare_as_json_gives_them_back(tmp_path):
    write_run_record(tmp_path, {"betas": (0.9, 0.999), "lr": 5})
    check_run_record(tmp_path, {"betas": [0.9, 0.999], "lr": 5.0}, "start over")


def test_every_differing_setting_is_named_with_the_advice(tmp_path):
    write_run_record(tmp_path, {**SETTINGS, "gone": 1})
    fresh = {**SETTINGS, "kind": "text", "shard_size": 8, "new": True}
    assert [name for name, _, _ in differing_settings(read_run_record(tmp_path), fresh)] == \
        ["gone", "kind", "new", "shard_size"]
    with pytest.raises(InputError) as caught:
        check_run_record(tmp_path, fresh, "pass --overwrite to start over")
    message = str(caught.value)
    assert "different run" in message and message.endswith("pass --overwrite to start over")
    for shown in ("kind: 'image' -> 'text'", "shard_size: 16 -> 8", "gone: 1 -> None", "new: None -> True"):
        assert shown in message, message
    assert "dtype" not in message and "normalize" not in message


def test_a_folder_without_record_has_nothing_to_compare(tmp_path):
    assert read_run_record(tmp_path) is None
    check_run_record(tmp_path, SETTINGS, "start over")
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_record_is_refused(tmp_path, content):
    (tmp_path / "run.json").write_bytes(content)
    with pytest.raises(InputError, match="run.json"):
        check_run_record(tmp_path, SETTINGS, "start over")


def test_an_embed_output_written_before_resumes(tmp_path):
    """The run.json an embed output already holds (``json.dumps(fingerprint, indent=2)`` + newline) is claimed by
    the same run unchanged, and refused for another, naming the setting."""
    fingerprint = {"kind": "image", "model_dir": "/models/base", "dtype": "float32", "normalize": True,
                   "shard_size": 10000, "max_length": None, "count": 3, "ids_sha1": "a" * 40}
    out = tmp_path / "out"
    out.mkdir()
    written = json.dumps(fingerprint, indent=2) + "\n"
    (out / "run.json").write_text(written, encoding="utf-8")
    claim_output(out, dict(fingerprint))
    assert (out / "run.json").read_text(encoding="utf-8") == written and (out / "shards").is_dir()
    with pytest.raises(InputError, match=r"different run .*normalize: True -> False.*--overwrite"):
        claim_output(out, {**fingerprint, "normalize": False})


def test_claim_output_writes_the_record_of_a_new_folder(tmp_path):
    out = tmp_path / "new"
    claim_output(out, SETTINGS)
    assert read_run_record(out) == SETTINGS and (out / "shards").is_dir()
