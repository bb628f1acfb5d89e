"""Export a converted ERNIE-ViL 2.0 directory as an open_clip package (open-clip-torch 3.x), loaded by open_clip's
own code with no code of ours installed.

The package is one directory, apart from our converted one:

* ``open_clip_config.json``: ``model_cfg`` (open_clip's ``CustomTextCLIP``: its own ViT for the image tower, a
  Hugging Face text tower) and ``preprocess_cfg``;
* ``open_clip_model.safetensors``: every weight under open_clip's names (safetensors only, no pickle);
* ``config.json``: the text tower as a stock ``BertModel`` config (open_clip's HF text encoder knows BERT, not
  ERNIE: ERNIE 3.0's text tower is a BERT with no token-type embedding, so the export adds an all-zero token-type
  row);
* the tokenizer: ``tokenizer.json`` (:mod:`.tokenizer_json`: the official rules as explicit tables, so it gives
  our ids on every text, where HF's ``BertTokenizer`` follows the Rust crates' Unicode tables),
  ``tokenizer_config.json`` (a ``PreTrainedTokenizerFast`` that reads ``[CLS]`` inside a text as text, as the
  official tokenizer does) and ``special_tokens_map.json``.

Mapping (checked against open_clip itself by ``tests/export/test_open_clip.py``): the image tower is open_clip's
``VisionTransformer`` (QuickGELU, LayerNorm eps from our config via ``norm_kwargs``, ``ln_pre``, class-token pool
after ``ln_post``) with an identity ``proj``; the text feature is BERT's tanh pooler over [CLS]
(``hf_pooler_type: cls_pooler`` returns ``pooler_output``), with no projection (``hf_proj_type: null``);
``logit_scale`` is our temperature (0, i.e. plain cosine, for a checkpoint without one).

Where the text config comes from: open_clip builds its HF text tower with ``AutoConfig.from_pretrained(
hf_model_name)``, which ``local-dir:`` does not redirect. With ``hub_id`` the package names itself by that id, so
``hf-hub:ID`` loads it anywhere once it is on the Hub or in the Hugging Face cache (``HF_HUB_OFFLINE=1`` works), and
``local-dir:`` works wherever that id is cached. Without ``hub_id`` it names its own absolute path: ``local-dir:``
then works from any working directory, but only while the folder stays where it was written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from ..config import ErnieViL2Config, parse_hub_id
from ..constants import DEFAULT_MAX_LENGTH, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, VOCAB_NAME
from ..conversion.layouts import Layout, layer_rules, linear, norm, rules, to_layout
from ..conversion.ops import COPY
from ..errors import InputError
from ..processing.vocab import check_special_tokens, load_vocab
from ..storage.atomic import atomic_directory
from ..storage.model_dir import read_model_dir
from ..storage.outputs import check_output_dir
from .hf import HF_ERNIE
from .result import ExportResult
from .tokenizer_json import tokenizer_json

PathLike = Union[str, Path]
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
TEXT_PREFIX = "text.transformer."

_VB = "visual.transformer.resblocks.{i}"
OPEN_CLIP_VISION = Layout(
    name="open_clip_vision",
    description="open_clip VisionTransformer (the image tower of CLIP / CustomTextCLIP)",
    sentinels=("visual.transformer.resblocks.0.attn.in_proj_weight",),
    rules=tuple(
        rules([
            ("vision.class_embedding", ["visual.class_embedding"], COPY),
            ("vision.patch_embed.weight", ["visual.conv1.weight"], COPY),
            ("vision.positional_embedding", ["visual.positional_embedding"], COPY),
            *norm("vision.norm_pre", "visual.ln_pre"),
            *norm("vision.norm_post", "visual.ln_post"),
        ])
        + layer_rules("vision", [  # pre-norm blocks; open_clip's attention is nn.MultiheadAttention (rows q|k|v)
            *norm("vision.layers.{i}.norm1", f"{_VB}.ln_1"),
            ("vision.layers.{i}.attn.qkv.weight", [f"{_VB}.attn.in_proj_weight"], COPY),
            ("vision.layers.{i}.attn.qkv.bias", [f"{_VB}.attn.in_proj_bias"], COPY),
            *linear("vision.layers.{i}.attn.out_proj", f"{_VB}.attn.out_proj", COPY),
            *norm("vision.layers.{i}.norm2", f"{_VB}.ln_2"),
            *linear("vision.layers.{i}.mlp.fc1", f"{_VB}.mlp.c_fc", COPY),
            *linear("vision.layers.{i}.mlp.fc2", f"{_VB}.mlp.c_proj", COPY),
        ])
    ),
)


def bert_config(config: ErnieViL2Config) -> dict:
    """A stock ``BertConfig`` (as a dict for ``config.json``) equal to our text tower."""
    t = config.text
    return {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "num_hidden_layers": t.num_layers,
        "num_attention_heads": t.num_heads, "intermediate_size": t.intermediate_size, "hidden_act": "gelu",
        "hidden_dropout_prob": t.hidden_dropout, "attention_probs_dropout_prob": t.attention_dropout,
        "max_position_embeddings": t.max_position_embeddings, "type_vocab_size": 1,
        "layer_norm_eps": t.layer_norm_eps, "pad_token_id": t.pad_token_id, "position_embedding_type": "absolute",
        "initializer_range": 0.02, "dtype": "float32",
    }


def open_clip_config(config: ErnieViL2Config, name: str, context_length: int = DEFAULT_MAX_LENGTH) -> dict:
    """``open_clip_config.json``: the model (``name`` is the HF text config's and tokenizer's source) and the
    preprocessing closest to the official one open_clip can express (see README: it is not Baidu's resize)."""
    v, t = config.vision, config.text
    return {
        "model_cfg": {
            "embed_dim": v.hidden_size,
            "quick_gelu": True,
            "custom_text": True,
            "vision_cfg": {"image_size": v.image_size, "layers": v.num_layers, "width": v.hidden_size,
                           "head_width": v.hidden_size // v.num_heads, "mlp_ratio": v.intermediate_size / v.hidden_size,
                           "patch_size": v.patch_size, "norm_kwargs": {"eps": v.layer_norm_eps}},
            "text_cfg": {"hf_model_name": name, "hf_tokenizer_name": name, "hf_proj_type": None,
                         "hf_pooler_type": "cls_pooler", "context_length": context_length,
                         "vocab_size": t.vocab_size},
        },
        "preprocess_cfg": {"size": v.image_size if v.image_size else IMAGE_SIZE, "mode": "RGB",
                           "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "interpolation": "bilinear",
                           "resize_mode": "shortest"},
    }


def open_clip_state(config: ErnieViL2Config, state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Our arrays under open_clip ``CustomTextCLIP`` names: the ViT, the BERT text tower (with its all-zero
    token-type row), an identity image projection and the logit scale."""
    if config.text.hidden_size != config.vision.hidden_size:
        raise InputError(f"the towers' widths differ ({config.text.hidden_size} text, {config.vision.hidden_size} "
                         "image): open_clip's identity projections need one width")
    out = to_layout(state, OPEN_CLIP_VISION, config)
    out["visual.proj"] = np.eye(config.vision.hidden_size, dtype=np.float32)
    for key, value in to_layout(state, HF_ERNIE, config).items():
        out[TEXT_PREFIX + key] = value
    out[TEXT_PREFIX + "embeddings.token_type_embeddings.weight"] = np.zeros((1, config.text.hidden_size), np.float32)
    temperature = state.get("temperature")
    out["logit_scale"] = np.asarray(0.0 if temperature is None else float(temperature.reshape(-1)[0]), np.float32)
    return out


SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}


def tokenizer_files(vocab_file: PathLike, context_length: int = DEFAULT_MAX_LENGTH) -> Dict[str, str]:
    """File name -> text of ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``: what
    ``transformers.AutoTokenizer`` (and so open_clip's ``HFTokenizer``) loads. :class:`InputError` for a vocab the
    tokenizer cannot serve (see :func:`~ernievil2torch.export.tokenizer_json.tokenizer_json`).

    ``split_special_tokens``: a literal ``[CLS]`` inside a text is text (``[``, ``cl``, ``##s``, ``]``), as in the
    official tokenizer, not the special token.
    """
    vocab = load_vocab(vocab_file)
    check_special_tokens(vocab, vocab_file)
    spec = tokenizer_json(vocab)
    specials = {name: token for name, token in SPECIAL_TOKENS.items() if token in vocab}
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context_length,
                "padding_side": "right", "truncation_side": "right",
                "model_input_names": ["input_ids", "attention_mask"], "clean_up_tokenization_spaces": False,
                "split_special_tokens": True, **specials}
    return {"tokenizer.json": json.dumps(spec, ensure_ascii=False) + "\n",
            "tokenizer_config.json": json.dumps(settings, indent=2) + "\n",
            "special_tokens_map.json": json.dumps(specials, indent=2) + "\n"}


def export_open_clip(model_dir: PathLike, out_dir: PathLike, vocab: Optional[PathLike] = None,
                     hub_id: Optional[str] = None, overwrite: bool = False) -> ExportResult:
    """Write an open_clip package to OUT_DIR: ``open_clip.create_model_and_transforms("hf-hub:ID")`` (or
    ``"local-dir:OUT_DIR"``) and ``open_clip.get_tokenizer(...)`` load it.

    Args:
        model_dir: a converted directory (config.json + model.safetensors + vocab.txt).
        out_dir: output directory (refused if it exists, unless ``overwrite``).
        vocab: vocab.txt for the tokenizer (default: MODEL_DIR/vocab.txt; required: open_clip needs a tokenizer).
        hub_id: the Hub id the package will be published as (ORG/NAME); without it the package names its own
            absolute path (``local-dir:`` only, while the folder stays there).
        overwrite: replace an existing OUT_DIR.
    """
    if hub_id is not None and (parse_hub_id(hub_id) is None or "@" in hub_id or ":" in hub_id):
        raise InputError(f"--hub_id must be a Hub model id ORG/NAME, got {hub_id!r}")
    from safetensors.numpy import save_file

    check_output_dir(out_dir, overwrite, inputs=[model_dir, vocab])
    vocab_path = Path(vocab) if vocab else Path(model_dir) / VOCAB_NAME
    if not vocab_path.is_file():
        raise InputError(f"no vocab file at {vocab_path}: open_clip needs the tokenizer (pass --vocab)")
    tokenizer = tokenizer_files(vocab_path)
    config, tensors = read_model_dir(model_dir)
    state = open_clip_state(config, {k: v.float().numpy() for k, v in tensors.items()})
    name = hub_id or str(Path(out_dir).expanduser().resolve())
    with atomic_directory(out_dir, overwrite, inputs=[model_dir, vocab]) as tmp:
        (tmp / OPEN_CLIP_CONFIG).write_text(json.dumps(open_clip_config(config, name), indent=2) + "\n",
                                            encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(bert_config(config), indent=2) + "\n", encoding="utf-8")
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp / OPEN_CLIP_WEIGHTS),
                  metadata={"format": "pt"})
        for file_name, text in tokenizer.items():
            (tmp / file_name).write_text(text, encoding="utf-8")
    how = (f"open_clip.create_model_and_transforms('hf-hub:{hub_id}') once uploaded or cached, or 'local-dir:{out_dir}'"
           if hub_id else f"open_clip.create_model_and_transforms('local-dir:{out_dir}') (the package names its "
                          "own path: move it and re-export, or export with --hub_id for hf-hub:)")
    return ExportResult("open_clip", Path(out_dir), f"wrote the open_clip package {out_dir}; load it with {how}")
