"""webdataset shards (img2dataset layout) as a dataset format: the reader, damaged samples skipped and listed, and
``embed`` / ``eval`` / ``finetune`` giving over shards what they give over the same pairs as an image folder."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ernievil2torch.apps.embed import embed
from ernievil2torch.apps.retrieval import evaluate
from ernievil2torch.data.formats import detect_format, open_dataset
from ernievil2torch.data.webdataset import WebDatasetReader
from ernievil2torch.errors import InputError
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.storage.embeddings import read_embed_output
from ernievil2torch.training import FinetuneSettings, TrainingEvents, finetune, run_finetune

from helpers import REPO_ROOT, torch_threads
from shapes import shapes_setup
from wds import write_folder, write_shards

PER_SHARD = 7  # uneven: the last shard is shorter
#: Embeddings and fine-tuned weights over shards vs the same pairs in an image folder (README states it).
EQUALITY_ATOL = 1e-6
SINGLE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The drawn-shapes model and its pairs, as webdataset shards and as an image folder + captions.jsonl."""
    root = tmp_path_factory.mktemp("wds")
    shapes = shapes_setup(root / "shapes", images_per_caption=1)
    pairs = []
    for line in Path(shapes.train).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        pairs.append(((Path(shapes.train_images) / record["image"]).read_bytes(), record["caption"]))
    shards = write_shards(pairs, root / "shards", PER_SHARD, extension="png")
    captions = write_folder(pairs, root / "folder", extension="png")
    return shapes, pairs, root / "shards", shards, captions


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_the_reader_indexes_every_sample_without_reading_images(setup):
    _, pairs, folder, shards, _ = setup
    assert detect_format(folder) == "webdataset" and detect_format(shards[0]) == "webdataset"
    reader = open_dataset(folder)
    assert isinstance(reader, WebDatasetReader) and reader.random_access and reader.problems == []
    assert len(reader) == reader.num_images == len(pairs)
    assert reader.texts == [caption for _, caption in pairs]
    assert reader.image_ids[:2] == ["000000000", "000000001"]
    assert [reader.image(j) for j in (0, len(pairs) - 1)] == [pairs[0][0], pairs[-1][0]]
    sizes = [stop - start for start, stop in reader.shard_bounds]
    assert sizes == [PER_SHARD] * (len(pairs) // PER_SHARD) + ([len(pairs) % PER_SHARD] if len(pairs) % PER_SHARD
                                                                else [])
    import pickle

    assert pickle.loads(pickle.dumps(reader)).image(3) == pairs[3][0]  # DataLoader workers get a copy
    with pytest.raises(InputError, match="no webdataset shards"):
        WebDatasetReader(folder / "nowhere")


