"""Export both towers of a converted directory to OpenVINO IR, checked against PyTorch with OpenVINO's CPU plugin.

:func:`export_openvino` writes ``text_encoder.xml``/``.bin`` (``input_ids``, ``attention_mask`` -> ``text_embeds``)
and ``image_encoder.xml``/``.bin`` (``pixel_values`` -> ``image_embeds``), batch and text length dynamic, converted
by OpenVINO's PyTorch front end from the same tower feature paths the ONNX export traces. Weights are saved in
float32 (``compress_to_fp16=False``): the precision is a choice made when the model is compiled
(``INFERENCE_PRECISION_HINT``), not baked into the files. The check compiles both towers twice: with the float32
hint the features must be within ``atol`` of PyTorch's; with the CPU's default hint (bf16 or f16 where the CPU
computes in it, else f32) each row's cosine to PyTorch's features must be at least ``min_cosine``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import ErnieViL2Error
from ..modeling import ErnieViL2
from ..retrieval.metrics import cosine_rows
from ..storage.atomic import atomic_directory
from ..storage.outputs import check_output_dir
from .onnx import OnnxImageEncoder, OnnxTextEncoder
from .files import write_config_and_vocab
from .probes import ProbeBatch, trace_and_check_batches
from .result import ExportResult

TEXT_IR, IMAGE_IR = "text_encoder.xml", "image_encoder.xml"


def default_precision(core) -> str:
    """The CPU plugin's default ``INFERENCE_PRECISION_HINT`` on this machine: ``"f32"``, ``"bf16"`` or ``"f16"``."""
    return core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def _check(core, paths: Tuple[Path, Path], model: ErnieViL2, probes: List[ProbeBatch], hint: Optional[str]
           ) -> Tuple[float, float]:
    """(max abs diff, min row cosine) of both towers compiled with ``hint`` (None: the device's default)."""
    config: Dict[str, str] = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
    text, image = (core.compile_model(str(path), "CPU", config) for path in paths)
    diffs, cosines = [], []
    for probe in probes:
        with torch.no_grad():
            want_t = model.encode_text(probe.input_ids, probe.attention_mask).numpy()
            want_i = model.encode_image(probe.pixel_values).numpy()
        got_t = text([probe.input_ids.numpy(), probe.attention_mask.numpy()])[0]
        got_i = image([probe.pixel_values.numpy()])[0]
        for got, want in ((got_t, want_t), (got_i, want_i)):
            diffs.append(float(np.abs(got - want).max()))
            cosines.append(float(cosine_rows(got, want).min()))
    return max(diffs), min(cosines)


def export_openvino(model_dir: Union[str, Path], out_dir: Union[str, Path], check: bool = True, atol: float = 1e-4,
                    min_cosine: float = 0.999, overwrite: bool = False) -> ExportResult:
    """Export both towers to OpenVINO IR: OUT_DIR/text_encoder.xml+.bin and OUT_DIR/image_encoder.xml+.bin.

    Inputs and outputs are those of :func:`~ernievil2torch.export.onnx.export_onnx` (raw features; L2-normalise for
    cosine scoring). Load with ``openvino.Core().compile_model("OUT_DIR/image_encoder.xml", "CPU")``; pass
    ``{"INFERENCE_PRECISION_HINT": "f32"}`` for float32 results on a CPU whose default is bf16 or f16.

    Args:
        model_dir: a converted directory.
        out_dir: output directory (refused if it exists, unless --overwrite; never MODEL_DIR, the current directory
            or a folder holding either).
        check: compile both towers with the f32 hint and with the default hint and compare with PyTorch at batch 1
            and 3 (a padded row, a length other than the traced one).
        atol: largest allowed abs difference with the f32 hint.
        min_cosine: smallest allowed per-row cosine with the default hint.
        overwrite: replace an existing OUT_DIR.

    Raises :class:`ErnieViL2Error` when a check fails (nothing is published). Returns the
    :class:`~ernievil2torch.export.result.ExportResult`; its ``max_abs_diff`` is the f32-hint check's.
    """
    check_output_dir(out_dir, overwrite, inputs=[model_dir])
    import openvino as ov

    model = ErnieViL2.from_pretrained(model_dir, dtype=torch.float32)
    cfg = model.config
    traced, check_batches = trace_and_check_batches(cfg)
    size = cfg.vision.image_size
    notes: List[str] = []
    max_abs_diff: Optional[float] = None
    with atomic_directory(out_dir, overwrite, inputs=[model_dir]) as tmp:
        paths = (tmp / TEXT_IR, tmp / IMAGE_IR)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about Python-side shape checks
            text = ov.convert_model(OnnxTextEncoder(model).eval(),
                                    example_input=(traced.input_ids, traced.attention_mask),
                                    input=[("input_ids", [-1, -1], ov.Type.i64),
                                           ("attention_mask", [-1, -1], ov.Type.i64)])
            image = ov.convert_model(OnnxImageEncoder(model).eval(), example_input=(traced.pixel_values,),
                                     input=[("pixel_values", [-1, cfg.vision.num_channels, size, size],
                                             ov.Type.f32)])
        text.outputs[0].get_tensor().set_names({"text_embeds"})
        image.outputs[0].get_tensor().set_names({"image_embeds"})
        ov.save_model(text, str(paths[0]), compress_to_fp16=False)
        ov.save_model(image, str(paths[1]), compress_to_fp16=False)
        if check:
            core, probes = ov.Core(), list(check_batches)
            max_abs_diff, _ = _check(core, paths, model, probes, "f32")
            if max_abs_diff > atol:
                raise ErnieViL2Error(f"OpenVINO (f32 hint) differs from PyTorch by {max_abs_diff:.3g} (> {atol:g})")
            default = default_precision(core)
            _, cosine = _check(core, paths, model, probes, None)
            if cosine < min_cosine:
                raise ErnieViL2Error(f"OpenVINO (default hint, {default}) feature cosine {cosine:.6f} to PyTorch "
                                     f"is below {min_cosine}")
            notes.append(f"openvino check passed: f32 hint max abs diff {max_abs_diff:.3g} (<= {atol:g}); "
                         f"default hint ({default}) min cosine {cosine:.6f} (>= {min_cosine})")
        write_config_and_vocab(cfg, model_dir, tmp)
    return ExportResult("openvino", Path(out_dir),
                        f"wrote {out_dir}/{TEXT_IR} and {out_dir}/{IMAGE_IR} (+ .bin, float32 weights)", notes,
                        max_abs_diff)
