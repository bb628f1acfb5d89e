"""Every figure in README.md, RELIABILITY.md and BENCHMARKS.md is produced by the suite or a script, and checked here.

How each document is covered:

* **Figure blocks** (README.md, RELIABILITY.md): a paragraph or table holding figures sits between two marker
  lines, ``<!-- figures: KEY KEY ... -->`` and ``<!-- end of figures -->``. The keys name, in reading order, the
  :data:`SOURCES` that produce the block's figures (a test's constant or case table, a bound the tests assert, the
  model definition, a requirements pin, SPEC.md for published numbers); the numbers in the block (outside code
  spans and :data:`NOT_FIGURES`) must read exactly those values, in that order. The prose around them is free:
  reword it, add sentences without figures, and nothing here changes.
* **Generated blocks** (:data:`GENERATED_BLOCKS`) are rendered whole, prose included: README's fidelity and
  gradient tables (``benchmarks/fidelity.py`` and ``benchmarks/gradients.py`` from their JSON records), its speed
  summary (``benchmarks/readme_speed.py`` from BENCHMARKS.md) and RELIABILITY.md's hostile-request table (from
  ``tests/apps/serve/test_serve.py``'s own case list); each must equal its rendering.
* **Sealed reports**: every file in ``SEALED`` (BENCHMARKS.md from ``benchmarks/run.py``, the other reports under
  benchmarks/ from their scripts) ends in a seal (``benchmarks/stamp.py``) holding the sha256 of the text above, so
  any figure edited or added by hand after the run fails ``test_a_sealed_report_is_what_its_generator_wrote``.

``test_every_number_is_a_checked_figure`` then scans README.md and RELIABILITY.md and fails on any number outside
a figure block, a generated block, a code span or :data:`NOT_FIGURES` (names and versions such as "ERNIE 3.0").

``python tests/test_docs.py --write`` renders every generated block and every figure block's numbers again from
their sources (measuring nothing); a figure block whose count of numbers differs from its keys is left alone and
named. Adding a figure: put it inside a figure block (or wrap its paragraph in a new one) and add its key, and a
:data:`SOURCES` entry computing it when no key fits.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import pytest

from helpers import shared_data_dir

REPO = Path(__file__).resolve().parent.parent


def _load_script(path: Path):
    """A file of ``benchmarks/`` or ``tests/`` as a module, registered under its stem (benchmark scripts import
    their siblings by that name)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


# The benchmark scripts import their siblings ``repo`` and ``stamp`` by name: those load first.
_load_script(REPO / "benchmarks" / "repo.py")
stamp = _load_script(REPO / "benchmarks" / "stamp.py")
fidelity = _load_script(REPO / "benchmarks" / "fidelity.py")
gradients = _load_script(REPO / "benchmarks" / "gradients.py")
readme_speed = _load_script(REPO / "benchmarks" / "readme_speed.py")


def read(doc: str) -> str:
    return (REPO / doc).read_text(encoding="utf-8")


def n(value: float) -> str:
    """A count as the documents print it (thousands separated)."""
    return f"{value:,}"


def g(value: float) -> str:
    """A bound as the documents print it: ``1e-5``, ``1e-4``, ``0.999999``."""
    short = f"{value:.0e}"
    text = short if value < 1e-3 and float(short) == value else f"{value:g}"
    return re.sub(r"e-0*(\d)", r"e-\1", text)


# ---- sources ------------------------------------------------------------------------------------------------------

def _test_module(stem: str):
    """The test module ``stem`` wherever it sits under ``tests/`` (the one already imported, or loaded by path)."""
    if stem in sys.modules:
        return sys.modules[stem]
    found = sorted((REPO / "tests").glob(f"**/{stem}.py"))
    assert len(found) == 1, f"expected one tests/**/{stem}.py, found {found}"
    for folder in (str(REPO / "tests"), str(found[0].parent)):  # what pytest puts on sys.path for it
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return _load_script(found[0])


def hostile():
    return _test_module("test_hostile_checkpoints")


def fuzz():
    return _test_module("test_fuzz_reader")


def safety():
    return _test_module("test_output_safety")


def reader_errors():
    return _test_module("test_reader_errors")


def cli_failures():
    return _test_module("test_cli_failures")


def images():
    return _test_module("test_image_processing")


def export_tests():
    return _test_module("test_export")


def open_clip_tests():
    return _test_module("test_open_clip")


def training():
    return _test_module("test_training")


def grad_cache_tests():
    return _test_module("test_grad_cache")


def lora_tests():
    return _test_module("test_lora")


def disk_tests():
    return _test_module("test_disk")


def output_plan(**options):
    from ernievil2torch.config import base_config
    from ernievil2torch.training.disk import format_bytes, plan_outputs
    from ernievil2torch.training.lora import DEFAULT_LORA_TARGETS, lora_spec

    rank = options.pop("lora_rank", None)
    lora = lora_spec(rank, None, 0.0, DEFAULT_LORA_TARGETS, None) if rank else None
    return plan_outputs(base_config(), lora=lora, **options), format_bytes


def plan_figure(field: str, **options) -> str:
    plan, format_bytes = output_plan(**options)
    return format_bytes(getattr(plan, field)).split()[0]


