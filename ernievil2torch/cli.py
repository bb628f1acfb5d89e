"""The command line: thin fire adapters behind ``convert.py``, ``check.py``, ``test.py`` and ``ernievil2``.

Each adapter turns fire's arguments into plain values, makes one library call and prints its result; the work and
the wording of the reports live in the library. :func:`run_command` decides how a failure reads:

* bad input the project detected (:class:`~ernievil2torch.errors.ErnieViL2Error`): one ``error:`` line, exit 2;
* an operating-system error (disk full, permission denied, ...): the traceback, then one ``error:`` line, exit 2;
* anything else is a bug: the traceback and "internal error, please report", exit 3;
* Ctrl-C: what the interrupted command leaves behind, exit 130.

No library module imports this one.
"""
from __future__ import annotations

import functools
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional, TypeVar

from .constants import DEFAULT_MAX_LENGTH
from .errors import ErnieViL2Error

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


class CommandInterrupted(Exception):
    """Ctrl-C inside a command, with what that command leaves behind."""


def leaves_on_interrupt(message: str) -> Callable[[F], F]:
    """Declare what an interrupted command leaves behind (printed after Ctrl-C)."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                raise CommandInterrupted(message) from None
        return wrapper  # type: ignore[return-value]
    return decorate


# What an interrupted command leaves behind; tests/test_cli_failures.py interrupts each command and checks it.
ATOMIC_OUTPUT = "interrupted; no partial output was left behind"  # every file it writes is published atomically
NO_OUTPUT = "interrupted; nothing was written"  # the command writes no file
RESUMABLE_OUTPUT = "interrupted; finished shards are kept in OUT: run the same command again to resume"
CHECKPOINTED_OUTPUT = ("interrupted; the checkpoints written so far are complete: run the same command with --resume "
                       "to continue exactly")
SERVICE_STOPPED = "stopped (the service writes no files)"


def run_command(component: Any, name: Optional[str] = None) -> None:
    """``fire.Fire(component)`` with the failure handling of the module docstring."""
    import fire

    try:
        fire.Fire(component, name=name)
    except ErnieViL2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except (CommandInterrupted, KeyboardInterrupt) as exc:
        print(str(exc) if isinstance(exc, CommandInterrupted) else "interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:
        traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Exception:  # noqa: BLE001 - a bug: show everything
        traceback.print_exc()
        print("internal error: this is a bug in ernievil2torch; please report it with the traceback above",
              file=sys.stderr)
        sys.exit(EXIT_INTERNAL_ERROR)


def _path(value: Any) -> Optional[str]:
    """fire turns numeric-looking arguments (``--dst 2024``) into numbers: paths are strings."""
    return None if value is None else str(value)


def _split_list(value: Any) -> Optional[List[str]]:
    """fire gives "a,b" as a str and a,b as a tuple; accept both (and None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value]


# ---- the design card's commands ---------------------------------------------------------------------------------
@leaves_on_interrupt(ATOMIC_OUTPUT)
def convert(src: Optional[str] = None, dst: str = "converted/ernie_vil2_base", vocab: Optional[str] = None,
            overwrite: bool = False, dtype: str = "float32") -> None:
    """Convert an ERNIE-ViL 2.0 .pdparams (official or PaddleNLP layout) into a PyTorch directory.

    Needs no Paddle. Writes DST/config.json and DST/model.safetensors (and DST/vocab.txt with --vocab), atomically.

    Args:
        src: the .pdparams file; default: OPEN_ERNIE_VIL2_BASE_ViT.pdparams or ERNIE_VIL2_BASE_ViT.pdparams here.
        dst: output directory (refused if it exists, unless --overwrite).
        vocab: vocab.txt to copy into the directory, so it is self-contained for the tokenizer.
        overwrite: replace an existing DST (the old one stays until the new one is complete).
        dtype: float32 (default, as released), float16, bfloat16, or keep (the source's dtype).
    """
    from .conversion import convert_checkpoint, find_default_checkpoint

    source = _path(src) or find_default_checkpoint(".")
    print(convert_checkpoint(source, _path(dst), overwrite=overwrite, vocab=_path(vocab), dtype=dtype).summary())


