"""The commands of ``convert.py``, ``check.py``, ``test.py`` and ``ernievil2``, and what each one accepts.

:data:`COMMANDS` is the command table: each entry names its function (the library's own function where its
signature is the command line, an adapter below where the command line differs), the constraints on its values
(checked before any work, see :mod:`~ernievil2torch.cli.checks`) and what Ctrl-C leaves. Building the table
imports nothing heavy: a library function is imported only when its command runs or shows its help, so
``ernievil2 convert`` runs where torch cannot be imported.

An adapter turns command-line values into one library call and returns its result (the runner prints
``result.summary()``, and exits with status 1 when the result has ``passed`` false); ``check`` prints its progress
lines as they come.
"""
from __future__ import annotations

import sys
from typing import AbstractSet, Any, Dict, List, Mapping, Optional

from ..constants import DEFAULT_MAX_LENGTH, EMBED_KINDS, PRECISIONS, PROTOCOLS, TOWERS
from ..conversion.layouts import LAYOUTS
from ..data.formats import DATASET_FORMATS
from ..export.registry import EXPORTERS
from .arguments import Command
from .checks import (COSINE, DEVICE, DTYPE, DTYPE_OR_KEEP, FILE, FILE_OR_FOLDER, FOLDER, FOLDER_OR_ABSENT, FRACTION,
                     HUB_ID, MAX_LENGTH, MODEL_NAME, NEW_FILE, NON_NEGATIVE, PATH_OR_PATTERN, PORT, POSITIVE, between,
                     needs_extra, one_of, one_of_any_case)
from .outcome import (ATOMIC_OUTPUT, CHECKPOINTED_OUTPUT, INDEX_RESUMABLE, NO_OUTPUT, RESUMABLE_OUTPUT,
                      SERVICE_STOPPED)

CONSOLE_SUMMARY = ("ERNIE-ViL 2.0 in PyTorch: convert, check, compare, classify, embed, search, evaluate, fine-tune, "
                   "export and serve.")


# ---- adapters -------------------------------------------------------------------------------------------------------
def convert(src: Optional[str] = None, dst: str = "converted/ernie_vil2_base", vocab: Optional[str] = None,
            overwrite: bool = False, dtype: str = "float32", *, model: Optional[str] = None):
    """Convert an ERNIE-ViL 2.0 .pdparams (official or PaddleNLP layout) into a PyTorch directory.

    Needs no Paddle and no torch. Writes DST/config.json and DST/model.safetensors (and DST/vocab.txt with
    --vocab), atomically.

    Args:
        src: the .pdparams file; default: OPEN_ERNIE_VIL2_BASE_ViT.pdparams or ERNIE_VIL2_BASE_ViT.pdparams here.
        dst: output directory (refused if it exists, unless --overwrite).
        vocab: vocab.txt to copy into the directory, so it is self-contained for the tokenizer.
        overwrite: replace an existing DST (the old one stays until the new one is complete).
        dtype: float32 (default, as released), float16, bfloat16 (or fp32, fp16, half, bf16), or keep (the
            source's dtype).
        model: the registered model name to convert as (default: the registered size whose shapes the file has;
            name one when several fit).

    Returns:
        the :class:`~ernievil2torch.conversion.ConversionReport`.
    """
    from ..config import canonical_dtype
    from ..conversion import convert_checkpoint, find_default_checkpoint

    source = src or find_default_checkpoint(".")
    return convert_checkpoint(source, dst, overwrite=overwrite, vocab=vocab,
                              dtype=canonical_dtype(dtype, allow_keep=True), config=model)


