"""Export a converted ERNIE-ViL 2.0 directory to stock Hugging Face models and to ONNX.

* :func:`export_hf` writes two directories that stock ``transformers`` loads with no custom code:
  ``text/`` an ``ErnieModel`` (its ``pooler_output`` is our text feature) with tokenizer files, and
  ``vision/`` a ``CLIPVisionModel`` (its ``pooler_output`` is our image feature). Writing needs no
  ``transformers``; only loading the result does.
* :func:`export_onnx` writes ``text_encoder.onnx`` and ``image_encoder.onnx`` with a dynamic batch (and a dynamic
  text length) and checks them with ONNX Runtime when it is installed.

Mapping notes (checked by ``tests/test_export.py``):

* ERNIE: our fused ``qkv`` rows are q|k|v, split into ``query``/``key``/``value``; the model has no token-type
  embedding, so the export has ``type_vocab_size=1`` with an all-zero row (HF adds row 0 to every token).
  HF builds its additive mask from ``attention_mask`` (dtype-min instead of Paddle's -10000): both give
  ``exp(bias) == 0`` in fp32, so [CLS] features agree with padding in the batch.
* CLIP: ``pre_layrnorm`` = our ``norm_pre``, ``post_layernorm`` = ``norm_post``, QuickGELU, LN eps 1e-6, patch
  conv without bias; CLIP scales q by ``head_dim**-0.5`` like ``scaled_dot_product_attention``'s default.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import nn

from .config import ErnieViL2Config
from .errors import ErnieViL2Error
from .model import ErnieViL2
from .text_encoder import MASK_BIAS

PathLike = Union[str, Path]

TEXT_SUBDIR = "text"
VISION_SUBDIR = "vision"
HF_TOKENIZER_CAVEAT = (
    "The HF BertTokenizer files are a convenience. HF's BertTokenizer follows the official FullTokenizer on "
    "ordinary Chinese/English text, but not on every code point (format/unassigned characters) and it treats "
    "'[CLS]' etc. inside text as special tokens. For exact official ids use "
    "ernievil2torch.tokenizer.ErnieViL2Tokenizer. Official layout: [CLS] + 46 pieces + [SEP], padded to 48.")


# ---- Hugging Face ---------------------------------------------------------------------------------------------
def _split_qkv(prefix: str, state: Dict[str, torch.Tensor]):
    """Our fused ``qkv`` (rows q|k|v, torch [out, in]) -> three (weight, bias) pairs."""
    weight, bias = state[f"{prefix}.qkv.weight"], state[f"{prefix}.qkv.bias"]
    return list(zip(weight.chunk(3, dim=0), bias.chunk(3, dim=0)))


def hf_text_config(config: ErnieViL2Config) -> dict:
    """``ErnieConfig`` fields (as a dict for ``config.json``) equal to our text tower."""
    t = config.text
    return {
        "architectures": ["ErnieModel"], "model_type": "ernie",
        "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "num_hidden_layers": t.num_layers,
        "num_attention_heads": t.num_heads, "intermediate_size": t.intermediate_size, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": t.max_position_embeddings, "type_vocab_size": 1, "use_task_id": False,
        "task_type_vocab_size": 3, "layer_norm_eps": t.layer_norm_eps, "pad_token_id": t.pad_token_id,
        "position_embedding_type": "absolute", "initializer_range": 0.02, "dtype": "float32",
        "torch_dtype": "float32",
    }


def hf_vision_config(config: ErnieViL2Config) -> dict:
    """``CLIPVisionConfig`` fields (as a dict for ``config.json``) equal to our image tower."""
    v = config.vision
    return {
        "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
        "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size, "num_hidden_layers": v.num_layers,
        "num_attention_heads": v.num_heads, "num_channels": v.num_channels, "image_size": v.image_size,
        "patch_size": v.patch_size, "hidden_act": "quick_gelu", "layer_norm_eps": v.layer_norm_eps,
        "attention_dropout": 0.0, "projection_dim": v.hidden_size, "initializer_range": 0.02,
        "initializer_factor": 1.0, "dtype": "float32", "torch_dtype": "float32",
    }


def hf_text_state(config: ErnieViL2Config, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our ``text.*`` tensors under ``ErnieModel`` names (plus the zero token-type row)."""
    s = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    out = {
        "embeddings.word_embeddings.weight": s["embeddings.word_embeddings.weight"],
        "embeddings.position_embeddings.weight": s["embeddings.position_embeddings.weight"],
        "embeddings.token_type_embeddings.weight": torch.zeros(1, config.text.hidden_size,
                                                               dtype=s["pooler.weight"].dtype),
        "embeddings.LayerNorm.weight": s["embeddings.norm.weight"],
        "embeddings.LayerNorm.bias": s["embeddings.norm.bias"],
        "pooler.dense.weight": s["pooler.weight"], "pooler.dense.bias": s["pooler.bias"],
    }
    for i in range(config.text.num_layers):
        src, dst = f"layers.{i}", f"encoder.layer.{i}"
        for name, (w, b) in zip(("query", "key", "value"), _split_qkv(f"{src}.attn", s)):
            out[f"{dst}.attention.self.{name}.weight"], out[f"{dst}.attention.self.{name}.bias"] = w, b
        pairs = {"attn.out_proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
                 "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense", "norm2": "output.LayerNorm"}
        for ours, theirs in pairs.items():
            for p in ("weight", "bias"):
                out[f"{dst}.{theirs}.{p}"] = s[f"{src}.{ours}.{p}"]
    return {k: v.contiguous() for k, v in out.items()}


