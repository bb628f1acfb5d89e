"""The promises of the training pieces' docstrings, each checked alone and fast (no training run): the settings'
checks, the pairs' order and the skip of an unreadable image, the collated batch, checkpoints and the metrics log,
the step seeds and the precision choice. ``test_training.py`` runs the trainer end to end."""
from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ernievil2torch.constants import CHECKPOINTS_DIR, CONFIG_NAME, TRAINER_STATE_NAME, WEIGHTS_NAME
from ernievil2torch.data.stream import StreamPosition
from ernievil2torch.errors import CheckpointError, InputError
from ernievil2torch.training.checkpoints import (MetricsLog, latest_checkpoint, list_checkpoints, load_trainer_state,
                                                 save_checkpoint, write_model)
from ernievil2torch.training.run_folder import start_run_folder
from ernievil2torch.training.data import CollatePairs, PairBatches, PairDataset, load_pairs, sample_rng
from ernievil2torch.training.settings import FinetuneSettings
from ernievil2torch.training.trainer import Trainer, step_seed
from ernievil2torch.training.validation import Validation
from helpers import torch_threads
from shapes import shapes_config


# ---- settings ---------------------------------------------------------------------------------------------------------
def settings(tmp_path: Path, **overrides) -> FinetuneSettings:
    return FinetuneSettings(**{"model": tmp_path / "m", "train": tmp_path / "t.jsonl", "out": tmp_path / "o",
                               **overrides})


def test_the_gradient_cache_takes_the_default_accumulation_only(tmp_path):
    """--grad_cache_chunk makes the whole batch one batch of negatives: with --grad_accum at its default (1) it is
    accepted, any other accumulation is refused."""
    settings(tmp_path, grad_cache_chunk=4).check()
    settings(tmp_path, grad_cache_chunk=4, grad_accum=1).check()
    for accum in (2, 3):
        with pytest.raises(InputError, match="--grad_cache_chunk with --grad_accum"):
            settings(tmp_path, grad_cache_chunk=4, grad_accum=accum).check()


def test_a_step_consumes_the_global_batch_times_the_accumulation(tmp_path):
    """items_per_s and the progress bar count pairs: per process x processes x micro-batches per step."""
    assert settings(tmp_path, batch_size=8).pairs_per_step(1) == 8
    assert settings(tmp_path, batch_size=8, grad_accum=3).pairs_per_step(2) == 48


POSITIVE = ("epochs", "batch_size", "grad_accum", "max_length", "eval_every", "save_every", "log_every", "keep_last",
            "eval_batch_size", "max_steps")


@pytest.mark.parametrize("name", POSITIVE)
def test_counts_must_be_positive_integers(tmp_path, name):
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(InputError, match=f"--{name} must be a positive integer"):
            settings(tmp_path, **{name: bad}).check()
    settings(tmp_path, **{name: 1}).check()


def test_the_other_checks_and_their_edges(tmp_path):
    good = settings(tmp_path)
    good.check()
    settings(tmp_path, warmup_steps=0, num_workers=0, lr=1e-9, freeze="text", precision="bf16", resume=True).check()
    settings(tmp_path, freeze="vision", precision="fp32", overwrite=True, val="v.jsonl", val_images="v").check()
    refused = {"--warmup_steps must be >= 0": {"warmup_steps": -1}, "--num_workers must be >= 0": {"num_workers": -1},
               "--lr must be positive": {"lr": 0}, "--lr must be positive,": {"lr": -1e-5},
               "--precision must be one of": {"precision": "fp16"}, "--freeze must be 'vision' or 'text'":
                   {"freeze": "both"}, "contradict each other": {"overwrite": True, "resume": True},
               "--val_images needs --val": {"val_images": "v"}}
    for message, values in refused.items():
        with pytest.raises(InputError, match=message):
            settings(tmp_path, **values).check()
    for name in ("warmup_steps", "num_workers"):
        with pytest.raises(InputError, match=f"--{name}"):
            settings(tmp_path, **{name: 1.5}).check()