def logit_check(paddle: Optional[str] = None, torch: Optional[str] = None, seed: int = 0, tiny: bool = False,
                feature_atol: Optional[float] = None, min_cosine: Optional[float] = None,
                logit_atol: Optional[float] = None, workdir: Optional[str] = None):
    """Run the Paddle reference and the PyTorch port on the same inputs and compare (needs paddlepaddle).

    What it proves: the converted directory computes, in PyTorch, the function that the Paddle reference computes
    from the original file (features of both towers and the scaled logits within the bounds). The reference is an
    independent Paddle implementation of the official architecture: its fixed values come from Baidu's code and its
    sizes from the file's own shapes, nothing from this package's config. What it does not prove: that the
    reference equals Baidu's own code, or (for a PaddleNLP-layout file, whose keys both sides get renamed by this
    project) that the renaming is right; the test suite checks both against PaddleNLP 2.8.1's ErnieViLModel.

    With no --paddle/--torch: builds a seeded synthetic full-size checkpoint in the official layout with EVERY
    weight random, converts it with the same code as convert.py, and checks it end to end. Exit status 1 when a
    bound is not met.

    Args:
        paddle: the original .pdparams (official or PaddleNLP layout).
        torch: the directory convert.py made from it.
        seed: seed of the synthetic checkpoint and of the inputs.
        tiny: use the two-layer test size instead of the full Base size (synthetic mode only).
        feature_atol: largest allowed abs difference of the features (default 1e-5).
        min_cosine: smallest allowed cosine between the two sides' features (default 0.999999).
        logit_atol: largest allowed abs difference of the scaled logits (default 1e-4).
        workdir: where the synthetic checkpoint and its conversion go (default: a temporary directory, removed).
    """
    from ..verify import parity
    from ..verify.logit_check import run_logit_check

    result = run_logit_check(
        paddle, torch, seed=seed, tiny=tiny,
        feature_atol=parity.FEATURE_ATOL if feature_atol is None else feature_atol,
        min_cosine=parity.MIN_COSINE if min_cosine is None else min_cosine,
        logit_atol=parity.LOGIT_ATOL if logit_atol is None else logit_atol,
        workdir=workdir, log=print)
    return result


def performance_check(model: str = "demo/synthetic_converted", images: Optional[List[str]] = None,
                      texts: Optional[List[str]] = None, vocab: Optional[str] = None,
                      max_length: int = DEFAULT_MAX_LENGTH, plot: Optional[str] = None) -> str:
    """Print the text x image cosine-similarity matrix (rows texts, columns images) and per-image probabilities.

    Args:
        model: a directory written by convert.py or its Hub id (ORG/NAME; its vocab.txt is used unless --vocab is given).
        images: comma-separated image paths; default: three images this project draws (disc, square, triangle).
        texts: comma-separated captions; default: captions describing the default images.
        vocab: vocab.txt, when the model directory has none.
        max_length: token length including [CLS]/[SEP] (48 as in the official evaluation).
        plot: also draw the matrix as a heatmap with thumbnails and captions into this PNG (needs matplotlib).
    """
    from ..apps.similarity import image_text_similarity

    result = image_text_similarity(model, images, texts, vocab, max_length)
    if not plot:
        return result.summary()
    from ..apps.fonts import CJK_FONT_PACKAGE
    from ..apps.plotting import plot_similarity

    written, has_cjk = plot_similarity(result.similarity.tolist(), result.images, result.texts, plot)
    return (f"{result.summary()}\n\nheatmap written to {written}"
            + ("" if has_cjk else f" (no CJK font found: rows labelled T1..Tn as printed above; pip install "
                                  f"{CJK_FONT_PACKAGE})"))


def classify(model: str, images: List[str], labels: List[str], templates: Optional[List[str]] = None,
             vocab: Optional[str] = None) -> str:
    """Zero-shot classification: per-image probabilities over your labels (prompt ensemble, open_clip style).

    Args:
        model: a directory written by convert.py, or its Hub id (ORG/NAME).
        images: comma-separated image paths.
        labels: comma-separated class names, e.g. 猫,狗,汽车.
        templates: comma-separated prompt templates with {} for the label; default 一张{}的照片.
        vocab: vocab.txt, when the model directory has none.
    """
    from ..apps.zero_shot import DEFAULT_TEMPLATES, classify_images

    return classify_images(model, images, labels, tuple(templates or DEFAULT_TEMPLATES), vocab).summary()