def _damaged_copy(shards, tmp_path):
    """The shards with: a sample without caption, a caption not UTF-8, a broken image (valid tar), shard 1's
    header 3 damaged (the rest of that shard is lost), the last shard cut off inside a member."""
    out = tmp_path / "damaged"
    out.mkdir()
    for number, shard in enumerate(shards):
        target = out / shard.name
        with tarfile.open(shard) as src, tarfile.open(target, "w", format=tarfile.USTAR_FORMAT) as dst:
            for info in src.getmembers():
                data = src.extractfile(info).read()
                if number == 0 and info.name == "000000001.txt":
                    continue
                if number == 0 and info.name == "000000002.txt":
                    data = b"\xff\xfe bad"
                if number == 0 and info.name == "000000003.png":
                    data = data[:40]
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    with tarfile.open(out / shards[1].name) as tar:
        header = tar.getmembers()[6].offset  # the third sample's first member
    raw = bytearray((out / shards[1].name).read_bytes())
    raw[header + 148:header + 156] = b"garbage!"  # its header checksum no longer matches
    (out / shards[1].name).write_bytes(bytes(raw))
    last = out / shards[-1].name
    with tarfile.open(last) as tar:
        cut = tar.getmembers()[-3]  # the last sample's image: cut inside its data
    last.write_bytes(last.read_bytes()[:cut.offset_data + cut.size // 2])
    return out


def _as_folder(reader: WebDatasetReader, tmp_path: Path) -> Path:
    """The reader's readable samples as an image folder + captions.jsonl (``tmp_path/as_folder``)."""
    pairs = [(reader.image(j), reader.texts[j]) for j in range(reader.num_images)]
    return write_folder(pairs, tmp_path / "as_folder", extension="png")


def test_damaged_members_and_images_are_skipped_and_listed(setup, tmp_path):
    shapes, pairs, folder, shards, _ = setup
    damaged = _damaged_copy(shards, tmp_path)
    reader = WebDatasetReader(damaged)
    lines = reader.problem_lines()
    assert "00000.tar:000000001: no .txt caption member" in lines
    assert any(line.startswith("00000.tar:000000002: caption is not UTF-8") for line in lines)
    assert any(line.startswith("00001.tar: damaged after byte") for line in lines), lines
    assert any(line.startswith(f"{shards[-1].name}: damaged after byte") for line in lines), lines
    assert "000000003" in reader.image_ids  # a broken image is a valid member: decoding finds it
    result = embed(str(damaged), str(shapes.model), str(tmp_path / "out"), kind="image", num_workers=0,
                   progress=False, batch_size=4)
    failed = (tmp_path / "out" / "failed.tsv").read_text(encoding="utf-8")
    for needle in ("000000003\t", "00000.tar:000000001\t", "00001.tar\t", f"{shards[-1].name}\t"):
        assert needle in failed, failed
    assert result.count == reader.num_images - 1 and result.failed == len(reader.problems) + 1
    evaluation = evaluate(str(shapes.model), str(damaged), num_workers=0, progress=False)
    assert evaluation.num_images == evaluation.num_texts == reader.num_images - 1
    assert len(evaluation.skipped) == len(reader.problems) + 1 and any(
        line.startswith("000000003: ") for line in evaluation.skipped)
    assert evaluation.summary().splitlines()[-1].startswith(f"skipped {len(reader.problems) + 1} damaged sample")
    messages = []
    settings = FinetuneSettings(str(shapes.model), str(damaged), str(tmp_path / "ft"), batch_size=8, max_steps=1,
                                num_workers=0, progress=False, gradient_checkpointing=False, eval_at_start=False)
    run = run_finetune(settings, TrainingEvents(on_message=messages.append))
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["sample"] for r in records if r.get("event") == "skipped_sample") == sorted(
        where for where, _ in reader.problems)
    assert any(m.startswith(f"skipped {len(reader.problems)} damaged training sample") for m in messages)
    assert run.steps == 1
    with pytest.raises(InputError, match="1 image\\(s\\) could not be read: .*not a recognised image"):
        evaluate(str(shapes.model), str(_as_folder(reader, tmp_path)), images=str(tmp_path / "as_folder" / "images"),
                 num_workers=0, progress=False)  # the other formats stop at an unreadable image


def test_embed_over_shards_equals_the_image_folder(setup, tmp_path):
    shapes, pairs, folder, shards, captions = setup
    for kind, folder_input in (("image", captions.parent / "images"), ("text", captions)):
        over_shards = embed(str(folder), str(shapes.model), str(tmp_path / f"wds_{kind}"), kind=kind,
                            num_workers=0, progress=False, batch_size=4, field="caption")
        embed(str(folder_input), str(shapes.model), str(tmp_path / f"folder_{kind}"), kind=kind, num_workers=0,
              progress=False, batch_size=4, field="caption")
        a, b = read_embed_output(tmp_path / f"wds_{kind}"), read_embed_output(tmp_path / f"folder_{kind}")
        assert a.ids == [f"{i:09d}" for i in range(len(pairs))] and len(b.ids) == len(pairs)
        difference = float(np.abs(np.asarray(a.embeddings) - np.asarray(b.embeddings)).max())
        print(f"embed {kind}s, shards vs folder: max abs diff {difference:.3g}")
        assert difference <= EQUALITY_ATOL
        assert over_shards.shards_done_now == len(shards)  # one embed shard per .tar


def test_eval_over_shards_gives_the_folder_recalls(setup, tmp_path):
    shapes, pairs, folder, shards, captions = setup
    over_shards = evaluate(str(shapes.model), str(folder), num_workers=0, progress=False)
    over_folder = evaluate(str(shapes.model), str(captions), images=str(captions.parent / "images"), num_workers=0,
                           progress=False)
    assert over_shards.metrics == over_folder.metrics and over_shards.num_images == len(pairs)


def _one_step(model, data, out, **extra):
    return finetune(str(model), str(data), str(out), batch_size=8, max_steps=1, lr=1e-3, warmup_steps=0,
                    num_workers=0, progress=False, gradient_checkpointing=False, eval_at_start=False, **extra)


def _max_weight_diff(a: Path, b: Path) -> float:
    sa, sb = ErnieViL2.from_pretrained(a).state_dict(), ErnieViL2.from_pretrained(b).state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def test_one_finetune_step_over_shards_equals_the_folder(setup, tmp_path):
    shapes, pairs, folder, shards, captions = setup
    _one_step(shapes.model, folder, tmp_path / "wds")
    _one_step(shapes.model, captions, tmp_path / "folder", images=str(captions.parent / "images"))
    difference = _max_weight_diff(tmp_path / "wds" / "final", tmp_path / "folder" / "final")
    print(f"one fine-tuning step, shards vs folder: max abs weight diff {difference:.3g}")
    assert difference <= EQUALITY_ATOL
    assert json.loads((tmp_path / "wds" / "run.json").read_text())["data_format"] in (None, "webdataset")


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=SINGLE_THREAD)


