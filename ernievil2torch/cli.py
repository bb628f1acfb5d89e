"""Command implementations shared by ``convert.py``, ``check.py``, ``test.py`` and the ``ernievil2`` console command.

Each command raises the project's own errors; :func:`run_command` turns them into a one-line message on stderr and
a non-zero exit code instead of a traceback.
"""
from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from .errors import ErnieViL2Error

EXIT_BAD_INPUT = 2
EXIT_CHECK_FAILED = 1


def run_command(component: Any, name: Optional[str] = None) -> None:
    """``fire.Fire`` with clean errors: a bad checkpoint or input is one line on stderr and exit code 2."""
    import fire

    try:
        fire.Fire(component, name=name)
    except (ErnieViL2Error, FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print("interrupted; no partial output was left behind", file=sys.stderr)
        sys.exit(130)


# ---- convert ----------------------------------------------------------------------------------------------------
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

    # fire turns numeric-looking arguments (--dst 2024) into numbers: paths are strings
    source = Path(str(src)) if src is not None else find_default_checkpoint(".")
    report = convert_checkpoint(source, str(dst), overwrite=overwrite, vocab=vocab, dtype=dtype)
    print(report.summary())


# ---- check ------------------------------------------------------------------------------------------------------
def _official_layout_state(state: Dict[str, np.ndarray]):
    """Any supported layout -> (config, official-layout arrays) for the Paddle reference."""
    from .key_maps import OFFICIAL, apply_rule, plan_conversion, to_layout

    plan = plan_conversion({k: tuple(a.shape) for k, a in state.items()})
    if plan.layout is OFFICIAL:
        return plan.config, state
    ours = {rule.target: apply_rule(rule, [state[k] for k in rule.sources]) for rule in plan.rules}
    return plan.config, to_layout(ours, OFFICIAL, plan.config)


def _print_side_by_side(label: str, ours: np.ndarray, theirs: np.ndarray, count: int = 10) -> None:
    np.set_printoptions(precision=8, suppress=True, linewidth=160)
    print(f"  {label} (first {count} values of row 0)")
    print(f"    pytorch: {ours[0, :count]}")
    print(f"    paddle : {theirs[0, :count]}")


def logit_check(paddle: Optional[str] = None, torch: Optional[str] = None, seed: int = 0, tiny: bool = False,
                feature_atol: Optional[float] = None, min_cosine: Optional[float] = None,
                logit_atol: Optional[float] = None, workdir: Optional[str] = None) -> None:
    """Run the Paddle reference and the PyTorch port on the same inputs and compare (needs paddlepaddle).

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
    from . import parity
    from .conversion import convert_checkpoint
    from .model import ErnieViL2
    from .pdparams import load_pdparams

    if (paddle is None) != (torch is None):
        raise ErnieViL2Error("give both --paddle X.pdparams and --torch DIR, or neither (synthetic check)")
    feature_atol = parity.FEATURE_ATOL if feature_atol is None else feature_atol
    min_cosine = parity.MIN_COSINE if min_cosine is None else min_cosine
    logit_atol = parity.LOGIT_ATOL if logit_atol is None else logit_atol

    with tempfile.TemporaryDirectory(prefix="ernievil2-check-") as scratch:
        base = Path(workdir) if workdir else Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        if paddle is None:
            from .config import base_config, tiny_config
            from .synthetic import SYNTHETIC_NOTICE, write_synthetic_pdparams

            from .demo import write_synthetic_vocab

            print(f"*** {SYNTHETIC_NOTICE}")
            config = tiny_config() if tiny else base_config()
            paddle = str(write_synthetic_pdparams(base / "synthetic_official.pdparams", config, "official", seed))
            # The tiny size exists for speed; only the full size gets a (synthetic) vocab for performance_check.
            vocab = None if tiny else write_synthetic_vocab(base / "synthetic_vocab.txt", config.text.vocab_size)
            torch = str(base / "synthetic_converted")
            print(convert_checkpoint(paddle, torch, overwrite=True, vocab=vocab).summary())
        try:
            with warnings.catch_warnings():  # Paddle warns about a missing ccache at import
                warnings.simplefilter("ignore")
                from .paddle_reference import run_reference
        except ImportError as exc:
            raise ErnieViL2Error(f"the logit check needs paddlepaddle ({exc}); pip install -r "
                                 "requirements-paddle.txt") from None
        config, official = _official_layout_state(load_pdparams(paddle))
        model = ErnieViL2.from_pretrained(torch)
        if model.config.text != config.text or model.config.vision != config.vision:
            raise ErnieViL2Error(f"{torch} holds a different model size than {paddle}")
        inputs = parity.synthetic_inputs(config, seed)
        reference = run_reference(config, official, inputs.pixel_values, inputs.input_ids)
        ours = parity.run_torch(model, inputs)

    print(f"\ninputs: {inputs.pixel_values.shape[0]} images (seeded pixels), {inputs.input_ids.shape[0]} texts "
          f"(token ids, lengths {(inputs.input_ids != 0).sum(1).tolist()}, padded to {inputs.input_ids.shape[1]})")
    print("### pytorch vs paddle")
    _print_side_by_side("visual_output", ours["image_features"], reference["image_features"])
    _print_side_by_side("text_output", ours["text_features"], reference["text_features"])
    print(f"  logit_scale: pytorch {None if ours['logit_scale'] is None else float(ours['logit_scale'][0]):} "
          f"paddle {reference['logit_scale']}")
    report = parity.compare(ours, reference)
    print()
    print(report.table())
    ok = report.passed(feature_atol, min_cosine, logit_atol)
    print(f"\n{'PASS' if ok else 'FAIL'}: bounds features max abs <= {feature_atol:g}, cosine >= {min_cosine}, "
          f"logits max abs <= {logit_atol:g}")
    if not ok:
        sys.exit(EXIT_CHECK_FAILED)


# ---- similarity (test.py performance_check) --------------------------------------------------------------------
def _split_list(value: Any) -> Optional[list]:
    """fire gives "a,b" as a str and a,b as a tuple; accept both (and None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value]


def _is_synthetic(model_dir: Path) -> bool:
    from safetensors import safe_open

    from .io import WEIGHTS_NAME

    with safe_open(str(model_dir / WEIGHTS_NAME), framework="pt") as handle:
        return (handle.metadata() or {}).get("source_file", "").startswith("synthetic")


def performance_check(model: str = "demo/synthetic_converted", images: Any = None, texts: Any = None,
                      vocab: Optional[str] = None, max_length: int = 48, plot: Optional[str] = None) -> None:
    """Print the text x image cosine-similarity matrix (rows texts, columns images) and per-image probabilities.

    Args:
        model: a directory written by convert.py (its vocab.txt is used unless --vocab is given).
        images: comma-separated image paths; default: three images this project draws (disc, square, triangle).
        texts: comma-separated captions; default: captions describing the default images.
        vocab: vocab.txt, when the model directory has none.
        max_length: token length including [CLS]/[SEP] (48 as in the official evaluation).
        plot: also draw the matrix as a heatmap with thumbnails and captions into this PNG (needs matplotlib).
    """
    import torch

    from .demo import DEMO_CAPTIONS, demo_images
    from .image_processing import ErnieViL2ImageProcessor
    from .model import ErnieViL2
    from .tokenizer import ErnieViL2Tokenizer

    model_dir = Path(model)
    net = ErnieViL2.from_pretrained(model_dir)
    vocab_file = Path(vocab) if vocab else model_dir / "vocab.txt"
    if not vocab_file.is_file():
        raise ErnieViL2Error(f"{model_dir} has no vocab.txt: pass --vocab vocab.txt (or convert with --vocab)")
    tokenizer = ErnieViL2Tokenizer(vocab_file)
    image_list = _split_list(images)
    text_list = _split_list(texts) or list(DEMO_CAPTIONS)
    pil_images = [_open_image(p) for p in image_list] if image_list else demo_images()
    pixel_values = ErnieViL2ImageProcessor()(pil_images)
    image_names = [Path(p).name for p in image_list] if image_list else ["disc(drawn)", "square(drawn)",
                                                                          "triangle(drawn)"]
    batch = tokenizer(text_list, max_length=max_length, padding="longest")
    with torch.inference_mode():
        image_features = net.encode_image(pixel_values, normalize=True)
        text_features = net.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True)
    similarity = text_features @ image_features.T
    if _is_synthetic(model_dir):
        from .synthetic import SYNTHETIC_NOTICE

        print(f"*** {SYNTHETIC_NOTICE}")
    print(f"model: {model_dir}  images: {', '.join(image_names)}")
    print("cosine similarity (rows: texts, columns: images)")
    print(similarity)
    if net.logit_scale is not None:
        probs = (net.logit_scale.detach() * similarity.T).softmax(dim=-1)
        print(f"\nper-image probabilities over the texts (logit_scale {float(net.logit_scale.detach()):.2f})")
        for name, row in zip(image_names, probs):
            best = int(row.argmax())
            print(f"  {name}: " + ", ".join(f"{t} {p:.3f}" for t, p in zip(text_list, row.tolist()))
                  + f"  -> {text_list[best]}")
    if plot:
        from .plotting import plot_similarity

        written, has_cjk = plot_similarity(similarity.tolist(), pil_images, text_list, plot)
        print(f"\nheatmap written to {written}" + ("" if has_cjk else " (no CJK font: rows labelled T1..Tn)"))


