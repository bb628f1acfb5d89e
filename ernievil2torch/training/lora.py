"""LoRA adapters (``peft``) for fine-tuning: which layers get one, adding them, and the weights a run writes.

``--lora_rank R`` adds a rank-R adapter ``W x + (alpha / R) B A x`` to every targeted ``nn.Linear`` of the trained
tower(s) (``peft.inject_adapter_in_model``: the model stays an :class:`~ernievil2torch.modeling.ErnieViL2`, so the
trainer, validation and gradient cache run it unchanged). Only the adapters and the temperature train; every base
weight keeps its value. ``peft`` initialises ``B = 0``, so step 0 computes exactly the base model.

Targets (``--lora_targets``) are module names of the blocks, for both towers (``qkv``, ``out_proj``, ``fc1``,
``fc2``) or one (``vision.fc1``, ``text.qkv``), plus ``text.pooler``; the default, every linear layer of every
block of both towers, is what QLoRA found best (adapting all linear layers rather than attention only). A frozen
tower (``--freeze``) gets no adapter.

What a LoRA run writes: ``best/`` and ``final/`` hold the merged weights (``W + (alpha / R) B A``), plain converted
directories every command loads, plus :data:`ADAPTER_DIR` (the adapter in ``peft``'s format, for
``peft.PeftModel.from_pretrained(base, path)``); checkpoints hold only the trainable tensors
(:data:`TRAINABLE_NAME`: adapters and temperature) and their optimizer state, so a resume rebuilds the model from
``--model`` and loads them.

The model's fast paths that read weights directly (the last block's first-token attention, the half-precision
QuickGELU MLP) call an adapted layer instead (:func:`~ernievil2torch.modeling.layers.plain_linear`), so every
adapter acts on every path (tested per layer).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..config import ErnieViL2Config
from ..constants import TOWERS
from ..errors import CheckpointError, InputError

#: The module names a target may name, per tower.
LORA_MODULES: Dict[str, Tuple[str, ...]] = {"vision": ("qkv", "out_proj", "fc1", "fc2"),
                                           "text": ("qkv", "out_proj", "fc1", "fc2", "pooler")}
DEFAULT_LORA_TARGETS = "qkv,out_proj,fc1,fc2"
#: The adapter in peft's format, inside best/ and final/.
ADAPTER_DIR = "lora_adapter"
#: A LoRA checkpoint's trainable tensors (adapters + temperature), by parameter name.
TRAINABLE_NAME = "trainable.safetensors"
#: The adapter's name inside the model (peft's default).
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class LoraSpec:
    """A checked LoRA configuration: rank, alpha (scale ``alpha / rank``), dropout on the adapter input, and the
    targeted (tower, module) pairs."""

    rank: int
    alpha: float
    dropout: float
    targets: Tuple[Tuple[str, str], ...]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def parse_targets(text: str, freeze: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    """``"qkv,text.fc1"`` -> ``(("vision", "qkv"), ("text", "qkv"), ("text", "fc1"))`` without the ``freeze``
    tower. :class:`InputError` for an unknown name, or when no adapter is left in a trained tower."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("--lora_targets is empty: name module(s) such as " + DEFAULT_LORA_TARGETS)
    found: List[Tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        tower, _, module = item.rpartition(".")
        towers = TOWERS if not tower else (tower,)
        if tower and tower not in TOWERS or not any(module in LORA_MODULES[t] for t in towers):
            known = ", ".join(sorted({*LORA_MODULES["vision"], *LORA_MODULES["text"]}))
            raise InputError(f"--lora_targets: unknown module {item!r}; known: {known} (both towers), or one "
                             "tower's: vision.NAME / text.NAME (text.pooler)")
        for t in towers:
            if module in LORA_MODULES[t] and (t, module) not in found:
                found.append((t, module))
    kept = tuple(target for target in found if target[0] != freeze)
    if not kept:
        raise InputError(f"--lora_rank with --freeze {freeze}: --lora_targets {text!r} put no adapter in the trained "
                         f"tower ({'text' if freeze == 'vision' else 'vision'}), so nothing but the temperature "
                         "would train")
    return kept


def lora_spec(rank: Optional[int], alpha: Optional[float], dropout: float, targets: str,
              freeze: Optional[str]) -> Optional[LoraSpec]:
    """The checked :class:`LoraSpec` of the ``--lora_*`` flags (None without ``--lora_rank``)."""
    if rank is None:
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError(f"--lora_rank must be a positive integer, got {rank!r}")
    if alpha is None:
        alpha = 2.0 * rank
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise InputError(f"--lora_alpha must be positive, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"--lora_dropout must be in [0, 1), got {dropout!r}")
    return LoraSpec(rank, float(alpha), float(dropout), parse_targets(targets, freeze))


def check_rank(spec: LoraSpec, config: ErnieViL2Config) -> None:
    """:class:`InputError` when the rank exceeds a targeted layer's smaller side (then ``B A`` is no low-rank
    update: a rank above it adds parameters and nothing else)."""
    for tower in sorted({t for t, _ in spec.targets}):
        cfg = getattr(config, tower)
        smallest = min(cfg.hidden_size, cfg.intermediate_size)
        if spec.rank > smallest:
            raise InputError(f"--lora_rank {spec.rank} is larger than the {tower} tower's layers allow "
                             f"(hidden size {cfg.hidden_size}: at most {smallest})")


def target_names(model: nn.Module, spec: LoraSpec) -> List[str]:
    """Full names of the modules ``spec`` targets in ``model`` (block layers ``<tower>.layers.<i>.attn.qkv``,
    ``...mlp.fc1``; ``text.pooler``)."""
    wanted = set(spec.targets)
    names = []
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, nn.Linear) and parts[0] in TOWERS and (parts[0], parts[-1]) in wanted:
            names.append(name)
    return names


def add_adapters(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """Inject the adapters into ``model`` (in place) and leave only them and the temperature trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=target_names(model, spec))
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    model.lora_config = config  # what save_adapter writes next to the merged weights
    for name, param in model.named_parameters():
        param.requires_grad_(is_adapter(name) or name == "temperature")
    return model


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def has_adapters(model: nn.Module) -> bool:
    return any(is_adapter(name) for name, _ in model.named_parameters())


def merged_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The plain model's state (the names of an :class:`ErnieViL2`) with every adapter merged into its base
    weight: ``W + (alpha / R) B A``. The model is not modified."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            with torch.no_grad():
                deltas[f"{name}.weight"] = module.get_delta_weight(ADAPTER_NAME)
    merged = {}
    for name, tensor in model.state_dict().items():
        if is_adapter(name):
            continue
        plain = name.replace(".base_layer.", ".")
        merged[plain] = tensor + deltas[plain].to(tensor.dtype) if plain in deltas else tensor
    return merged


def trainable_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The trainable tensors (adapters and temperature) by parameter name, detached CPU copies."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, path: Path) -> None:
    """Load :data:`TRAINABLE_NAME` of a checkpoint into ``model`` (which must have the same adapters)."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # a damaged or foreign file
        raise CheckpointError(f"{path}: cannot read the adapter weights ({exc})") from None
    params = dict(model.named_parameters())
    expected = {name for name, p in params.items() if p.requires_grad}
    if set(state) != expected:
        raise CheckpointError(f"{path}: adapter weights do not match the run's adapters "
                              f"({len(set(state) ^ expected)} names differ)")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def save_adapter(directory: Path, model: nn.Module, base: str) -> None:
    """Write the adapter in ``peft``'s format into ``directory/ADAPTER_DIR`` (``adapter_config.json`` and
    ``adapter_model.safetensors``, keys as ``PeftModel`` names them), loadable onto the base model with
    ``PeftModel.from_pretrained(ErnieViL2.from_pretrained(base), directory / ADAPTER_DIR)``. The temperature
    is no adapter: the merged weights beside hold it."""
    from safetensors.torch import save_file

    target = Path(directory) / ADAPTER_DIR
    target.mkdir(parents=True, exist_ok=True)
    config = model.lora_config.to_dict()
    config.update(base_model_name_or_path=str(base), peft_type="LORA", task_type=None, inference_mode=True)
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n",
                                                encoding="utf-8")
    tensors = {f"base_model.model.{name.replace(f'.{ADAPTER_NAME}.', '.')}": p.detach().cpu().contiguous()
               for name, p in model.named_parameters() if is_adapter(name)}
    save_file(tensors, str(target / "adapter_model.safetensors"))