def test_the_result_settings_are_all_but_the_free_ones(tmp_path):
    """A resume must match every setting that changes the weights; only the documented free ones may differ."""
    s = settings(tmp_path, images="imgs")
    free = {"out", "eval_every", "save_every", "log_every", "keep_last", "eval_at_start", "eval_batch_size",
            "num_workers", "device", "overwrite", "resume", "progress", "gradient_checkpointing"}
    assert set(FinetuneSettings.FREE_ON_RESUME) == free
    assert set(s.result_settings()) == {f.name for f in dataclasses.fields(FinetuneSettings)} - free
    assert s.run_record(3) == {**s.result_settings(), "world_size": 3}
    assert s.images == str(tmp_path.resolve() / "imgs") or Path(s.images).is_absolute()
    assert FinetuneSettings.from_arguments(2024, "t", "o").model.endswith("2024")  # numbers from the command line


# ---- the pairs --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pairs,batch,world", [(50, 4, 2), (8, 4, 2), (17, 3, 1), (9, 1, 3)])
def test_pair_batches_cover_each_epoch_once_and_drop_the_incomplete_batch(pairs, batch, world):
    per_epoch = pairs // (batch * world)
    samplers = [PairBatches(pairs, batch, world, rank, seed=7, start=0, count=2 * per_epoch) for rank in range(world)]
    batches = [list(s) for s in samplers]
    assert all(len(s) == 2 * per_epoch and len(b) == 2 * per_epoch for s, b in zip(samplers, batches))
    for epoch in (0, 1):
        order = np.random.default_rng([7, epoch]).permutation(pairs)
        for micro in range(per_epoch):
            global_batch = order[micro * batch * world:(micro + 1) * batch * world]
            for rank in range(world):
                got = batches[rank][epoch * per_epoch + micro]
                assert got == [(epoch, int(i)) for i in global_batch[rank * batch:(rank + 1) * batch]]
        seen = [i for rank in range(world) for b in batches[rank][epoch * per_epoch:(epoch + 1) * per_epoch]
                for _, i in b]
        assert len(seen) == len(set(seen)) == per_epoch * batch * world  # the remainder is dropped, not repeated