@leaves_on_interrupt(ATOMIC_OUTPUT)  # its scratch directory is removed; with --workdir, files there are complete
def logit_check(paddle: Optional[str] = None, torch: Optional[str] = None, seed: int = 0, tiny: bool = False,
                feature_atol: Optional[float] = None, min_cosine: Optional[float] = None,
                logit_atol: Optional[float] = None, workdir: Optional[str] = None) -> None:
    """Run the Paddle reference and the PyTorch port on the same inputs and compare (needs paddlepaddle).

    What it proves: the converted directory computes, in PyTorch, the function that the Paddle reference computes
    from the original file (features of both towers and the scaled logits within the bounds). The reference is an
    independent Paddle implementation of the official architecture: its fixed values come from Baidu's code and its
    sizes from the file's own shapes, nothing from this package's config. What it does not prove: that the
    reference equals Baidu's own code, or (for a PaddleNLP-layout file, whose keys both sides get renamed by this
    project) that the renaming is right; the test suite checks both against PaddleNLP 2.8.1's ErnieViLModel.

    With no --paddle/--torch: builds a seeded synthetic full-size checkpoint in the official layout with EVERY
    weight random, converts it with the same code as convert.py, and checks it end to end.

    Args:
        paddle: the original .pdparams (official or PaddleNLP layout).
        torch: the directory convert.py made from it.
        seed: seed of the synthetic checkpoint and of the inputs.
        tiny: use the two-layer test size instead of the full Base size (synthetic mode only).
        feature_atol, min_cosine, logit_atol: pass bounds (defaults: 1e-5, 0.999999, 1e-4).
        workdir: where the synthetic checkpoint and its conversion go (default: a temporary directory, removed).
    """
    from .verify import parity
    from .verify.logit_check import run_logit_check

    result = run_logit_check(
        _path(paddle), _path(torch), seed=seed, tiny=tiny,
        feature_atol=parity.FEATURE_ATOL if feature_atol is None else feature_atol,
        min_cosine=parity.MIN_COSINE if min_cosine is None else min_cosine,
        logit_atol=parity.LOGIT_ATOL if logit_atol is None else logit_atol,
        workdir=_path(workdir), log=print)
    print()
    print(result.render())
    if not result.passed:
        sys.exit(EXIT_CHECK_FAILED)


@leaves_on_interrupt(ATOMIC_OUTPUT)  # --plot
def performance_check(model: str = "demo/synthetic_converted", images: Any = None, texts: Any = None,
                      vocab: Optional[str] = None, max_length: int = DEFAULT_MAX_LENGTH,
                      plot: Optional[str] = None) -> None:
    """Print the text x image cosine-similarity matrix (rows texts, columns images) and per-image probabilities.

    Args:
        model: a directory written by convert.py (its vocab.txt is used unless --vocab is given).
        images: comma-separated image paths; default: three images this project draws (disc, square, triangle).
        texts: comma-separated captions; default: captions describing the default images.
        vocab: vocab.txt, when the model directory has none.
        max_length: token length including [CLS]/[SEP] (48 as in the official evaluation).
        plot: also draw the matrix as a heatmap with thumbnails and captions into this PNG (needs matplotlib).
    """
    from .apps.similarity import image_text_similarity

    result = image_text_similarity(_path(model), _split_list(images), _split_list(texts), _path(vocab), max_length)
    print(result.render())
    if plot:
        from .apps.plotting import plot_similarity

        written, has_cjk = plot_similarity(result.similarity.tolist(), result.images, result.texts, _path(plot))
        print(f"\nheatmap written to {written}" + ("" if has_cjk else " (no CJK font found: rows labelled T1..Tn as "
                                                                 "printed above; pip install pylopdf-fonts-zh-cn)"))


