"""Mutation testing of the training, service, export and data code: does the suite notice a one-line bug?

    .venv/bin/python scripts/mutate.py                      # all four groups, <= 50 mutants each (seed 0)
    .venv/bin/python scripts/mutate.py --modules training,serve --limit 30 --report /tmp/mutation.md
    .venv/bin/python scripts/mutate.py --list               # the mutants it would plant, nothing run
    .venv/bin/python scripts/mutate.py --render docs/MUTATION.json --report docs/MUTATION.md   # report again
    .venv/bin/python scripts/mutate.py --only docs/MUTATION.json --report docs/MUTATION_RECHECK.md  # survivors again
    .venv/bin/python scripts/mutate.py --render docs/MUTATION.json --recheck docs/MUTATION_RECHECK.json \
        --report docs/MUTATION.md                                        # mark the survivors the recheck killed

Run on demand (it is not part of the suite, and it takes a while: every mutant is a pytest run). What it does:

1. Copies the tracked and untracked-but-not-ignored files of the repository into a temporary folder; the working
   tree is never written to. Every run there has ``PYTHONPATH`` at the copy (checked: ``ernievil2torch`` imports
   from it) and writes no bytecode, so a mutant of the same size and second never runs a stale ``.pyc``.
2. Lists every mutant of a fixed set of one-line operators (:data:`OPERATORS`) in the modules of each group, in a
   stable order, and keeps ``--limit`` of them per group by a seeded draw (``--seed``): the same command plants the
   same mutants. Not mutated: docstrings, f-strings, error messages (anything inside ``raise``), annotations,
   decorators, imports, ``indent=`` of JSON output, and ``/`` between paths (``*`` there only raises TypeError).
3. Runs each group's tests once unmutated (they must pass; that time sets the per-mutant timeout, 3x + 30 s).
4. Per mutant: writes the changed line into the copy, runs the tests mapped to its module (:data:`FAST_TESTS`,
   ``-x``, fullsize deselected), restores the file. A failing test kills the mutant.
5. Survivors not already explained as equivalent are run again against their group's whole test rooms (:data:`ROOMS`, ``-x``; the fullsize tests
   only with ``--fullsize``); a mutant those kill is reported as "killed by room" (the fast mapping missed a test).
6. Writes a Markdown report (per module: mutants, killed, survivors with file:line, the change and, for those
   examined, why no test can fail: :data:`EXPLAINED`), the run's record beside it (``.json``), and prints a final
   table.

A mutant whose tests run past the timeout counts as killed (CI would fail it too: an endless loop or a 3x slower
suite), but is reported in its own column, so a reader can discount it.
"""
from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]

#: Module groups: name -> package folder whose ``*.py`` files are mutated.
GROUPS: Dict[str, str] = {
    "training": "ernievil2torch/training",
    "serve": "ernievil2torch/apps/serve",
    "export": "ernievil2torch/export",
    "data": "ernievil2torch/data",
}

_T = "tests/training/"
_TT = _T + "test_training.py::test_"
_S = "tests/apps/serve/"
#: test_serve.py's tests that start a console process or a server process (5-10 s apiece), and the rest of it.
_SERVE_PROCESS_TESTS = ("serve_refuses_a_public_host_without_a_token", "serve_on_all_interfaces_with_a_token",
                        "serve_listens_on_loopback_only_by_default", "serve_explains_a_bad_gallery_or_image_root",
                        "page_ships_in_the_wheel_and_is_found_from_an_installed_package")
