"""How a command fails: bad input is one line, a bug shows its traceback, Ctrl-C leaves what its message says.

``run_command``'s contract (``ernievil2torch/cli/runner.py``) is tested on stand-in commands first. Then every ``ernievil2``
subcommand is interrupted in the middle of its work (a ``KeyboardInterrupt`` raised from inside the library, where
Ctrl-C would land) and the files it left are checked against the message it printed. ``INTERRUPTIONS`` must cover
every subcommand: a new command needs a case here (a function that interrupts it and checks what it left).
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
import pytest
from PIL import Image

from ernievil2torch import cli
from ernievil2torch.config import tiny224_config, tiny_config
from ernievil2torch.errors import CheckpointError, InputError
from ernievil2torch.data.demo import demo_images
from ernievil2torch.verify.synthetic import write_synthetic_pdparams

from helpers import require_module


def invoke(component, argv: List[str], monkeypatch, capsys) -> Tuple[int, str, str]:
    """Run ``cli.run_command(component)`` as the ``ernievil2`` command with ``argv``: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ernievil2", *map(str, argv)])
    capsys.readouterr()
    try:
        cli.run_command(component, name="ernievil2")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# ---- run_command's contract on stand-in commands -----------------------------------------------------------------

def _raising(exc: BaseException) -> Callable[[], None]:
    def command() -> None:
        raise exc
    return command


def test_bad_input_is_one_error_line(monkeypatch, capsys):
    for exc in (InputError("image #1 (missing.jpg): no such file"), CheckpointError("x.pdparams: the file is empty")):
        code, out, err = invoke({"run": _raising(exc)}, ["run"], monkeypatch, capsys)
        assert (code, out, err) == (cli.EXIT_BAD_INPUT, "", f"error: {exc}\n")


def test_a_bug_shows_its_traceback_and_says_internal_error(monkeypatch, capsys):
    def command() -> None:
        {}["missing"]  # a bug inside the project

    code, out, err = invoke({"run": command}, ["run"], monkeypatch, capsys)
    assert code == cli.EXIT_INTERNAL_ERROR and out == ""
    assert "Traceback (most recent call last)" in err and "KeyError: 'missing'" in err and "in command" in err
    assert err.splitlines()[-1] == ("internal error: this is a bug in ernievil2torch; please report it with the "
                                    "traceback above")


def test_an_os_error_is_one_error_line_naming_the_file_and_the_reason(monkeypatch, capsys):
    code, out, err = invoke({"run": _raising(OSError(28, "No space left on device"))}, ["run"], monkeypatch, capsys)
    assert (code, err) == (cli.EXIT_BAD_INPUT, "error: No space left on device\n")
    denied = PermissionError(13, "Permission denied", "/proc/x12/model.safetensors")
    code, out, err = invoke({"run": _raising(denied)}, ["run"], monkeypatch, capsys)
    assert (code, err) == (cli.EXIT_BAD_INPUT, "error: /proc/x12/model.safetensors: Permission denied\n")
    code, out, err = invoke({"run": _raising(OSError("no reason"))}, ["run"], monkeypatch, capsys)
    assert (code, err) == (cli.EXIT_BAD_INPUT, "error: no reason\n")


class _Check:
    def __init__(self, passed: bool) -> None:
        self.passed = passed

    def summary(self) -> str:
        return "PASS" if self.passed else "FAIL"


def test_a_failed_check_prints_its_summary_and_exits_1(monkeypatch, capsys):
    code, out, err = invoke({"run": lambda: _Check(False)}, ["run"], monkeypatch, capsys)
    assert (code, out, err) == (cli.EXIT_CHECK_FAILED, "FAIL\n", "")
    code, out, err = invoke({"run": lambda: _Check(True)}, ["run"], monkeypatch, capsys)
    assert (code, out, err) == (0, "PASS\n", "")


