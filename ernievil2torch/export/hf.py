"""Export a converted ERNIE-ViL 2.0 directory to stock Hugging Face models.

:func:`export_hf` writes two directories that stock ``transformers`` loads with no custom code: ``text/`` an
``ErnieModel`` (its ``pooler_output`` is our text feature) with tokenizer files, and ``vision/`` a
``CLIPVisionModel`` (its ``pooler_output`` is our image feature). Writing needs no ``transformers``; only loading
the result does. The key mapping is two :class:`~ernievil2torch.conversion.layouts.Layout` s run through the same
engine (:func:`~ernievil2torch.conversion.layouts.to_layout`) as the Paddle layouts.

Mapping notes (checked by ``tests/export/test_export.py``):

* ERNIE: our fused ``qkv`` rows are q|k|v, split into ``query``/``key``/``value``; the model has no token-type
  embedding, so the export has ``type_vocab_size=1`` with an all-zero row (HF adds row 0 to every token).
  HF builds its additive mask from ``attention_mask`` (dtype-min instead of Paddle's -10000): both give
  ``exp(bias) == 0`` in fp32, so [CLS] features agree with padding in the batch.
* CLIP: ``pre_layrnorm`` = our ``norm_pre``, ``post_layernorm`` = ``norm_post``, QuickGELU, LN eps 1e-6, patch
  conv without bias; CLIP scales q by ``head_dim**-0.5`` like ``scaled_dot_product_attention``'s default.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from ..config import ErnieViL2Config
from ..constants import DEFAULT_MAX_LENGTH, VOCAB_NAME
from ..conversion.layouts import Layout, block_rules, linear, norm, rules, to_layout
from ..conversion.ops import COPY
from ..errors import InputError
from ..processing.vocab import read_vocab_entries
from ..storage.atomic import atomic_directory
from ..storage.outputs import check_output_dir
from ..storage.model_dir import read_model_dir
from .result import ExportResult

PathLike = Union[str, Path]

TEXT_SUBDIR = "text"
VISION_SUBDIR = "vision"
HF_TOKENIZER_CAVEAT = (
    "The HF BertTokenizer files are a convenience. HF's BertTokenizer follows the official FullTokenizer on "
    "ordinary Chinese/English text, but not on every code point (format/unassigned characters) and it treats "
    "'[CLS]' etc. inside text as special tokens. For exact official ids use "
    "ernievil2torch.ErnieViL2Tokenizer. Official layout: [CLS] + 46 pieces + [SEP], padded to 48.")

# ---- layouts: HF tensors are torch-layout already, so Linears copy and q|k|v concatenate ----------------------
_HT = "encoder.layer.{i}"
HF_ERNIE = Layout(
    name="hf_ernie",
    description="transformers.ErnieModel (text tower only; token-type row added by the export)",
    sentinels=("encoder.layer.0.attention.self.query.weight",),
    rules=tuple(
        rules([
            ("text.embeddings.word_embeddings.weight", ["embeddings.word_embeddings.weight"], COPY),
            ("text.embeddings.position_embeddings.weight", ["embeddings.position_embeddings.weight"], COPY),
            *norm("text.embeddings.norm", "embeddings.LayerNorm"),
            *linear("text.pooler", "pooler.dense", COPY),
        ])
        + block_rules("text", qkv=tuple(f"{_HT}.attention.self.{p}" for p in ("query", "key", "value")),
                      out_proj=f"{_HT}.attention.output.dense", norm1=f"{_HT}.attention.output.LayerNorm",
                      fc1=f"{_HT}.intermediate.dense", fc2=f"{_HT}.output.dense", norm2=f"{_HT}.output.LayerNorm",
                      paddle_linears=False)
    ),
)
_HV = "vision_model.encoder.layers.{i}"
HF_CLIP_VISION = Layout(
    name="hf_clip_vision",
    description="transformers.CLIPVisionModel (image tower only; 'vision_model.' prefix as on the Hub)",
    sentinels=("vision_model.encoder.layers.0.self_attn.q_proj.weight",),
    rules=tuple(
        rules([
            ("vision.class_embedding", ["vision_model.embeddings.class_embedding"], COPY),
            ("vision.patch_embed.weight", ["vision_model.embeddings.patch_embedding.weight"], COPY),
            ("vision.positional_embedding", ["vision_model.embeddings.position_embedding.weight"], COPY),
            *norm("vision.norm_pre", "vision_model.pre_layrnorm"),
            *norm("vision.norm_post", "vision_model.post_layernorm"),
        ])
        + block_rules("vision", qkv=tuple(f"{_HV}.self_attn.{p}_proj" for p in "qkv"),
                      out_proj=f"{_HV}.self_attn.out_proj", norm1=f"{_HV}.layer_norm1", norm2=f"{_HV}.layer_norm2",
                      fc1=f"{_HV}.mlp.fc1", fc2=f"{_HV}.mlp.fc2", paddle_linears=False)
    ),
)


def hf_text_config(config: ErnieViL2Config) -> dict:
    """``ErnieConfig`` fields (as a dict for ``config.json``) equal to our text tower."""
    t = config.text
    return {
        "architectures": ["ErnieModel"], "model_type": "ernie",
        "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "num_hidden_layers": t.num_layers,
        "num_attention_heads": t.num_heads, "intermediate_size": t.intermediate_size, "hidden_act": "gelu",
        "hidden_dropout_prob": t.hidden_dropout, "attention_probs_dropout_prob": t.attention_dropout,
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
        "attention_dropout": v.attention_dropout, "projection_dim": v.hidden_size, "initializer_range": 0.02,
        "initializer_factor": 1.0, "dtype": "float32", "torch_dtype": "float32",
    }


def hf_text_state(config: ErnieViL2Config, state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Our ``text.*`` arrays under ``ErnieModel`` names, plus the all-zero token-type row HF adds to every token."""
    out = to_layout(state, HF_ERNIE, config)
    out["embeddings.token_type_embeddings.weight"] = np.zeros((1, config.text.hidden_size), np.float32)
    return out


