"""Export both towers of a converted directory to ONNX, checked against PyTorch with ONNX Runtime.

:func:`export_onnx` writes ``text_encoder.onnx`` (``input_ids``, ``attention_mask`` -> ``text_embeds``) and
``image_encoder.onnx`` (``pixel_values`` -> ``image_embeds``) with a dynamic batch and a dynamic text length. The
graphs are traced from the towers' own feature paths (``TextEncoder.encode``, ``VisionEncoder.encode``), the same
functions eager and compiled runs use.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch
from torch import nn

from ..errors import ErnieViL2Error
from ..modeling import ErnieViL2
from ..modeling.layers import attention_bias
from ..storage.atomic import atomic_directory
from ..storage.outputs import check_output_dir
from .files import write_config_and_vocab
from .probes import trace_and_check_batches
from .result import ExportResult


class OnnxTextEncoder(nn.Module):
    """The text tower's feature path with the bias always built from ``attention_mask`` (no host-side branch)."""

    def __init__(self, model: ErnieViL2) -> None:
        super().__init__()
        self.text = model.text

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text.encode(input_ids, attention_bias(attention_mask, self.text.pooler.weight.dtype))


class OnnxImageEncoder(nn.Module):
    """The image tower's feature path: pixels [B, 3, H, W] -> features [B, hidden]."""

    def __init__(self, model: ErnieViL2) -> None:
        super().__init__()
        self.vision = model.vision

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision.encode(pixel_values)


def _onnx_check(path: Path, feeds: Dict[str, torch.Tensor], expected: torch.Tensor, atol: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    diff = float(np.abs(got - expected.numpy()).max())
    if diff > atol:
        raise ErnieViL2Error(f"{path.name}: ONNX Runtime differs from PyTorch by {diff:.3g} (> {atol:g})")
    return diff


def export_onnx(model_dir: Union[str, Path], out_dir: Union[str, Path], opset: int = 17, check: bool = True,
                atol: float = 1e-4, overwrite: bool = False) -> ExportResult:
    """Export both towers to ONNX: OUT_DIR/text_encoder.onnx (input_ids, attention_mask -> text_embeds) and
    OUT_DIR/image_encoder.onnx (pixel_values -> image_embeds); batch and text length are dynamic.

    Outputs are raw features (L2-normalise them for cosine scoring). Inputs: int64 ids/mask [B, L] (L <= max
    positions; the official layout is 48), float32 pixels [B, 3, 224, 224] preprocessed like
    ErnieViL2ImageProcessor.

    Args:
        model_dir: a converted directory.
        out_dir: output directory (refused if it exists, unless --overwrite; never MODEL_DIR, the current directory
            or a folder holding either: :func:`~ernievil2torch.storage.outputs.check_output_dir`).
        opset: ONNX opset (>= 14 for scaled_dot_product_attention).
        check: run both files with ONNX Runtime (if installed) at batch 1 and 3 and compare with PyTorch.
        atol: largest allowed abs difference in the check.
        overwrite: replace an existing OUT_DIR.

    Returns the :class:`~ernievil2torch.export.result.ExportResult`: its ``max_abs_diff`` is the check's largest
    difference (None when the check did not run), its notes say how the check went.
    """
    check_output_dir(out_dir, overwrite, inputs=[model_dir])
    notes: List[str] = []
    max_abs_diff: Optional[float] = None
    model = ErnieViL2.from_pretrained(model_dir, dtype=torch.float32)
    cfg = model.config
    text, image = OnnxTextEncoder(model).eval(), OnnxImageEncoder(model).eval()
    traced, check_batches = trace_and_check_batches(cfg)
    ids, mask, pixels = traced.input_ids, traced.attention_mask, traced.pixel_values
    with atomic_directory(out_dir, overwrite, inputs=[model_dir]) as tmp, warnings.catch_warnings():
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
                notes.append("note: onnxruntime not installed; skipped the check (pip install onnxruntime)")
            else:
                diffs = []
                for probe in check_batches:
                    with torch.no_grad():
                        want_t = model.encode_text(probe.input_ids, probe.attention_mask)
                        want_i = model.encode_image(probe.pixel_values)
                    diffs.append(_onnx_check(text_path, {"input_ids": probe.input_ids,
                                                         "attention_mask": probe.attention_mask}, want_t, atol))
                    diffs.append(_onnx_check(image_path, {"pixel_values": probe.pixel_values}, want_i, atol))
                max_abs_diff = max(diffs)
                notes.append(f"onnxruntime check passed: max abs diff {max_abs_diff:.3g} (<= {atol:g})")
        write_config_and_vocab(cfg, model_dir, tmp)
    return ExportResult("onnx", Path(out_dir),
                        f"wrote {out_dir}/text_encoder.onnx and {out_dir}/image_encoder.onnx (opset {opset})", notes,
                        max_abs_diff)