@pytest.mark.parametrize("main,module", [(cli.main_embed, "ernievil2torch.embed"),
                                         (cli.main_finetune, "ernievil2torch.finetune")])
def test_the_module_commands_name_themselves_in_errors(main, module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, "--no_such_flag"])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == cli.EXIT_BAD_INPUT and err.startswith(f"error: python -m {module}: unknown flag")
    assert err.rstrip().endswith(f"see python -m {module} --help"), err


def test_ctrl_c_prints_what_the_command_leaves(monkeypatch, capsys):
    declared = cli.leaves_on_interrupt("interrupted; the test's message")(_raising(KeyboardInterrupt()))
    code, _, err = invoke({"run": declared}, ["run"], monkeypatch, capsys)
    assert (code, err) == (cli.EXIT_INTERRUPTED, "interrupted; the test's message\n")
    code, _, err = invoke({"run": _raising(KeyboardInterrupt())}, ["run"], monkeypatch, capsys)
    assert (code, err) == (cli.EXIT_INTERRUPTED, "interrupted\n")


def test_real_bad_input_through_the_console_command(tmp_path, monkeypatch, capsys):
    demo_images()[0].save(tmp_path / "a.jpg")  # the image exists: the model folder is what is wrong
    code, _, err = invoke(cli.commands(), ["classify", "--model", tmp_path / "nowhere", "--images",
                                           tmp_path / "a.jpg", "--labels", "猫,狗"], monkeypatch, capsys)
    assert code == cli.EXIT_BAD_INPUT and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "not a converted model directory" in err and "Traceback" not in err


# ---- Ctrl-C in each real command ---------------------------------------------------------------------------------

class Interrupt:
    """``patch(target, name)`` replaces ``target.name`` with a wrapper that lets ``calls`` calls through (0: none),
    then runs the real function once more (when ``after_call``) and raises KeyboardInterrupt, as Ctrl-C would."""

    def __init__(self, monkeypatch) -> None:
        self.monkeypatch = monkeypatch

    def patch(self, target, name: str, calls: int = 0, after_call: bool = True) -> None:
        real = getattr(target, name)
        seen = {"n": 0}

        def wrapper(*args, **kwargs):
            seen["n"] += 1
            if seen["n"] <= calls:
                return real(*args, **kwargs)
            if after_call:
                real(*args, **kwargs)
            raise KeyboardInterrupt

        self.monkeypatch.setattr(target, name, wrapper)