def hf_vision_state(config: ErnieViL2Config, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our ``vision.*`` tensors under ``CLIPVisionModel`` names (``vision_model.`` prefix, as on the Hub)."""
    s = {k[len("vision."):]: v for k, v in state.items() if k.startswith("vision.")}
    p = "vision_model."
    out = {
        f"{p}embeddings.class_embedding": s["class_embedding"],
        f"{p}embeddings.patch_embedding.weight": s["patch_embed.weight"],
        f"{p}embeddings.position_embedding.weight": s["positional_embedding"],
        f"{p}pre_layrnorm.weight": s["norm_pre.weight"], f"{p}pre_layrnorm.bias": s["norm_pre.bias"],
        f"{p}post_layernorm.weight": s["norm_post.weight"], f"{p}post_layernorm.bias": s["norm_post.bias"],
    }
    for i in range(config.vision.num_layers):
        src, dst = f"layers.{i}", f"{p}encoder.layers.{i}"
        for name, (w, b) in zip(("q_proj", "k_proj", "v_proj"), _split_qkv(f"{src}.attn", s)):
            out[f"{dst}.self_attn.{name}.weight"], out[f"{dst}.self_attn.{name}.bias"] = w, b
        pairs = {"attn.out_proj": "self_attn.out_proj", "norm1": "layer_norm1", "norm2": "layer_norm2",
                 "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
        for ours, theirs in pairs.items():
            for q in ("weight", "bias"):
                out[f"{dst}.{theirs}.{q}"] = s[f"{src}.{ours}.{q}"]
    return {k: v.contiguous() for k, v in out.items()}


def write_hf_vocab(vocab_file: PathLike, out_dir: PathLike, model_max_length: int = 48) -> List[Path]:
    """Write ``vocab.txt`` (one token per line, line number = id) plus tokenizer/special-token configs.

    Accepts the official ``token<TAB>id`` file or a plain one. Id gaps are filled with ``[unusedN]``. A token
    listed twice (``$`` at 12084 and 18005 in the released vocab) stays twice: BertTokenizer's reader keeps the
    last id, as the official reader does.
    """
    from .tokenizer import load_vocab  # noqa: F401  (validates the file the same way as our tokenizer)

    by_id: Dict[int, str] = {}
    with open(vocab_file, encoding="utf-8") as handle:
        for num, line in enumerate(handle):
            items = line.strip().split("\t")
            token = items[0].strip()
            index = int(items[1]) if len(items) == 2 else num
            by_id[index] = token  # duplicated tokens keep both ids; the line order decides the winner
    if not by_id:
        raise ErnieViL2Error(f"vocab file '{vocab_file}' is empty")
    lines = [by_id.get(i, f"[unused{i}]") for i in range(max(by_id) + 1)]
    out = Path(out_dir)
    (out / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    tok_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "tokenize_chinese_chars": True,
                  "strip_accents": None, "model_max_length": model_max_length, "padding_side": "right",
                  "truncation_side": "right", "model_input_names": ["input_ids", "attention_mask"],
                  "clean_up_tokenization_spaces": False, "ernievil2_note": HF_TOKENIZER_CAVEAT, **specials}
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
    return [out / "vocab.txt", out / "tokenizer_config.json", out / "special_tokens_map.json"]


def _save_safetensors(state: Dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def export_hf(model_dir: str, out_dir: str, vocab: Optional[str] = None, overwrite: bool = False) -> str:
    """Export to stock Hugging Face models: OUT_DIR/text (ErnieModel + BertTokenizer files), OUT_DIR/vision
    (CLIPVisionModel). Both towers' ``pooler_output`` equal our text / image features (before L2 norm).

    Load them with ``transformers.ErnieModel.from_pretrained(OUT_DIR + "/text")`` and
    ``transformers.CLIPVisionModel.from_pretrained(OUT_DIR + "/vision")``; images need our preprocessing
    (ErnieViL2ImageProcessor: ImageNet mean/std, short side 224 + center crop), not CLIP's.

    Args:
        model_dir: a converted directory (config.json + model.safetensors [+ vocab.txt]).
        out_dir: output directory (refused if it exists, unless --overwrite).
        vocab: vocab.txt for the tokenizer files (default: MODEL_DIR/vocab.txt; skipped with a note if absent).
        overwrite: replace an existing OUT_DIR.
    """
    from .io import atomic_directory, read_model_dir

    config, state = read_model_dir(model_dir)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    vocab_path = Path(vocab) if vocab else Path(model_dir) / "vocab.txt"
    with atomic_directory(out_dir, overwrite) as tmp:
        text_dir, vision_dir = tmp / TEXT_SUBDIR, tmp / VISION_SUBDIR
        text_dir.mkdir()
        vision_dir.mkdir()
        (text_dir / "config.json").write_text(json.dumps(hf_text_config(config), indent=2) + "\n")
        _save_safetensors(hf_text_state(config, state), text_dir / "model.safetensors")
        (vision_dir / "config.json").write_text(json.dumps(hf_vision_config(config), indent=2) + "\n")
        _save_safetensors(hf_vision_state(config, state), vision_dir / "model.safetensors")
        if vocab_path.is_file():
            write_hf_vocab(vocab_path, text_dir)
        elif vocab:
            raise FileNotFoundError(f"vocab file {vocab} not found")
        else:
            print(f"note: no vocab.txt in {model_dir}; tokenizer files not written (pass --vocab)")
        (tmp / "README.txt").write_text(
            "ERNIE-ViL 2.0 exported by ernievil2torch.export_hf\n"
            "text/   transformers.ErnieModel: text feature = pooler_output (tanh pooler over [CLS])\n"
            "vision/ transformers.CLIPVisionModel: image feature = pooler_output (post_layernorm of class token)\n"
            "Retrieval score = cosine(text feature, image feature); no projection heads.\n"
            f"Tokenizer: {HF_TOKENIZER_CAVEAT}\n"
            "Images: ImageNet mean/std, resize short side to 224 + center crop (not CLIP's mean/std).\n",
            encoding="utf-8")
    print(f"wrote {out_dir}/{TEXT_SUBDIR} (ErnieModel) and {out_dir}/{VISION_SUBDIR} (CLIPVisionModel)")
    return str(out_dir)


# ---- ONNX -----------------------------------------------------------------------------------------------------
class OnnxTextEncoder(nn.Module):
    """Text tower with the additive mask always built from ``attention_mask`` (no data-dependent branch)."""

    def __init__(self, model: ErnieViL2) -> None:
        super().__init__()
        self.text = model.text

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        text = self.text
        x = text.embeddings.norm(text.embeddings.word_embeddings(input_ids)
                                 + text.embeddings.position_embeddings.weight[: input_ids.shape[1]])
        bias = (1.0 - attention_mask.to(x.dtype)) * MASK_BIAS
        bias = bias[:, None, None, :]
        for block in text.layers:
            x = block(x, bias)
        return torch.tanh(text.pooler(x[:, 0]))


class OnnxImageEncoder(nn.Module):
    """Image tower: pixels [B, 3, H, W] -> features [B, hidden]."""

    def __init__(self, model: ErnieViL2) -> None:
        super().__init__()
        self.vision = model.vision

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values)


def _onnx_check(path: Path, feeds: Dict[str, torch.Tensor], expected: torch.Tensor, atol: float) -> float:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    diff = float(np.abs(got - expected.numpy()).max())
    if diff > atol:
        raise ErnieViL2Error(f"{path.name}: ONNX Runtime differs from PyTorch by {diff:.3g} (> {atol:g})")
    return diff


def export_onnx(model_dir: str, out_dir: str, opset: int = 17, check: bool = True, atol: float = 1e-4,
                overwrite: bool = False) -> str:
    """Export both towers to ONNX: OUT_DIR/text_encoder.onnx (input_ids, attention_mask -> text_embeds) and
    OUT_DIR/image_encoder.onnx (pixel_values -> image_embeds); batch and text length are dynamic.

    Outputs are raw features (L2-normalise them for cosine scoring). Inputs: int64 ids/mask [B, L] (L <= max
    positions; the official layout is 48), float32 pixels [B, 3, 224, 224] preprocessed like
    ErnieViL2ImageProcessor.

    Args:
        model_dir: a converted directory.
        out_dir: output directory (refused if it exists, unless --overwrite).
        opset: ONNX opset (>= 14 for scaled_dot_product_attention).
        check: run both files with ONNX Runtime (if installed) at batch 1 and 3 and compare with PyTorch.
        atol: largest allowed abs difference in the check.
        overwrite: replace an existing OUT_DIR.
    """
    import warnings

    from .io import atomic_directory

    model = ErnieViL2.from_pretrained(model_dir, dtype=torch.float32)
    cfg = model.config
    text, image = OnnxTextEncoder(model).eval(), OnnxImageEncoder(model).eval()
    gen = torch.Generator().manual_seed(0)
    length = min(16, cfg.text.max_position_embeddings)
    ids = torch.randint(3, cfg.text.vocab_size, (2, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, length // 2:] = 0
    ids[1, length // 2:] = cfg.text.pad_token_id
    pixels = torch.randn(2, cfg.vision.num_channels, cfg.vision.image_size, cfg.vision.image_size, generator=gen)
    with atomic_directory(out_dir, overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notes
        text_path, image_path = tmp / "text_encoder.onnx", tmp / "image_encoder.onnx"
        with torch.no_grad():
            torch.onnx.export(text, (ids, mask), str(text_path), input_names=["input_ids", "attention_mask"],
                              output_names=["text_embeds"], opset_version=opset, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                            "attention_mask": {0: "batch", 1: "length"},
                                            "text_embeds": {0: "batch"}})
            torch.onnx.export(image, (pixels,), str(image_path), input_names=["pixel_values"],
                              output_names=["image_embeds"], opset_version=opset, dynamo=False,
                              dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
        if check:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                print("note: onnxruntime not installed; skipped the check (pip install onnxruntime)")
            else:
                diffs = []
                for batch in (1, 3):
                    ids_b = torch.randint(3, cfg.text.vocab_size, (batch, length + 3), generator=gen)
                    mask_b = torch.ones_like(ids_b)
                    mask_b[-1, 5:] = 0
                    ids_b[-1, 5:] = cfg.text.pad_token_id
                    pix_b = torch.randn(batch, cfg.vision.num_channels, cfg.vision.image_size,
                                        cfg.vision.image_size, generator=gen)
                    with torch.no_grad():
                        want_t = model.encode_text(ids_b, mask_b)
                        want_i = model.encode_image(pix_b)
                    diffs.append(_onnx_check(text_path, {"input_ids": ids_b, "attention_mask": mask_b}, want_t,
                                             atol))
                    diffs.append(_onnx_check(image_path, {"pixel_values": pix_b}, want_i, atol))
                print(f"onnxruntime check passed: max abs diff {max(diffs):.3g} (<= {atol:g})")
        (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        vocab = Path(model_dir) / "vocab.txt"
        if vocab.is_file():
            shutil.copyfile(vocab, tmp / "vocab.txt")
    print(f"wrote {out_dir}/text_encoder.onnx and {out_dir}/image_encoder.onnx (opset {opset})")
    return str(out_dir)