def hf_vision_state(config: ErnieViL2Config, state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Our ``vision.*`` arrays under ``CLIPVisionModel`` names."""
    return to_layout(state, HF_CLIP_VISION, config)


def write_hf_vocab(vocab_file: PathLike, out_dir: PathLike, model_max_length: int = DEFAULT_MAX_LENGTH
                   ) -> List[Path]:
    """Write ``vocab.txt`` (one token per line, line number = id) plus tokenizer/special-token configs.

    Accepts the official ``token<TAB>id`` file or a plain one. Id gaps are filled with ``[unusedN]``. A token
    listed twice (``$`` at 12084 and 18005 in the released vocab) stays twice: BertTokenizer's reader keeps the
    last id, as the official reader does.
    """
    by_id: Dict[int, str] = {index: token for token, index in read_vocab_entries(vocab_file)}
    lines = [by_id.get(i, f"[unused{i}]") for i in range(max(by_id) + 1)]
    out = Path(out_dir)
    (out / VOCAB_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    tok_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "tokenize_chinese_chars": True,
                  "strip_accents": None, "model_max_length": model_max_length, "padding_side": "right",
                  "truncation_side": "right", "model_input_names": ["input_ids", "attention_mask"],
                  "clean_up_tokenization_spaces": False, "ernievil2_note": HF_TOKENIZER_CAVEAT, **specials}
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
    return [out / VOCAB_NAME, out / "tokenizer_config.json", out / "special_tokens_map.json"]


def _save_safetensors(state: Dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path), metadata={"format": "pt"})


def export_hf(model_dir: PathLike, out_dir: PathLike, vocab: Optional[PathLike] = None, overwrite: bool = False
              ) -> ExportResult:
    """Export to stock Hugging Face models: OUT_DIR/text (ErnieModel + BertTokenizer files), OUT_DIR/vision
    (CLIPVisionModel). Both towers' ``pooler_output`` equal our text / image features (before L2 norm).

    Load them with ``transformers.ErnieModel.from_pretrained(OUT_DIR + "/text")`` and
    ``transformers.CLIPVisionModel.from_pretrained(OUT_DIR + "/vision")``; images need our preprocessing
    (ErnieViL2ImageProcessor: ImageNet mean/std, short side 224 + center crop), not CLIP's.

    Args:
        model_dir: a converted directory (config.json + model.safetensors [+ vocab.txt]).
        out_dir: output directory (refused if it exists, unless --overwrite; never MODEL_DIR, the current directory
            or a folder holding either: :func:`~ernievil2torch.storage.outputs.check_output_dir`).
        vocab: vocab.txt for the tokenizer files (default: MODEL_DIR/vocab.txt; skipped with a note if absent).
        overwrite: replace an existing OUT_DIR.

    Returns the :class:`~ernievil2torch.export.result.ExportResult` (with a note when no tokenizer files were
    written).
    """
    check_output_dir(out_dir, overwrite, inputs=[model_dir, vocab])
    config, tensors = read_model_dir(model_dir)
    state = {k: v.float().numpy() for k, v in tensors.items()}
    vocab_path = Path(vocab) if vocab else Path(model_dir) / VOCAB_NAME
    notes = []
    with atomic_directory(out_dir, overwrite, inputs=[model_dir, vocab]) as tmp:
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
            raise InputError(f"vocab file {vocab} not found")
        else:
            notes.append(f"note: no {VOCAB_NAME} in {model_dir}; tokenizer files not written (pass --vocab)")
        (tmp / "README.txt").write_text(
            "ERNIE-ViL 2.0 exported by ernievil2torch.export_hf\n"
            "text/   transformers.ErnieModel: text feature = pooler_output (tanh pooler over [CLS])\n"
            "vision/ transformers.CLIPVisionModel: image feature = pooler_output (post_layernorm of class token)\n"
            "Retrieval score = cosine(text feature, image feature); no projection heads.\n"
            f"Tokenizer: {HF_TOKENIZER_CAVEAT}\n"
            "Images: ImageNet mean/std, resize short side to 224 + center crop (not CLIP's mean/std).\n",
            encoding="utf-8")
    return ExportResult("hf", Path(out_dir), f"wrote {out_dir}/{TEXT_SUBDIR} (ErnieModel) and {out_dir}/{VISION_SUBDIR} "
                                              "(CLIPVisionModel)", notes)


