"""Declarative checkpoint layouts and the one engine that maps between them and this package's state dict.

A :class:`Layout` names the sentinel keys that identify it, a table of :class:`Rule` s saying what each of our
tensors is made of (an :mod:`~ernievil2torch.conversion.ops` op over one or more source keys), and the source keys
that are knowingly dropped. The same table drives conversion (:func:`plan_conversion`, with strict key and shape
checks that list every problem at once) and the inverse (:func:`to_layout`), which builds test checkpoints, the HF
export and the Paddle export. This module holds the two released Paddle layouts; other formats define theirs with
the same builders (:func:`rules`, :func:`block_rules`, :func:`linear`, :func:`norm`).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..config import (CUSTOM_MODEL_TYPE, ErnieViL2Config, TextConfig, VisionConfig, get_model_config, match_shapes,
                      parameter_shapes)
from ..constants import OFFICIAL_DROPPED_KEYS
from ..errors import KeyMapError
from .ops import CONCAT, COPY, FUSE_LINEAR, TRANSPOSE, Op, Shape, Squeeze


@dataclass(frozen=True)
class Rule:
    """Our tensor ``target`` is made from ``sources`` by ``op``.

    ``{i}`` in the names expands over the layers of ``tower`` ("text" or "vision"); ``optional`` rules (the
    temperature, which some checkpoints lack) may be absent from a checkpoint.
    """

    target: str
    sources: Tuple[str, ...]
    op: Op = COPY
    tower: Optional[str] = None
    optional: bool = False

    def source_shapes(self, target_shape: Shape) -> List[Shape]:
        """The shape each source must have for this rule to produce ``target_shape``."""
        return self.op.source_shapes(tuple(target_shape), len(self.sources))

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Source arrays (their layout, in ``sources`` order) -> our array."""
        return self.op.apply(arrays)

    def invert(self, array: np.ndarray) -> List[np.ndarray]:
        """Our array -> the source arrays, in ``sources`` order (exact inverse of :meth:`apply`)."""
        return self.op.invert(array, len(self.sources))


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    sentinels: Tuple[str, ...]
    rules: Tuple[Rule, ...]
    dropped: Tuple[str, ...] = ()  # regexes of source keys that are expected and ignored (reported)


RuleSpec = Tuple[str, Sequence[str], Op]


def layer_rules(tower: str, table: Sequence[RuleSpec]) -> List[Rule]:
    """Rules repeated for every layer ``{i}`` of ``tower``."""
    return [Rule(target, tuple(sources), op, tower=tower) for target, sources, op in table]


def rules(table: Sequence[RuleSpec]) -> List[Rule]:
    """Rules for tensors that exist once (embeddings, final norms, pooler)."""
    return [Rule(target, tuple(sources), op) for target, sources, op in table]


def linear(ours: str, theirs: str, weight_op: Op = TRANSPOSE) -> List[RuleSpec]:
    """A Linear's weight (Paddle [in, out]: transposed by default) and bias."""
    return [(f"{ours}.weight", [f"{theirs}.weight"], weight_op), (f"{ours}.bias", [f"{theirs}.bias"], COPY)]


def norm(ours: str, theirs: str) -> List[RuleSpec]:
    """A LayerNorm's weight and bias, copied."""
    return [(f"{ours}.weight", [f"{theirs}.weight"], COPY), (f"{ours}.bias", [f"{theirs}.bias"], COPY)]


def fused_qkv(ours: str, q: str, k: str, v: str, weight_op: Op = FUSE_LINEAR) -> List[RuleSpec]:
    """Our fused ``qkv`` Linear (rows q|k|v) from three separate Linears (Paddle layout: transposed then fused)."""
    return [(f"{ours}.weight", [f"{q}.weight", f"{k}.weight", f"{v}.weight"], weight_op),
            (f"{ours}.bias", [f"{q}.bias", f"{k}.bias", f"{v}.bias"], CONCAT)]


def block_rules(tower: str, *, qkv: Union[str, Tuple[str, str, str]], out_proj: str, norm1: str, norm2: str,
                fc1: str, fc2: str, paddle_linears: bool = True) -> List[Rule]:
    """The rules of every transformer block of ``tower``: each keyword names the source module (with ``{i}``)
    that holds that part of our block. ``qkv`` is one fused Linear or the (q, k, v) triple; ``paddle_linears``
    says the source stores Linear weights [in, out] (Paddle) rather than [out, in] (torch, HF)."""
    ours = f"{tower}.layers.{{i}}"
    weight = TRANSPOSE if paddle_linears else COPY
    if isinstance(qkv, str):
        attention = linear(f"{ours}.attn.qkv", qkv, weight)
    else:
        attention = fused_qkv(f"{ours}.attn.qkv", *qkv, weight_op=FUSE_LINEAR if paddle_linears else CONCAT)
    attention += linear(f"{ours}.attn.out_proj", out_proj, weight)
    mlp = linear(f"{ours}.mlp.fc1", fc1, weight) + linear(f"{ours}.mlp.fc2", fc2, weight)
    if tower == "text":  # post-norm: attention, norm1, MLP, norm2
        table = attention + norm(f"{ours}.norm1", norm1) + mlp + norm(f"{ours}.norm2", norm2)
    else:  # pre-norm: norm1, attention, norm2, MLP
        table = norm(f"{ours}.norm1", norm1) + attention + norm(f"{ours}.norm2", norm2) + mlp
    return layer_rules(tower, table)


