"""Paddle ``.pdparams`` -> converted directory, with no Paddle installed.

Read with the restricted unpickler (hashing the file on a second thread as it is read), check keys and shapes
strictly against the detected layout, then stream each converted tensor into ``model.safetensors`` inside an
atomically published directory. numpy only: torch is never imported on this path (its import alone costs more than
the rest of a conversion's CPU time, and a quarter of the file size in memory).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from ..config import ErnieViL2Config, canonical_dtype, get_model_config
from ..constants import CONVERTED_BY, DEFAULT_CHECKPOINT_NAMES, DOWNLOAD_HINT, KEEP_DTYPE
from ..errors import CheckpointError, InputError
from ..processing.vocab import check_special_tokens, load_vocab
from ..storage import model_dir
from ..storage.outputs import check_output_dir
from .dtypes import OUTPUT_DTYPES, cast, storage_name
from .layouts import ConversionPlan, detect_layout, named_config, plan_conversion
from .pdparams import load_pdparams


@dataclass
class ConversionReport:
    """What a conversion did, for the CLI summary and for tests."""

    source: str
    destination: str
    layout: str
    config: ErnieViL2Config
    tensors: int
    parameters: int
    dropped: List[str]
    sha256: str
    source_bytes: int
    seconds: float
    dtype: str
    non_finite: Dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"converted {self.source} -> {self.destination}",
            f"  layout detected : {self.layout}",
            f"  model           : {self.config.name or 'unregistered size'} ({self.config.model_type}, text "
            f"{self.config.text.num_layers} layers, "
            f"vision {self.config.vision.num_layers} layers, temperature: "
            f"{'yes' if self.config.has_temperature else 'no'})",
            f"  tensors written : {self.tensors} ({self.parameters:,} parameters, {self.dtype})",
            f"  keys dropped    : {', '.join(self.dropped) if self.dropped else 'none'}",
            f"  source sha256   : {self.sha256}",
            f"  source size     : {self.source_bytes / 2**20:.1f} MiB, converted in {self.seconds:.1f} s",
        ]
        if self.config.name is None:
            lines.append("  note            : no registered model has these shapes: converted with hidden/64 heads "
                         "and the default LayerNorm epsilons (register_model the size if it differs)")
        if self.non_finite:
            lines.append("  WARNING non-finite weights: " + ", ".join(
                f"{k} ({n} values)" for k, n in sorted(self.non_finite.items())))
        return "\n".join(lines)


def _check_dtypes(state: Dict[str, np.ndarray]) -> None:
    bad = [f"'{k}' ({a.dtype})" for k, a in state.items() if a.dtype.kind != "f" and a.dtype != np.uint16]
    if bad:
        raise CheckpointError("weights must be floating point (or bf16 stored as uint16); found "
                              + ", ".join(bad[:10]))


def _count_non_finite(state: Dict[str, np.ndarray]) -> Dict[str, int]:
    counts = {}
    for key, array in state.items():
        if array.dtype == np.uint16:  # bf16 bits: all-ones exponent (0x7F80) is Inf or NaN
            bad = int(np.count_nonzero((array & 0x7F80) == 0x7F80))
        else:
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            counts[key] = bad
    return counts


def find_default_checkpoint(directory: Union[str, Path] = ".") -> Path:
    for name in DEFAULT_CHECKPOINT_NAMES:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"no --src given and neither {' nor '.join(DEFAULT_CHECKPOINT_NAMES)} is in "
                          f"{Path(directory).absolute()}.\n{DOWNLOAD_HINT}")


#: What to convert a checkpoint as: a registry name, a config, or None (the registered config with its shapes).
ModelChoice = Union[str, ErnieViL2Config, None]


def convert_state(state: Dict[str, np.ndarray], dst: Union[str, Path], *, overwrite: bool = False,
                  vocab: Optional[Union[str, Path]] = None, dtype: str = "float32",
                  config: ModelChoice = None, metadata: Optional[Dict[str, str]] = None) -> ConversionPlan:
    """Convert an in-memory Paddle state dict (consumed: arrays are released as they are written).

    ``dtype`` is any spelling :func:`~ernievil2torch.config.canonical_dtype` accepts, or ``"keep"``. ``config`` is
    a registry name (its architecture, with a temperature when the checkpoint has one), a config (used as given),
    or None to read it off the checkpoint (:func:`~ernievil2torch.conversion.layouts.infer_config`). Bad arguments
    and an output :func:`~ernievil2torch.storage.outputs.check_output_dir` refuses raise before any array is
    touched.
    """
    dtype = canonical_dtype(dtype, allow_keep=True)
    if isinstance(config, str):
        get_model_config(config)  # an unknown name is refused before any array is touched
    check_output_dir(dst, overwrite, inputs=[vocab])
    vocab_path = _checked_vocab(vocab) if vocab is not None else None
    _check_dtypes(state)
    layout = detect_layout(state)
    if isinstance(config, str):
        config = named_config(config, layout, state)
    plan = plan_conversion({k: tuple(a.shape) for k, a in state.items()}, layout, config)
    rules = {rule.target: rule for rule in plan.rules}

    def out_dtype(target: str) -> str:
        return OUTPUT_DTYPES[dtype] if dtype != KEEP_DTYPE else storage_name(state[rules[target].sources[0]])

    specs = [(t, out_dtype(t), plan.target_shapes[t]) for t in rules]
    target_dtypes = {target: spec_dtype for target, spec_dtype, _ in specs}

    def produce(target: str) -> np.ndarray:
        rule = rules[target]
        arrays = [state.pop(key) for key in rule.sources]  # release each source as soon as it is used
        return cast(rule.apply(arrays), target_dtypes[target])

    meta = {"format": "pt", "converted_by": CONVERTED_BY, "source_layout": plan.layout.name}
    meta.update(metadata or {})
    model_dir.publish_model_dir(dst, plan.config, specs, produce, overwrite=overwrite, vocab_file=vocab_path,
                                metadata=meta)
    return plan


def _checked_vocab(vocab: Union[str, Path]) -> Path:
    """The vocab file, read with the tokenizer's own reader and checked for the special tokens before anything is
    written (a wrong file is refused up front, not found out at the first tokenisation)."""
    path = Path(vocab)
    if not path.is_file():
        raise InputError(f"vocab file {path} does not exist")
    check_special_tokens(load_vocab(path), path)
    return path


def convert_checkpoint(src: Union[str, Path], dst: Union[str, Path], *, overwrite: bool = False,
                       vocab: Optional[Union[str, Path]] = None, dtype: str = "float32",
                       config: ModelChoice = None) -> ConversionReport:
    """Convert a ``.pdparams`` file to a converted directory and report what was done.

    ``dtype``: the stored dtype (``float32``/``fp32``, ``float16``/``fp16``/``half``, ``bfloat16``/``bf16`` or
    ``keep``, the source's own). ``config``: a registry name or a config to convert as; by default the registered
    configuration whose shapes the checkpoint has (a size no entry has is converted as an unregistered one).
    A bad ``dtype``, an unknown name, a bad vocab and a ``dst`` that
    :func:`~ernievil2torch.storage.outputs.check_output_dir` refuses (existing without ``overwrite``, empty, the
    current directory or above, ``src`` or a folder holding it) are refused before the file is opened.
    """
    start = time.perf_counter()
    dtype = canonical_dtype(dtype, allow_keep=True)
    if isinstance(config, str):
        get_model_config(config)
    src, dst = Path(src), Path(dst)
    if vocab is not None:
        _checked_vocab(vocab)
    check_output_dir(dst, overwrite, inputs=[src, vocab])
    hasher = hashlib.sha256()
    state = load_pdparams(src, hasher=hasher)
    size = src.stat().st_size
    non_finite = _count_non_finite(state)
    plan = convert_state(state, dst, overwrite=overwrite, vocab=vocab, dtype=dtype, config=config,
                         metadata={"source_sha256": hasher.hexdigest(), "source_file": src.name})
    parameters = sum(int(np.prod(s)) for s in plan.target_shapes.values())
    return ConversionReport(
        source=str(src), destination=str(dst), layout=plan.layout.name, config=plan.config,
        tensors=len(plan.target_shapes), parameters=parameters, dropped=plan.dropped,
        sha256=hasher.hexdigest(), source_bytes=size, seconds=time.perf_counter() - start, dtype=dtype,
        non_finite=non_finite)