def test_pair_batch_positions_round_trip_and_refuse_what_is_no_batch_start():
    sampler = PairBatches(50, 4, 2, 1, seed=3, start=0, count=0)  # 6 global batches of 8 an epoch
    for micro in (0, 1, 5, 6, 13):
        position = sampler.position(micro)
        assert position == StreamPosition(micro // 6, (micro % 6) * 8)
        assert sampler.micro_batch_at(position) == micro
    with pytest.raises(InputError, match=">= 0"):
        sampler.position(-1)
    for bad in (StreamPosition(0, 4), StreamPosition(0, 48), StreamPosition(1, 0, shard=1)):
        with pytest.raises(InputError, match="not the start of a batch"):
            sampler.micro_batch_at(bad)
    assert sampler.micro_batch_at(StreamPosition(2, 40)) == 17
    PairBatches(8, 4, 2, 0, 0, 0, 1)  # exactly one global batch is enough
    with pytest.raises(InputError, match="lower --batch_size"):
        PairBatches(7, 4, 2, 0, 0, 0, 1)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Four captioned images, the second and the last unreadable (they exist, so the up-front check passes)."""
    root = tmp_path_factory.mktemp("pairs")
    lines = []
    for i in range(4):
        path = root / f"{i}.png"
        if i in (1, 3):
            path.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
        else:
            noise = np.random.default_rng(i).integers(0, 256, size=(36, 44 + 8 * i, 3), dtype=np.uint8)
            Image.fromarray(noise).save(path)  # noise: every crop and flip gives other pixels
        lines.append(json.dumps({"image": path.name, "caption": f"caption {i}"}, ensure_ascii=False))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_pairs(str(root / "captions.jsonl"), str(root))


def test_an_unreadable_image_gives_its_place_to_the_next_readable_pair(pairs):
    dataset = PairDataset(pairs, image_size=32, seed=1)
    pixels, caption, skipped = dataset[(0, 0)]
    assert caption == "caption 0" and skipped == [] and pixels.shape == (3, 32, 32)
    pixels, caption, skipped = dataset[(0, 1)]
    assert caption == "caption 2" and [name for name, _ in skipped] == ["1.png"]
    _, caption, skipped = dataset[(2, 3)]  # wraps around to the first pair
    assert caption == "caption 0" and [name for name, _ in skipped] == ["3.png"]
    assert all(reason for _, reason in skipped)


def test_a_sample_is_a_function_of_the_seed_the_epoch_and_the_pair(pairs):
    one, again, other_seed = PairDataset(pairs, 32, seed=1), PairDataset(pairs, 32, seed=1), PairDataset(pairs, 32, 2)
    assert torch.equal(one[(0, 0)][0], again[(0, 0)][0])
    crops = {bytes(one[(epoch, 0)][0].numpy()) for epoch in range(8)}
    assert len(crops) > 1  # the epoch changes the draw
    assert not all(torch.equal(one[(e, 0)][0], other_seed[(e, 0)][0]) for e in range(8))
    draws = {(e, i): sample_rng(1, (e, i)).random() for e in range(3) for i in range(3)}
    assert len(set(draws.values())) == 9 and sample_rng(1, (2, 1)).random() == draws[(2, 1)]


def test_no_readable_image_at_all_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"broken")
    (tmp_path / "c.jsonl").write_text(json.dumps({"image": "a.png", "caption": "x"}) + "\n")
    with pytest.raises(InputError, match="none of the 1 training images can be read"):
        PairDataset(load_pairs(str(tmp_path / "c.jsonl"), str(tmp_path)), 32, 0)[(0, 0)]


def test_missing_images_are_refused_with_the_role_and_the_flag(tmp_path):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"image": f"{i}.png", "caption": "x"}) + "\n"
                                              for i in range(12)))
    with pytest.raises(InputError, match=r"^validation data .*12 of 12 images not found") as error:
        load_pairs(str(tmp_path / "c.jsonl"), str(tmp_path), "validation")
    assert "9.png" in str(error.value) and "10.png" not in str(error.value)  # the first 10 are listed
    with pytest.raises(InputError, match=r"^validation data: .*--val_images"):
        load_pairs(str(tmp_path / "c.jsonl"), None, "validation", "caption_folder", images_flag="--val_images")


class CountingTokenizer:
    """Token ids 1, 5, 5, ..., 2: one id per character, truncated to max_length, padded with 0."""

    def __call__(self, texts, max_length, padding, return_tensors):
        assert padding == "longest" and return_tensors == "pt"
        rows = [[1] + [5] * min(len(t), max_length - 2) + [2] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def test_collate_stacks_tokenises_and_gathers_the_skips():
    samples = [(torch.full((3, 4, 4), float(i)), "x" * (2 + 3 * i), [(f"bad{i}", "r")] * i) for i in range(3)]
    batch = CollatePairs(CountingTokenizer(), max_length=7)(samples)
    assert len(batch) == 3 and batch.pixel_values.shape == (3, 3, 4, 4)
    assert [float(batch.pixel_values[i, 0, 0, 0]) for i in range(3)] == [0.0, 1.0, 2.0]
    assert batch.input_ids.shape == (3, 7) and batch.attention_mask.sum(1).tolist() == [4, 7, 7]
    assert batch.skipped == [("bad1", "r"), ("bad2", "r"), ("bad2", "r")]


# ---- checkpoints and the log ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    from ernievil2torch.modeling import ErnieViL2

    return ErnieViL2(shapes_config())


def test_checkpoints_keep_the_newest_and_only_complete_ones_count(tmp_path, small_model):
    for step, keep in ((2, 2), (4, 2), (10, 2), (12, 2)):
        save_checkpoint(tmp_path, step, small_model, None, "src", {"format": 1, "step": step}, keep)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000010", "step-00000012"]
    assert latest_checkpoint(tmp_path).name == "step-00000012"  # the newest of several: what --resume continues
    save_checkpoint(tmp_path, 13, small_model, None, "src", {"format": 1, "step": 13}, 1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000013"]
    assert load_trainer_state(latest_checkpoint(tmp_path)) == {"format": 1, "step": 13}
    incomplete = tmp_path / CHECKPOINTS_DIR / "step-00000099"  # a kill before the trainer state was written
    incomplete.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (incomplete / name).write_text("{}")
    (tmp_path / CHECKPOINTS_DIR / "step-100").mkdir()  # not a checkpoint name
    assert latest_checkpoint(tmp_path).name == "step-00000013"
    assert latest_checkpoint(tmp_path / "nothing-here") is None and list_checkpoints(tmp_path / "none") == []


def test_the_trainer_state_loads_no_pickled_code(tmp_path, small_model):
    path = write_model(tmp_path / "ck", small_model, None, "src", 1, {TRAINER_STATE_NAME: {"format": 1, "step": 1},
                                                                      "extra.json": {"a": [1, 2]}})
    assert json.loads((path / "extra.json").read_text()) == {"a": [1, 2]}
    torch.save({"step": 1, "payload": Path("/etc")}, path / TRAINER_STATE_NAME)  # a class, not plain values
    with pytest.raises(CheckpointError, match="cannot read the trainer state"):
        load_trainer_state(path)
    (path / TRAINER_STATE_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read the trainer state"):
        load_trainer_state(path)


def test_a_trainer_state_of_another_format_is_refused_by_name(tmp_path, small_model):
    """A resume reads only the trainer-state layout this version writes: another format, or none (a state from
    before the field), is a CheckpointError naming both formats, never a silent misreading."""
    from ernievil2torch.training.checkpoints import TRAINER_STATE_FORMAT

    path = write_model(tmp_path / "ck", small_model, None, "src", 1,
                       {TRAINER_STATE_NAME: {"format": TRAINER_STATE_FORMAT, "step": 1}})
    assert load_trainer_state(path)["step"] == 1
    for state, found in (({"format": TRAINER_STATE_FORMAT + 1, "step": 1}, TRAINER_STATE_FORMAT + 1),
                         ({"step": 1}, None)):
        torch.save(state, path / TRAINER_STATE_NAME)
        with pytest.raises(CheckpointError, match=f"trainer state format {found!r}, this version resumes format "
                                                  f"{TRAINER_STATE_FORMAT} only"):
            load_trainer_state(path)


def test_metrics_log_appends_truncates_and_skips_a_cut_line(tmp_path):
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step, "note": "步"})
    log.write({"event": "no step"})
    assert "步" in log.path.read_text(encoding="utf-8")  # UTF-8, not escaped
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"step": 4, "lo')  # a kill mid-line
    assert [r.get("step") for r in log.records()] == [1, 2, 3, None]
    log.truncate_after(2)
    assert [r.get("step") for r in log.records()] == [1, 2, None]
    log.truncate_after(0)  # a record without a step belongs to no step after 0
    assert [r.get("step") for r in log.records()] == [None]
    log.truncate_after(-1)
    assert log.records() == []
    silent = MetricsLog(tmp_path / "other", enabled=False)  # another process than the main one
    silent.write({"step": 1})
    silent.truncate_after(0)
    assert not silent.path.exists() and silent.records() == []
    fresh = MetricsLog(tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    fresh.truncate_after(5)
    assert not fresh.path.exists()  # nothing to truncate: nothing written
    log.write({"step": 1})
    before = log.path.read_bytes()
    MetricsLog(tmp_path, enabled=False).truncate_after(-1)  # a non-main process never touches the main one's log
    MetricsLog(tmp_path, enabled=False).write({"step": 9})
    assert log.path.read_bytes() == before


def test_a_fresh_start_empties_the_log_and_a_resume_drops_only_later_steps(tmp_path):
    """``--resume`` of a run killed before its first checkpoint starts afresh: the old log (validation at step 0
    included) is emptied, so no record appears twice; a resume at step 4 keeps steps <= 4 and notes the resume."""
    out = tmp_path / "run"
    out.mkdir()
    s = settings(tmp_path, out=out, resume=True)
    log = MetricsLog(out)
    for step in (0, 1, 2, 5):
        log.write({"step": step, "loss": 1.0})
    start_run_folder(s, 1, log, None)
    assert log.records() == [] and json.loads((out / "run.json").read_text())["world_size"] == 1
    for step in (0, 1, 4, 5, 6):
        log.write({"step": step, "loss": 1.0})
    start_run_folder(s, 1, log, 4)
    assert [(r["step"], r.get("event")) for r in log.records()] == [(0, None), (1, None), (4, None), (4, "resumed")]


# ---- the trainer's pieces ---------------------------------------------------------------------------------------------
def test_step_seeds_depend_on_the_run_seed_the_step_and_the_rank_only():
    seeds = {(s, t, r): step_seed(s, t, r) for s in (1, 2) for t in (0, 1, 2) for r in (0, 1)}
    assert len(set(seeds.values())) == len(seeds)
    assert step_seed(1, 2, 1) == seeds[(1, 2, 1)] and all(0 <= v < 2 ** 63 for v in seeds.values())


def test_precision_picks_bf16_autocast_only_when_asked_or_on_a_capable_gpu(tmp_path):
    assert Trainer(settings(tmp_path, device="cpu")).autocast().__class__.__name__ == "nullcontext"  # auto, CPU
    assert Trainer(settings(tmp_path, device="cpu", precision="fp32")).autocast().__class__.__name__ == "nullcontext"
    context = Trainer(settings(tmp_path, device="cpu", precision="bf16")).autocast()
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    with context:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_validation_record_is_the_logged_summary():
    metrics = {"t2i": {"R@1": 50.0}, "i2t": {"R@1": 25.0}, "mean_recall": 40.0, "num_texts": 4, "num_images": 2}
    record = Validation(metrics, [("a.png", "broken")]).record()
    assert record == {**metrics, "skipped_images": ["a.png"]}
    assert Validation(None, [("a.png", "x")]).record() == {"t2i": None, "i2t": None, "mean_recall": None,
                                                            "skipped_images": ["a.png"]}


# ---- the trainer, on the drawn shapes (a second or two each) -----------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model runs fastest on one thread (two threads on a busy machine are much slower)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from shapes import shapes_setup

    return shapes_setup(tmp_path_factory.mktemp("shapes"), images_per_caption=2)  # 40 pairs


def shapes_settings(shapes, out: Path, **overrides) -> FinetuneSettings:
    values = dict(model=shapes.model, train=shapes.train, out=out, images=shapes.train_images, batch_size=8,
                  lr=1e-3, warmup_steps=1, num_workers=0, progress=False, gradient_checkpointing=False,
                  eval_at_start=False, log_every=1, save_every=1000, eval_every=1000, device="cpu")
    values.update(overrides)
    return FinetuneSettings(**values)


def test_an_epoch_is_a_pass_over_the_pairs_whatever_the_accumulation(shapes, tmp_path, monkeypatch):
    """40 pairs, 8 a micro-batch, 2 micro-batches a step: an epoch is 5 micro-batches -> 2 whole steps (the
    incomplete one is dropped), logged at epochs 0.5 and 1. Without ``eval_at_start`` the only validation is the
    one at the last step."""
    from ernievil2torch.runtime.distributed import DistributedContext
    from ernievil2torch.training import run_finetune

    closed = []
    original_close = DistributedContext.close
    monkeypatch.setattr(DistributedContext, "close", lambda self: closed.append(1) or original_close(self))
    result = run_finetune(shapes_settings(shapes, tmp_path / "run", grad_accum=2, epochs=1, val=shapes.val,
                                          val_images=shapes.val_images))
    assert result.steps == 2 and closed == [1]  # the run closes the process group it set up
    with pytest.raises(InputError, match="40 training pairs do not fill one step of 8 pairs x 1 process"):
        run_finetune(shapes_settings(shapes, tmp_path / "too-few", grad_accum=6))  # 5 micro-batches < 6
    assert not (tmp_path / "too-few").exists()
    records = MetricsLog(tmp_path / "run").records()
    assert [r["epoch"] for r in records if "loss" in r] == [0.5, 1.0]
    assert [r["step"] for r in records if "validation" in r] == [2]


def test_accumulated_gradients_are_the_mean_over_the_micro_batches(shapes, tmp_path):
    """One step of ``grad_accum`` micro-batches: the gradient is their mean (so the same micro-batch twice gives the
    gradient of one), not their sum: the logged gradient norm and the clipping see the gradient of the step."""
    trainer = Trainer(shapes_settings(shapes, tmp_path / "run", grad_accum=2, max_steps=1))
    trainer.prepare()
    batch = next(iter(trainer.loader()))
    trainer.model.eval()  # no dropout: the same micro-batch gives the same gradient
    for _ in range(2):
        trainer.micro_step(batch, sync=True)
    accumulated = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad(set_to_none=True)
    trainer.objective(batch.pixel_values, batch.input_ids, batch.attention_mask).backward()
    assert accumulated.keys() == {n for n, p in trainer.model.named_parameters() if p.grad is not None}
    for name, p in trainer.model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(accumulated[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_processes_synchronise_gradients_on_the_last_micro_batch_of_a_step_only(shapes, tmp_path):
    """With ``grad_accum`` micro-batches, DDP's all-reduce runs once a step, on the last one (the others run under
    ``no_sync``): fewer exchanges, and the same mean gradient. Recorded on a stand-in for the DDP wrapper."""
    trainer = Trainer(shapes_settings(shapes, tmp_path / "run", grad_accum=3, max_steps=2))
    trainer.prepare()
    synced = []

    class RecordingDdp:
        def __init__(self, module):
            self.module, self.sync = module, True

        @contextlib.contextmanager
        def no_sync(self):
            self.sync = False
            try:
                yield
            finally:
                self.sync = True

        def __call__(self, *inputs):
            synced.append(self.sync)
            return self.module(*inputs)

    trainer.step_module = RecordingDdp(trainer.objective)
    batches = iter(trainer.loader())
    for step in range(2):
        trainer.optimizer_step(step, batches)
    assert synced == [False, False, True] * 2


def test_each_unreadable_image_is_reported_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    messages = []
    from ernievil2torch.training import TrainingEvents

    trainer = Trainer(settings(tmp_path, out=out, device="cpu"), TrainingEvents(on_message=messages.append))
    trainer.report_skipped(3, [("a.png", "broken"), ("a.png", "broken"), ("b.png", "empty")])
    trainer.report_skipped(4, [("b.png", "empty"), ("c.png", "cut")])
    assert trainer.skipped == [("a.png", "broken"), ("b.png", "empty"), ("c.png", "cut")]
    events = [(r["step"], r["image"]) for r in MetricsLog(out).records() if r.get("event") == "skipped_image"]
    assert events == [(3, "a.png"), (3, "b.png"), (4, "c.png")]
    assert len(messages) == 3 and all("skipped unreadable training image" in m for m in messages)


def test_best_is_a_trained_step_and_a_tie_keeps_the_earlier_one(shapes, tmp_path):
    """``best/`` holds the best validation of a *fine-tuned* model: the baseline validation before the first step
    is never saved as best, and an equal recall later does not replace it (with a learning rate too small to
    change any ranking, every validation ties: best is the first trained step)."""
    from ernievil2torch.training import run_finetune

    result = run_finetune(shapes_settings(shapes, tmp_path / "run", val=shapes.val, val_images=shapes.val_images,
                                          eval_at_start=True, eval_every=1, max_steps=2, lr=1e-12))
    records = [r for r in MetricsLog(tmp_path / "run").records() if "validation" in r]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert len({r["validation"]["mean_recall"] for r in records}) == 1  # the premise: every validation ties
    assert result.best_step == 1
    assert json.loads((tmp_path / "run" / "best" / "best.json").read_text())["step"] == 1


def test_a_log_record_is_its_windows_mean_loss_and_training_speed(shapes, tmp_path, monkeypatch):
    """Each ``log_every`` record: the mean loss of the steps since the last record, the last step's learning rate
    and gradient norm, and items/s over the training time of those steps only (README: validation and
    checkpointing not counted). A virtual clock advances 2 s per step and 100 s per validation or checkpoint, so
    every figure is known exactly: 2 steps x 8 pairs in 4 s = 4 items/s."""
    from types import SimpleNamespace

    import ernievil2torch.training.trainer as trainer_module

    now = [0.0]
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    out = tmp_path / "run"
    trainer = Trainer(shapes_settings(shapes, out, val=shapes.val, val_images=shapes.val_images, max_steps=4,
                                      log_every=2, eval_every=2, save_every=2, eval_at_start=True))
    trainer.prepare()
    steps = []

    def advancing(method, seconds, record=None):
        def wrapped(*args):
            result = method(*args)
            now[0] += seconds
            if record is not None:
                record.append(result)
            return result
        return wrapped

    trainer.optimizer_step = advancing(trainer.optimizer_step, 2.0, steps)
    trainer.run_validation = advancing(trainer.run_validation, 100.0)
    trainer.checkpoint = advancing(trainer.checkpoint, 100.0)
    trainer.run()
    records = [r for r in MetricsLog(out).records() if "loss" in r]
    assert [r["step"] for r in records] == [2, 4] and len(steps) == 4
    for record, window in zip(records, (steps[:2], steps[2:])):
        assert record["loss"] == pytest.approx(float(np.mean([loss for loss, _, _, _ in window])), rel=1e-12)
        assert (record["grad_norm"], record["lr"]) == (window[-1][1], window[-1][2])
        assert record["items_per_s"] == pytest.approx(2 * 8 / 4.0)
    assert records[0]["loss"] != records[1]["loss"]


def test_the_summary_names_the_first_five_skipped_images_and_counts_all():
    from ernievil2torch.training import FinetuneResult

    result = FinetuneResult(Path("out"), 7, Path("out/final"), skipped_images=[(f"{i}.png", "bad") for i in range(7)])
    text = result.summary()
    assert text.startswith("fine-tuned 7 steps; final model: out/final")
    assert "7 unreadable training image(s) skipped" in text
    assert all(f"{i}.png: bad" in text for i in range(5)) and "5.png" not in text and "6.png" not in text
    resumed = FinetuneResult(Path("o"), 9, Path("o/final"), Path("o/best"), 4, 61.25, resumed_from=3).summary()
    assert "(resumed at step 3)" in resumed and "best validation mean recall 61.25 at step 4: o/best" in resumed



def test_a_validation_whose_images_became_unreadable_is_reported_not_fatal(shapes, tmp_path):
    """After the first step, unreadable validation images are skipped and reported; with none left the step's
    validation has no metrics (said in a message), and the run goes on."""
    import shutil

    from ernievil2torch.training import TrainingEvents, run_finetune

    val_images = tmp_path / "val"
    shutil.copytree(shapes.val_images, val_images)
    for image in (val_images / "images").iterdir():
        image.write_bytes(b"\x89PNG\r\n\x1a\n gone bad after the start")
    messages = []
    result = run_finetune(shapes_settings(shapes, tmp_path / "run", val=shapes.val, val_images=val_images,
                                          max_steps=1), TrainingEvents(on_message=messages.append))
    assert result.steps == 1 and result.best_step is None and result.last_validation is None
    assert any(m.startswith("step 1: validation skipped 20 unreadable item(s)") for m in messages), messages
    assert "step 1: validation has no readable pair left: no metrics" in messages
    (record,) = [r for r in MetricsLog(tmp_path / "run").records() if "validation" in r]
    assert record["validation"]["mean_recall"] is None and len(record["validation"]["skipped_images"]) == 20



def test_a_run_releases_its_trainer_before_it_closes_the_process_group(monkeypatch):
    """run_finetune's contract: the trainer (under torchrun, its DDP module holds the process group and gloo's
    pending work) is freed before the group is destroyed, so nothing of the group is left for interpreter
    finalization, which aborts a process that did all its work (SIGABRT at exit, seen in CI)."""
    import weakref

    from ernievil2torch.training import entry

    made = []
    alive_at_close = []

    class Group:
        def close(self):
            alive_at_close.append(made[0]() is not None)

    class FakeTrainer:
        def __init__(self, settings, events):
            self.group = Group()
            self.me = self  # a cycle, as objects holding hooks can form: freed only by the garbage collector
            made.append(weakref.ref(self))

        def prepare(self):
            pass

        def run(self):
            return "result"

    monkeypatch.setattr(entry, "Trainer", FakeTrainer)
    assert entry.run_finetune(None) == "result"
    assert alive_at_close == [False]