_SERVE_PROCESSES = [f"{_S}test_serve.py::test_{name}" for name in _SERVE_PROCESS_TESTS]
_SERVE_IN_PROCESS = [_S + "test_serve.py", "-k", "not (" + " or ".join(_SERVE_PROCESS_TESTS) + ")"]
#: The tests that should catch a mutant of each module, fastest first: pytest arguments (node ids, files, ``-k``).
#: A module not listed gets its group's ``"*"`` entry.
FAST_TESTS: Dict[str, Dict[str, List[str]]] = {
    "training": {
        "optim.py": [_T + "test_optim.py", _TT + "weight_decay_only_on_linear_and_conv_weights",
                     _TT + "schedule_is_linear_warmup_then_cosine"],
        "distributed.py": [_T + "test_freeze.py", _T + "test_training_contracts.py",
                           _TT + "two_processes_give_the_loss_and_gradients_of_one"],
        "model_setup.py": [_T + "test_freeze.py", _T + "test_optim.py", _T + "test_training_contracts.py",
                           _TT + "a_model_without_temperature_gets_the_official_initial_one",
                           _TT + "freezing_a_tower_keeps_it_fixed"],
        "augment.py": [_TT + "train_augmentation_is_a_random_window_of_the_official_resize",
                       _T + "test_training_contracts.py"],
        "data.py": [_T + "test_training_contracts.py", _TT + "pair_order_is_seeded_split_by_rank_and_resumable",
                    _TT + "bad_training_data_is_refused_before_training",
                    _TT + "an_unreadable_image_mid_run_is_skipped_and_reported",
                    _TT + "checkpoints_are_model_directories_with_trainer_state",
                    "tests/data/test_data_readers.py::test_pair_batches_positions_are_stream_positions"],
        "grad_cache.py": [_T + "test_grad_cache.py", _T + "test_training_contracts.py"],
        "lora.py": [_T + "test_lora.py", _TT + "a_killed_run_resumed_ends_with_the_weights_of_an_uninterrupted_run"],
        "disk.py": [_T + "test_disk.py"],
        "checkpoints.py": [_T + "test_disk.py", _T + "test_training_contracts.py", _T + "test_lora.py",
                           _TT + "checkpoints_are_model_directories_with_trainer_state",
                           _TT + "a_killed_run_resumed_ends_with_the_weights_of_an_uninterrupted_run"],
        "settings.py": [_T + "test_training_contracts.py", _T + "test_lora.py::test_the_lora_flags_accept_their_whole_documented_range", _TT + "signature_lists_every_setting_with_its_default_and_type",
                        _TT + "an_unknown_option_is_refused_before_any_work",
                        _TT + "resume_refuses_changed_settings", "tests/test_docs.py"],
        "trainer.py": [_T + "test_training_contracts.py", _T + "test_freeze.py", _T + "test_optim.py",
                       _T + "test_grad_cache.py", _T + "test_disk.py",
                       "tests/data/test_webdataset.py::test_damaged_members_and_images_are_skipped_and_listed",
                       _TT + "records_and_messages_go_to_the_hooks_never_to_the_terminal",
                       _TT + "checkpoints_are_model_directories_with_trainer_state",
                       _TT + "resume_refuses_changed_settings", _TT + "freezing_a_tower_keeps_it_fixed",
                       _TT + "an_unreadable_image_mid_run_is_skipped_and_reported",
                       _TT + "validation_without_rows_or_with_unreadable_images_is_refused_before_training",
                       _TT + "a_model_without_temperature_gets_the_official_initial_one",
                       _TT + "finetune_runs_under_torchrun"],
        "*": [_T + "test_training_contracts.py", _T + "test_freeze.py", _T + "test_optim.py",
              _TT + "records_and_messages_go_to_the_hooks_never_to_the_terminal",
              _TT + "checkpoints_are_model_directories_with_trainer_state",
              _TT + "existing_output_is_refused_without_overwrite_or_resume",
              _TT + "resume_refuses_changed_settings",
              _TT + "dataset_formats_are_chosen_and_recorded",
              _TT + "out_is_never_an_input_or_the_current_directory",
              _TT + "an_unreadable_image_mid_run_is_skipped_and_reported",
              _TT + "validation_without_rows_or_with_unreadable_images_is_refused_before_training",
              _TT + "freezing_a_tower_keeps_it_fixed",
              _TT + "a_model_without_temperature_gets_the_official_initial_one",
              _TT + "cli_reports_bad_input_in_one_line"],
    },
    "serve": {
        "security.py": [_S + "test_serve_auth.py", _S + "test_serve.py::test_bind_policy",
                        _S + "test_serve.py::test_host_header_check_only_on_loopback_binds", _S + "test_serve_parts.py"],
        "server.py": [_S + "test_serve_parts.py", _S + "test_serve_contracts.py", *_SERVE_PROCESSES],
        **{name: [_S + "test_serve_contracts.py", _S + "test_serve_library.py"]
           for name in ("library.py", "library_routes.py", "thumbnails.py")},
        "*": [_S + "test_serve_contracts.py", _S + "test_serve_auth.py", _S + "test_serve_parts.py",
              *_SERVE_IN_PROCESS],
    },
    "export": {
        "paddle.py": ["tests/export/test_export_contracts.py", "tests/export/test_paddle_export.py"],
        "openvino.py": ["tests/export/test_export.py", "tests/export/test_export_contracts.py", "-k",
                        "openvino or registry or extra"],
        "probes.py": ["tests/export/test_export_contracts.py", "tests/export/test_export.py", "-k",
                      "onnx or openvino"],
        "files.py": ["tests/export/test_export_contracts.py", "tests/export/test_export.py", "-k", "onnx or openvino"],
        "open_clip.py": ["tests/export/test_export_contracts.py", "tests/export/test_tokenizer_json.py",
                         "tests/export/test_open_clip.py", "tests/export/test_clip_benchmark.py"],
        "tokenizer_json.py": ["tests/export/test_tokenizer_json.py", "tests/export/test_open_clip.py"],
        "charsmap.py": ["tests/export/test_tokenizer_json.py", "tests/export/test_open_clip.py"],
        "*": ["tests/export/test_export_contracts.py", "tests/export/test_export.py", "tests/cli/test_cli.py", "-k", "export or test_hf or onnx or registry"],
    },
    "data": {
        "stream.py": ["tests/data/test_data_contracts.py", "tests/data/test_data_readers.py", _T + "test_training_contracts.py",
                      _TT + "pair_order_is_seeded_split_by_rank_and_resumable"],
        "image_root.py": ["tests/data/test_data_readers.py", _S + "test_serve_parts.py", *_SERVE_IN_PROCESS],
        "inputs.py": ["tests/data/test_data_contracts.py", "tests/data/test_data_readers.py",
                      "tests/apps/test_embed.py"],
        "demo.py": ["tests/data/test_data_contracts.py", "tests/data/test_data_readers.py", "tests/cli/test_cli.py"],
        "*": ["tests/data/test_data_contracts.py", "tests/data/test_data_readers.py", "tests/apps/test_retrieval.py",
              _T + "test_training_contracts.py"],
    },
}

#: Every test room a group's code can be caught by (the second pass, over survivors only).
ROOMS: Dict[str, List[str]] = {
    "training": ["tests/training"],
    "serve": ["tests/apps/serve"],
    "export": ["tests/export", "tests/cli/test_cli.py"],
    "data": ["tests/data", "tests/apps", "tests/training"],
}


_CHARSMAP_GUARD = ("the guard against a character map too large for darts-clone's unscaled 21-bit offsets: the maps the "
                   "open_clip exporter builds (a few thousand entries) stay far below it, so moving the bound changes "
                   "no map that is ever written")
#: Survivors examined and found equivalent (no test can fail: the behaviour any caller can observe is unchanged)
#: or outside every contract: (module path, the line before and after the change, stripped; "*" after: any change
#: of that line) -> why. The report prints the reason beside such a survivor and marks every other one
#: "not explained".
_BARRIER = ("a barrier between processes: a no-op in one process, and under torchrun the next collective (the "
            "features' all_gather, DDP's all-reduce) waits for every process anyway, so no test can see it go")
_WARNING_FILTER = "hides a deprecation FutureWarning of torch; the computation is the same"
_K_BOUND = ("every search route is registered through routes.with_limits, which declares k again with ge=1 and "
            "the --max_k bound: the handler's own bound is never what FastAPI checks")