def export(model: str, out: str, format: str = "hf", overwrite: bool = False, vocab: Optional[str] = None,
           opset: int = 17, layout: str = "official", hub_id: Optional[str] = None):
    """Export a converted model to another framework's format.

    Formats:

    {formats}

    Args:
        model: a directory written by convert.py (or by finetune), or its Hub id (ORG/NAME).
        out: output directory (hf, onnx) or .pdparams file (paddle).
        format: the format to write (see above).
        overwrite: replace an existing output.
        vocab: vocab.txt for the HF tokenizer files, when the model directory has none (hf, open_clip).
        opset: ONNX opset, 14 or later for scaled_dot_product_attention (onnx only).
        layout: official or paddlenlp: the key layout of the .pdparams (paddle only).
        hub_id: the Hub id ORG/NAME the package will be published as, so open_clip's 'hf-hub:ORG/NAME' loads it
            anywhere (open_clip only; without it the package names its own folder, for 'local-dir:').

    Returns:
        the :class:`~ernievil2torch.export.result.ExportResult`.
    """
    from ..export.registry import export_model

    return export_model(format, model, out, overwrite=overwrite, vocab=vocab, opset=opset, layout=layout,
                        hub_id=hub_id)


export.__doc__ = (export.__doc__ or "").replace(
    "{formats}", "\n\n    ".join(f"{e.format}: {e.help}" + (f" (pip extra [{e.extra}])" if e.extra else "")
                                  for e in EXPORTERS.values()))


def serve(model: str, gallery: Optional[str] = None, images: Optional[str] = None, host: str = "127.0.0.1",
          port: int = 8000,
          token: Optional[str] = None, cors_origins: Optional[List[str]] = None, max_upload_mb: float = 20,
          max_pixels: int = 40_000_000, max_files: int = 16, max_texts: int = 64, max_text_chars: int = 1000,
          max_k: int = 1000, max_batch: int = 32, max_wait_ms: float = 5.0, decode_workers: int = 2,
          dtype: str = "float32", device: Optional[str] = None, vocab: Optional[str] = None,
          faiss: Optional[bool] = None, log_level: str = "info", fast_decode: bool = False, db: Optional[str] = None,
          uri: Optional[str] = None, db_token: Optional[str] = None, thumbnails: Optional[str] = None,
          db_searches: int = 2) -> None:
    """Search your own photos: an HTTP API (OpenAPI at /docs) and a web page (/) over an `embed` output, or over a
    photo library that `ernievil2 index` keeps in Milvus (--db or --uri).

    Listens on 127.0.0.1 only, unless --host says otherwise; any other host needs --token (or the
    ERNIEVIL2_SERVE_TOKEN environment variable), and every API call must then send 'Authorization: Bearer TOKEN'.

    Args:
        model: a directory written by convert.py or its Hub id (ORG/NAME; with vocab.txt, or pass --vocab).
        gallery: an `ernievil2 embed` output folder of images (embeddings.npy + ids.txt); or use --db/--uri.
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
        log_level: uvicorn's log level (critical, error, warning, info, debug, trace).
        fast_decode: decode uploaded JPEGs at a reduced scale (faster on large photos; pixels slightly differ from
            the official pipeline's).
        db: a photo library made by `ernievil2 index --db` (a Milvus Lite folder NAME.db; this service then owns
            it: to index while serving, use a database server and --uri for both).
        uri: a photo library on a Milvus server (http://HOST:19530), e.g. `milvus-lite server` or Milvus.
        db_token: the Milvus server's token, for --uri.
        thumbnails: where result thumbnails are cached (default: DB.thumbs beside --db, else
            ~/.cache/ernievil2torch/thumbs).
        db_searches: most photo-library searches run at a time (others wait, served in arrival order): Milvus
            Lite builds every filtered search from a copy of all the vectors (about 3 GiB at a million rows), so
            this bounds the memory.
    """
    from ..apps.serve import ServeLimits
    from ..apps.serve import serve as run_service

    limits = ServeLimits(max_body_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels,
                         max_files=max_files, max_texts=max_texts, max_text_chars=max_text_chars, max_k=max_k)
    run_service(model, gallery, images, host=host, port=port, token=token, cors_origins=cors_origins or (),
                limits=limits, max_batch=max_batch, max_wait_ms=max_wait_ms, decode_workers=decode_workers,
                dtype=dtype, device=device, vocab=vocab, faiss=faiss, log_level=log_level, on_ready=_print_banner,
                fast_decode=fast_decode, db=db, uri=uri, db_token=db_token, thumbnails=thumbnails,
                db_searches=db_searches)