# ---- the ernievil2 console command --------------------------------------------------------------------------------
@leaves_on_interrupt(NO_OUTPUT)
def classify(model: str, images: Any, labels: Any, templates: Any = None, vocab: Optional[str] = None) -> None:
    """Zero-shot classification: per-image probabilities over your labels (prompt ensemble, open_clip style).

    Args:
        model: a directory written by convert.py.
        images: comma-separated image paths.
        labels: comma-separated class names, e.g. 猫,狗,汽车.
        templates: comma-separated prompt templates with {} for the label; default 一张{}的照片.
        vocab: vocab.txt, when the model directory has none.
    """
    from .apps.zero_shot import DEFAULT_TEMPLATES, classify_images

    print(classify_images(_path(model), _split_list(images) or [], _split_list(labels) or [],
                          tuple(_split_list(templates) or DEFAULT_TEMPLATES), _path(vocab)).render())


@leaves_on_interrupt(ATOMIC_OUTPUT)
def export(model: str, out: str, format: str = "hf", overwrite: bool = False, vocab: Optional[str] = None,
           opset: int = 17, layout: str = "official") -> None:
    """Export a converted model: --format hf (stock transformers ErnieModel + CLIPVisionModel), onnx (both towers)
    or paddle (a .pdparams for Baidu's official MultiModalModel or PaddleNLP's ErnieViLModel; no Paddle needed).

    Args:
        model: a directory written by convert.py (or by finetune).
        out: output directory (hf, onnx) or .pdparams file (paddle).
        format: hf, onnx or paddle.
        overwrite: replace an existing output.
        vocab: vocab.txt for the HF tokenizer files, when the model directory has none (hf only).
        opset: ONNX opset (onnx only).
        layout: official or paddlenlp: the key layout of the .pdparams (paddle only).
    """
    if format == "hf":
        from .export.hf import export_hf

        print(export_hf(_path(model), _path(out), vocab=_path(vocab), overwrite=overwrite))
    elif format == "onnx":
        from .export.onnx import export_onnx

        print(export_onnx(_path(model), _path(out), opset=opset, overwrite=overwrite))
    elif format == "paddle":
        from .export.paddle import export_paddle

        print(export_paddle(_path(model), _path(out), layout=str(layout), overwrite=overwrite))
    else:
        raise ErnieViL2Error(f"--format must be hf, onnx or paddle, not {format!r}")


@leaves_on_interrupt(SERVICE_STOPPED)
def serve(model: str, gallery: str, images: str, host: str = "127.0.0.1", port: int = 8000,
          token: Optional[str] = None, cors_origins: Any = None, max_upload_mb: float = 20,
          max_pixels: int = 40_000_000, max_files: int = 16, max_texts: int = 64, max_text_chars: int = 1000,
          max_k: int = 1000, max_batch: int = 32, max_wait_ms: float = 5.0, decode_workers: int = 2,
          dtype: str = "float32", device: Optional[str] = None, vocab: Optional[str] = None,
          faiss: Optional[bool] = None, log_level: str = "info") -> None:
    """Search your own photos: an HTTP API (OpenAPI at /docs) and a web page (/) over an `embed` output.

    Listens on 127.0.0.1 only, unless --host says otherwise; any other host needs --token (or the
    ERNIEVIL2_SERVE_TOKEN environment variable), and every API call must then send 'Authorization: Bearer TOKEN'.

    Args:
        model: a directory written by convert.py (with vocab.txt, or pass --vocab).
        gallery: an `ernievil2 embed` output folder of images (embeddings.npy + ids.txt).
        images: the folder given to `ernievil2 embed` (gallery ids are paths relative to it); only files inside it
            are served.
        host: address to listen on (default 127.0.0.1, this machine only).
        port: port (0 picks a free one; the address is printed).
        token: bearer token, at least 16 characters; required for a non-loopback host.
        cors_origins: comma-separated origins allowed to call the API from other web sites (default: none).
        max_upload_mb: largest request body in MiB (413 above).
        max_pixels: most pixels of an uploaded image (413 above; Pillow's decompression-bomb guard stays too).
        max_files: most images in one /v1/embed/image request.
        max_texts: most texts in one /v1/embed/text request.
        max_text_chars: longest text or query in characters.
        max_k: most results per search.
        max_batch: most queries in one model call (concurrent requests are batched together).
        max_wait_ms: how long a batch waits for more queries after its first.
        decode_workers: threads decoding uploads.
        dtype: float32 (default), float16 or bfloat16 compute.
        device: cpu / cuda (default: cuda if available).
        vocab: vocab.txt, when the model directory has none.
        faiss: use a FAISS exact index (default: when faiss is installed and the gallery has 50,000+ images).
        log_level: uvicorn's log level (info, warning, error).
    """
    from .apps.serve import ServeLimits
    from .apps.serve import serve as run_service

    limits = ServeLimits(max_body_bytes=int(float(max_upload_mb) * 1024 * 1024), max_pixels=int(max_pixels),
                         max_files=int(max_files), max_texts=int(max_texts), max_text_chars=int(max_text_chars),
                         max_k=int(max_k))
    run_service(_path(model), _path(gallery), _path(images), host=str(host), port=int(port),
                token=None if token is None else str(token), cors_origins=_split_list(cors_origins) or (),
                limits=limits, max_batch=int(max_batch), max_wait_ms=float(max_wait_ms),
                decode_workers=int(decode_workers), dtype=dtype, device=device, vocab=_path(vocab), faiss=faiss,
                log_level=str(log_level))