#: The same for a line whose text appears elsewhere in its module with another meaning: keyed by (module path,
#: 1-based line number, the line before and after, stripped), so the reason holds for that occurrence only and
#: stops matching (the survivor shows as not explained again) as soon as the module's lines move.
EXPLAINED_AT: Dict[Tuple[str, int, str, str], str] = {
    ("ernievil2torch/training/trainer.py", 270, "self.train_mode()", "pass"):
        "run_validation's restore of train mode just before the DiskSpaceError of save_best is raised again: that "
        "error ends the run, and run() sets train mode first thing, so the mode it was left in is seen by nobody",
}
EXPLAINED: Dict[Tuple[str, str, str], str] = {
    ("ernievil2torch/training/data.py", "if position // self.per_epoch != epoch:",
     "if position * self.per_epoch != epoch:"):
        "recomputes the same epoch order before every micro-batch: slower, the same keys",
    ("ernievil2torch/training/trainer.py",
     'self.start_micro = self.order(0, 0).micro_batch_at(StreamPosition.from_dict(trainer_state["data_position"]))',
     'self.start_micro = self.order(0, 1).micro_batch_at(StreamPosition.from_dict(trainer_state["data_position"]))'):
        "micro_batch_at does not depend on the sampler's count",
    ("ernievil2torch/training/trainer.py", "self.group.barrier()", "pass"): _BARRIER,
    ("ernievil2torch/training/trainer.py",
     "self.group.barrier()  # every process has checked OUT before the main one writes into it", "pass"): _BARRIER,
    ("ernievil2torch/training/distributed.py",
     'warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)', "pass"):
        _WARNING_FILTER,
    ("ernievil2torch/training/trainer.py",
     '"data_position": self.order(0, 0).position(step * self.settings.grad_accum).to_dict()}',
     '"data_position": self.order(1, 0).position(step * self.settings.grad_accum).to_dict()}'):
        "PairBatches.position does not depend on the sampler's start",
    ("ernievil2torch/apps/serve/middleware.py", 'if scope["type"] != "http":', "if False:"):
        "the pass-through of non-HTTP scopes: the only other scope is the lifespan, which has no path, no headers "
        "and no http.* messages, so the wrappers (SecurityHeaders, BodyLimit) leave it unchanged anyway",
    ("ernievil2torch/apps/serve/routes.py", "signature = inspect.signature(handler, eval_str=True)",
     "signature = inspect.signature(handler, eval_str=False)"):
        "FastAPI evaluates string annotations itself, in the handler's module (functools.wraps keeps it)",
    ("ernievil2torch/apps/serve/server.py",
     "config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=10, server_header=False)", "*"):
        "how long a stopping server waits for open connections: no contract fixes ten seconds",
    ("ernievil2torch/apps/serve/server.py", "sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)", "*"):
        "whether a '::' bind also answers IPv4: not documented, and pinning it needs IPv6 on every test machine",
    ("ernievil2torch/apps/serve/middleware.py", "while seen <= self.drain_bytes:", "while seen < self.drain_bytes:"):
        "the drain bound is a courtesy: one chunk more or less read at exactly 4x the limit changes no answer",
    ("ernievil2torch/export/onnx.py", "if diff > atol:", "if diff >= atol:"):
        "differs only when the measured difference equals the tolerance exactly",
    ("ernievil2torch/data/demo.py", '"紫色": (140, 50, 180)}', "*"):
        "a colour channel one step off: the same colour to anyone reading the picture (purple is not in the demo)",
    ("ernievil2torch/data/demo.py", '"红色": (220, 30, 30), "蓝色": (30, 60, 220), "绿色": (30, 170, 60), "黄色": (235, 205, 20),',
     "*"): "a colour channel one step off: the same colour to anyone reading the picture",
    ("ernievil2torch/data/coco_cn.py", "if start < len(raw):", "if start <= len(raw):"):
        "adds an empty piece after a lone CR that ends the file: a blank line at the end, which is skipped",
    ("ernievil2torch/apps/serve/batching.py", "await asyncio.wait({self._task}, timeout=0.05)", "*"):
        "how often stop() re-sends a lost cancellation: a polling interval, not an outcome",
    ("ernievil2torch/apps/serve/dependencies.py", "pool.shutdown(wait=True, cancel_futures=True)",
     "pool.shutdown(wait=False, cancel_futures=True)"):
        "the batchers have stopped before the pools shut down, so no job is left to wait for; and Python joins "
        "executor threads at exit either way",
    ("ernievil2torch/training/trainer.py", "lr = self.scheduler.get_last_lr()[0]",
     "lr = self.scheduler.get_last_lr()[1]"):
        "the learning rate of the other AdamW group: both groups follow the one schedule, so the two are equal",
    ("ernievil2torch/export/charsmap.py", "_MAX_OFFSET = 1 << 21  # offsets at or above this need the scaled form; a map this size never gets near it", "*"):
        _CHARSMAP_GUARD,
    ("ernievil2torch/export/charsmap.py", "if offset >= _MAX_OFFSET:", "*"): _CHARSMAP_GUARD,
    ("ernievil2torch/export/onnx.py", "want_t = model.encode_text(probe.input_ids, probe.attention_mask)",
     "want_t = model.encode_text(probe.input_ids, probe.attention_mask).detach()"):
        "inside torch.no_grad(): detach() changes nothing",
    ("ernievil2torch/export/onnx.py", "want_i = model.encode_image(probe.pixel_values)",
     "want_i = model.encode_image(probe.pixel_values).detach()"):
        "inside torch.no_grad(): detach() changes nothing",
    ("ernievil2torch/export/open_clip.py", '"custom_text": True,', '"custom_text": False,'):
        "open_clip builds a CustomTextCLIP for every text tower with an hf_model_name whatever this flag says "
        "(factory.py: custom_text = model_cfg.pop('custom_text', False) or ... or is_hf_text_model); written for "
        "readers of the config",
    ("ernievil2torch/export/open_clip.py",
     'return {"tokenizer.json": json.dumps(spec, ensure_ascii=False) + "\\n",',
     'return {"tokenizer.json": json.dumps(spec, ensure_ascii=True) + "\\n",'):
        "how the JSON text spells non-ASCII characters (escaped or as UTF-8): the tokenizer it parses to is the same",
    ("ernievil2torch/training/model_setup.py", 'assert missing == ["temperature"] and not unexpected, (missing, unexpected)',
     "*"): "an internal assertion that holds for every model of the class (the copy differs by the temperature "
           "only): weakening or changing it alters no outcome",
    ("ernievil2torch/training/lora.py", "target.mkdir(parents=True, exist_ok=True)",
     "target.mkdir(parents=True, exist_ok=False)"):
        "save_adapter's only caller writes into the new temporary folder of atomic_directory, where the adapter "
        "folder never exists yet",
    ("ernievil2torch/training/trainer.py", 'if device.type == "cuda" and not torch.cuda.is_bf16_supported():',
     'if device.type == "cuda" and torch.cuda.is_bf16_supported():'):
        "reached on a CUDA device only (bf16 forced on a GPU without it); no GPU on the machines the suite runs on",
    ("ernievil2torch/training/trainer.py", "self.optimizer.zero_grad(set_to_none=True)",
     "self.optimizer.zero_grad(set_to_none=False)"):
        "zeroed gradients instead of none: the next backward adds into zeros, so every step is the same; only the "
        "memory held between steps differs",
    ("ernievil2torch/training/trainer.py", "bar.update(step)", "pass"):
        "where a resumed run's progress bar starts counting: display only, drawn on the terminal and nowhere else",
    ("ernievil2torch/training/trainer.py",
     'record = {"step": step, "epoch": round(step / self.steps_per_epoch, 4),',
     'record = {"step": step, "epoch": round(step / self.steps_per_epoch, 5),'):
        "the decimals of the logged epoch (a display value; no contract fixes four)",
    ("ernievil2torch/training/trainer.py", "return float(loss.detach())", "return float(loss)"):
        "float() of a one-element tensor reads the same value with or without autograd's history",
    # A route's own bound on k: with_limits declares k again (ge=1, le=--max_k) keeping only the declared default,
    # which stays observable (the default page), so only changes of the bound are equivalent.
    **{(path, line.format(1), line.format(bound)): _K_BOUND for bound in (0, 2) for path, line in (
        ("ernievil2torch/apps/serve/routes.py", "k: int = Query(10, ge={}, description=K_DESCRIPTION),"),
        ("ernievil2torch/apps/serve/library_routes.py",
         "k: int = Query(24, ge={}, description=K_DESCRIPTION), offset: int = OFFSET,"))},
    ("ernievil2torch/apps/serve/middleware.py", "await self._drain(receive, 0)", "await self._drain(receive, 1)"):
        "the drain bound is a courtesy: counting from one byte instead of zero reads at most one chunk less of a "
        "body that is refused with 413 either way",
    ("ernievil2torch/apps/serve/thumbnails.py", "QUALITY = 82", "*"):
        "the JPEG quality of a thumbnail is a visual trade-off, outside every contract: what is promised (at most "
        "320 px, JPEG, no EXIF, made once) holds at any quality",
    ("ernievil2torch/export/openvino.py", 'warnings.simplefilter("ignore")  # tracer notes about Python-side shape checks',
     "pass  # tracer notes about Python-side shape checks"):
        "hides the tracer's warnings while OpenVINO converts; the graphs it writes are the same",
    ("ernievil2torch/export/tokenizer_json.py", '"invert": False},', '"invert": True},'):
        "the isolating split of single characters: with behavior Isolated, tokenizers puts the same boundaries "
        "whether the class or its complement is the pattern (checked: the same pieces on CJK, punctuation and "
        "Latin runs)",
    ("ernievil2torch/training/checkpoints.py", "for old in list_checkpoints(out)[:-max(1, keep_last)]:",
     "for old in list_checkpoints(out)[:-max(0, keep_last)]:"):
        "keep_last >= 1 is enforced by FinetuneSettings.check, so max(0, k) == max(1, k)",
}