def test_torchrun_two_processes_over_shards(setup, tmp_path):
    shapes, pairs, folder, shards, captions = setup
    proc = _torchrun("-m", "ernievil2torch.embed", str(folder), str(shapes.model), str(tmp_path / "embed2"),
                     "--batch_size", "4", "--num_workers", "0", "--progress", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    embed(str(folder), str(shapes.model), str(tmp_path / "embed1"), batch_size=4, num_workers=0, progress=False)
    one, two = read_embed_output(tmp_path / "embed1"), read_embed_output(tmp_path / "embed2")
    assert one.ids == two.ids and np.array_equal(np.asarray(one.embeddings), np.asarray(two.embeddings))
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "embed2" / "shards").glob("*.json"))]
    assert [m["stop"] - m["start"] for m in metas] == [stop - start for start, stop in
                                                       WebDatasetReader(folder).shard_bounds]

    args = ["--batch_size", "4", "--max_steps", "1", "--lr", "1e-3", "--warmup_steps", "0", "--num_workers", "0",
            "--progress", "false", "--gradient_checkpointing", "false", "--eval_at_start", "false"]
    proc = _torchrun("-m", "ernievil2torch.finetune", str(shapes.model), str(folder), str(tmp_path / "ft_wds"), *args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    proc = _torchrun("-m", "ernievil2torch.finetune", str(shapes.model), str(captions), str(tmp_path / "ft_folder"),
                     "--images", str(captions.parent / "images"), *args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    difference = _max_weight_diff(tmp_path / "ft_wds" / "final", tmp_path / "ft_folder" / "final")
    print(f"torchrun x2, one fine-tuning step, shards vs folder: max abs weight diff {difference:.3g}")
    assert difference <= EQUALITY_ATOL


SLOW_EMBED = """
import sys, time, torch
torch.set_num_threads(1)
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.apps.embed import embed
original = ErnieViL2.encode_image
def slow(self, *a, **k):
    time.sleep(0.4)
    return original(self, *a, **k)
ErnieViL2.encode_image = slow
embed(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=4, num_workers=0, progress=False)
"""


def test_a_killed_embed_resumes_without_redoing_finished_shards(setup, tmp_path):
    shapes, pairs, folder, shards, captions = setup
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EMBED, str(folder), str(shapes.model), str(out)],
                            env=SINGLE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "shards" / "00000.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # killed while the second shard is being encoded
    proc.wait()
    done = sorted(p.name for p in (out / "shards").glob("*.json"))
    assert 1 <= len(done) < len(shards) and not (out / "embeddings.npy").exists()
    written = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*")}
    result = embed(str(folder), str(shapes.model), str(out), batch_size=4, num_workers=0, progress=False)
    assert result.shards_skipped == len(done) and result.shards_done_now == len(shards) - len(done)
    assert all((out / "shards" / name).stat().st_mtime_ns == when for name, when in written.items())
    fresh = tmp_path / "fresh"
    embed(str(folder), str(shapes.model), str(fresh), batch_size=4, num_workers=0, progress=False)
    assert np.array_equal(np.asarray(read_embed_output(out).embeddings), np.asarray(read_embed_output(fresh).embeddings))


def _tar(path: Path, members: dict) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_several_caption_lines_are_several_captions_of_one_image(setup, tmp_path):
    _, pairs, _, _, _ = setup
    _tar(tmp_path / "0.tar", {"a.png": pairs[0][0], "a.txt": "第一句。\n\n第二句！\n".encode(),
                              "b.png": pairs[1][0], "b.txt": b"  \n"})
    reader = WebDatasetReader(tmp_path)
    assert reader.texts == ["第一句。", "第二句！"] and reader.text_image == [0, 0] and reader.image_ids == ["a"]
    assert reader.problem_lines() == ["0.tar:b: empty caption"]
    from ernievil2torch.data.webdataset import shard_items

    items, bounds = shard_items(reader, "text")
    assert [(i.id, i.source, i.error) for i in items] == [("a#0", "第一句。", None), ("a#1", "第二句！", None),
                                                          ("0.tar:b", None, "empty caption")]
    assert bounds == [(0, 3)]


def test_labelled_images_in_clip_benchmarks_layout(setup, tmp_path):
    from ernievil2torch.data.webdataset import open_labelled_images

    _, pairs, _, _, _ = setup
    root = tmp_path / "set"
    (root / "test").mkdir(parents=True)
    with pytest.raises(InputError, match="classnames.txt: no such file"):
        open_labelled_images(root)
    (root / "classnames.txt").write_text("猫\n狗\n", encoding="utf-8")
    (root / "zeroshot_classification_templates.txt").write_text("一张{}的照片\n", encoding="utf-8")
    with pytest.raises(InputError, match="has no '\\{c\\}'"):
        open_labelled_images(root)
    (root / "zeroshot_classification_templates.txt").write_text("一张{c}的照片\n", encoding="utf-8")
    for number in (10, 2):  # numbered shards are read in number order: 2 before 10
        _tar(root / "test" / f"{number}.tar", {f"k{number}.png": pairs[number][0], f"k{number}.cls": b"1",
                                               f"x{number}.png": pairs[0][0], f"x{number}.cls": b"7"})
    labelled = open_labelled_images(root)
    assert [i.id for i in labelled.items] == ["k2", "k10"] and labelled.labels == [1, 1]
    assert labelled.items[0].source() == pairs[2][0]
    assert [where for where, _ in labelled.problems] == ["2.tar:x2", "10.tar:x10"]


def test_an_interrupted_finetune_over_shards_resumes_to_the_uninterrupted_weights(setup, tmp_path, monkeypatch):
    from ernievil2torch.training import trainer

    shapes, pairs, folder, shards, captions = setup
    settings = dict(batch_size=4, max_steps=4, save_every=2, lr=1e-3, warmup_steps=0, num_workers=0, progress=False,
                    gradient_checkpointing=False, eval_at_start=False)
    finetune(str(shapes.model), str(folder), str(tmp_path / "straight"), **settings)
    real, calls = trainer.save_checkpoint, []

    def interrupted_after_the_first(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt  # Ctrl-C right after the step-2 checkpoint is written

    monkeypatch.setattr(trainer, "save_checkpoint", interrupted_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        finetune(str(shapes.model), str(folder), str(tmp_path / "resumed"), **settings)
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    assert calls == [1] and not (tmp_path / "resumed" / "final").exists()
    result = finetune(str(shapes.model), str(folder), str(tmp_path / "resumed"), resume=True, **settings)
    assert result.resumed_from == 2 and result.steps == 4
    assert _max_weight_diff(tmp_path / "straight" / "final", tmp_path / "resumed" / "final") <= EQUALITY_ATOL