@leaves_on_interrupt(ATOMIC_OUTPUT)
def dedup(embeddings: str, threshold: float = 0.95, out: Optional[str] = None, images: Optional[str] = None,
          chunk_size: int = 4096, faiss: bool = False, examples: int = 8, overwrite: bool = False) -> None:
    """Groups of near-duplicate images in an `embed` output: OUT/groups.tsv, groups.json and groups.png.

    Exact: every pair is compared, block by block (memory ~ chunk_size^2 floats, whatever the gallery size).
    Two images are linked when their cosine is at least --threshold; a group is a connected set of links.

    Args:
        embeddings: an `ernievil2 embed` output folder (embeddings.npy + ids.txt).
        threshold: cosine at or above which two images count as near-duplicates.
        out: output folder (default EMBEDDINGS/dedup); refused if it exists, unless --overwrite.
        images: the folder given to `ernievil2 embed`; needed for the picture of example groups.
        chunk_size: rows compared per block.
        faiss: find the pairs with a FAISS range search (exact; needs faiss-cpu).
        examples: groups drawn in the picture (largest first).
        overwrite: replace an existing output folder.
    """
    from .apps.dedup import dedup as find_duplicates

    print(find_duplicates(_path(embeddings), float(threshold), _path(out), _path(images), int(chunk_size),
                          bool(faiss), int(examples), overwrite).summary())


def _embed_command() -> Callable[..., Any]:
    from .apps.embed import embed

    return leaves_on_interrupt(RESUMABLE_OUTPUT)(embed)


def _retrieval_commands() -> Dict[str, Callable[..., Any]]:
    from .apps.retrieval import evaluate, search

    return {"search": leaves_on_interrupt(ATOMIC_OUTPUT)(search),
            "eval": leaves_on_interrupt(ATOMIC_OUTPUT)(evaluate)}  # --out, --save_embeddings


def _finetune_command() -> Callable[..., Any]:
    from .training import finetune

    @functools.wraps(finetune)
    def command(*args: Any, **kwargs: Any) -> None:
        print(finetune(*args, **kwargs).summary())

    return leaves_on_interrupt(CHECKPOINTED_OUTPUT)(command)


def commands() -> Dict[str, Callable[..., Any]]:
    """The ``ernievil2`` subcommands."""
    return {"convert": convert, "check": logit_check, "similarity": performance_check, "classify": classify,
            "embed": _embed_command(), **_retrieval_commands(), "finetune": _finetune_command(), "export": export,
            "serve": serve, "dedup": dedup}


def main() -> None:
    """The ``ernievil2`` console command."""
    run_command(commands(), name="ernievil2")


def main_embed() -> None:
    """``python -m ernievil2torch.embed`` (also under torchrun): the embed command alone."""
    run_command(_embed_command(), name="embed")


def main_finetune() -> None:
    """``python -m ernievil2torch.finetune`` (also under torchrun): the finetune command alone."""
    run_command(_finetune_command(), name="finetune")