# ---- the official MultiModalModel layout (OPEN_ERNIE_VIL2_BASE_ViT.pdparams) --------------------------------------
_OT = "text_model.encoder_stack.block.{i}"
_OV = "visual.blocks.{i}"
OFFICIAL = Layout(
    name="official",
    description="Baidu's official ERNIE-ViL 2.0 checkpoint (MultiModalModel, e.g. OPEN_ERNIE_VIL2_BASE_ViT.pdparams)",
    sentinels=("visual.blocks.0.attn.qkv.weight", "text_model.encoder_stack.block.0.attn.q.weight"),
    rules=tuple(
        [Rule("temperature", ("contrastive_loss_mm.temperature_b",), optional=True)]
        + rules([
            ("text.embeddings.word_embeddings.weight", ["text_model.word_emb.weight"], COPY),
            ("text.embeddings.position_embeddings.weight", ["text_model.pos_emb.weight"], COPY),
            *norm("text.embeddings.norm", "text_model.ln"),
            *linear("text.pooler", "text_model.pooler"),
        ])
        + block_rules("text", qkv=(f"{_OT}.attn.q", f"{_OT}.attn.k", f"{_OT}.attn.v"), out_proj=f"{_OT}.attn.o",
                      norm1=f"{_OT}.ln1", fc1=f"{_OT}.ffn.i", fc2=f"{_OT}.ffn.o", norm2=f"{_OT}.ln2")
        + rules([
            ("vision.patch_embed.weight", ["visual.patch_embed.proj.weight"], COPY),
            ("vision.class_embedding", ["visual.class_embedding"], Squeeze(lead=2)),
            ("vision.positional_embedding", ["visual.positional_embedding"], Squeeze(lead=1)),
            *norm("vision.norm_pre", "visual.norm_pre"),
            *norm("vision.norm_post", "visual.norm_post"),
        ])
        + block_rules("vision", qkv=f"{_OV}.attn.qkv", out_proj=f"{_OV}.attn.proj", norm1=f"{_OV}.norm1",
                      norm2=f"{_OV}.norm2", fc1=f"{_OV}.mlp.fc1", fc2=f"{_OV}.mlp.fc2")
    ),
    dropped=OFFICIAL_DROPPED_KEYS,
)

