"""Declarative key maps from each released Paddle checkpoint layout to this package's state dict.

One :class:`Layout` per checkpoint layout: sentinel keys that identify it, a table of :class:`Rule` s saying what
each of our tensors is made of, and the source keys that are knowingly dropped. The same table drives conversion
(:func:`plan_conversion`), the strict key/shape checks, and the inverse (:func:`to_layout`) used to build
checkpoints in either layout for tests and for the synthetic demo.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .config import CUSTOM_MODEL_TYPE, ErnieViL2Config, TextConfig, VisionConfig
from .errors import KeyMapError

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class Rule:
    """Our tensor ``target`` is made from ``sources`` by ``op``.

    ops: ``copy``; ``transpose`` (Paddle Linear weights are [in, out]); ``fuse_linear`` (transpose each source and
    stack the results as rows: separate q, k, v -> one fused qkv); ``concat`` (biases of a fusion);
    ``squeeze`` (drop ``lead`` leading 1-dims, e.g. [1, 197, 768] -> [197, 768]).
    ``{i}`` in the names expands over the layers of ``tower`` ("text" or "vision").
    """

    target: str
    sources: Tuple[str, ...]
    op: str = "copy"
    tower: Optional[str] = None
    lead: int = 0
    optional: bool = False  # e.g. the temperature, which some checkpoints lack


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    sentinels: Tuple[str, ...]
    rules: Tuple[Rule, ...]
    dropped: Tuple[str, ...] = ()  # regexes of source keys that are expected and ignored (reported)


def _layer_rules(tower: str, table: Sequence[Tuple[str, Sequence[str], str]]) -> List[Rule]:
    return [Rule(target, tuple(sources), op, tower=tower) for target, sources, op in table]


def _linear(ours: str, theirs: str) -> List[Tuple[str, Sequence[str], str]]:
    return [(f"{ours}.weight", [f"{theirs}.weight"], "transpose"), (f"{ours}.bias", [f"{theirs}.bias"], "copy")]


def _norm(ours: str, theirs: str) -> List[Tuple[str, Sequence[str], str]]:
    return [(f"{ours}.weight", [f"{theirs}.weight"], "copy"), (f"{ours}.bias", [f"{theirs}.bias"], "copy")]


def _fused_qkv(ours: str, q: str, k: str, v: str) -> List[Tuple[str, Sequence[str], str]]:
    return [(f"{ours}.weight", [f"{q}.weight", f"{k}.weight", f"{v}.weight"], "fuse_linear"),
            (f"{ours}.bias", [f"{q}.bias", f"{k}.bias", f"{v}.bias"], "concat")]


# ---- the official MultiModalModel layout (OPEN_ERNIE_VIL2_BASE_ViT.pdparams) --------------------------------------
_OT = "text_model.encoder_stack.block.{i}"
_OV = "visual.blocks.{i}"
OFFICIAL = Layout(
    name="official",
    description="Baidu's official ERNIE-ViL 2.0 checkpoint (MultiModalModel, e.g. OPEN_ERNIE_VIL2_BASE_ViT.pdparams)",
    sentinels=("visual.blocks.0.attn.qkv.weight", "text_model.encoder_stack.block.0.attn.q.weight"),
    rules=tuple(
        [Rule("temperature", ("contrastive_loss_mm.temperature_b",), optional=True),
         Rule("text.embeddings.word_embeddings.weight", ("text_model.word_emb.weight",)),
         Rule("text.embeddings.position_embeddings.weight", ("text_model.pos_emb.weight",)),
         *[Rule(t, s, op) for t, s, op in _norm("text.embeddings.norm", "text_model.ln")],
         *[Rule(t, s, op) for t, s, op in _linear("text.pooler", "text_model.pooler")]]
        + _layer_rules("text", [
            *_fused_qkv("text.layers.{i}.attn.qkv", f"{_OT}.attn.q", f"{_OT}.attn.k", f"{_OT}.attn.v"),
            *_linear("text.layers.{i}.attn.out_proj", f"{_OT}.attn.o"),
            *_norm("text.layers.{i}.norm1", f"{_OT}.ln1"),
            *_linear("text.layers.{i}.mlp.fc1", f"{_OT}.ffn.i"),
            *_linear("text.layers.{i}.mlp.fc2", f"{_OT}.ffn.o"),
            *_norm("text.layers.{i}.norm2", f"{_OT}.ln2"),
        ])
        + [Rule("vision.patch_embed.weight", ("visual.patch_embed.proj.weight",)),
           Rule("vision.class_embedding", ("visual.class_embedding",), "squeeze", lead=2),
           Rule("vision.positional_embedding", ("visual.positional_embedding",), "squeeze", lead=1),
           *[Rule(t, s, op) for t, s, op in _norm("vision.norm_pre", "visual.norm_pre")],
           *[Rule(t, s, op) for t, s, op in _norm("vision.norm_post", "visual.norm_post")]]
        + _layer_rules("vision", [
            *_norm("vision.layers.{i}.norm1", f"{_OV}.norm1"),
            *_linear("vision.layers.{i}.attn.qkv", f"{_OV}.attn.qkv"),
            *_linear("vision.layers.{i}.attn.out_proj", f"{_OV}.attn.proj"),
            *_norm("vision.layers.{i}.norm2", f"{_OV}.norm2"),
            *_linear("vision.layers.{i}.mlp.fc1", f"{_OV}.mlp.fc1"),
            *_linear("vision.layers.{i}.mlp.fc2", f"{_OV}.mlp.fc2"),
        ])
    ),
    # The released file still carries the pre-training classification head of the ViT.
    dropped=(r"visual\.classfy\.(weight|bias)",),
)

# ---- PaddleNLP's ErnieViLModel layout (ernie_vil-2.0-base-zh/model_state.pdparams) ------------------------------
_NT = "text_model.encoder.layers.{i}"
_NV = "vision_model.transformer.layers.{i}"
PADDLENLP = Layout(
    name="paddlenlp",
    description="PaddleNLP's ErnieViLModel (ernie_vil-2.0-base-zh/model_state.pdparams)",
    sentinels=("vision_model.conv1.weight", "text_model.encoder.layers.0.self_attn.q_proj.weight"),
    rules=tuple(
        [Rule("temperature", ("temperature",), optional=True),
         Rule("text.embeddings.word_embeddings.weight", ("text_model.embeddings.word_embeddings.weight",)),
         Rule("text.embeddings.position_embeddings.weight",
              ("text_model.embeddings.position_embeddings.weight",)),
         *[Rule(t, s, op) for t, s, op in _norm("text.embeddings.norm", "text_model.embeddings.layer_norm")],
         *[Rule(t, s, op) for t, s, op in _linear("text.pooler", "text_model.pooler.dense")]]
        + _layer_rules("text", [
            *_fused_qkv("text.layers.{i}.attn.qkv", f"{_NT}.self_attn.q_proj", f"{_NT}.self_attn.k_proj",
                        f"{_NT}.self_attn.v_proj"),
            *_linear("text.layers.{i}.attn.out_proj", f"{_NT}.self_attn.out_proj"),
            *_norm("text.layers.{i}.norm1", f"{_NT}.norm1"),
            *_linear("text.layers.{i}.mlp.fc1", f"{_NT}.linear1"),
            *_linear("text.layers.{i}.mlp.fc2", f"{_NT}.linear2"),
            *_norm("text.layers.{i}.norm2", f"{_NT}.norm2"),
        ])
        + [Rule("vision.patch_embed.weight", ("vision_model.conv1.weight",)),
           Rule("vision.class_embedding", ("vision_model.class_embedding",)),
           Rule("vision.positional_embedding", ("vision_model.positional_embedding.weight",)),
           *[Rule(t, s, op) for t, s, op in _norm("vision.norm_pre", "vision_model.ln_pre")],
           *[Rule(t, s, op) for t, s, op in _norm("vision.norm_post", "vision_model.ln_post")]]
        + _layer_rules("vision", [
            *_norm("vision.layers.{i}.norm1", f"{_NV}.norm1"),
            *_fused_qkv("vision.layers.{i}.attn.qkv", f"{_NV}.self_attn.q_proj", f"{_NV}.self_attn.k_proj",
                        f"{_NV}.self_attn.v_proj"),
            *_linear("vision.layers.{i}.attn.out_proj", f"{_NV}.self_attn.out_proj"),
            *_norm("vision.layers.{i}.norm2", f"{_NV}.norm2"),
            *_linear("vision.layers.{i}.mlp.fc1", f"{_NV}.linear1"),
            *_linear("vision.layers.{i}.mlp.fc2", f"{_NV}.linear2"),
        ])
    ),
)

LAYOUTS: Dict[str, Layout] = {layout.name: layout for layout in (OFFICIAL, PADDLENLP)}


# ---- detection and config inference ---------------------------------------------------------------------------
def detect_layout(keys: Iterable[str]) -> Layout:
    """Pick the layout whose sentinel keys are all present (timm's checkpoint_filter_fn approach)."""
    keys = set(keys)
    for layout in LAYOUTS.values():
        if all(s in keys for s in layout.sentinels):
            return layout
    sample = ", ".join(sorted(keys)[:6]) + (", ..." if len(keys) > 6 else "")
    raise KeyMapError(
        "not an ERNIE-ViL 2.0 checkpoint: none of the known layouts "
        f"({', '.join(LAYOUTS)}) matches its {len(keys)} keys (first keys: {sample})")


def _count_layers(keys: Iterable[str], pattern: str) -> int:
    regex = re.compile(re.escape(pattern).replace(r"\{i\}", r"(\d+)"))
    found = {int(m.group(1)) for k in keys if (m := regex.match(k))}
    return max(found) + 1 if found else 0


def _source_of(layout: Layout, target: str) -> str:
    """The (first) source key of a target; per-layer templates resolve to layer 0."""
    for rule in layout.rules:
        if rule.target == target:
            return rule.sources[0].format(i=0)
    raise KeyError(target)


def infer_config(layout: Layout, shapes: Dict[str, Shape], head_dim: int = 64) -> ErnieViL2Config:
    """Read the model size off the checkpoint's shapes (heads = hidden / 64, as in every released ERNIE-ViL)."""
    def shape(target: str) -> Shape:
        key = _source_of(layout, target)
        if key not in shapes:
            raise KeyMapError(f"{layout.name} checkpoint lacks '{key}'")
        return shapes[key]

    try:
        vocab, hidden = shape("text.embeddings.word_embeddings.weight")
        positions = shape("text.embeddings.position_embeddings.weight")[0]
        ffn = shape("text.layers.{i}.mlp.fc1.weight")
        v_hidden, channels, patch, _ = shape("vision.patch_embed.weight")
        v_positions = shape("vision.positional_embedding")[-2]
        v_ffn = shape("vision.layers.{i}.mlp.fc1.weight")
    except (KeyError, ValueError):
        raise KeyMapError(f"cannot read the model size from this {layout.name} checkpoint") from None
    grid = int(round((v_positions - 1) ** 0.5))
    if grid * grid + 1 != v_positions:
        raise KeyMapError(f"positional embedding of {v_positions} rows is not a square grid plus a class token")
    text_layers = _count_layers(shapes, _rule_source(layout, "text"))
    vision_layers = _count_layers(shapes, _rule_source(layout, "vision"))
    config = ErnieViL2Config(
        text=TextConfig(vocab_size=vocab, hidden_size=hidden, num_layers=text_layers,
                        num_heads=max(1, hidden // head_dim), intermediate_size=ffn[-1],
                        max_position_embeddings=positions),
        vision=VisionConfig(image_size=grid * patch, patch_size=patch, num_channels=channels,
                            hidden_size=v_hidden, num_layers=vision_layers, num_heads=max(1, v_hidden // head_dim),
                            intermediate_size=v_ffn[-1]),
        has_temperature=any(r.optional and r.sources[0] in shapes for r in layout.rules),
    )
    released = ErnieViL2Config()
    if (config.text, config.vision) != (released.text, released.vision):
        config = dataclasses.replace(config, model_type=CUSTOM_MODEL_TYPE)
    return config


def _rule_source(layout: Layout, tower: str) -> str:
    return next(r.sources[0] for r in layout.rules if r.tower == tower)


# ---- shapes and ops -------------------------------------------------------------------------------------------
def expand_rules(layout: Layout, config: ErnieViL2Config) -> List[Rule]:
    """Concrete rules with ``{i}`` replaced for every layer of the configured towers."""
    layers = {"text": config.text.num_layers, "vision": config.vision.num_layers}
    out: List[Rule] = []
    for rule in layout.rules:
        if rule.optional and rule.target == "temperature" and not config.has_temperature:
            continue
        if rule.tower is None:
            out.append(rule)
            continue
        for i in range(layers[rule.tower]):
            out.append(Rule(rule.target.format(i=i), tuple(s.format(i=i) for s in rule.sources), rule.op,
                            lead=rule.lead))
    return out


def source_shapes(rule: Rule, target_shape: Shape) -> List[Shape]:
    """The shape each source must have for ``rule`` to produce ``target_shape``."""
    n = len(rule.sources)
    if rule.op == "copy":
        return [target_shape]
    if rule.op == "transpose":
        return [tuple(reversed(target_shape))]
    if rule.op == "fuse_linear":
        rows, cols = target_shape
        return [(cols, rows // n)] * n
    if rule.op == "concat":
        return [(target_shape[0] // n,)] * n
    if rule.op == "squeeze":
        return [(1,) * rule.lead + tuple(target_shape)]
    raise ValueError(f"unknown op {rule.op}")


def apply_rule(rule: Rule, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Source arrays (Paddle layout) -> our array. Returns a C-contiguous array."""
    if rule.op == "copy":
        return np.ascontiguousarray(arrays[0])
    if rule.op == "transpose":
        return np.ascontiguousarray(arrays[0].T)
    if rule.op == "fuse_linear":
        return np.concatenate([a.T for a in arrays], axis=0)
    if rule.op == "concat":
        return np.concatenate(arrays, axis=0)
    if rule.op == "squeeze":
        return np.ascontiguousarray(arrays[0].reshape(arrays[0].shape[rule.lead:]))
    raise ValueError(f"unknown op {rule.op}")


def invert_rule(rule: Rule, array: np.ndarray) -> List[np.ndarray]:
    """Our array -> the source arrays (the inverse of :func:`apply_rule`)."""
    n = len(rule.sources)
    if rule.op == "copy":
        return [array.copy()]
    if rule.op == "transpose":
        return [np.ascontiguousarray(array.T)]
    if rule.op == "fuse_linear":
        return [np.ascontiguousarray(part.T) for part in np.split(array, n, axis=0)]
    if rule.op == "concat":
        return [part.copy() for part in np.split(array, n, axis=0)]
    if rule.op == "squeeze":
        return [array.reshape((1,) * rule.lead + array.shape).copy()]
    raise ValueError(f"unknown op {rule.op}")


# ---- strict planning --------------------------------------------------------------------------------------------
@dataclass
class ConversionPlan:
    layout: Layout
    config: ErnieViL2Config
    rules: List[Rule]
    target_shapes: Dict[str, Shape]
    dropped: List[str]


def target_shapes(config: ErnieViL2Config) -> Dict[str, Shape]:
    """Shapes of every tensor of our model for ``config`` (built on the meta device: no memory, no init)."""
    import torch

    from .model import ErnieViL2

    with torch.device("meta"):
        model = ErnieViL2(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def plan_conversion(shapes: Dict[str, Shape], layout: Optional[Layout] = None,
                    config: Optional[ErnieViL2Config] = None) -> ConversionPlan:
    """Check a checkpoint's keys and shapes against a layout; every problem is listed in one :class:`KeyMapError`.

    Strict: every source key is consumed or explicitly dropped, every target is filled, every shape matches.
    """
    layout = layout or detect_layout(shapes)
    config = config or infer_config(layout, shapes)
    expected = target_shapes(config)
    rules = expand_rules(layout, config)
    dropped = sorted(k for k in shapes if any(re.fullmatch(p, k) for p in layout.dropped))
    problems: List[str] = []
    consumed = set(dropped)
    filled = set()
    for rule in rules:
        if rule.target not in expected:
            problems.append(f"rule target '{rule.target}' is not a parameter of the model")
            continue
        filled.add(rule.target)
        for key, want in zip(rule.sources, source_shapes(rule, expected[rule.target])):
            consumed.add(key)
            if key not in shapes:
                problems.append(f"missing key '{key}'")
            elif tuple(shapes[key]) != tuple(want):
                problems.append(f"wrong shape for '{key}': {tuple(shapes[key])}, expected {tuple(want)}")
    problems += [f"unexpected key '{k}'" for k in sorted(set(shapes) - consumed)]
    problems += [f"no rule fills model parameter '{t}'" for t in sorted(set(expected) - filled)]
    if problems:
        shown = "\n  ".join(problems[:40]) + (f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else "")
        raise KeyMapError(f"checkpoint does not match the {layout.name} layout of ERNIE-ViL 2.0 "
                          f"({len(problems)} problems):\n  {shown}")
    return ConversionPlan(layout, config, rules, expected, dropped)


def to_layout(state: Dict[str, np.ndarray], layout: Layout, config: ErnieViL2Config) -> Dict[str, np.ndarray]:
    """Our state dict (numpy) -> a checkpoint in ``layout`` (used to build test and demo checkpoints)."""
    out: Dict[str, np.ndarray] = {}
    for rule in expand_rules(layout, config):
        for key, array in zip(rule.sources, invert_rule(rule, state[rule.target])):
            out[key] = array
    return out