# ---- mutants ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted change: ``path`` (relative to the repository), 1-based ``line``, the columns it replaces on that
    line, the operator's name, and the line before and after."""

    group: str
    path: str
    line: int
    col: int
    end_col: int
    operator: str
    replacement: str
    before: str
    after: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def apply(self, source: str) -> str:
        lines = source.splitlines(keepends=True)
        text = lines[self.line - 1]
        assert text.rstrip("\n") == self.before, (self.where, text, self.before)
        lines[self.line - 1] = text[:self.col] + self.replacement + text[self.end_col:]
        return "".join(lines)


_FLIP = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.LtE: ast.Gt, ast.Gt: ast.LtE, ast.Eq: ast.NotEq,
         ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
          ast.Mod: ast.FloorDiv}
#: Calls whose result carries a gradient in the training code: ``.detach()`` appended to them.
_GRAD_CALLS = {"encode_image", "encode_text", "cat", "contrastive_loss", "all_gather", "logit_scale"}


def _swap_op(node: ast.AST, table) -> Optional[ast.AST]:
    new = copy.deepcopy(node)
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1 or type(node.ops[0]) not in table:
            return None
        new.ops = [table[type(node.ops[0])]()]
        return new
    if isinstance(node, (ast.BinOp, ast.AugAssign)):
        if type(node.op) not in table:
            return None
        new.op = table[type(node.op)]()
        return new
    return None


def op_compare(node: ast.AST) -> Optional[ast.AST]:
    """``a < b`` -> ``a >= b``, ``==`` <-> ``!=``, ``is`` <-> ``is not``, ``in`` <-> ``not in``."""
    return _swap_op(node, _FLIP) if isinstance(node, ast.Compare) else None