def serve_tests():
    return _test_module("test_serve")


def captions_drawn() -> int:
    from ernievil2torch.data.demo import SHAPE_COLOURS, SHAPES
    return len(SHAPES) * len(SHAPE_COLOURS)


def ddp_global_batch() -> int:
    return _load_script(REPO / "tests" / "workers" / "ddp_gradients.py").GLOBAL_BATCH


def text_dropout() -> List[str]:
    """The one text dropout rate README states for both fields (nothing when they differ: the check then fails)."""
    from ernievil2torch.config import TextConfig
    return [f"{TextConfig.hidden_dropout:g}"] if TextConfig.hidden_dropout == TextConfig.attention_dropout else []


def parity():
    from ernievil2torch.verify import parity as module
    return module


def reference_constants():
    from ernievil2torch.verify import paddle_reference  # the official values, written out from Baidu's code
    return paddle_reference


def cli():
    from ernievil2torch import cli as module
    return module


def constants():
    from ernievil2torch import constants as module
    return module


def pinned(requirements: str, package: str) -> str:
    for line in read(requirements).splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{package} is not pinned in {requirements}")


def spec_text() -> str:
    return (shared_data_dir().parent / "SPEC.md").read_text(encoding="utf-8")


def base_state_shapes() -> List[int]:
    """The element count of every tensor of the Base model's state dict (built on the meta device)."""
    import torch

    from ernievil2torch.config import base_config
    from ernievil2torch.modeling import ErnieViL2

    with torch.device("meta"):
        return [t.numel() for t in ErnieViL2(base_config()).state_dict().values()]


def kill_checkpoint_mb() -> str:
    from ernievil2torch.verify.synthetic import layout_state

    state = layout_state(safety().big_config(), "official", seed=0)
    return str(round(sum(a.nbytes for a in state.values()) / 1e6))


def spec_published_r1() -> Tuple[str, str]:
    """The official COCO-CN R@1, text→image and image→text."""
    return re.search(r"text→image R@1/5/10 = (\d+\.\d) .*?image→text (\d+\.\d)", spec_text()).groups()


def spec_paddlenlp_eps_bug() -> Tuple[str, str]:
    """(the first PaddleNLP version with the text LayerNorm eps bug, the eps it builds), from SPEC.md."""
    return re.search(r"PaddleNLP ≥(\d\.\d) builds them with (1e-12)", spec_text()).groups()


# ---- the sources of figure blocks ----------------------------------------------------------------------------------

Figures = Union[str, Sequence[str]]


@dataclass(frozen=True)
class Source:
    """What a figure-block key stands for: ``origin`` (where the figures come from, for messages) and ``figures``
    (the figure, or several in reading order, as the documents print them)."""

    origin: str
    figures: Callable[[], Figures]

    def values(self) -> List[str]:
        found = self.figures()
        return [found] if isinstance(found, str) else list(found)