def index(model: str, folders: Optional[List[str]] = None, db: Optional[str] = None, uri: Optional[str] = None,
          db_token: Optional[str] = None, reindex: bool = False, batch_size: Optional[int] = None,
          num_workers: int = 2, dtype: str = "float32", device: Optional[str] = None, progress: bool = True,
          from_embeddings: Optional[str] = None):
    """Index photo folders into Milvus for `serve --db`: incremental, crash-safe, embedded or on a server.

    One row per photo file (JPEG, PNG, WebP, HEIC/HEIF): a stable id, its path, size, mtime, content hash, width
    and height, EXIF capture time, the model's name and hash, and its normalised embedding. A second run embeds
    only new and changed files, re-points moved ones, removes deleted ones; files that cannot be read are listed
    and retried only when they change. Killed at any moment, the next run finishes the job.

    With --from_embeddings OUT instead of folders: load an `ernievil2 embed` output of images (e.g. made under
    torchrun on many machines) as the same rows, without the model, in batches, resumably; refused before any
    write when it was made by another model, holds texts, or predates embed recording the files. Files changed
    since embed ran are skipped and listed: the next folder run embeds them.

    Args:
        model: a directory written by convert.py.
        folders: the photo folders, comma-separated (a,b), usually given by position (index MODEL FOLDERS); each
            is followed recursively. The index follows exactly these: rows of files outside them (a folder left out
            this time) are removed.
        db: the embedded database, a folder named NAME.db (Milvus Lite; made on first use; one process at a time).
        uri: a Milvus server instead of --db: http://HOST:19530 (Milvus, or `milvus-lite server`).
        db_token: the Milvus server's token (user:password or an API key), for --uri (as `serve --db_token`).
        reindex: rebuild an index made with another model with this one (searches keep using the old index until
            the new one is complete).
        batch_size: images per model call (default 16); with --from_embeddings, rows per write (default 1024).
        num_workers: threads reading and decoding photos.
        dtype: float32 (default), float16 or bfloat16 compute.
        device: cpu / cuda (default: cuda if available).
        progress: show a progress bar (images/s and ETA).
        from_embeddings: an `ernievil2 embed --kind image` output made with MODEL, to load instead of folders.
    """
    if from_embeddings is not None:
        from ..apps.index import load_embeddings

        return load_embeddings(model, from_embeddings, db=db, uri=uri, token=db_token, reindex=reindex,
                               **({"batch_size": batch_size} if batch_size is not None else {}), progress=progress)
    from ..apps.index import index_photos

    return index_photos(model, folders or [], db=db, uri=uri, token=db_token, reindex=reindex,
                        **({"batch_size": batch_size} if batch_size is not None else {}), num_workers=num_workers,
                        dtype=dtype, device=device, progress=progress)


def _index_source(values: Mapping[str, Any], given: AbstractSet[str]) -> Optional[str]:
    """``index``: photo folders or --from_embeddings, one of them; the model's compute options only with folders."""
    if "from_embeddings" not in given:
        return None if values.get("folders") else "give the photo folders to index, or --from_embeddings OUT"
    if values.get("folders"):
        return "give photo folders or --from_embeddings OUT, not both"
    needless = [name for name in ("num_workers", "dtype", "device") if name in given]
    if needless:
        return (f"--{needless[0]} does not apply to --from_embeddings (the vectors are loaded as embed computed "
                "them; no model runs)")
    return None