def op_boundary(node: ast.AST) -> Optional[ast.AST]:
    """``<`` <-> ``<=``, ``>`` <-> ``>=`` (off by one)."""
    return _swap_op(node, _BOUNDARY) if isinstance(node, ast.Compare) else None


#: Names that hold paths in this code: ``a / b`` on them joins paths, and ``a * b`` would only raise a TypeError
#: (a mutant every test kills at once; counting those would inflate the kill rate).
_PATH_NAMES = {"tmp", "root", "out", "dst", "src", "path", "folder", "checkpoint", "parent", "directory", "base"}


def _is_path(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Path":
        return True
    if isinstance(node, ast.Name):
        return node.id.isupper() or node.id in _PATH_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in _PATH_NAMES or node.attr.isupper()
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _is_path(node.left)


def op_arith(node: ast.AST) -> Optional[ast.AST]:
    """``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``*``, ``%`` -> ``//`` (not on strings, not a path join)."""
    if isinstance(node, ast.BinOp) and any(isinstance(side, ast.JoinedStr) or (isinstance(side, ast.Constant)
                                                                                and isinstance(side.value, str))
                                           for side in (node.left, node.right)):
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and (_is_path(node.left)
                                                                         or _is_path(node.right)):
        return None
    return _swap_op(node, _ARITH) if isinstance(node, (ast.BinOp, ast.AugAssign)) else None


def op_boolean(node: ast.AST) -> Optional[ast.AST]:
    """``and`` <-> ``or``; ``not x`` -> ``x``."""
    if isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return new
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return copy.deepcopy(node.operand)
    return None


def op_constant(node: ast.AST) -> Optional[ast.AST]:
    """``True`` <-> ``False``; an int ``n`` -> ``n + 1`` (``1`` -> ``0``); a float ``x`` -> ``2x`` (``0.0`` -> ``1.0``)."""
    if not isinstance(node, ast.Constant):
        return None
    value = node.value
    if isinstance(value, bool):
        return ast.Constant(not value)
    if isinstance(value, int):
        return ast.Constant(0 if value == 1 else value + 1)
    if isinstance(value, float):
        return ast.Constant(value * 2 if value else 1.0)
    return None


def op_detach(node: ast.AST) -> Optional[ast.AST]:
    """A gradient cut: ``f(...)`` -> ``f(...).detach()`` for the calls in :data:`_GRAD_CALLS`; ``x.detach()`` ->
    ``x``; ``requires_grad_(e)`` / ``set_grad_enabled(e)`` -> ``(True)``."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name == "detach" and isinstance(func, ast.Attribute) and not node.args:
        return copy.deepcopy(func.value)
    if name in ("requires_grad_", "set_grad_enabled") and node.args and not (
            isinstance(node.args[0], ast.Constant) and node.args[0].value is True):
        new = copy.deepcopy(node)
        new.args = [ast.Constant(True)] + new.args[1:]
        return new
    if name in _GRAD_CALLS:
        return ast.Call(ast.Attribute(copy.deepcopy(node), "detach", ast.Load()), [], [])
    return None


def op_guard(node: ast.AST) -> Optional[ast.AST]:
    """A guard removed: the test of an ``if`` whose body raises, returns or skips -> ``False``."""
    return None  # applied to If statements by :func:`mutants_of` (it replaces the test only)


def op_delete(node: ast.AST) -> Optional[ast.AST]:
    """A call statement (``optimizer.step()``, ``barrier()``) -> ``pass``."""
    return None  # applied to statements by :func:`mutants_of`


OPERATORS: Dict[str, Callable[[ast.AST], Optional[ast.AST]]] = {
    "compare": op_compare, "boundary": op_boundary, "arith": op_arith, "boolean": op_boolean,
    "constant": op_constant, "detach": op_detach, "guard": op_guard, "delete": op_delete,
}


def _skipped_spans(tree: ast.AST) -> List[Tuple[int, int]]:
    """Line ranges never mutated: docstrings, ``raise`` statements (messages), ``__all__``, ``TYPE_CHECKING``."""
    spans = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            spans.append((body[0].lineno, body[0].end_lineno))
        if isinstance(node, ast.Raise):
            spans.append((node.lineno, node.end_lineno))
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            spans.append((node.lineno, node.end_lineno))
        if isinstance(node, ast.ImportFrom):
            spans.append((node.lineno, node.end_lineno))
    return spans


def _protected_nodes(tree: ast.AST) -> set:
    """Nodes (ids) not mutated: f-strings and everything in them, annotations, and the dtype of an ``assert``."""
    out = set()

    def protect(node: Optional[ast.AST]) -> None:
        if node is not None:
            out.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            protect(node)
        if isinstance(node, ast.arg):
            protect(node.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            protect(node.returns)
        if isinstance(node, ast.AnnAssign):
            protect(node.annotation)
        if isinstance(node, ast.Assert):
            protect(node.msg)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                protect(decorator)
        if isinstance(node, ast.keyword) and node.arg == "indent":  # JSON layout only: equivalent by design
            protect(node.value)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in (
                "Optional", "List", "Dict", "Tuple", "Sequence", "Callable", "Iterable", "Iterator", "Mapping",
                "Union", "FrozenSet", "Set"):
            protect(node)
    return out


def _guards(node: ast.If) -> bool:
    return any(isinstance(stmt, (ast.Raise, ast.Return, ast.Continue, ast.Break)) for stmt in node.body)


def mutants_of(group: str, path: Path) -> List[Mutant]:
    """Every mutant of one file, in source order."""
    relative = path.relative_to(REPO).as_posix()
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    skipped = _skipped_spans(tree)
    protected = _protected_nodes(tree)
    found: List[Mutant] = []

    def in_skipped(node: ast.AST) -> bool:
        return any(a <= node.lineno <= b for a, b in skipped)

    def add(node: ast.AST, operator: str, replacement: str) -> None:
        line = lines[node.lineno - 1]
        # columns are UTF-8 byte offsets in ast; convert to character offsets on this line
        encoded = line.encode("utf-8")
        col = len(encoded[:node.col_offset].decode("utf-8"))
        end = len(encoded[:node.end_col_offset].decode("utf-8"))
        after = line[:col] + replacement + line[end:]
        if after != line:
            found.append(Mutant(group, relative, node.lineno, col, end, operator, replacement, line, after))

    for node in ast.walk(tree):
        if not hasattr(node, "lineno") or node.lineno != getattr(node, "end_lineno", None) or in_skipped(node) \
                or id(node) in protected:
            continue
        for name, operator in OPERATORS.items():
            mutated = operator(node) if isinstance(node, ast.expr) else None
            if mutated is not None:
                add(node, name, ast.unparse(mutated))
        if isinstance(node, ast.Expr) and isinstance(node.value, (ast.Call, ast.Await)):
            add(node, "delete", "pass")
        if isinstance(node, ast.AugAssign):
            mutated = op_arith(node)
            if mutated is not None:
                add(node, "arith", ast.unparse(mutated))
    for node in ast.walk(tree):  # guards: the test of a one-line ``if`` header, even when the body spans lines
        if isinstance(node, ast.If) and _guards(node) and node.test.lineno == node.test.end_lineno \
                and not in_skipped(node.test) and not (isinstance(node.test, ast.Constant)):
            add(node.test, "guard", "False")
    return sorted(set(found), key=lambda m: (m.path, m.line, m.col, m.operator, m.replacement))


def mutants_of_group(group: str) -> List[Mutant]:
    return [m for path in module_files(group) for m in mutants_of(group, path)]


def module_files(group: str) -> List[Path]:
    return sorted(p for p in (REPO / GROUPS[group]).glob("*.py") if p.name != "__init__.py")


def select(group: str, limit: int, seed: int) -> Tuple[List[Mutant], int]:
    """``limit`` mutants of the group drawn with ``Random(seed)`` (all when there are fewer), in source order, and
    how many there were in all."""
    everything = [m for path in module_files(group) for m in mutants_of(group, path)]
    chosen = everything if len(everything) <= limit else random.Random(f"{seed}:{group}").sample(everything, limit)
    return sorted(chosen, key=lambda m: (m.path, m.line, m.col, m.operator)), len(everything)


# ---- running ---------------------------------------------------------------------------------------------------------
def copy_tree(dst: Path) -> None:
    """The repository's tracked and untracked-but-not-ignored files, into ``dst`` (the virtual environments are
    used in place, never copied)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file() and not src.is_symlink():
            target = dst / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def environment(root: Path) -> Dict[str, str]:
    """The tests' environment in the copy: its package first on the path, no bytecode, one thread, the shared
    data, the PaddleNLP oracle and the open_clip interpreter of the real checkout (the copy has none of them beside
    it), and the suite's required
    mode, in which a skip is a failure: a test that could not run never lets a mutant survive unnoticed (the
    unmutated baseline would fail first)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONHASHSEED="0", ERNIEVIL2_REQUIRE_ORACLES="1")
    env.setdefault("ERNIEVIL2_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    for variable, venv in (("ERNIEVIL2_ORACLE_PYTHON", ".venv-paddlenlp"), ("ERNIEVIL2_OPENCLIP_PYTHON", ".venv-openclip")):
        interpreter = REPO / venv / "bin" / "python"
        if interpreter.exists():
            env.setdefault(variable, str(interpreter))
    return env


def pytest(root: Path, tests: Sequence[str], timeout: float, fullsize: bool) -> Tuple[str, float, str]:
    """Run ``tests`` in the copy: ("passed" | "failed" | "timeout", seconds, the tail of the output)."""
    command = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider", "--no-header",
               "-W", "ignore"]
    if not fullsize:
        command += ["-m", "not fullsize"]
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=root, env=environment(root), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - started, ""
    seconds = time.perf_counter() - started
    tail = (proc.stdout + proc.stderr)[-6000:]
    if proc.returncode == 0:
        return "passed", seconds, tail
    if proc.returncode == 5:  # nothing collected: a mapping that names no test is a bug of this script
        raise SystemExit(f"no tests collected for {tests}:\n{tail}")
    return "failed", seconds, tail


@dataclasses.dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed | killed by room | timeout | survived
    seconds: float

    @property
    def explanation(self) -> Optional[str]:
        """Why this mutant survives without a test failing (:data:`EXPLAINED_AT`, then :data:`EXPLAINED`), if it
        has been examined."""
        m = self.mutant
        before, after = m.before.strip(), m.after.strip()
        return (EXPLAINED_AT.get((m.path, m.line, before, after)) or EXPLAINED.get((m.path, before, after))
                or EXPLAINED.get((m.path, before, "*")))


def fast_tests(mutant: Mutant) -> List[str]:
    mapping = FAST_TESTS[mutant.group]
    return mapping.get(Path(mutant.path).name, mapping["*"])


def check_copy(root: Path) -> None:
    """The copy, not the editable install, must be what the tests import."""
    probe = subprocess.run([sys.executable, "-c", "import ernievil2torch; print(ernievil2torch.__file__)"],
                           cwd=root, env=environment(root), capture_output=True, text=True, check=True)
    if not Path(probe.stdout.strip()).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the copy is not what Python imports: {probe.stdout.strip()}")


def run_group(root: Path, group: str, mutants: List[Mutant], fullsize: bool, rooms: bool,
              log: Callable[[str], None]) -> List[Outcome]:
    """Baseline each distinct test selection, then every mutant, then the survivors against the rooms."""
    selections = sorted({tuple(fast_tests(m)) for m in mutants})
    budget: Dict[Tuple[str, ...], float] = {}
    for tests in selections:
        status, seconds, tail = pytest(root, tests, 3600, fullsize=False)
        if status != "passed":  # once more: a test that fails only now and then must be seen, not end the run
            log(f"[{group}] the unmutated tests failed once; running them again: {' '.join(tests)}\n{tail}")
            status, seconds, tail = pytest(root, tests, 3600, fullsize=False)
        if status != "passed":
            raise SystemExit(f"[{group}] the unmutated tests fail, fix that first: {' '.join(tests)}\n{tail}")
        budget[tests] = 3 * seconds + 30
        log(f"[{group}] baseline {seconds:.0f} s: {' '.join(tests)}")
    outcomes = []
    for number, mutant in enumerate(mutants, 1):
        outcome = plant_and_run(root, mutant, fast_tests(mutant), budget[tuple(fast_tests(mutant))], False)
        outcomes.append(outcome)
        log(f"[{group}] {number}/{len(mutants)} {outcome.status:8s} {outcome.seconds:5.0f} s  {mutant.where} "
            f"{mutant.operator}: {mutant.after.strip()}")
    # Survivors already examined and found equivalent (EXPLAINED) skip the room pass: no test can fail on them, and
    # each would cost a whole room's run.
    survivors = [o for o in outcomes if o.status == "survived" and o.explanation is None]
    if survivors and rooms:
        tests = ROOMS[group]
        status, seconds, tail = pytest(root, tests, 7200, fullsize=fullsize)
        if status != "passed":
            log(f"[{group}] the unmutated rooms failed once; running them again\n{tail}")
            status, seconds, tail = pytest(root, tests, 7200, fullsize=fullsize)
        if status != "passed":
            raise SystemExit(f"[{group}] the unmutated rooms fail, fix that first: {' '.join(tests)}\n{tail}")
        log(f"[{group}] rooms baseline {seconds:.0f} s; {len(survivors)} survivor(s) run against them")
        for outcome in survivors:
            again = plant_and_run(root, outcome.mutant, tests, 3 * seconds + 60, fullsize)
            if again.status != "survived":
                outcome.status = "killed by room" if again.status == "killed" else again.status
            log(f"[{group}] room: {outcome.status:14s} {outcome.mutant.where} {outcome.mutant.after.strip()}")
    return outcomes


def plant_and_run(root: Path, mutant: Mutant, tests: Sequence[str], timeout: float, fullsize: bool) -> Outcome:
    target = root / mutant.path
    original = target.read_text(encoding="utf-8")
    try:
        target.write_text(mutant.apply(original), encoding="utf-8")
        status, seconds, _ = pytest(root, tests, timeout, fullsize)
    finally:
        target.write_text(original, encoding="utf-8")
    return Outcome(mutant, {"passed": "survived", "failed": "killed", "timeout": "timeout"}[status], seconds)


# ---- report ----------------------------------------------------------------------------------------------------------
def table(outcomes: List[Outcome], totals: Dict[str, int]) -> List[str]:
    rows = ["| module | mutants | killed (fast tests) | killed (rooms) | timeouts | survived (explained) | kill rate "
            "| score |", "|---|---|---|---|---|---|---|---|"]
    by_module: Dict[str, List[Outcome]] = {}
    for outcome in outcomes:
        by_module.setdefault(outcome.mutant.path, []).append(outcome)
    groups: Dict[str, List[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.mutant.group, []).append(outcome)

    def row(name: str, items: List[Outcome]) -> str:
        count = {s: sum(o.status == s for o in items) for s in ("killed", "killed by room", "timeout", "survived")}
        rate = 100.0 * (len(items) - count["survived"]) / len(items)
        explained = sum(o.status == "survived" and o.explanation is not None for o in items)
        relevant = len(items) - explained
        score = 100.0 * (len(items) - count["survived"]) / relevant if relevant else 100.0
        return (f"| {name} | {len(items)} | {count['killed']} | {count['killed by room']} | {count['timeout']} | "
                f"{count['survived']} ({explained}) | {rate:.1f} % | {score:.1f} % |")

    for group, items in groups.items():
        for module in sorted({o.mutant.path for o in items}):
            rows.append(row(module, by_module[module]))
        rows.append(row(f"**{group}** (drawn from {totals[group]})", items))
    rows.append(row("**all**", outcomes))
    return rows


def report(outcomes: List[Outcome], totals: Dict[str, int], args: argparse.Namespace, minutes: float,
           rechecked_kills: frozenset = frozenset()) -> str:
    """The Markdown report; ``rechecked_kills``: (path, before, after) of survivors a later ``--only`` run killed."""
    lines = ["# Mutation report", "",
             f"`python scripts/mutate.py --modules {','.join(args.modules)} --limit {args.limit} --seed {args.seed}"
             f"{' --fullsize' if args.fullsize else ''}{'' if args.rooms else ' --no-rooms'}`: {len(outcomes)} mutants, {minutes:.0f} min.", ""]
    lines += table(outcomes, totals)
    lines += ["", "Kill rate: killed (timeouts included) / mutants. Score: killed / (mutants - survivors explained as "
              "equivalent below), the usual mutation score."]
    if rechecked_kills:
        after = [dataclasses.replace(o, status="killed") if o.status == "survived" and
                 (o.mutant.path, o.mutant.before, o.mutant.after) in rechecked_kills else o for o in outcomes]
        lines += ["", "The same mutants after the recheck (`--only`: the survivors run again once tests were written "
                  "for them; those it killed count as killed here):", ""] + table(after, totals)
    survivors = [o for o in outcomes if o.status == "survived"]
    lines += ["", f"## Survivors ({len(survivors)})", ""]
    for outcome in survivors:
        m = outcome.mutant
        key = (m.path, m.before, m.after)
        why = outcome.explanation or ("**killed in the recheck** by a test written for it (`--only`)"
                                      if key in rechecked_kills else "**not explained**")
        lines.append(f"- `{m.where}` ({m.operator}): `{m.before.strip()}` -> `{m.after.strip()}`: {why}")
    timeouts = [o for o in outcomes if o.status == "timeout"]
    if timeouts:
        lines += ["", "## Timed out (counted as killed)", ""]
        lines += [f"- `{o.mutant.where}` ({o.mutant.operator}): `{o.mutant.before.strip()}` -> "
                  f"`{o.mutant.after.strip()}`" for o in timeouts]
    return "\n".join(lines) + "\n"


def parse_limits(text: str, groups: Sequence[str]) -> Dict[str, int]:
    """``"40"`` -> 40 for every group; ``"training=40,data=20"`` -> those, 50 for the others."""
    if "=" not in text:
        limits = {g: int(text) for g in groups}
    else:
        limits = {g: 50 for g in groups}
        for part in text.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in GROUPS:
                raise ValueError(f"unknown group {name.strip()!r}")
            limits[name.strip()] = int(value)
    if any(v < 1 for v in limits.values()):
        raise ValueError("every limit must be >= 1")
    return limits


def _terminated(signum, frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", default=",".join(GROUPS), help="groups: " + ", ".join(GROUPS))
    parser.add_argument("--limit", default="50",
                        help="mutants per group (a seeded draw): N for every group, or GROUP=N,... (others 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", default="mutation_report.md", help="Markdown report (default: ./%(default)s)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--no-rooms", dest="rooms", action="store_false",
                        help="skip the second pass (survivors against the whole test rooms)")
    parser.add_argument("--fullsize", action="store_true",
                        help="run the fullsize tests too in the survivors' room pass (minutes per survivor)")
    parser.add_argument("--only", metavar="RECORD_JSON",
                        help="run again only the survivors of a run's record (after adding tests for them)")
    parser.add_argument("--render", metavar="RECORD_JSON",
                        help="only write the report again from a run's record (after examining survivors)")
    parser.add_argument("--recheck", metavar="RECHECK_JSON",
                        help="with --render: mark the survivors that this --only run's record killed")
    args = parser.parse_args(argv)
    if args.render:
        recheck = json.loads(Path(args.recheck).read_text(encoding="utf-8")) if args.recheck else None
        return write_report(json.loads(Path(args.render).read_text(encoding="utf-8")), Path(args.report), recheck)
    args.modules = [g.strip() for g in args.modules.split(",") if g.strip()]
    unknown = [g for g in args.modules if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; known: {', '.join(GROUPS)}")
    try:
        limits = parse_limits(args.limit, args.modules)
    except ValueError as exc:
        parser.error(f"--limit: {exc}")
    chosen = {g: select(g, limits[g], args.seed) for g in args.modules}
    if args.only:
        earlier = json.loads(Path(args.only).read_text(encoding="utf-8"))["outcomes"]
        wanted = {(o["path"], o["before"], o["after"]) for o in earlier if o["status"] == "survived"}
        chosen = {g: ([m for m in mutants_of_group(g) if (m.path, m.before, m.after) in wanted], total)
                  for g, (_, total) in chosen.items()}
        chosen = {g: picked for g, picked in chosen.items() if picked[0]}
    if args.list:
        for group, (mutants, total) in chosen.items():
            print(f"{group}: {len(mutants)} of {total} mutants")
            for m in mutants:
                print(f"  {m.where} {m.operator}: {m.after.strip()}")
        return 0
    started = time.perf_counter()
    outcomes: List[Outcome] = []
    signal.signal(signal.SIGTERM, _terminated)  # a kill removes the temporary copy too
    with tempfile.TemporaryDirectory(prefix="ernievil2-mutate-") as tmp:
        root = Path(tmp)
        copy_tree(root)
        check_copy(root)
        for group, (mutants, _) in chosen.items():
            outcomes += run_group(root, group, mutants, args.fullsize, args.rooms, lambda line: print(line, flush=True))
            record = save_record(args, chosen, outcomes, started)  # after each group: a stopped run keeps its report
    return write_report(record, Path(args.report))


def save_record(args: argparse.Namespace, chosen: Dict[str, Tuple[List[Mutant], int]], outcomes: List[Outcome],
                started: float) -> Dict:
    """Write the run's record (``REPORT.json``) and the report of the groups done so far; return the record."""
    done = {o.mutant.group for o in outcomes}
    record = {"args": {**vars(args), "modules": [g for g in args.modules if g in done]},
              "totals": {g: total for g, (_, total) in chosen.items() if g in done},
              "minutes": (time.perf_counter() - started) / 60,
              "outcomes": [{**dataclasses.asdict(o.mutant), "status": o.status, "seconds": o.seconds}
                           for o in outcomes]}
    Path(args.report).with_suffix(".json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
    args_view = argparse.Namespace(**record["args"])
    Path(args.report).write_text(report(outcomes, record["totals"], args_view, record["minutes"]), encoding="utf-8")
    return record


def write_report(record: Dict, path: Path, recheck: Optional[Dict] = None) -> int:
    """Write the Markdown report of a run's record (also to re-render it: ``--render RECORD.json`` after more
    survivors were examined in :data:`EXPLAINED`, with ``--recheck RECHECK.json``: the record of an ``--only`` run
    whose kills are marked) and print the table."""
    args = argparse.Namespace(**record["args"])
    outcomes = [Outcome(Mutant(**{k: v for k, v in o.items() if k not in ("status", "seconds")}), o["status"],
                        o["seconds"]) for o in record["outcomes"]]
    kills = frozenset((o["path"], o["before"], o["after"]) for o in (recheck or {}).get("outcomes", [])
                      if o["status"] != "survived")
    text = report(outcomes, record["totals"], args, record["minutes"], kills)
    if record.get("note"):  # how the record came to be, when not by one uninterrupted run
        head, _, rest = text.partition("\n\n| module")
        text = f"{head}\n\nRecord: {record['note']}.\n\n| module{rest}"
    path.write_text(text, encoding="utf-8")
    print()
    print("\n".join(table(outcomes, record["totals"])))
    print(f"\nreport: {path} (record: {path.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