SOURCES: Dict[str, Source] = {
    # exit statuses and the CLI
    "exit_bad_input": Source("cli.EXIT_BAD_INPUT", lambda: str(cli().EXIT_BAD_INPUT)),
    "exit_internal_error": Source("cli.EXIT_INTERNAL_ERROR", lambda: str(cli().EXIT_INTERNAL_ERROR)),
    "exit_interrupted": Source("cli.EXIT_INTERRUPTED", lambda: str(cli().EXIT_INTERRUPTED)),
    "planted_errors": Source("test_reader_errors.PLANTED_ERRORS",
                             lambda: str(len(reader_errors().PLANTED_ERRORS))),
    # hostile checkpoints
    "payload_calls": Source("test_hostile_checkpoints._payload_calls",
                            lambda: str(len(hostile()._payload_calls(Path("m"))))),
    "hiding_places": Source("test_hostile_checkpoints.PLACEMENTS", lambda: str(len(hostile().PLACEMENTS))),
    "payload_cases": Source("_payload_calls x PLACEMENTS", lambda: str(
        len(hostile()._payload_calls(Path("m"))) * len(hostile().PLACEMENTS))),
    "foreign_cases": Source("test_hostile_checkpoints.FOREIGN_GLOBALS, each in 3 spellings: (all, globals, 3)",
                            lambda: [str(3 * len(hostile().FOREIGN_GLOBALS)), str(len(hostile().FOREIGN_GLOBALS)),
                                     "3"]),
    "unsafe_constructs": Source("test_hostile_checkpoints.UNSAFE_CONSTRUCTS",
                                lambda: str(len(hostile().UNSAFE_CONSTRUCTS))),
    "bad_dtypes": Source("test_hostile_checkpoints.BAD_DTYPES", lambda: str(len(hostile().BAD_DTYPES))),
    "memory_bombs": Source("test_hostile_checkpoints.MEMORY_BOMBS", lambda: str(len(hostile().MEMORY_BOMBS))),
    "memory_bomb_limit_mb": Source("test_hostile_checkpoints.MEMORY_BOMB_LIMIT_MB",
                                   lambda: str(hostile().MEMORY_BOMB_LIMIT_MB)),
    "small_truncations": Source("test_hostile_checkpoints.count_small_truncations()",
                                lambda: n(hostile().count_small_truncations())),
    "truncation_head": Source("test_hostile_checkpoints.TRUNCATION_HEAD", lambda: str(hostile().TRUNCATION_HEAD)),
    "truncations_converted": Source("TRUNCATIONS_TINY / CONVERT_EVERY", lambda: str(len(range(
        0, hostile().TRUNCATIONS_TINY, hostile().CONVERT_EVERY)))),
    "truncations_tiny": Source("test_hostile_checkpoints.TRUNCATIONS_TINY", lambda: str(hostile().TRUNCATIONS_TINY)),
    "random_blobs": Source("test_hostile_checkpoints.RANDOM_BLOBS", lambda: str(hostile().RANDOM_BLOBS)),
    "wrong_files": Source("test_hostile_checkpoints._wrong_files",
                          lambda: str(len(hostile()._wrong_files(Path(__file__))))),
    "wrong_model_cases": Source("test_hostile_checkpoints.WRONG_MODEL_CASES",
                                lambda: str(hostile().WRONG_MODEL_CASES)),
    "non_finite_checkpoints": Source("test_non_finite_weights_convert_with_a_warning: one checkpoint", lambda: "1"),
    "bad_path_cases": Source("test_hostile_checkpoints.BAD_PATH_CASES", lambda: str(hostile().BAD_PATH_CASES)),
    "valid_variants": Source("test_hostile_checkpoints.VALID_VARIANTS", lambda: str(len(hostile().VALID_VARIANTS))),
    "convert_cli_cases": Source("test_hostile_checkpoints.CLI_CASES", lambda: str(hostile().CLI_CASES)),
    # fuzzing
    "fuzz_bases": Source("test_fuzz_reader.BASES", lambda: str(len(fuzz().BASES))),
    "byte_flips": Source("test_fuzz_reader.MUTATIONS_PER_EXAMPLE: (fewest, most)",
                         lambda: [str(v) for v in fuzz().MUTATIONS_PER_EXAMPLE]),
    "reader_examples": Source("test_fuzz_reader.READER_EXAMPLES", lambda: n(fuzz().READER_EXAMPLES)),
    "fuzz_deadlines_s": Source("test_fuzz_reader.PER_EXAMPLE_DEADLINE, HANG_GUARD_S", lambda: [
        str(int(fuzz().PER_EXAMPLE_DEADLINE.total_seconds())), str(fuzz().HANG_GUARD_S)]),
    "convert_examples": Source("test_fuzz_reader.CONVERT_EXAMPLES", lambda: n(fuzz().CONVERT_EXAMPLES)),
    "surrogate_texts": Source("test_fuzz_reader.MIN_SURROGATE_TEXTS", lambda: n(fuzz().MIN_SURROGATE_TEXTS)),
    "tokenizer_examples": Source("test_fuzz_reader.TOKENIZER_EXAMPLES", lambda: n(fuzz().TOKENIZER_EXAMPLES)),
    # output safety
    "kill_checkpoint_mb": Source("test_output_safety.big_config(), saved size", kill_checkpoint_mb),
    "kill_lanes": Source("test_output_safety.KILL_LANES", lambda: str(safety().KILL_LANES)),
    "kill_trials": Source("test_output_safety.KILL_TRIALS", lambda: str(safety().KILL_TRIALS)),
    "stale_leftovers": Source("test_output_safety.STALE_NAMES, plus test_killed_overwrite_between_renames_is_restored",
                              lambda: [str(len(safety().STALE_NAMES)), "1"]),
    "refusal_cases": Source("test_output_safety.REFUSAL_CASES", lambda: str(safety().REFUSAL_CASES)),
    "write_failures": Source("test_output_safety.WRITE_FAILURES, plus the interrupted rename",
                             lambda: str(len(safety().WRITE_FAILURES) + 1)),
    "safetensors_cuts": Source("test_output_safety.SAFETENSORS_TRUNCATIONS",
                               lambda: str(len(safety().SAFETENSORS_TRUNCATIONS))),
    "bad_safetensors": Source("SAFETENSORS_TRUNCATIONS + CORRUPT_SAFETENSORS", lambda: str(
        len(safety().SAFETENSORS_TRUNCATIONS) + safety().CORRUPT_SAFETENSORS)),
    "bad_configs": Source("BROKEN_CONFIGS + BAD_CONFIG_TEXTS",
                          lambda: str(safety().BROKEN_CONFIGS + len(safety().BAD_CONFIG_TEXTS))),
    "missing_file_cases": Source("test_output_safety.MISSING_FILE_CASES", lambda: str(safety().MISSING_FILE_CASES)),
    # interrupted commands, bad images and texts, resume
    "subcommands": Source("test_cli_failures.MESSAGES", lambda: str(len(cli_failures().MESSAGES))),
    "interruptions": Source("test_cli_failures.INTERRUPTIONS", lambda: str(len(cli_failures().INTERRUPTIONS))),
    "bad_image_cases": Source("test_image_processing.BAD_IMAGE_CASES", lambda: str(images().BAD_IMAGE_CASES)),
    "resume_atol": Source("test_training.RESUME_ATOL", lambda: g(training().RESUME_ATOL)),
    # the search service
    "raw_traversals": Source("test_serve.RAW_TRAVERSALS", lambda: str(len(serve_tests().RAW_TRAVERSALS))),
    "min_token_length": Source("apps.serve.security.MIN_TOKEN_LENGTH", lambda: str(
        __import__("ernievil2torch.apps.serve.security", fromlist=["x"]).MIN_TOKEN_LENGTH)),
    "slow_model_call_s": Source("test_serve.SLOW_MODEL_CALL_S", lambda: f"{serve_tests().SLOW_MODEL_CALL_S:g}"),
    "responsive_within_s": Source("test_serve.RESPONSIVE_WITHIN_S",
                                  lambda: f"{serve_tests().RESPONSIVE_WITHIN_S:g}"),
    # README: the model, conversion, export, retrieval
    "base_tensors": Source("ErnieViL2(base_config()).state_dict(): tensors", lambda: n(len(base_state_shapes()))),
    "base_parameters": Source("ErnieViL2(base_config()).state_dict(): parameters",
                              lambda: n(sum(base_state_shapes()))),
    "export_atol": Source("test_export.EXPORT_ATOL", lambda: g(export_tests().EXPORT_ATOL)),
    "open_clip_atol": Source("test_open_clip.FEATURE_ATOL", lambda: g(open_clip_tests().FEATURE_ATOL)),
    "open_clip_tokenizer": Source("test_open_clip.TOKENIZER_CORPUS, FUZZ_TEXTS, TOKENIZER_UNCHANGED, FUZZ_UNCHANGED",
                                  lambda: [n(open_clip_tests().TOKENIZER_CORPUS), n(open_clip_tests().FUZZ_TEXTS),
                                           n(open_clip_tests().TOKENIZER_UNCHANGED),
                                           n(open_clip_tests().FUZZ_UNCHANGED)]),
    "ftfy_counts": Source("test_open_clip.FTFY_CHANGED_CAPTIONS, len(REALISTIC_CAPTIONS), FTFY_CHANGED_IDS",
                          lambda: [str(open_clip_tests().FTFY_CHANGED_CAPTIONS),
                                   str(len(_test_module("captions").REALISTIC_CAPTIONS)),
                                   str(open_clip_tests().FTFY_CHANGED_IDS)]),
    "preprocess_bounds": Source("test_open_clip.PREPROCESS_MAX_GREY_LEVELS, PREPROCESS_MIN_COSINE",
                                lambda: [str(open_clip_tests().PREPROCESS_MAX_GREY_LEVELS),
                                         f"{open_clip_tests().PREPROCESS_MIN_COSINE:g}"]),
    "wds_atol": Source("test_webdataset.EQUALITY_ATOL", lambda: g(_test_module("test_webdataset").EQUALITY_ATOL)),
    "published_r1": Source("SPEC.md, the official COCO-CN R@1 (text→image, image→text)", spec_published_r1),
    # README: fidelity
    "feature_atol": Source("verify.parity.FEATURE_ATOL", lambda: g(parity().FEATURE_ATOL)),
    "min_cosine": Source("verify.parity.MIN_COSINE", lambda: f"{parity().MIN_COSINE}"),
    "logit_atol": Source("verify.parity.LOGIT_ATOL", lambda: g(parity().LOGIT_ATOL)),
    "paddlenlp_eps_bug": Source("SPEC.md: (first PaddleNLP version with the bug, the text eps it builds)",
                                spec_paddlenlp_eps_bug),
    # README: what the port reproduces
    "text_ln_eps": Source("paddle_reference.TEXT_LAYER_NORM_EPS",
                          lambda: g(reference_constants().TEXT_LAYER_NORM_EPS)),
    "vision_ln_eps": Source("paddle_reference.VISION_LAYER_NORM_EPS",
                            lambda: g(reference_constants().VISION_LAYER_NORM_EPS)),
    "mask_bias": Source("paddle_reference.MASK_BIAS", lambda: f"−{-int(reference_constants().MASK_BIAS)}"),
    "text_hidden": Source("paddle_reference.ReferenceSizes().text_hidden",
                          lambda: str(reference_constants().ReferenceSizes().text_hidden)),
    "vision_hidden": Source("paddle_reference.ReferenceSizes().vision_hidden",
                            lambda: str(reference_constants().ReferenceSizes().vision_hidden)),
    "pad_token_id": Source("paddle_reference.PAD_TOKEN_ID", lambda: str(reference_constants().PAD_TOKEN_ID)),
    "max_length": Source("constants.DEFAULT_MAX_LENGTH", lambda: str(constants().DEFAULT_MAX_LENGTH)),
    "max_text_positions": Source("constants.MAX_TEXT_POSITIONS", lambda: str(constants().MAX_TEXT_POSITIONS)),
    "image_size": Source("constants.IMAGE_SIZE", lambda: str(constants().IMAGE_SIZE)),
    # README: dependencies
    "torch_pin": Source("requirements.txt", lambda: pinned("requirements.txt", "torch")),
    "paddlenlp_pin": Source("requirements-oracle.txt", lambda: pinned("requirements-oracle.txt", "paddlenlp")),
    # README: fine-tuning
    "text_dropout": Source("config.TextConfig hidden_dropout = attention_dropout", text_dropout),
    "learning_images_per_caption": Source("test_training.LEARNING_IMAGES_PER_CAPTION",
                                          lambda: str(training().LEARNING_IMAGES_PER_CAPTION)),
    "learning_images": Source("LEARNING_IMAGES_PER_CAPTION x data.demo shapes x colours", lambda: n(
        training().LEARNING_IMAGES_PER_CAPTION * captions_drawn())),
    "learning_min_r1": Source("test_training.LEARNING_MIN_R1", lambda: f"{training().LEARNING_MIN_R1:g}"),
    "captions_drawn": Source("data.demo shapes x colours", lambda: str(captions_drawn())),
    "chance_percent": Source("100 / (data.demo shapes x colours)", lambda: f"{100 / captions_drawn():g}"),
    "learning_steps": Source("test_training.LEARNING_STEPS", lambda: str(training().LEARNING_STEPS)),
    "learning_cpu_s": Source("test_training.LEARNING_CPU_LIMIT_S", lambda: f"{training().LEARNING_CPU_LIMIT_S:g}"),
    "ddp_processes": Source("test_training.DDP_PROCESSES", lambda: str(training().DDP_PROCESSES)),
    "ddp_pairs_per_process": Source("workers/ddp_gradients.GLOBAL_BATCH / DDP_PROCESSES",
                                    lambda: str(ddp_global_batch() // training().DDP_PROCESSES)),
    "one_process": Source("the single-process run the DDP test compares with", lambda: "1"),
    "ddp_global_batch": Source("workers/ddp_gradients.GLOBAL_BATCH", lambda: str(ddp_global_batch())),
    "ddp_bounds": Source("test_training.DDP_BOUNDS: (float64, float32)", lambda: [
        g(dict(training().DDP_BOUNDS)["float64"]), g(dict(training().DDP_BOUNDS)["float32"])]),
    # gradient cache, LoRA, disk (tests/training/test_grad_cache.py, test_lora.py, test_disk.py, training.disk)
    "grad_cache_batch_chunk": Source("test_grad_cache.BATCH, CHUNK", lambda: [
        str(grad_cache_tests().BATCH), str(grad_cache_tests().CHUNK)]),
    "grad_cache_bounds": Source("test_grad_cache.BOUNDS (float64, float32)", lambda: [
        g(v) for v in grad_cache_tests().BOUNDS.values()]),
    "lora_merge_atol": Source("test_lora.MERGE_ATOL_FP32", lambda: g(lora_tests().MERGE_ATOL_FP32)),
    "lora_learning": Source("test_lora.LEARNING_RANK, LEARNING_MIN_R1, LEARNING_STEPS, LEARNING_CPU_LIMIT_S",
                            lambda: [str(lora_tests().LEARNING_RANK), f"{lora_tests().LEARNING_MIN_R1:g}",
                                     str(lora_tests().LEARNING_STEPS), f"{lora_tests().LEARNING_CPU_LIMIT_S:g}"]),
    "full_size_plan": Source("training.disk.plan_outputs(base_config()): model MB, checkpoint GB, peak GB", lambda: [
        plan_figure("model"), plan_figure("checkpoint"), plan_figure("peak")]),
    "keep_last_2_peak": Source("plan_outputs(base_config(), keep_last=2).peak GB",
                               lambda: plan_figure("peak", keep_last=2)),
    "lora_plan": Source("plan_outputs(base_config(), lora rank 8): checkpoint MB", lambda: [
        "8", plan_figure("checkpoint", lora_rank=8)]),
    "disk_mount_mb": Source("test_disk.MOUNT_MB", lambda: str(disk_tests().MOUNT_MB)),
}


# ---- what the documents hold ----------------------------------------------------------------------------------------

R, M = "RELIABILITY.md", "README.md"
CHECKED_DOCS = [R, M]

HTTP_CLASSES = r"\b[45]xx\b"  # the classes of HTTP status codes ("a JSON 4xx", "never a 5xx")
# HTTP status codes are the names of responses; each row that names one says which test asserts it. A count of
# bytes is a figure, whatever its value ("the first 200 bytes").
HTTP_STATUSES = r"\b(?:200|400|401|403|404|405|413|422)\b(?! bytes)"

# Numbers that are not figures: names and versions of models, formats and tools, and the names of test inputs.
NOT_FIGURES: Dict[str, List[str]] = {
    M: [r"ERNIE-ViL 2\.0", r"ERNIE 3\.0", r"numpy 1\.x", HTTP_CLASSES],
    R: [HTTP_CLASSES, HTTP_STATUSES, r"ERNIE-ViL 2\.0", r"numpy-[12]", r"protocol-0", r"\(exit 0\)",
        r"2-channel"],
}
SEALED = ["BENCHMARKS.md", "benchmarks/serve_load.md", "benchmarks/photo_decode.md", "benchmarks/finetune_modes.md",
          "benchmarks/index_throughput.md", "benchmarks/milvus_ann.md", "benchmarks/kernels.md",
          "benchmarks/op_profile.md", "benchmarks/bulk_load.md", "benchmarks/serve_load_library.md"]


@dataclass(frozen=True)
class GeneratedBlock:
    """A block of a hand-written document, between two marker lines, that must equal ``render()`` (a rendering of a
    script's record, of a test's own case list, or of BENCHMARKS.md), markers included."""

    doc: str
    begin: str
    end: str
    render: Callable[[], str]

    def current(self, text: str) -> str:
        return stamp.block(text, self.begin, self.end)


def _record(script) -> dict:
    return json.loads(script.RECORD.read_text(encoding="utf-8"))


GENERATED_BLOCKS = [
    GeneratedBlock(M, fidelity.BEGIN, fidelity.END, lambda: fidelity.render_table(_record(fidelity))),
    GeneratedBlock(M, gradients.BEGIN, gradients.END, lambda: gradients.render_table(_record(gradients))),
    GeneratedBlock(M, readme_speed.BEGIN, readme_speed.END, lambda: readme_speed.render()),
    GeneratedBlock(R, "<!-- hostile requests:", "<!-- end of hostile requests -->",
                   lambda: serve_tests().hostile_table()),
]

# A number as the documents print one: an optional minus (ASCII or U+2212), digits with optional thousands commas,
# dotted parts (versions), an exponent; not part of a word, a path, an address or a dotted name.
_NUMBER = re.compile(r"(?<![\w.@/\-])[−-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)*(?:e-?\d+)?")
_FIGURE_BLOCK = re.compile(r"<!-- figures:(?P<keys>[^>]*?)-->\n(?P<body>.*?)<!-- end of figures -->", re.S)


@dataclass(frozen=True)
class FigureBlock:
    """One ``<!-- figures: KEY ... -->`` block of ``doc``: its keys, the span of its body in the document, and the
    numbers found in the body (``(start, end, text)`` in document positions, reading order)."""

    doc: str
    line: int
    keys: Tuple[str, ...]
    span: Tuple[int, int]
    numbers: Tuple[Tuple[int, int, str], ...]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}: {' '.join(self.keys)[:50]}"

    def expected(self) -> List[Tuple[str, str]]:
        """``(figure, key)`` in reading order, from :data:`SOURCES`; ``KeyError`` names an unknown key."""
        unknown = [k for k in self.keys if k not in SOURCES]
        if unknown:
            raise KeyError(f"{self.id}: no source named {unknown} in SOURCES")
        return [(value, key) for key in self.keys for value in SOURCES[key].values()]


def _code_spans(text: str) -> List[Tuple[int, int]]:
    spans = [m.span() for m in re.finditer(r"```.*?```", text, flags=re.S)]
    spans += [m.span() for m in re.finditer(r"`[^`\n]+`", text)]
    return spans


def _inside(position: int, spans: Sequence[Tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _numbers(doc: str, text: str, start: int = 0, end: int = -1) -> List[Tuple[int, int, str]]:
    """The numbers of ``text[start:end]`` that may be figures: outside code spans and ``NOT_FIGURES[doc]``."""
    skipped = _code_spans(text) + [m.span() for p in NOT_FIGURES[doc] for m in re.finditer(p, text)]
    region = text[start:end if end >= 0 else len(text)]
    return [(start + m.start(), start + m.end(), m.group(0)) for m in _NUMBER.finditer(region)
            if not _inside(start + m.start(), skipped)]


def figure_blocks(doc: str, text: str) -> List[FigureBlock]:
    return [FigureBlock(doc, text.count("\n", 0, m.start()) + 1, tuple(m.group("keys").split()), m.span(),
                        tuple(_numbers(doc, text, m.start("body"), m.end("body"))))
            for m in _FIGURE_BLOCK.finditer(text)]


def all_figure_blocks() -> List[FigureBlock]:
    return [block for doc in CHECKED_DOCS for block in figure_blocks(doc, read(doc))]


def figure_problems(block: FigureBlock) -> List[str]:
    """Why ``block``'s numbers are not what its sources give (empty when they are)."""
    expected = block.expected()
    found = [number for _, _, number in block.numbers]
    if len(found) != len(expected):
        return [f"{block.id}: the block holds {len(found)} numbers {found}, its keys give {len(expected)} "
                f"{[value for value, _ in expected]}: add or remove a key (or move the number out of prose)"]
    return [f"{block.id}: figure {i + 1} reads {number!r} where {key} ({SOURCES[key].origin}) gives {value!r}"
            for i, (number, (value, key)) in enumerate(zip(found, expected)) if number != value]


def render_figures(doc: str, text: str) -> Tuple[str, List[str]]:
    """``text`` with every figure block's numbers replaced by what its sources give; and the blocks left alone
    because their count of numbers differs from their keys'."""
    skipped, pieces, last = [], [], 0
    for block in figure_blocks(doc, text):
        expected = block.expected()
        if len(expected) != len(block.numbers):
            skipped.extend(figure_problems(block))
            continue
        for (start, end, _), (value, _) in zip(block.numbers, expected):
            pieces += [text[last:start], value]
            last = end
    return "".join(pieces) + text[last:], skipped


# ---- the checks ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", all_figure_blocks(), ids=lambda b: b.id)
def test_figure_block_reads_its_sources(block: FigureBlock):
    problems = figure_problems(block)
    assert not problems, "\n".join(problems) + "\nfix the document (or the code), never the check"


def test_every_source_is_used():
    """A source no block names is a figure that left the documents: its entry goes too."""
    used = {key for block in all_figure_blocks() for key in block.keys}
    assert not set(SOURCES) - used, sorted(set(SOURCES) - used)


@pytest.mark.parametrize("doc", CHECKED_DOCS)
def test_every_not_figure_pattern_still_matches(doc: str):
    """Each entry of NOT_FIGURES excuses a number the document holds; a stale one would excuse a future figure."""
    text = read(doc)
    stale = [p for p in NOT_FIGURES[doc] if not re.search(p, text)]
    assert not stale, f"{doc}: NOT_FIGURES patterns that match nothing: {stale}"


@pytest.mark.parametrize("doc", CHECKED_DOCS)
def test_every_number_is_a_checked_figure(doc: str):
    text = read(doc)
    covered = [block.span for block in figure_blocks(doc, text)]
    for generated in GENERATED_BLOCKS:  # each checked as a whole by test_generated_block_is_its_rendering
        if generated.doc == doc:
            start = text.index(generated.begin)
            covered.append((start, text.index(generated.end, start)))
    unchecked = [f"line {text.count(chr(10), 0, start) + 1}: {number!r} in "
                 f"{text[max(0, start - 40):end + 20]!r}"
                 for start, end, number in _numbers(doc, text) if not _inside(start, covered)]
    assert not unchecked, (f"{doc} has numbers outside every figure block and generated block (see this file's "
                           "docstring):\n" + "\n".join(unchecked))


@pytest.mark.parametrize("generated", GENERATED_BLOCKS, ids=lambda b: f"{b.doc}: {b.begin[5:40]}")
def test_generated_block_is_its_rendering(generated: GeneratedBlock):
    assert generated.current(read(generated.doc)) == generated.render(), (
        f"{generated.doc}'s block at {generated.begin!r} differs from what it is rendered from: run the script "
        "that measures it, or `python tests/test_docs.py --write` to render it again from its record or test")


def test_finetune_defaults_table_is_the_settings():
    """Every `--flag value` in README's fine-tuning defaults table is that flag's default in FinetuneSettings (a flag
    without a default, such as `--freeze`, is shown with the values it takes)."""
    import dataclasses

    from ernievil2torch.training.trainer import FinetuneSettings

    text = read(M)
    table = text[text.index("| setting | default | note |"):text.index("What `runs/my_run` holds:")]
    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneSettings)}
    flags = re.findall(r"`--(\w+) ([^`]+)`", table)
    assert len(flags) >= 15, flags
    for name, value in flags:
        assert name in defaults, f"README's defaults table names --{name}, which FinetuneSettings does not have"
        default = defaults[name]
        if default is None:
            continue
        if isinstance(default, bool):
            assert value.lower() == str(default).lower(), (name, value, default)
        elif isinstance(default, (int, float)):
            assert float(value) == default, (name, value, default)
        else:
            assert value == str(default), (name, value, default)


def test_the_fidelity_record_is_what_the_tests_assert():
    record = _record(fidelity)
    assert record["command"].startswith("python benchmarks/fidelity.py")
    from ernievil2torch.config import base_config
    from ernievil2torch.verify import parity

    inputs = parity.synthetic_inputs(base_config(), record["inputs"]["seed"])  # what check.py logit_check feeds
    assert record["inputs"] == {"images": inputs.pixel_values.shape[0], "padded_to": inputs.input_ids.shape[1],
                                "text_lengths": (inputs.input_ids != 0).sum(1).tolist(),
                                "seed": record["inputs"]["seed"]}
    rows = record["rows"]
    assert set(rows) == {key for key, _ in fidelity.ROWS}
    for key in ("ours_vs_reference_official", "ours_vs_reference_paddlenlp", "ours_vs_paddlenlp",
                "reference_vs_paddlenlp"):
        assert parity.ParityReport(**rows[key]).passed(), (key, rows[key])  # what the tests assert, measured here
    shipped = rows["reference_vs_paddlenlp_shipped"]
    assert shipped["image_max_abs"] <= parity.FEATURE_ATOL < shipped["text_max_abs"]  # only the text eps differs
    assert record["paddlenlp_epsilons"] == {"text_ln_eps": [1e-5, 1e-12], "vision_ln_eps": 1e-6,
                                            "text_ln_eps_built": 1e-12}


def test_the_gradient_record_is_what_the_tests_assert():
    case = _test_module("test_gradient_parity")
    from ernievil2torch.verify import parity

    record = _record(gradients)
    assert record["command"].startswith("python benchmarks/gradients.py")
    assert record["bounds"] == {"loss_atol": parity.LOSS_ATOL, "gradient_rel_tol": parity.GRADIENT_REL_TOL}
    assert record["inputs"]["seed"] == case.SEED and record["inputs"]["pairs"] == 4
    assert set(record["rows"]) == {key for key, _ in gradients.ROWS}
    for key, row in record["rows"].items():
        assert row["passed"] and row["loss_abs_diff"] <= parity.LOSS_ATOL, key
        assert [*row["groups"]] == [label for label, _ in parity.GRADIENT_GROUPS], key
        assert all(group["max_relative"] <= parity.GRADIENT_REL_TOL for group in row["groups"].values()), key


@pytest.mark.parametrize("doc", SEALED)
def test_a_sealed_report_is_what_its_generator_wrote(doc: str):
    generator, command = stamp.check_seal(read(doc))
    run = re.sub(r"^(?:[A-Z][A-Z0-9_]*=\S+ )*", "", command)  # environment settings the run was made under
    assert (REPO / generator).is_file() and run.startswith(f"python {generator}")
    assert "seal(" in (REPO / generator).read_text(encoding="utf-8")
    text = read(doc)  # the report states the command that produced it (an indented line or a code span)
    assert f"    {command}\n" in text or f"`{command}`" in text


def test_a_hand_edit_breaks_the_seal():
    text = stamp.seal("| case | 5.28 |\n", "benchmarks/run.py", "python benchmarks/run.py")
    assert stamp.check_seal(text) == ("benchmarks/run.py", "python benchmarks/run.py")
    with pytest.raises(ValueError, match="changed after"):
        stamp.check_seal(text.replace("5.28", "6.28"))
    with pytest.raises(ValueError, match="no seal"):
        stamp.check_seal("| case | 5.28 |\n")


def test_a_wrong_figure_is_caught(monkeypatch):
    """The checks can fail: a count that drifts from its test constant, a block with a number its keys do not give,
    a number outside every block, and a generated block edited by hand."""
    real, module = read, sys.modules[__name__]

    def planted(doc_text: str, doc: str = R):
        monkeypatch.setattr(module, "read", lambda d: doc_text if d == doc else real(d))

    bumped = real(R).replace("| 280 |", "| 281 |")
    assert bumped != real(R)
    planted(bumped)
    (block,) = [b for b in all_figure_blocks() if b.doc == R and "payload_cases" in b.keys]
    with pytest.raises(AssertionError, match=r"reads '281' where payload_cases \(_payload_calls x PLACEMENTS\) "
                                             r"gives '280'"):
        test_figure_block_reads_its_sources(block)
    assert render_figures(R, bumped) == (real(R), [])  # --write puts the figure back

    extra = bumped.replace("| 281 |", "| 280 (and 7 more) |")
    planted(extra)
    (block,) = [b for b in all_figure_blocks() if b.doc == R and "payload_cases" in b.keys]
    with pytest.raises(AssertionError, match="add or remove a key"):
        test_figure_block_reads_its_sources(block)
    assert render_figures(R, extra)[0] == extra  # a block whose count is off is left alone

    planted(real(R) + "\nThe suite also tries 42 extra things.\n")
    with pytest.raises(AssertionError, match="'42'"):
        test_every_number_is_a_checked_figure(R)

    (fidelity_block,) = [b for b in GENERATED_BLOCKS if b.begin == fidelity.BEGIN]
    stale = real(M).replace("| 2.1e-6 / 1.000000000 |", "| 2.0e-6 / 1.000000000 |", 1)
    assert stale != real(M)
    planted(stale, M)
    with pytest.raises(AssertionError, match="differs from what it is rendered from"):
        test_generated_block_is_its_rendering(fidelity_block)


def test_prose_edits_without_numbers_keep_every_check_green(monkeypatch):
    """Rewording a figure block's prose, or adding a paragraph without numbers, changes nothing here."""
    real, module = read, sys.modules[__name__]
    edited = real(M).replace("When a command fails: bad input", "If a command fails: bad input (for instance)", 1)
    edited = edited.replace("## Fine-tuning\n", "## Fine-tuning\n\nA new paragraph, with no figures in it.\n", 1)
    assert edited.count("If a command fails") == 1 and "no figures in it" in edited
    monkeypatch.setattr(module, "read", lambda d: edited if d == M else real(d))
    test_every_number_is_a_checked_figure(M)
    for block in figure_blocks(M, edited):
        assert not figure_problems(block), block.id


def write_documents() -> List[str]:
    """Render every generated block and every figure block again from their sources (measures nothing). Returns
    the figure blocks left alone (their count of numbers differs from their keys')."""
    left_alone = []
    for doc in CHECKED_DOCS:
        text = read(doc)
        for generated in GENERATED_BLOCKS:
            if generated.doc == doc:
                text = stamp.replace_block(text, generated.begin, generated.end, generated.render())
        text, skipped = render_figures(doc, text)
        left_alone += skipped
        (REPO / doc).write_text(text, encoding="utf-8")
        print(f"rendered the generated and figure blocks of {doc}")
    return left_alone


def python_imports(doc: str) -> List[str]:
    """The ``from ernievil2torch... import ...`` lines of a document's ```python blocks."""
    blocks = re.findall(r"```python\n(.*?)```", read(doc), re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
            if line.startswith(("from ernievil2torch", "import ernievil2torch"))]


@pytest.mark.parametrize("doc", ["README.md", "docs/WORKFLOWS.md"])
def test_the_python_examples_import_what_exists(doc):
    """Every import a document's Python example shows works (a moved or renamed name fails here, not for a user)."""
    lines = python_imports(doc)
    assert lines, f"{doc}: no Python example found"
    broken = []
    for line in lines:
        try:
            exec(line, {})  # noqa: S102 - the document's own import statement
        except ImportError as exc:
            broken.append(f"{line}: {exc}")
    assert not broken, "\n".join(broken)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_docs.py --write   (renders the generated and figure blocks again)")
    problems = write_documents()
    if problems:
        raise SystemExit("left alone (fix the keys or the numbers by hand):\n" + "\n".join(problems))