def _print_banner(banner) -> None:
    """The service's startup lines: notices (a synthetic model) on stderr, then where it listens."""
    if banner.notices:
        print("\n".join(banner.notices), file=sys.stderr)
    print(banner.ready_line, flush=True)


def dedup(embeddings: str, threshold: float = 0.95, out: Optional[str] = None, images: Optional[str] = None,
          chunk_size: int = 4096, faiss: bool = False, examples: int = 8, overwrite: bool = False):
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
    from ..apps.dedup import dedup as find_duplicates

    return find_duplicates(embeddings, threshold, out, images, chunk_size, faiss, examples, overwrite)


# ---- rules across values: a flag that does not apply is refused ------------------------------------------------
def _synthetic_only(values: Mapping[str, Any], given: AbstractSet[str]) -> Optional[str]:
    """``check``: --tiny and --workdir shape the synthetic checkpoint, which --paddle/--torch replace."""
    if values.get("paddle") is None and values.get("torch") is None:
        return None
    for name in ("tiny", "workdir"):
        if name in given and values[name]:
            return f"--{name} applies only to the synthetic check (without --paddle/--torch)"
    return None


def _format_options(values: Mapping[str, Any], given: AbstractSet[str]) -> Optional[str]:
    """``export``: an option only the formats of the registry that list it use."""
    options = sorted({option for e in EXPORTERS.values() for option in e.options})
    chosen = EXPORTERS.get(values["format"])
    for name in options:
        if name in given and chosen is not None and name not in chosen.options:
            users = [e.format for e in EXPORTERS.values() if name in e.options]
            return f"--{name} applies only to --format {' or '.join(users)}, not {values['format']}"
    return None


# ---- the command table ----------------------------------------------------------------------------------------------
_ENCODING = {"batch_size": POSITIVE, "num_workers": NON_NEGATIVE, "dtype": DTYPE, "vocab": FILE,
             "max_length": MAX_LENGTH, "device": DEVICE}