def _open_image(path: str):
    """Decode one image with the project's checks (clear error for missing, corrupt or bomb files) as RGB PIL."""
    from PIL import Image

    from .image_processing import ErnieViL2ImageProcessor

    return Image.fromarray(ErnieViL2ImageProcessor().load_image(path))


def classify(model: str, images: Any, labels: Any, templates: Any = None, vocab: Optional[str] = None) -> None:
    """Zero-shot classification: per-image probabilities over your labels (prompt ensemble, open_clip style).

    Args:
        model: a directory written by convert.py.
        images: comma-separated image paths.
        labels: comma-separated class names, e.g. 猫,狗,汽车.
        templates: comma-separated prompt templates with {} for the label; default 一张{}的照片.
        vocab: vocab.txt, when the model directory has none.
    """
    from .image_processing import ErnieViL2ImageProcessor
    from .model import ErnieViL2
    from .tokenizer import ErnieViL2Tokenizer
    from .zero_shot import DEFAULT_TEMPLATES, build_classifier, classify as zero_shot_classify

    model_dir = Path(model)
    net = ErnieViL2.from_pretrained(model_dir)
    vocab_file = Path(vocab) if vocab else model_dir / "vocab.txt"
    if not vocab_file.is_file():
        raise ErnieViL2Error(f"{model_dir} has no vocab.txt: pass --vocab vocab.txt (or convert with --vocab)")
    image_list, label_list = _split_list(images) or [], _split_list(labels) or []
    if not image_list or not label_list:
        raise ErnieViL2Error("give --images a.jpg,b.jpg and --labels 猫,狗")
    classifier = build_classifier(net, ErnieViL2Tokenizer(vocab_file), label_list,
                                  tuple(_split_list(templates) or DEFAULT_TEMPLATES))
    probs = zero_shot_classify(net, ErnieViL2ImageProcessor()(image_list), classifier)
    for path, row in zip(image_list, probs.tolist()):
        best = max(range(len(row)), key=row.__getitem__)
        print(f"{Path(path).name}: {label_list[best]} ({row[best]:.3f})  |  "
              + ", ".join(f"{label} {p:.3f}" for label, p in zip(label_list, row)))


def export(model: str, out: str, format: str = "hf", overwrite: bool = False, vocab: Optional[str] = None,
           opset: int = 17) -> None:
    """Export a converted model: --format hf (stock transformers ErnieModel + CLIPVisionModel) or onnx (both towers).

    Args:
        model: a directory written by convert.py.
        out: output directory.
        format: hf or onnx.
        overwrite: replace an existing output directory.
        vocab: vocab.txt for the HF tokenizer files, when the model directory has none (hf only).
        opset: ONNX opset (onnx only).
    """
    from . import export as exporters

    if format == "hf":
        print(exporters.export_hf(model, out, vocab=vocab, overwrite=overwrite))
    elif format == "onnx":
        print(exporters.export_onnx(model, out, opset=opset, overwrite=overwrite))
    else:
        raise ErnieViL2Error(f"--format must be hf or onnx, not {format!r}")


COMMANDS: Dict[str, Callable[..., Any]] = {
    "convert": convert, "check": logit_check, "similarity": performance_check, "classify": classify,
    "export": export,
}


def main() -> None:
    """The ``ernievil2`` console command."""
    from .embed import embed
    from .retrieval import evaluate, search

    run_command({**COMMANDS, "embed": embed, "search": search, "eval": evaluate}, name="ernievil2")
