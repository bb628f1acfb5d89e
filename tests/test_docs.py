"""Every figure in README.md, RELIABILITY.md and BENCHMARKS.md is produced by the suite or a script, and checked here.

How each document is covered:

* **README.md and RELIABILITY.md**: ``FIGURES`` lists every figure as a :class:`Figure`: a regex whose groups are
  the figures, the document, and a function that computes what each group must read from the code that produces
  it (a test's constant or case table, a bound the tests assert, a script's record, the model definition, the
  requirements files, a BENCHMARKS.md table, SPEC.md for published numbers). ``test_every_number_is_a_checked_figure``
  then scans each of these documents for numbers outside code spans and fails on any that is neither inside a
  checked group nor matched by ``NOT_FIGURES`` (names and versions such as "ERNIE 3.0", each with the reason it is
  not a figure). ``GENERATED_BLOCKS`` are tables rendered, not written: README's fidelity and gradient tables
  (``benchmarks/fidelity.py`` and ``benchmarks/gradients.py`` from their JSON records) and RELIABILITY.md's
  hostile-request table (from ``tests/test_serve.py``'s own case list); each must equal its rendering
  (``python tests/test_docs.py --write`` renders them again without measuring).
* **BENCHMARKS.md** (``benchmarks/run.py``) and **benchmarks/serve_load.md** (``benchmarks/serve_load.py``) are
  generated and sealed (``benchmarks/stamp.py``): the last line holds the sha256 of the text above, so any figure
  edited or added by hand after the run fails ``test_benchmarks_md_is_what_its_generator_wrote``. README's speed figures are re-derived from BENCHMARKS.md's
  own tables.

Adding a section with figures (to README.md or RELIABILITY.md): add one :class:`Figure` per figure (or one per
phrase, with a group per number) to ``FIGURES``, computing the expected text from the test or script that produces
it; the scan names every number still unchecked (document, line, context). A new generated block works like the
fidelity table: a script renders it from a record, and a test compares. A new generated document works like
BENCHMARKS.md: its generator seals it with ``benchmarks/stamp.py`` and ``SEALED`` lists it.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest

from helpers import shared_data_dir

REPO = Path(__file__).resolve().parent.parent


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


stamp = _load_script(REPO / "benchmarks" / "stamp.py")
fidelity = _load_script(REPO / "benchmarks" / "fidelity.py")
gradients = _load_script(REPO / "benchmarks" / "gradients.py")


def read(doc: str) -> str:
    return (REPO / doc).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Figure:
    """``pattern``'s groups in ``doc`` must read ``expected()`` (one string per group); it must match ``count``
    times (None: at least once), and each match is checked. ``source`` says where the figures come from."""

    doc: str
    pattern: str
    expected: Callable[[], Sequence[str]]
    source: str
    count: Optional[int] = 1

    @property
    def id(self) -> str:
        return f"{self.doc}: {self.pattern[:60]}"


def n(value: float) -> str:
    """A count as the documents print it (thousands separated)."""
    return f"{value:,}"


def g(value: float) -> str:
    """A bound as the documents print it: ``1e-5``, ``1e-4``, ``0.999999``."""
    short = f"{value:.0e}"
    text = short if value < 1e-3 and float(short) == value else f"{value:g}"
    return re.sub(r"e-0*(\d)", r"e-\1", text)


# ---- sources ------------------------------------------------------------------------------------------------------

def hostile():
    import test_hostile_checkpoints
    return test_hostile_checkpoints


def fuzz():
    import test_fuzz_reader
    return test_fuzz_reader


def safety():
    import test_output_safety
    return test_output_safety


def reader_errors():
    import test_reader_errors
    return test_reader_errors


def cli_failures():
    import test_cli_failures
    return test_cli_failures


def images():
    import test_image_processing
    return test_image_processing


def export_tests():
    import test_export
    return test_export


def training():
    import test_training
    return test_training


def serve_tests():
    import test_serve
    return test_serve


def captions_drawn() -> int:
    from ernievil2torch.verify.demo import SHAPE_COLOURS, SHAPES
    return len(SHAPES) * len(SHAPE_COLOURS)


def learning_figures() -> List[str]:
    per_caption = training().LEARNING_IMAGES_PER_CAPTION
    return [str(per_caption), n(per_caption * captions_drawn()), f"{training().LEARNING_MIN_R1:g}",
            str(captions_drawn()), f"{100 / captions_drawn():g}", str(training().LEARNING_STEPS),
            f"{training().LEARNING_CPU_LIMIT_S:g}"]


def ddp_figures() -> List[str]:
    bounds = dict(training().DDP_BOUNDS)
    world = training().DDP_PROCESSES
    batch = _load_script(REPO / "tests" / "workers" / "ddp_gradients.py").GLOBAL_BATCH
    return [str(world), str(batch // world), "1", str(batch), g(bounds["float64"]), g(bounds["float32"])]


def text_dropout() -> List[str]:
    from ernievil2torch.config import TextConfig
    return [f"{TextConfig.hidden_dropout:g}"] if TextConfig.hidden_dropout == TextConfig.attention_dropout else []


def parity_bounds() -> Tuple[str, str, str]:
    from ernievil2torch.verify import parity
    return g(parity.FEATURE_ATOL), f"{parity.MIN_COSINE}", g(parity.LOGIT_ATOL)


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


def base_model_counts() -> Tuple[str, str]:
    import torch

    from ernievil2torch.config import base_config
    from ernievil2torch.modeling import ErnieViL2

    with torch.device("meta"):
        state = ErnieViL2(base_config()).state_dict()
    return n(len(state)), n(sum(t.numel() for t in state.values()))


def kill_checkpoint_mb() -> List[str]:
    from ernievil2torch.verify.synthetic import layout_state

    state = layout_state(safety().big_config(), "official", seed=0)
    return [str(round(sum(a.nbytes for a in state.values()) / 1e6))]


# ---- BENCHMARKS.md's own tables, for README's speed summary ------------------------------------------------------

def markdown_tables(text: str) -> List[List[List[str]]]:
    """Every table of a markdown text as rows of cells (header row first, separator row dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def benchmark_table(first_header: str, key_columns: int = 1) -> Dict[Tuple[str, ...], Dict[str, str]]:
    """The BENCHMARKS.md table whose header starts with ``first_header``: {key cells: {column: cell}}."""
    for table in markdown_tables(read("BENCHMARKS.md")):
        header = table[0]
        if header[0] == first_header:
            return {tuple(row[:key_columns]): dict(zip(header, row)) for row in table[1:]}
    raise AssertionError(f"BENCHMARKS.md has no table starting with '{first_header}'")


def throughput(tower: str, implementation: str) -> Dict[str, str]:
    return benchmark_table("tower", 2)[(tower, implementation)]


def rate(tower: str, implementation: str) -> float:
    return float(throughput(tower, implementation)["items/s [min-max]"].split()[0].replace(",", ""))


def sig3(value: float) -> str:
    """A rate as README prints it: three significant digits (5.28, 23.2, 173)."""
    return f"{value:.{max(0, 2 - math.floor(math.log10(value)))}f}"


def best_bf16(tower: str) -> str:
    """The fastest of our bf16 paths in BENCHMARKS.md for ``tower``."""
    names = [name for (t, name), row in benchmark_table("tower", 2).items() if t == tower
             and name.startswith("ours") and row["precision"] == "bf16"]
    return max(names, key=lambda name: rate(tower, name))


def speed_row(tower: str) -> Tuple[str, ...]:
    """README's speed row for a tower, from BENCHMARKS.md: ours fp32 (x PaddleNLP), our best bf16 (its path), then
    the Paddle reference, PaddleNLP, ONNX Runtime on our export and the HF peer, all fp32."""
    peer = {"image": "HF CLIPVisionModel", "text": "HF BertModel"}[tower]
    ours, bf16 = rate(tower, "ours fp32"), best_bf16(tower)
    x_paddlenlp = float(throughput(tower, "ours fp32")["x PaddleNLP"].rstrip("x"))  # a median of per-round ratios
    return (sig3(ours), f"{x_paddlenlp:.1f}", sig3(rate(tower, bf16)),
            bf16[len("ours "):], sig3(rate(tower, "Paddle reference")), sig3(rate(tower, "PaddleNLP ErnieViLModel")),
            sig3(rate(tower, "ONNX Runtime (our export)")), sig3(rate(tower, peer)))


def bench_line(prefix: str) -> str:
    """The line of BENCHMARKS.md's header list starting with ``prefix``."""
    return next(line for line in read("BENCHMARKS.md").splitlines() if line.startswith(prefix))


def method_line() -> str:
    return bench_line("- method:")


def threads_line() -> str:
    return bench_line("- threads:")


def machine() -> Tuple[str, str]:
    """(CPU model, ISA flags) from BENCHMARKS.md's machine line."""
    return re.match(r"- machine: (.+?), \d+ logical CPUs, ISA flags: ([^;]+);", bench_line("- machine:")).groups()


def bf16_min_cosine() -> str:
    cells = [row["result"] for key, row in benchmark_table("comparison").items() if "bf16" in key[0]]
    lowest = min(float(x) for cell in cells for x in re.findall(r"min cosine ([0-9.]+)", cell))
    return f"{math.floor(lowest * 1e4) / 1e4:.4f}"


def gemm_ratio() -> str:
    gemms = benchmark_table("GEMM")
    best = {p: max(float(r["GFLOP/s [min-max]"].split()[0].replace(",", "")) for (name,), r in gemms.items()
                   if name.startswith(f"GEMM {p} ")) for p in ("fp32", "bf16")}
    return f"{best['bf16'] / best['fp32']:.1f}"


def targets() -> Dict[str, Tuple[str, str]]:
    """BENCHMARKS.md's targets table: {target text: (figure, verdict)}."""
    return {key[0]: (row["figure"], row["verdict"]) for key, row in benchmark_table("target").items()}


def of_ceiling() -> Tuple[str, ...]:
    """Ours fp32 image and text, then the best bf16 image and text, as % of their GEMM ceiling (targets table)."""
    found = targets()

    def share(prefix: str) -> str:
        (text,) = [t for t in found if t.startswith(prefix)]
        return found[text][0].rstrip(" %")
    return (share("image fp32 >="), share("text fp32 >="), share("image bf16 >="), share("text bf16 >="))


def missed_targets() -> Tuple[str]:
    """README's list of the targets BENCHMARKS.md reports MISSED, one ``- target: figure`` line each."""
    missed = [f"- {text}: {figure}" for text, (figure, verdict) in targets().items() if verdict == "MISSED"]
    return ("\n".join(missed) or "- none",)


def gpu_status() -> Tuple[str]:
    """The first line of BENCHMARKS.md's GPU section."""
    text = read("BENCHMARKS.md")
    return (text[text.index("\n## GPU\n\n") + len("\n## GPU\n\n"):].splitlines()[0],)


# ---- the figures --------------------------------------------------------------------------------------------------

R, M = "RELIABILITY.md", "README.md"


def row(start: str) -> str:
    """A RELIABILITY.md table row beginning with ``start``; the group is its count cell."""
    return rf"(?m)^\| {re.escape(start)}[^\n]*? \| ([^|\n]+) \| [^\n]*\|$"


FIGURES: List[Figure] = [
    # RELIABILITY.md: the hostile-checkpoint table
    Figure(R, r"code-execution payloads: (\d+) calls", lambda: [str(len(hostile()._payload_calls(Path("m"))))],
           "test_hostile_checkpoints._payload_calls"),
    Figure(R, r"× (\d+) hiding places", lambda: [str(len(hostile().PLACEMENTS))],
           "test_hostile_checkpoints.PLACEMENTS"),
    Figure(R, row("code-execution payloads"),
           lambda: [str(len(hostile()._payload_calls(Path("m"))) * len(hostile().PLACEMENTS))], "calls x placements"),
    Figure(R, r"\| (\d+) \((\d+) × (\d+)\) \|", lambda: [str(3 * len(hostile().FOREIGN_GLOBALS)),
                                                        str(len(hostile().FOREIGN_GLOBALS)), "3"],
           "test_hostile_checkpoints.FOREIGN_GLOBALS, each in 3 spellings"),
    Figure(R, row("tricks with the allowed globals only"), lambda: [str(len(hostile().UNSAFE_CONSTRUCTS))],
           "test_hostile_checkpoints.UNSAFE_CONSTRUCTS"),
    Figure(R, row("non-numeric dtypes"), lambda: [str(len(hostile().BAD_DTYPES))],
           "test_hostile_checkpoints.BAD_DTYPES"),
    Figure(R, row("memory bombs"), lambda: [str(len(hostile().MEMORY_BOMBS))], "test_hostile_checkpoints.MEMORY_BOMBS"),
    Figure(R, r"each load allocates < (\d+) MB and grows the resident set < (\d+) MB",
           lambda: [str(hostile().MEMORY_BOMB_LIMIT_MB)] * 2, "test_hostile_checkpoints.MEMORY_BOMB_LIMIT_MB"),
    Figure(R, row("truncations of small state-dict pickles"), lambda: [n(hostile().count_small_truncations())],
           "test_hostile_checkpoints.count_small_truncations()"),
    Figure(R, r"every offset of the first (\d+) bytes", lambda: [str(hostile().TRUNCATION_HEAD)],
           "test_hostile_checkpoints.TRUNCATION_HEAD"),
    Figure(R, r"random ones\), (\d+) of them also through", lambda: [str(len(range(
        0, hostile().TRUNCATIONS_TINY, hostile().CONVERT_EVERY)))], "TRUNCATIONS_TINY / CONVERT_EVERY"),
    Figure(R, row("truncations of the tiny-model checkpoint"), lambda: [str(hostile().TRUNCATIONS_TINY)],
           "test_hostile_checkpoints.TRUNCATIONS_TINY"),
    Figure(R, row("random byte strings"), lambda: [str(hostile().RANDOM_BLOBS)],
           "test_hostile_checkpoints.RANDOM_BLOBS"),
    Figure(R, row("wrong kinds of file"), lambda: [str(len(hostile()._wrong_files(Path(__file__))))],
           "test_hostile_checkpoints._wrong_files"),
    Figure(R, row("wrong model / bad tensors"), lambda: [str(hostile().WRONG_MODEL_CASES)],
           "test_hostile_checkpoints.WRONG_MODEL_CASES"),
    Figure(R, row("NaN/Inf weights"), lambda: ["1"], "test_non_finite_weights_convert_with_a_warning: one checkpoint"),
    Figure(R, row("bad paths"), lambda: [str(hostile().BAD_PATH_CASES)], "test_hostile_checkpoints.BAD_PATH_CASES"),
    Figure(R, row("valid variants that must load"), lambda: [str(len(hostile().VALID_VARIANTS))],
           "test_hostile_checkpoints.VALID_VARIANTS"),
    Figure(R, row("CLI via `convert.py` subprocesses"), lambda: [str(hostile().CLI_CASES)],
           "test_hostile_checkpoints.CLI_CASES"),
    Figure(R, r"exit code (\d), no\s+traceback", lambda: [str(cli().EXIT_BAD_INPUT)], "cli.EXIT_BAD_INPUT"),
    Figure(R, r"\| exit (\d), `error: <message>`", lambda: [str(cli().EXIT_BAD_INPUT)], "cli.EXIT_BAD_INPUT"),
    Figure(R, r"`internal error`, exit code (\d)", lambda: [str(cli().EXIT_INTERNAL_ERROR)], "cli.EXIT_INTERNAL_ERROR"),
    Figure(R, r"planted bug\s+\((\d+) exception types\)", lambda: [str(len(reader_errors().PLANTED_ERRORS))],
           "test_reader_errors.PLANTED_ERRORS"),
    # the fuzzing table
    Figure(R, r"\((\d+) bases:", lambda: [str(len(fuzz().BASES))], "test_fuzz_reader.BASES"),
    Figure(R, r"; (\d+) to (\d+) byte flips", lambda: [str(v) for v in fuzz().MUTATIONS_PER_EXAMPLE],
           "test_fuzz_reader.MUTATIONS_PER_EXAMPLE"),
    Figure(R, row("mutated small pickles"), lambda: [n(fuzz().READER_EXAMPLES)], "test_fuzz_reader.READER_EXAMPLES"),
    Figure(R, r"a (\d+) s per-example deadline and a (\d+) s SIGALRM",
           lambda: [str(int(fuzz().PER_EXAMPLE_DEADLINE.total_seconds())), str(fuzz().HANG_GUARD_S)],
           "test_fuzz_reader.PER_EXAMPLE_DEADLINE, HANG_GUARD_S"),
    Figure(R, row("mutated micro-model checkpoints"), lambda: [n(fuzz().CONVERT_EXAMPLES)],
           "test_fuzz_reader.CONVERT_EXAMPLES"),
    Figure(R, r"at least ([\d,]+) of them with a lone surrogate", lambda: [n(fuzz().MIN_SURROGATE_TEXTS)],
           "test_fuzz_reader.MIN_SURROGATE_TEXTS"),
    Figure(R, row("random texts"), lambda: [n(fuzz().TOKENIZER_EXAMPLES)], "test_fuzz_reader.TOKENIZER_EXAMPLES"),
    Figure(R, r"texts: ([\d,]+) random requests", lambda: [n(fuzz().TOKENIZER_EXAMPLES)],
           "test_fuzz_reader.TOKENIZER_EXAMPLES"),
    # the output-safety table
    Figure(R, r"on a ~(\d+) MB checkpoint", kill_checkpoint_mb, "test_output_safety.big_config(), saved size"),
    Figure(R, r"in (\d+) lanes", lambda: [str(safety().KILL_LANES)], "test_output_safety.KILL_LANES"),
    Figure(R, row("`convert.py --overwrite`"), lambda: [str(safety().KILL_TRIALS)], "test_output_safety.KILL_TRIALS"),
    Figure(R, r"SIGINT runs exit (\d+)", lambda: [str(cli().EXIT_INTERRUPTED)], "cli.EXIT_INTERRUPTED"),
    Figure(R, row("stale `.DST.partial-PID-*`"), lambda: [f"{len(safety().STALE_NAMES)} + 1"],
           "test_output_safety.STALE_NAMES, plus test_killed_overwrite_between_renames_is_restored"),
    Figure(R, row("refusal to overwrite"), lambda: [str(safety().REFUSAL_CASES)], "test_output_safety.REFUSAL_CASES"),
    Figure(R, row("failures while writing"), lambda: [str(len(safety().WRITE_FAILURES) + 1)],
           "test_output_safety.WRITE_FAILURES, plus the interrupted rename"),
    Figure(R, r"\((\d+) cut points\)", lambda: [str(len(safety().SAFETENSORS_TRUNCATIONS))],
           "test_output_safety.SAFETENSORS_TRUNCATIONS"),
    Figure(R, row("truncated `model.safetensors`"),
           lambda: [str(len(safety().SAFETENSORS_TRUNCATIONS) + safety().CORRUPT_SAFETENSORS)],
           "SAFETENSORS_TRUNCATIONS + CORRUPT_SAFETENSORS"),
    Figure(R, row("`config.json` not matching"),
           lambda: [str(safety().BROKEN_CONFIGS + len(safety().BAD_CONFIG_TEXTS))],
           "BROKEN_CONFIGS + BAD_CONFIG_TEXTS"),
    Figure(R, row("missing config.json"), lambda: [str(safety().MISSING_FILE_CASES)],
           "test_output_safety.MISSING_FILE_CASES"),
    # interrupted commands, bad images
    Figure(R, r"every `ernievil2` subcommand \((\d+)\)", lambda: [str(len(cli_failures().MESSAGES))],
           "test_cli_failures.MESSAGES"),
    Figure(R, row("every `ernievil2` subcommand"), lambda: [str(len(cli_failures().INTERRUPTIONS))],
           "test_cli_failures.INTERRUPTIONS"),
    Figure(R, r"\| exit (\d+) and a message that holds", lambda: [str(cli().EXIT_INTERRUPTED)], "cli.EXIT_INTERRUPTED"),
    Figure(R, r"an empty list \((\d+) cases\)", lambda: [str(images().BAD_IMAGE_CASES)],
           "test_image_processing.BAD_IMAGE_CASES"),
    Figure(R, r"\(CLI: exit (\d), one `error:` line\)", lambda: [str(cli().EXIT_BAD_INPUT)], "cli.EXIT_BAD_INPUT"),
    Figure(R, r"weights \(max abs difference ≤ (\S+)\) \|", lambda: [g(training().RESUME_ATOL)],
           "test_training.RESUME_ATOL"),
    # the search service (the hostile-request table is a generated block: GENERATED_BLOCKS)
    Figure(R, r"\| (\d+) raw request lines", lambda: [str(len(serve_tests().RAW_TRAVERSALS))],
           "test_serve.RAW_TRAVERSALS"),
    Figure(R, r"a token under (\d+) characters \| exit (\d),", lambda: [
        str(__import__("ernievil2torch.apps.serve.security", fromlist=["x"]).MIN_TOKEN_LENGTH),
        str(cli().EXIT_BAD_INPUT)], "apps.serve.security.MIN_TOKEN_LENGTH, cli.EXIT_BAD_INPUT"),
    Figure(R, r"a model call that takes ([\d.]+) s \| `/healthz` and an image still answer within ([\d.]+) s",
           lambda: [f"{serve_tests().SLOW_MODEL_CALL_S:g}", f"{serve_tests().RESPONSIVE_WITHIN_S:g}"],
           "test_serve.SLOW_MODEL_CALL_S, RESPONSIVE_WITHIN_S"),

    # README.md
    Figure(M, r"\((\d+) tensors, ([\d,]+)\s+parameters for Base\)", base_model_counts,
           "ErnieViL2(base_config()).state_dict()"),
    Figure(M, r"one `error:` line\nand exit status (\d);", lambda: [str(cli().EXIT_BAD_INPUT)], "cli.EXIT_BAD_INPUT"),
    Figure(M, r"`internal error`, exit status (\d);", lambda: [str(cli().EXIT_INTERNAL_ERROR)],
           "cli.EXIT_INTERNAL_ERROR"),
    Figure(M, r"finished shards and resumes\), exit status (\d+)\.", lambda: [str(cli().EXIT_INTERRUPTED)],
           "cli.EXIT_INTERRUPTED"),
    Figure(M, r"reproduce our features within (\S+) max abs diff", lambda: [g(export_tests().EXPORT_ATOL)],
           "test_export.EXPORT_ATOL"),
    Figure(M, r"give the published (\d+\.\d) / (\d+\.\d) R@1",
           lambda: re.search(r"text→image R@1/5/10 = (\d+\.\d) .*?image→text (\d+\.\d)", spec_text()).groups(),
           "SPEC.md, the official COCO-CN figures"),
    Figure(M, r"Bounds asserted by the tests and by `check.py`: features max abs diff ≤ (\S+) and cosine ≥ (\S+) "
              r"per tower,\s+logits ≤ (\S+)\.", parity_bounds, "verify.parity bounds"),
    Figure(M, r"PaddleNLP ≥ (\d\.\d) builds the text LayerNorms with eps (\S+) instead of Paddle's default (\S+)\s",
           lambda: [re.search(r"PaddleNLP ≥(\d\.\d) builds them with (1e-12)", spec_text()).group(1), "1e-12",
                    g(reference_constants().TEXT_LAYER_NORM_EPS)],
           "SPEC.md (PaddleNLP's bug), paddle_reference.TEXT_LAYER_NORM_EPS"),
    Figure(M, r"LayerNorm eps (\S+),\n  additive (−\d+) key mask", lambda: [
        g(reference_constants().TEXT_LAYER_NORM_EPS), f"−{-int(reference_constants().MASK_BIAS)}"],
        "paddle_reference constants (the tests prove the port matches them)"),
    Figure(M, r"feature `tanh\(pooler\(\[CLS\]\)\)`, (\d+)-d", lambda: [str(reference_constants().ReferenceSizes()
                                                                            .text_hidden)], "ReferenceSizes()"),
    Figure(M, r"LayerNorm eps (\S+), feature `norm_post\(class token\)`, (\d+)-d", lambda: [
        g(reference_constants().VISION_LAYER_NORM_EPS), str(reference_constants().ReferenceSizes().vision_hidden)],
        "paddle_reference constants"),
    Figure(M, r"`\[CLS\] \+ ids\[:\d+\] \+ \[SEP\]`, padded with (\d) to (\d+) \(", lambda: [
        str(reference_constants().PAD_TOKEN_ID), str(constants().DEFAULT_MAX_LENGTH)],
        "paddle_reference.PAD_TOKEN_ID, constants.DEFAULT_MAX_LENGTH"),
    Figure(M, r"also works; up to\s+(\d+) positions\)", lambda: [str(constants().MAX_TEXT_POSITIONS)],
           "constants.MAX_TEXT_POSITIONS"),
    Figure(M, r"short side\s+to (\d+) with OpenCV-style", lambda: [str(constants().IMAGE_SIZE)],
           "constants.IMAGE_SIZE"),
    Figure(M, r"\| torch \(pinned (\S+)\) \|", lambda: [pinned("requirements.txt", "torch")], "requirements.txt"),
    Figure(M, r"PaddleNLP (\d+\.\d+\.\d+)", lambda: [pinned("requirements-oracle.txt", "paddlenlp")],
           "requirements-oracle.txt", count=None),
    # README.md: fine-tuning (the flags of the defaults table: test_finetune_defaults_table_is_the_settings)
    Figure(M, r"text `hidden_dropout` and `attention_dropout` ([\d.]+) \(", text_dropout, "config.TextConfig"),
    Figure(M, r"short side to (\d+) \(official resize\), random (\d+) crop",
           lambda: [str(constants().IMAGE_SIZE)] * 2, "constants.IMAGE_SIZE"),
    Figure(M, r"images \((\d+) a\s+caption, ([\d,]+) in\s+all\) the tiny test model, from random weights, reaches "
              r"≥ (\d+) % text→image R@1 on (\d+) unseen images\s+\(chance: (\d+) %\) within (\d+) steps and (\d+) "
              r"CPU\s+seconds", learning_figures, "test_training.LEARNING_*, verify.demo shapes x colours"),
    Figure(M, r"(\d) processes × (\d) pairs under torchrun \(gloo\) give\s+the loss and every gradient of (\d) "
              r"process × (\d+) pairs, within (\S+) relative in float64 \(in float32 within (\S+):",
           ddp_figures, "test_training.DDP_PROCESSES, DDP_BOUNDS, workers/ddp_gradients.GLOBAL_BATCH"),
    # README.md's speed summary, re-derived from BENCHMARKS.md's tables
    Figure(M, r"CPU \(([^,\n]+), ISA flags ([^)]+)\), (\d+) threads for every framework",
           lambda: [*machine(), re.search(r"threads: (\d+) for every framework", threads_line()).group(1)],
           "BENCHMARKS.md machine and threads"),
    Figure(M, r"medians of (\d+) alternating rounds",
           lambda: [re.search(r"; (\d+) alternating rounds", method_line()).group(1)], "BENCHMARKS.md method"),
    Figure(M, r"\| image, batch (\d+) \(img/s\) \|",
           lambda: [re.search(r"image batch (\d+) x", method_line()).group(1)], "BENCHMARKS.md method"),
    Figure(M, r"\| text, (\d+) × (\d+) tokens \(texts/s\) \|",
           lambda: re.search(r"text batch (\d+) x (\d+) tokens", method_line()).groups(), "BENCHMARKS.md method"),
    Figure(M, r"\| image, batch \d+ \(img/s\) \| ([\d.]+) \(([\d.]+)× PaddleNLP\) \| ([\d.]+) \(([^)]+)\) \| "
              r"([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \(CLIPVisionModel\) \|", lambda: speed_row("image"),
           "BENCHMARKS.md CPU throughput"),
    Figure(M, r"\| text, \d+ × \d+ tokens \(texts/s\) \| ([\d.]+) \(([\d.]+)× PaddleNLP\) \| ([\d.]+) \(([^)]+)\) \| "
              r"([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \(BertModel\) \|", lambda: speed_row("text"),
           "BENCHMARKS.md CPU throughput"),
    Figure(M, r"ours fp32\s+runs\s+at\s+([\d.]+) %\s+\(image\)\s+and\s+([\d.]+) %\s+\(text\)\s+of\s+the\s+fp32\s+GEMM"
              r"\s+ceiling[^;]*;\s+the\s+fastest\s+bf16\s+path\s+at\s+([\d.]+) %\s+and\s+([\d.]+) %\s+of", of_ceiling,
           "BENCHMARKS.md targets table"),
    Figure(M, r"bf16\s+features\s+have\s+cosine\s+≥\s+([\d.]+)\s+to\s+fp32", lambda: [bf16_min_cosine()],
           "BENCHMARKS.md accuracy table (its lowest bf16 cosine, rounded down)"),
    Figure(M, r"the\s+bf16\s+GEMM\s+ceiling\s+is\s+([\d.]+)×\s+the\s+fp32\s+one", lambda: [gemm_ratio()],
           "BENCHMARKS.md GEMM ceilings"),
    Figure(M, r"Targets reported MISSED in that run:\n\n(- [^\n]+(?:\n- [^\n]+)*)", missed_targets,
           "BENCHMARKS.md targets table (the MISSED rows)"),
    Figure(M, r"GPU \(`benchmarks/gpu\.py`\): ([^.\n]+)\.", gpu_status, "BENCHMARKS.md GPU section"),
]

HTTP_CLASSES = r"\b[45]xx\b"  # the classes of HTTP status codes ("a JSON 4xx", "never a 5xx")
# HTTP status codes are the names of responses; each row that names one says which test asserts it.
HTTP_STATUSES = r"\b(?:200|400|401|403|404|405|413|422)\b"

# Numbers that are not figures: names and versions of models, formats and tools, and the names of test inputs.
NOT_FIGURES: Dict[str, List[str]] = {
    M: [r"ERNIE-ViL 2\.0", r"ERNIE 3\.0", r"Apache-2\.0", r"PaddleNLP ≥ 2\.6", r"16×16", r"numpy 1\.x",
        HTTP_CLASSES],
    R: [HTTP_CLASSES, HTTP_STATUSES, r"ERNIE-ViL 2\.0", r"numpy-[12]", r"protocol-0", r"\(exit 0\)",
        r"2-channel"],
}
SEALED = ["BENCHMARKS.md", "benchmarks/serve_load.md"]


@dataclass(frozen=True)
class GeneratedBlock:
    """A table inside a hand-written document, between two marker lines, that must equal ``render()`` (a rendering
    of a script's record, or of a test's own case list). ``python tests/test_docs.py --write`` puts every block in
    place from what it is rendered from (measuring nothing)."""

    doc: str
    begin: str
    end: str
    render: Callable[[], str]

    def current(self) -> str:
        return stamp.block(read(self.doc), self.begin, self.end)


def _record(script) -> dict:
    return json.loads(script.RECORD.read_text(encoding="utf-8"))


GENERATED_BLOCKS = [
    GeneratedBlock(M, fidelity.BEGIN, fidelity.END, lambda: fidelity.render_table(_record(fidelity))),
    GeneratedBlock(M, gradients.BEGIN, gradients.END, lambda: gradients.render_table(_record(gradients))),
    GeneratedBlock(R, "<!-- hostile requests:", "<!-- end of hostile requests -->",
                   lambda: serve_tests().hostile_table()),
]

_NUMBER = re.compile(r"(?<![\w.@/\-])[−-]?\d[\d,]*(?:\.\d+)*(?:e-?\d+)?")


def _code_spans(text: str) -> List[Tuple[int, int]]:
    spans = [m.span() for m in re.finditer(r"```.*?```", text, flags=re.S)]
    spans += [m.span() for m in re.finditer(r"`[^`\n]+`", text)]
    return spans


def _inside(position: int, spans: Sequence[Tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


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


@pytest.mark.parametrize("figure", FIGURES, ids=lambda f: f.id)
def test_figure(figure: Figure):
    text = read(figure.doc)
    matches = list(re.finditer(figure.pattern, text))
    assert len(matches) == figure.count if figure.count is not None else matches, \
        f"{figure.doc}: {figure.pattern!r} matched {len(matches)} times"
    want = tuple(figure.expected())
    for match in matches:
        assert match.groups() == want, (f"{figure.doc} says {match.groups()} where {figure.source} gives {want}: "
                                        "fix the document (or the code), never the check")


@pytest.mark.parametrize("doc", [R, M])
def test_every_number_is_a_checked_figure(doc: str):
    text = read(doc)
    covered = _code_spans(text)
    covered += [m.span(i) for f in FIGURES if f.doc == doc for m in re.finditer(f.pattern, text)
                for i in range(1, len(m.groups()) + 1)]
    covered += [m.span() for p in NOT_FIGURES[doc] for m in re.finditer(p, text)]
    for generated in GENERATED_BLOCKS:  # each checked as a whole by test_generated_block_is_its_rendering
        if generated.doc == doc:
            start = text.index(generated.begin)
            covered.append((start, text.index(generated.end, start)))
    unchecked = [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r} in "
                 f"{text[max(0, m.start() - 40):m.end() + 20]!r}"
                 for m in _NUMBER.finditer(text) if not _inside(m.start(), covered)]
    assert not unchecked, f"{doc} has numbers no Figure checks (see this file's docstring):\n" + "\n".join(unchecked)


@pytest.mark.parametrize("generated", GENERATED_BLOCKS, ids=lambda b: f"{b.doc}: {b.begin[5:40]}")
def test_generated_block_is_its_rendering(generated: GeneratedBlock):
    assert generated.current() == generated.render(), (
        f"{generated.doc}'s block at {generated.begin!r} differs from what it is rendered from: run the script "
        "that measures it, or `python tests/test_docs.py --write` to render it again from its record or test")


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
    import test_gradient_parity as case
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
def test_benchmarks_md_is_what_its_generator_wrote(doc: str):
    generator, command = stamp.check_seal(read(doc))
    assert (REPO / generator).is_file() and command.startswith(f"python {generator}")
    assert "seal(" in (REPO / generator).read_text(encoding="utf-8")
    assert f"    {command}\n" in read(doc)  # the report states the command that produced it


def test_a_hand_edit_breaks_the_seal():
    text = stamp.seal("| case | 5.28 |\n", "benchmarks/run.py", "python benchmarks/run.py")
    assert stamp.check_seal(text) == ("benchmarks/run.py", "python benchmarks/run.py")
    with pytest.raises(ValueError, match="changed after"):
        stamp.check_seal(text.replace("5.28", "6.28"))
    with pytest.raises(ValueError, match="no seal"):
        stamp.check_seal("| case | 5.28 |\n")


def test_a_wrong_figure_is_caught(monkeypatch):
    """The checks can fail: a count that drifts from its test constant, and a number no Figure checks."""
    real, module = read, sys.modules[__name__]
    bumped = real(R).replace("| 280 |", "| 281 |")
    monkeypatch.setattr(module, "read", lambda doc: bumped if doc == R else real(doc))
    with pytest.raises(AssertionError, match="where calls x placements gives"):
        test_figure(next(f for f in FIGURES if f.source == "calls x placements"))
    added = real(R) + "\nThe suite also tries 42 extra things.\n"
    monkeypatch.setattr(module, "read", lambda doc: added if doc == R else real(doc))
    with pytest.raises(AssertionError, match="'42'"):
        test_every_number_is_a_checked_figure(R)


def write_generated_blocks() -> None:
    """Render every generated block again from its record or test (measures nothing)."""
    for generated in GENERATED_BLOCKS:
        text = read(generated.doc)
        (REPO / generated.doc).write_text(stamp.replace_block(text, generated.begin, generated.end,
                                                              generated.render()), encoding="utf-8")
        print(f"rendered {generated.doc}: {generated.begin}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_docs.py --write   (renders the generated blocks again)")
    sys.path.insert(0, str(REPO / "tests"))
    write_generated_blocks()