COMMANDS: Dict[str, Command] = {c.name: c for c in (
    Command("convert", convert, "convert a .pdparams into a PyTorch directory (needs neither Paddle nor torch)",
            ATOMIC_OUTPUT, {"src": FILE, "vocab": FILE, "dtype": DTYPE_OR_KEEP, "model": MODEL_NAME}),
    Command("check", logit_check, "prove the port computes Paddle's function (needs paddlepaddle)", ATOMIC_OUTPUT,
            {"paddle": FILE, "torch": FOLDER, "seed": NON_NEGATIVE, "feature_atol": NON_NEGATIVE,
             "min_cosine": COSINE, "logit_atol": NON_NEGATIVE, "workdir": FOLDER_OR_ABSENT},
            rules=(_synthetic_only,)),
    Command("similarity", performance_check, "text x image cosine-similarity matrix (optionally a heatmap)",
            ATOMIC_OUTPUT, {"images": FILE, "vocab": FILE, "max_length": MAX_LENGTH,
                            "plot": needs_extra(NEW_FILE, ("matplotlib",), "plot")}),
    Command("classify", classify, "zero-shot classification of images over your labels", NO_OUTPUT,
            {"images": FILE, "vocab": FILE}),
    Command("embed", "ernievil2torch.cli.batch:embed",
            "embeddings of an image folder or a text file, resumable, also under torchrun", RESUMABLE_OUTPUT,
            {**_ENCODING, "inputs": PATH_OR_PATTERN, "kind": one_of(*EMBED_KINDS), "shard_size": POSITIVE}),
    Command("search", "ernievil2torch.apps.retrieval:search", "exact top-k of embed outputs against each other",
            ATOMIC_OUTPUT, {"queries": FILE_OR_FOLDER, "gallery": FILE_OR_FOLDER, "k": POSITIVE,
                            "chunk_size": POSITIVE}),
    Command("eval", "ernievil2torch.apps.retrieval:evaluate",
            "zero-shot retrieval recall (R@1/5/10 both ways) on a COCO-CN TSV or captions + images", ATOMIC_OUTPUT,
            {**_ENCODING, "data": FILE_OR_FOLDER, "images": FOLDER, "protocol": one_of(*PROTOCOLS),
             "data_format": one_of(*DATASET_FORMATS), "task": one_of("retrieval", "classification")}),
    Command("finetune", "ernievil2torch.cli.batch:finetune",
            "contrastive fine-tuning on image-caption pairs, resumable, also under torchrun", CHECKPOINTED_OUTPUT,
            {"images": FOLDER, "val": FILE_OR_FOLDER, "val_images": FOLDER, "vocab": FILE, "epochs": POSITIVE,
             "max_steps": POSITIVE, "batch_size": POSITIVE, "grad_accum": POSITIVE, "grad_cache_chunk": POSITIVE,
             "lora_rank": POSITIVE, "lora_alpha": POSITIVE, "lora_dropout": FRACTION, "lr": POSITIVE,
             "warmup_steps": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "max_grad_norm": POSITIVE,
             "adam_beta1": FRACTION, "adam_beta2": FRACTION, "adam_eps": POSITIVE, "max_length": MAX_LENGTH,
             "seed": NON_NEGATIVE, "precision": one_of_any_case(*PRECISIONS), "freeze": one_of(*TOWERS),
             "eval_every": POSITIVE, "save_every": POSITIVE, "log_every": POSITIVE, "keep_last": POSITIVE,
             "eval_batch_size": POSITIVE, "num_workers": NON_NEGATIVE, "device": DEVICE,
             "data_format": one_of(*DATASET_FORMATS), "val_data_format": one_of(*DATASET_FORMATS)},
            types={"max_steps": int, "grad_cache_chunk": int, "lora_rank": int, "lora_alpha": float}),
    Command("export", export, "export to stock Hugging Face models, open_clip, ONNX, or back to Paddle",
            ATOMIC_OUTPUT, {"format": one_of(*EXPORTERS), "vocab": FILE, "opset": between(14, 99),
                            "layout": one_of(*LAYOUTS), "hub_id": HUB_ID}, rules=(_format_options,)),
    Command("kernels", "ernievil2torch.modeling.kernel_choice:kernel_report",
            "this machine's CPU inference kernels (measured once, cached; --measure times them again)",
            ATOMIC_OUTPUT),
    Command("serve", serve, "search your own photos: HTTP API and web page over an embed output", SERVICE_STOPPED,
            {"gallery": FOLDER, "images": FOLDER, "port": PORT, "max_upload_mb": POSITIVE, "max_pixels": POSITIVE,
             "max_files": POSITIVE, "max_texts": POSITIVE, "max_text_chars": POSITIVE, "max_k": POSITIVE,
             "max_batch": POSITIVE, "max_wait_ms": NON_NEGATIVE, "decode_workers": POSITIVE, "dtype": DTYPE,
             "device": DEVICE, "vocab": FILE, "db_searches": POSITIVE,
             "log_level": one_of("critical", "error", "warning", "info", "debug", "trace")}),
    Command("index", index, "follow photo folders in a Milvus index for serve --db: incremental, crash-safe",
            INDEX_RESUMABLE, {"model": FOLDER, "batch_size": POSITIVE, "num_workers": POSITIVE, "dtype": DTYPE,
                              "device": DEVICE, "from_embeddings": FOLDER},
            types={"batch_size": int}, rules=(_index_source,)),
    Command("dedup", dedup, "groups of near-duplicate images in an embed output", ATOMIC_OUTPUT,
            {"embeddings": FOLDER, "threshold": COSINE, "images": FOLDER, "chunk_size": POSITIVE,
             "examples": NON_NEGATIVE}),
)}
