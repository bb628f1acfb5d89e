"""Disk planning: the size estimate of every output, and a full disk (a real small tmpfs) refused before writing with
the previous checkpoint intact; after space is freed, --resume finishes the run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ernievil2torch.constants import CHECKPOINTS_DIR, FINAL_DIR
from ernievil2torch.errors import DiskSpaceError
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.training import finetune
from ernievil2torch.training.checkpoints import list_checkpoints, load_trainer_state
from ernievil2torch.training.disk import check_free_space, estimated_bytes, format_bytes
from shapes import shapes_setup

#: The tiny shapes model: 0.61 M parameters, 2.4 MB of weights, a checkpoint 7.3 MB (weights + AdamW moments).
MOUNT_MB = 12  # room for one checkpoint (and run.json, metrics.jsonl), not for two at once


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_setup(tmp_path_factory.mktemp("shapes"), images_per_caption=1)


def run(setup, out, **overrides):
    settings = dict(images=setup.train_images, batch_size=8, lr=1e-3, warmup_steps=1, max_steps=3, save_every=1,
                    num_workers=0, progress=False, gradient_checkpointing=False, eval_at_start=False)
    settings.update(overrides)
    return finetune(setup.model, setup.train, out, **settings)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def test_estimates_cover_what_is_written_and_little_more(shapes, tmp_path):
    """The estimate the free-space check uses is never below the bytes written, and at most 1 % + 1 MB above."""
    run(shapes, tmp_path / "run", max_steps=1, lora_rank=None)
    checkpoint = list_checkpoints(tmp_path / "run")[-1]
    model = ErnieViL2.from_pretrained(checkpoint)
    state = load_trainer_state(checkpoint)
    payload = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    payload += sum(t.numel() * t.element_size() for s in state["optimizer"]["state"].values() for t in s.values())
    payload += state["rng"]["torch"].numel()
    estimate = estimated_bytes(payload, [shapes.model / "vocab.txt"])
    written = folder_bytes(checkpoint)
    print(f"\ntiny checkpoint: {format_bytes(written)} written, {format_bytes(estimate)} estimated")
    assert written <= estimate <= written * 1.01 + (1 << 20) + 4096


def test_too_little_space_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(DiskSpaceError, match=r"not enough disk space for checkpoint step-00000002/: it needs"):
        check_free_space(tmp_path, 1 << 62, "checkpoint step-00000002/")
    check_free_space(tmp_path / "not" / "yet", 1, "final/")  # a folder still to be made: its parent is asked


@pytest.fixture
def small_disk(tmp_path):
    """A real MOUNT_MB tmpfs at tmp_path/disk (unmounted afterwards)."""
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MOUNT_MB}m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.mark.mounts
def test_a_full_disk_stops_the_run_before_a_checkpoint_and_keeps_the_previous_one(shapes, small_disk):
    """keep_last 1 on a 12 MB file system: step 1's checkpoint (7.3 MB) fits; step 2's would coexist with it until
    complete, so it is refused before anything is written. Step 1's stays complete and loadable, no partial
    directory is left, and after the disk grows --resume ends the run exactly where an unhindered run ends."""
    out = small_disk / "run"
    with pytest.raises(DiskSpaceError, match="not enough disk space for checkpoint step-00000002/"):
        run(shapes, out, keep_last=1)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000001"]
    assert sorted(p.name for p in (out / CHECKPOINTS_DIR).iterdir()) == ["step-00000001"]  # no partial directory
    ErnieViL2.from_pretrained(out / CHECKPOINTS_DIR / "step-00000001")
    assert load_trainer_state(out / CHECKPOINTS_DIR / "step-00000001")["step"] == 1
    subprocess.run(["mount", "-o", f"remount,size={3 * MOUNT_MB}m", str(small_disk)], check=True)
    result = run(shapes, out, keep_last=1, resume=True)
    assert result.resumed_from == 1 and result.steps == 3
    run(shapes, small_disk / "straight", keep_last=1)
    a = ErnieViL2.from_pretrained(out / FINAL_DIR).state_dict()
    b = ErnieViL2.from_pretrained(small_disk / "straight" / FINAL_DIR).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.mounts
def test_a_write_that_still_runs_out_of_space_leaves_no_half_checkpoint(shapes, small_disk, monkeypatch):
    """Had the check passed (another process filled the disk in between), the write fails (torch.save says only
    "iostream error"): a clear DiskSpaceError, the partial directory removed, the previous checkpoint intact."""
    import ernievil2torch.training.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "check_free_space", lambda *args: None)
    out = small_disk / "run"
    with pytest.raises(DiskSpaceError, match="the disk filled up while checkpoint step-00000002/ was written"):
        run(shapes, out, keep_last=1)
    assert sorted(p.name for p in (out / CHECKPOINTS_DIR).iterdir()) == ["step-00000001"]
    ErnieViL2.from_pretrained(out / CHECKPOINTS_DIR / "step-00000001")


@pytest.mark.parametrize("lora", [None, 4])
def test_the_plan_is_what_a_run_writes(shapes, tmp_path, lora, monkeypatch):
    """plan_outputs (the sizes the README states for the full-size model) against the bytes a tiny run wrote:
    a checkpoint and final/ each within 64 KB above the plan (headers, vocab, JSON), never below. The free-space
    check before each output asks for no less than it writes and at most 1 % + 1 MB more (a LoRA run's merged
    final/ counts the adapter beside it once, not the base weights twice)."""
    from ernievil2torch.training import checkpoints as checkpoints_module
    from ernievil2torch.training.disk import plan_outputs
    from ernievil2torch.training.lora import lora_spec

    asked = {}
    check = checkpoints_module.check_free_space

    def recording_check(directory, needed, what):
        asked[what] = needed
        check(directory, needed, what)

    monkeypatch.setattr(checkpoints_module, "check_free_space", recording_check)
    run(shapes, tmp_path / "run", max_steps=1, lora_rank=lora)
    written = {f"{FINAL_DIR}/": folder_bytes(tmp_path / "run" / FINAL_DIR)}
    written.update({f"checkpoint {p.name}/": folder_bytes(p) for p in list_checkpoints(tmp_path / "run")})
    assert set(written) <= set(asked), (asked, written)
    for what, size in written.items():
        assert size <= asked[what] <= size * 1.01 + (1 << 20) + 4096, (what, size, asked[what])
    plan = plan_outputs(ErnieViL2.from_pretrained(shapes.model).config, keep_last=1,
                        lora=lora_spec(lora, None, 0.0, "qkv,out_proj,fc1,fc2", None) if lora else None)
    checkpoint = folder_bytes(list_checkpoints(tmp_path / "run")[-1])
    final = folder_bytes(tmp_path / "run" / FINAL_DIR)
    print(f"\nplan {plan.summary()}; written: checkpoint {checkpoint} B, final {final} B")
    assert plan.checkpoint <= checkpoint <= plan.checkpoint + 64 * 1024
    assert plan.model <= final <= plan.model + 64 * 1024


# ---- the arithmetic of the checks, at their boundaries ---------------------------------------------------------------
def test_tensor_bytes_counts_every_tensor_once_at_any_depth():
    from ernievil2torch.training.disk import tensor_bytes

    t = torch.zeros(10, dtype=torch.float32)  # 40 bytes
    assert tensor_bytes([t]) == 40 and tensor_bytes([{"a": t}]) == 40 and tensor_bytes([{"a": {"b": t}}]) == 40
    assert tensor_bytes([[t, (t, "text", 3)], {"x": [t]}, None]) == 120


def test_estimated_bytes_counts_the_copied_files_that_exist(tmp_path):
    from ernievil2torch.training.disk import OVERHEAD_BYTES, OVERHEAD_FRACTION, estimated_bytes

    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"x" * 1000)
    assert estimated_bytes(0) == OVERHEAD_BYTES
    assert estimated_bytes(5000, [None, vocab, tmp_path / "absent.txt"]) == \
        int(6000 * (1 + OVERHEAD_FRACTION)) + OVERHEAD_BYTES


def test_exactly_enough_free_space_is_enough(tmp_path, monkeypatch):
    """The contract is "``needed`` bytes free": equal passes, one byte less is refused."""
    import shutil as shutil_module

    from ernievil2torch.errors import DiskSpaceError
    from ernievil2torch.training import disk

    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    disk.check_free_space(tmp_path / "not" / "yet", 1000, "a checkpoint")
    with pytest.raises(DiskSpaceError, match="not enough disk space for a checkpoint"):
        disk.check_free_space(tmp_path, 1001, "a checkpoint")


def test_a_write_error_is_a_full_disk_only_when_what_remains_does_not_fit(tmp_path, monkeypatch):
    """``out_of_space_is_clear``: with ``needed`` bytes to write and ``written`` already written, a write error
    is a :class:`DiskSpaceError` when less than ``needed - written`` (plus the slack) is free, else it stays what
    it was."""
    import shutil as shutil_module

    from ernievil2torch.errors import DiskSpaceError
    from ernievil2torch.training import disk

    (tmp_path / "part").write_bytes(b"x" * 1_000_000)
    needed = 10_000_000
    usage = shutil_module.disk_usage(tmp_path)
    for free, full in ((needed - 1_000_000, True), (needed - 1_000_000 + disk.OVERHEAD_BYTES, False)):
        monkeypatch.setattr(disk.shutil, "disk_usage", lambda path, free=free: usage._replace(free=free))
        expected = DiskSpaceError if full else OSError
        with pytest.raises(expected) as raised:
            with disk.out_of_space_is_clear(tmp_path, needed, "a checkpoint"):
                raise OSError(28, "No space left on device")
        assert isinstance(raised.value, DiskSpaceError) == full


@pytest.mark.mounts
def test_under_torchrun_a_full_disk_stops_every_process_with_the_same_error(shapes, small_disk):
    """Only the main process writes; the others learn of its DiskSpaceError at the barrier after the write and stop
    with it, instead of waiting forever for a process that has stopped."""
    out = small_disk / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "ernievil2torch.finetune", str(shapes.model), str(shapes.train), str(out), "--images",
           str(shapes.train_images), "--batch_size", "4", "--max_steps", "3", "--save_every", "1", "--lr", "1e-3",
           "--num_workers", "0", "--progress", "false", "--gradient_checkpointing", "false", "--keep_last", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert proc.stderr.count("not enough disk space for checkpoint step-00000002/") >= 2, proc.stderr[-3000:]
    assert [p.name for p in list_checkpoints(out)] == ["step-00000001"]