# ---- PaddleNLP's ErnieViLModel layout (ernie_vil-2.0-base-zh/model_state.pdparams) ------------------------------
_NT = "text_model.encoder.layers.{i}"
_NV = "vision_model.transformer.layers.{i}"
PADDLENLP = Layout(
    name="paddlenlp",
    description="PaddleNLP's ErnieViLModel (ernie_vil-2.0-base-zh/model_state.pdparams)",
    sentinels=("vision_model.conv1.weight", "text_model.encoder.layers.0.self_attn.q_proj.weight"),
    rules=tuple(
        [Rule("temperature", ("temperature",), optional=True)]
        + rules([
            ("text.embeddings.word_embeddings.weight", ["text_model.embeddings.word_embeddings.weight"], COPY),
            ("text.embeddings.position_embeddings.weight", ["text_model.embeddings.position_embeddings.weight"],
             COPY),
            *norm("text.embeddings.norm", "text_model.embeddings.layer_norm"),
            *linear("text.pooler", "text_model.pooler.dense"),
        ])
        + block_rules("text", qkv=tuple(f"{_NT}.self_attn.{p}_proj" for p in "qkv"),  # type: ignore[arg-type]
                      out_proj=f"{_NT}.self_attn.out_proj", norm1=f"{_NT}.norm1", fc1=f"{_NT}.linear1",
                      fc2=f"{_NT}.linear2", norm2=f"{_NT}.norm2")
        + rules([
            ("vision.patch_embed.weight", ["vision_model.conv1.weight"], COPY),
            ("vision.class_embedding", ["vision_model.class_embedding"], COPY),
            ("vision.positional_embedding", ["vision_model.positional_embedding.weight"], COPY),
            *norm("vision.norm_pre", "vision_model.ln_pre"),
            *norm("vision.norm_post", "vision_model.ln_post"),
        ])
        + block_rules("vision", qkv=tuple(f"{_NV}.self_attn.{p}_proj" for p in "qkv"),  # type: ignore[arg-type]
                      out_proj=f"{_NV}.self_attn.out_proj", norm1=f"{_NV}.norm1", norm2=f"{_NV}.norm2",
                      fc1=f"{_NV}.linear1", fc2=f"{_NV}.linear2")
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
    """The configuration of a checkpoint in ``layout`` (source key -> shape).

    The sizes are read off the shapes; then the registered configuration with exactly these parameter shapes
    (:func:`~ernievil2torch.config.registry.match_shapes`) is returned, which also decides what shapes cannot
    show (head counts, LayerNorm epsilons). A size no entry has is returned as :data:`CUSTOM_MODEL_TYPE` with
    ``name`` None, ``hidden / head_dim`` heads and the default epsilons. :class:`KeyMapError` when the sizes cannot
    be read, or when several entries fit.
    """
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
    read = ErnieViL2Config(
        text=TextConfig(vocab_size=vocab, hidden_size=hidden, num_layers=text_layers,
                        num_heads=max(1, hidden // head_dim), intermediate_size=ffn[-1],
                        max_position_embeddings=positions),
        vision=VisionConfig(image_size=grid * patch, patch_size=patch, num_channels=channels,
                            hidden_size=v_hidden, num_layers=vision_layers, num_heads=max(1, v_hidden // head_dim),
                            intermediate_size=v_ffn[-1]),
        has_temperature=carries_temperature(layout, shapes),
        model_type=CUSTOM_MODEL_TYPE,
    )
    return match_shapes(parameter_shapes(read)) or read


def carries_temperature(layout: Layout, keys: Iterable[str]) -> bool:
    """Whether a checkpoint in ``layout`` with these keys holds the (optional) temperature."""
    keys = set(keys)
    return any(r.optional and r.sources[0] in keys for r in layout.rules)


def named_config(name: str, layout: Layout, keys: Iterable[str]) -> ErnieViL2Config:
    """The registered configuration ``name`` for a checkpoint in ``layout``: the entry's architecture, with a
    temperature when the checkpoint has one (:class:`InputError` for an unknown name)."""
    return dataclasses.replace(get_model_config(name), has_temperature=carries_temperature(layout, keys))


def _rule_source(layout: Layout, tower: str) -> str:
    return next(r.sources[0] for r in layout.rules if r.tower == tower)


# ---- expansion ------------------------------------------------------------------------------------------------
def expand_rules(layout: Layout, config: ErnieViL2Config) -> List[Rule]:
    """Concrete rules with ``{i}`` replaced for every layer of the configured towers (the temperature rule is left
    out when the config has none)."""
    layers = {"text": config.text.num_layers, "vision": config.vision.num_layers}
    out: List[Rule] = []
    for rule in layout.rules:
        if rule.optional and rule.target == "temperature" and not config.has_temperature:
            continue
        if rule.tower is None:
            out.append(rule)
            continue
        for i in range(layers[rule.tower]):
            out.append(dataclasses.replace(rule, target=rule.target.format(i=i),
                                           sources=tuple(s.format(i=i) for s in rule.sources), tower=None))
    return out


# ---- strict planning --------------------------------------------------------------------------------------------
@dataclass
class ConversionPlan:
    layout: Layout
    config: ErnieViL2Config
    rules: List[Rule]
    target_shapes: Dict[str, Shape]
    dropped: List[str]


def plan_conversion(shapes: Dict[str, Shape], layout: Optional[Layout] = None,
                    config: Optional[ErnieViL2Config] = None) -> ConversionPlan:
    """Check a checkpoint's keys and shapes against a layout; every problem is listed in one :class:`KeyMapError`.

    Strict: every source key is consumed or explicitly dropped, every target is filled, every shape matches.
    """
    layout = layout or detect_layout(shapes)
    config = config or infer_config(layout, shapes)
    expected = parameter_shapes(config)
    expanded = expand_rules(layout, config)
    dropped = sorted(k for k in shapes if any(re.fullmatch(p, k) for p in layout.dropped))
    problems: List[str] = []
    consumed = set(dropped)
    filled = set()
    for rule in expanded:
        if rule.target not in expected:
            problems.append(f"rule target '{rule.target}' is not a parameter of the model")
            continue
        filled.add(rule.target)
        for key, want in zip(rule.sources, rule.source_shapes(expected[rule.target])):
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
    return ConversionPlan(layout, config, expanded, expected, dropped)


def from_layout(state: Dict[str, np.ndarray], layout: Layout, config: ErnieViL2Config) -> Dict[str, np.ndarray]:
    """A complete in-memory checkpoint in ``layout`` -> our state dict (numpy): :func:`to_layout` reversed.

    No checks beyond a missing key (use :func:`plan_conversion` for a file of unknown provenance). The ops are
    linear re-arrangements, so this maps gradients given in a layout's parameter shapes as well as weights.
    """
    return {rule.target: rule.apply([state[key] for key in rule.sources]) for rule in expand_rules(layout, config)}


def to_layout(state: Dict[str, np.ndarray], layout: Layout, config: ErnieViL2Config) -> Dict[str, np.ndarray]:
    """Our state dict (numpy) -> a checkpoint in ``layout``: test and demo checkpoints, the HF and Paddle exports.

    Only the layout's rules are used, so a layout may cover part of the model (the HF text export covers ``text.*``).
    """
    out: Dict[str, np.ndarray] = {}
    for rule in expand_rules(layout, config):
        for key, array in zip(rule.sources, rule.invert(state[rule.target])):
            out[key] = array
    return out