def listing(root: Path) -> List[str]:
    """Every path under ``root``, hidden ones included (leftovers of an interrupted write would show here)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def small_model(model_folder) -> Path:
    """A 2-layer model with the real input geometry and a synthetic 40000-token vocab."""
    return model_folder("tiny224", seed=4, vocab="synthetic")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> List[Path]:
    root = tmp_path_factory.mktemp("cli_images")
    paths = []
    for i, image in enumerate(demo_images()):
        paths.append(root / f"shape{i}.png")
        image.save(paths[-1])
    return paths


def interrupt_convert(tmp_path, small_model, images, interrupt) -> Tuple[List[str], Callable[[], None]]:
    from ernievil2torch.storage import model_dir

    src = write_synthetic_pdparams(tmp_path / "tiny.pdparams", tiny224_config(), "official", seed=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "previous.txt").write_text("the previous output")
    before = listing(tmp_path)
    interrupt.patch(model_dir, "write_safetensors_streaming")  # after the whole weights file is written

    def check() -> None:
        assert listing(tmp_path) == before  # the previous output intact, nothing partial beside it

    return ["convert", "--src", src, "--dst", tmp_path / "out", "--overwrite"], check


def interrupt_check(tmp_path, small_model, images, interrupt):
    require_module("paddle")
    from ernievil2torch.conversion.pdparams import load_pdparams
    from ernievil2torch.storage import model_dir

    interrupt.patch(model_dir, "write_safetensors_streaming")

    def check() -> None:
        work = tmp_path / "work"
        assert listing(work) == ["synthetic_official.pdparams"]  # finished and complete; no partial conversion
        assert len(load_pdparams(work / "synthetic_official.pdparams")) > 0

    return ["check", "--tiny", "--workdir", tmp_path / "work"], check


def interrupt_check_writing_the_checkpoint(tmp_path, small_model, images, interrupt):
    require_module("paddle")
    import pickle

    def partial_dump(obj, handle, protocol=None):
        handle.write(b"\x80\x04 half a pickle")
        raise KeyboardInterrupt

    interrupt.monkeypatch.setattr(pickle, "dump", partial_dump)

    def check() -> None:
        assert listing(tmp_path / "work") == []

    return ["check", "--tiny", "--workdir", tmp_path / "work"], check


def interrupt_similarity(tmp_path, small_model, images, interrupt):
    require_module("matplotlib")
    from matplotlib.figure import Figure

    interrupt.patch(Figure, "savefig")  # the PNG is fully written, then Ctrl-C before it is published

    def check() -> None:
        assert listing(tmp_path) == []

    return ["similarity", "--model", small_model, "--plot", tmp_path / "sim.png"], check


def interrupt_classify(tmp_path, small_model, images, interrupt):
    from ernievil2torch.apps import zero_shot

    interrupt.patch(zero_shot, "classify", after_call=True)

    def check() -> None:
        assert listing(tmp_path) == []

    return ["classify", "--model", small_model, "--images", ",".join(map(str, images)), "--labels", "圆形,正方形"], \
        check


def interrupt_embed(tmp_path, small_model, images, interrupt):
    from ernievil2torch.apps.embed import pipeline

    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"一张猫的照片 {i}\n" for i in range(30)), encoding="utf-8")
    args = ["embed", texts, small_model, tmp_path / "out", "--kind", "text", "--shard_size", "10", "--batch_size",
            "5", "--num_workers", "0", "--progress", "False"]
    interrupt.patch(pipeline, "write_shard", calls=1, after_call=False)  # shard 0 written, Ctrl-C before shard 1

    def check() -> None:
        shards = tmp_path / "out" / "shards"
        assert sorted(p.name for p in shards.iterdir()) == ["00000.json", "00000.npy"]
        assert np.load(shards / "00000.npy").shape == (10, 128)
        assert not (tmp_path / "out" / "embeddings.npy").exists()
        interrupt.monkeypatch.undo()  # the real write_shard again: the same command resumes
        from ernievil2torch.apps.embed import embed

        summary = embed(str(texts), str(small_model), str(tmp_path / "out"), kind="text", shard_size=10,
                        batch_size=5, num_workers=0, progress=False)
        assert summary.shards_skipped == 1 and summary.shards_done_now == 2 and summary.count == 30

    return args, check


def _search_inputs(tmp_path: Path) -> Tuple[Path, Path]:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "q.npy", rng.standard_normal((4, 8)).astype(np.float32))
    np.save(tmp_path / "g.npy", rng.standard_normal((50, 8)).astype(np.float32))
    return tmp_path / "q.npy", tmp_path / "g.npy"


def interrupt_search(tmp_path, small_model, images, interrupt):
    from ernievil2torch.apps.retrieval import commands

    queries, gallery = _search_inputs(tmp_path)
    before = listing(tmp_path)
    real_atomic_file = commands.atomic_file

    @contextlib.contextmanager
    def interrupted_after_one_line(path, *args, **kwargs):
        with real_atomic_file(path, *args, **kwargs) as handle:
            class Handle:
                def write(self, text):
                    handle.write(text)
                    raise KeyboardInterrupt
            yield Handle()

    interrupt.monkeypatch.setattr(commands, "atomic_file", interrupted_after_one_line)

    def check() -> None:
        assert listing(tmp_path) == before

    return ["search", queries, gallery, tmp_path / "hits.tsv", "--k", "3"], check


def interrupt_eval(tmp_path, small_model, images, interrupt):
    from ernievil2torch.apps.retrieval import commands

    (tmp_path / "imgs").mkdir()
    lines = []
    for i, path in enumerate(images):
        Image.open(path).save(tmp_path / "imgs" / path.name)
        lines.append(json.dumps({"image": path.name, "caption": ["圆形", "正方形", "三角形"][i]}, ensure_ascii=False))
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = listing(tmp_path)

    def partial_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    interrupt.monkeypatch.setattr(commands.np, "savez", partial_savez)

    def check() -> None:
        assert listing(tmp_path) == before

    return ["eval", small_model, tmp_path / "captions.jsonl", "--images", tmp_path / "imgs", "--out",
            tmp_path / "metrics.json", "--save_embeddings", tmp_path / "emb.npz", "--num_workers", "0",
            "--progress", "False"], check


def interrupt_export(tmp_path, small_model, images, interrupt):
    from ernievil2torch.export import hf

    interrupt.patch(hf, "_save_safetensors", calls=1)  # the text tower written, Ctrl-C after the vision tower

    def check() -> None:
        assert listing(tmp_path) == []

    return ["export", small_model, tmp_path / "hf", "--format", "hf"], check



def _embedded_gallery(tmp_path: Path, small_model: Path, images: List[Path]) -> Tuple[Path, Path]:
    from ernievil2torch.apps.embed import embed

    (tmp_path / "photos").mkdir()
    for path in images:
        Image.open(path).save(tmp_path / "photos" / path.name)
    embed(str(tmp_path / "photos"), str(small_model), str(tmp_path / "gallery"), kind="image", num_workers=0,
          progress=False, normalize=True)
    return tmp_path / "photos", tmp_path / "gallery"


def interrupt_serve(tmp_path, small_model, images, interrupt):
    require_module("fastapi")
    uvicorn = require_module("uvicorn")

    photos, gallery = _embedded_gallery(tmp_path, small_model, images)
    before = listing(tmp_path)
    interrupt.patch(uvicorn.Server, "run", after_call=False)  # Ctrl-C while serving

    def check() -> None:
        assert listing(tmp_path) == before

    return ["serve", small_model, "--gallery", gallery, "--images", photos, "--port", "0"], check


def interrupt_index(tmp_path, small_model, images, interrupt):
    require_module("pymilvus")
    require_module("milvus_lite")
    from ernievil2torch.apps.index import index_photos, indexer

    (tmp_path / "photos").mkdir()
    for path in images:
        Image.open(path).save(tmp_path / "photos" / path.name)
    interrupt.patch(indexer._Run, "_embed", calls=1)  # the first batch of two written, Ctrl-C in the second

    def check() -> None:
        interrupt.monkeypatch.undo()
        again = index_photos(str(small_model), [str(tmp_path / "photos")], db=str(tmp_path / "photos.db"),
                             batch_size=2, progress=False)
        assert (again.unchanged, again.added, again.embedded, again.rows) == (2, 1, 1, 3), again.summary()

    return ["index", small_model, tmp_path / "photos", "--db", tmp_path / "photos.db", "--batch_size", "2",
            "--progress", "False"], check


def interrupt_dedup(tmp_path, small_model, images, interrupt):
    from ernievil2torch.apps import dedup

    photos, gallery = _embedded_gallery(tmp_path, small_model, images)
    before = listing(tmp_path)
    interrupt.patch(dedup, "near_duplicate_groups")  # the groups found, Ctrl-C before anything is published

    def check() -> None:
        assert listing(tmp_path) == before

    return ["dedup", gallery, "--out", tmp_path / "dups", "--images", photos], check


def interrupt_finetune(tmp_path, small_model, images, interrupt):
    from shapes import shapes_setup

    from ernievil2torch.constants import TRAINER_STATE_NAME
    from ernievil2torch.modeling import ErnieViL2
    from ernievil2torch.training import trainer

    setup = shapes_setup(tmp_path / "data", images_per_caption=1)
    out = tmp_path / "run"
    interrupt.patch(trainer, "save_checkpoint", calls=1)  # step-2 checkpoint written, Ctrl-C after step 4's

    def check() -> None:
        steps = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert steps == ["step-00000002", "step-00000004"], steps  # both complete, nothing partial beside them
        for step in steps:
            ErnieViL2.from_pretrained(out / "checkpoints" / step)
            assert (out / "checkpoints" / step / TRAINER_STATE_NAME).is_file()
        assert not [p for p in out.rglob(".*")], "hidden leftovers of an interrupted write"

    return ["finetune", setup.model, setup.train, out, "--images", setup.train_images, "--val", setup.val,
            "--val_images", setup.val_images, "--max_steps", "6", "--batch_size", "4", "--save_every", "2",
            "--keep_last", "2", "--eval_every", "100", "--num_workers", "0", "--progress", "False"], check

def interrupt_kernels(tmp_path, small_model, images, interrupt):
    """Ctrl-C as the new choice is about to be written: no cache file, no partial one."""
    from ernievil2torch.modeling import kernel_choice

    interrupt.monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real = kernel_choice.measure_kernels
    interrupt.monkeypatch.setattr(kernel_choice, "measure_kernels",
                                  lambda: real(tiny_config(), rounds=1, repeats=1))
    interrupt.patch(kernel_choice, "atomic_write_bytes", after_call=False)

    def check() -> None:
        assert listing(tmp_path) in ([], ["ernievil2torch"])

    return ["kernels", "--measure"], check


# What each subcommand prints after Ctrl-C ...
MESSAGES = {"convert": cli.ATOMIC_OUTPUT, "check": cli.ATOMIC_OUTPUT, "similarity": cli.ATOMIC_OUTPUT,
            "classify": cli.NO_OUTPUT, "embed": cli.RESUMABLE_OUTPUT, "search": cli.ATOMIC_OUTPUT,
            "eval": cli.ATOMIC_OUTPUT, "export": cli.ATOMIC_OUTPUT, "finetune": cli.CHECKPOINTED_OUTPUT,
            "serve": cli.SERVICE_STOPPED, "dedup": cli.ATOMIC_OUTPUT, "index": cli.INDEX_RESUMABLE,
            "kernels": cli.ATOMIC_OUTPUT}
# ... and the interruptions that check it: (subcommand, a function that prepares the run, interrupts it and
# returns (argv, a check of what was left)).
INTERRUPTIONS: List[Tuple[str, Callable]] = [
    ("convert", interrupt_convert), ("check", interrupt_check), ("check", interrupt_check_writing_the_checkpoint),
    ("similarity", interrupt_similarity), ("classify", interrupt_classify), ("embed", interrupt_embed),
    ("search", interrupt_search), ("eval", interrupt_eval), ("export", interrupt_export),
    ("finetune", interrupt_finetune), ("serve", interrupt_serve), ("dedup", interrupt_dedup),
    ("index", interrupt_index),
    ("kernels", interrupt_kernels),
]


def test_every_subcommand_has_an_interruption_case():
    assert set(MESSAGES) == {name for name, _ in INTERRUPTIONS} == set(cli.commands())


@pytest.mark.parametrize("name,setup", INTERRUPTIONS, ids=[case.__name__ for _, case in INTERRUPTIONS])
def test_ctrl_c_leaves_what_the_message_says(name, setup, small_model, images, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work_area"
    work.mkdir()
    message = MESSAGES[name]
    argv, check = setup(work, small_model, images, Interrupt(monkeypatch))
    code, _, err = invoke(cli.commands(), argv, monkeypatch, capsys)
    assert code == cli.EXIT_INTERRUPTED, err
    assert err.splitlines()[-1] == message and "Traceback" not in err, err
    check()
