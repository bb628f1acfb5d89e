"""Seeded random checkpoints in either Paddle layout: the stand-in for the real weights in tests and the demo.

Every parameter is randomised — LayerNorm scales and biases, embeddings, the temperature — so a converter or
model that mixes up any two tensors, forgets a transpose or uses the wrong epsilon produces a visible error.
The weights are RANDOM: features from them mean nothing; they only prove the port computes Paddle's function.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from ..config import ErnieViL2Config, base_config, parameter_shapes
from ..constants import CLS_TOKEN, MASK_TOKEN, PAD_TOKEN, SEP_TOKEN, UNK_TOKEN
from ..conversion.layouts import LAYOUTS, to_layout
from ..conversion.pdparams import save_pdparams
from ..storage.atomic import atomic_write_bytes
from ..data.demo import DEMO_CAPTIONS, SHAPE_COLOURS, SHAPES, shape_caption


def random_state(config: Optional[ErnieViL2Config] = None, seed: int = 0,
                 unit_gain: bool = False) -> Dict[str, np.ndarray]:
    """Our-layout state dict (float32 numpy) with every tensor drawn at a scale that keeps activations sane.

    ``unit_gain=True`` draws Linear and patch-conv weights with std ``1/sqrt(fan_in)`` instead of 0.02 (same
    random draws, rescaled). With the small default weights the residual stream is dominated by the embeddings,
    so every input gets nearly the same features (cosine ~1.000) and a contrastive-loss gradient is mostly
    cancellation; at unit gain features of different inputs stay apart (cosines ~0.6-0.9), the regime a
    gradient-parity test needs to compare implementations rather than float32 round-off.
    """
    config = config or base_config()
    rng = np.random.default_rng(seed)
    state: Dict[str, np.ndarray] = {}
    for name, shape in parameter_shapes(config).items():
        if name == "temperature":
            value = rng.uniform(math.log(10.0), math.log(100.0), size=shape)
        elif "norm" in name and name.endswith(".weight"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            value = 0.05 * rng.standard_normal(shape)
        elif name.startswith("text.embeddings."):
            # ERNIE-scale word/position embeddings (the released model's are small, too): the embedding
            # LayerNorm then sees a variance of ~1e-3, where its eps (1e-5) visibly matters, as in the real model.
            value = 0.02 * rng.standard_normal(shape)
        elif name in ("vision.class_embedding", "vision.positional_embedding"):
            value = 0.1 * rng.standard_normal(shape)
        else:  # Linear and patch-conv weights
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * (1.0 / math.sqrt(fan_in) if unit_gain else 0.02)
        state[name] = value.astype(np.float32)
    return state


def random_model(config: Optional[ErnieViL2Config] = None, seed: int = 0):
    """An :class:`~ernievil2torch.model.ErnieViL2` in eval mode holding :func:`random_state` weights."""
    import torch

    from ..modeling import ErnieViL2

    config = config or base_config()
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, seed).items()})
    return model.eval()


def layout_state(config: ErnieViL2Config, layout: str = "official", seed: int = 0,
                 with_classifier_head: bool = True) -> Dict[str, np.ndarray]:
    """A random checkpoint in the given Paddle key layout (official adds the unused ``visual.classfy`` head)."""
    state = to_layout(random_state(config, seed), LAYOUTS[layout], config)
    if layout == "official" and with_classifier_head:
        rng = np.random.default_rng(seed + 1)
        hidden = config.vision.hidden_size
        state["visual.classfy.weight"] = (0.02 * rng.standard_normal((hidden, 1000))).astype(np.float32)
        state["visual.classfy.bias"] = np.zeros(1000, np.float32)
    return state


def write_synthetic_pdparams(path: Union[str, Path], config: Optional[ErnieViL2Config] = None,
                             layout: str = "official", seed: int = 0) -> Path:
    """Write a seeded random full-size (by default) ``.pdparams`` in the given layout."""
    return save_pdparams(layout_state(config or base_config(), layout, seed), path)


def write_synthetic_vocab(path: Union[str, Path], vocab_size: int = 40000) -> Path:
    """A SYNTHETIC vocab of ``vocab_size`` entries: specials, ASCII, then CJK ideographs; ``[UNK]`` last.

    Only for the random-weight demo checkpoint (no real vocab can be shipped). Ids are not the real ones.
    """
    if vocab_size < 200:
        raise ValueError("a synthetic vocab needs at least 200 entries")
    tokens = [PAD_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN]
    tokens += [chr(c) for c in range(33, 127)]
    seen = set(tokens)
    shape_captions = [shape_caption(colour, shape) for shape in SHAPES for colour in SHAPE_COLOURS]
    for caption in (*DEMO_CAPTIONS, *shape_captions):  # make sure the drawn sets' captions never hit [UNK]
        tokens += [ch for ch in caption if ch not in seen and not seen.add(ch)]
    # CJK Unified Ideographs, then Extension A, then Extension B: plenty of single-character tokens.
    codes = itertools.chain(range(0x4E00, 0xA000), range(0x3400, 0x4DC0), range(0x20000, 0x2A6E0))
    for code in codes:
        if len(tokens) >= vocab_size - 1:
            break
        if chr(code) not in seen:
            tokens.append(chr(code))
    tokens.append(UNK_TOKEN)
    path = Path(path)
    atomic_write_bytes(path, "".join(f"{token}\t{index}\n" for index, token in enumerate(tokens)).encode("utf-8"))
    return path
