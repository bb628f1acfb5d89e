"""The export formats: one table read by ``ernievil2 export``, its ``--help`` and the docs.

An :class:`Exporter` names its function as ``"module:function"``, imported only when that format runs, so listing
the formats imports neither torch nor any optional dependency. :func:`export_model` refuses an unknown format or a
missing optional dependency (naming the pip extra that installs it) before any work.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..config import model_path
from ..config.hub import parse_hub_id
from ..errors import InputError
from .result import ExportResult


@dataclass(frozen=True)
class Exporter:
    """One export format.

    Attributes:
        format: its name (``--format``).
        target: ``"module:function"``; the function takes ``(model_dir, out, overwrite=..., **options)`` and returns
            an :class:`~ernievil2torch.export.result.ExportResult`.
        help: one line: what the output is and who loads it.
        options: the ``ernievil2 export`` options the format uses, beyond the model, the output and --overwrite.
        extra: the pip extra that installs ``requires`` (None: the core install is enough).
        requires: modules the exporter imports beyond the core install.
    """

    format: str
    target: str
    help: str
    options: Tuple[str, ...] = ()
    extra: Optional[str] = None
    requires: Tuple[str, ...] = ()

    def missing(self) -> Tuple[str, ...]:
        """The modules of ``requires`` that cannot be imported here."""
        return tuple(name for name in self.requires if importlib.util.find_spec(name) is None)


EXPORTERS: Dict[str, Exporter] = {e.format: e for e in (
    Exporter("hf", "ernievil2torch.export.hf:export_hf",
             "stock Hugging Face ErnieModel (text/) + CLIPVisionModel (vision/); loading them needs transformers",
             options=("vocab",)),
    Exporter("onnx", "ernievil2torch.export.onnx:export_onnx",
             "both towers as ONNX graphs (dynamic batch and text length), checked with ONNX Runtime",
             options=("opset",), extra="export", requires=("onnx",)),
    Exporter("openvino", "ernievil2torch.export.openvino:export_openvino",
             "both towers as OpenVINO IR (.xml/.bin, float32 weights; dynamic batch and text length), checked with "
             "OpenVINO's CPU plugin", extra="openvino", requires=("openvino",)),
    Exporter("paddle", "ernievil2torch.export.paddle:export_paddle",
             "a .pdparams for Baidu's MultiModalModel (--layout official) or PaddleNLP's ErnieViLModel "
             "(--layout paddlenlp); no Paddle needed", options=("layout",)),
    Exporter("open_clip", "ernievil2torch.export.open_clip:export_open_clip",
             "an open_clip package (open_clip_config.json, open_clip_model.safetensors, BERT text config and "
             "tokenizer) that open-clip-torch 3.x loads with 'hf-hub:ID' (--hub_id) or 'local-dir:OUT'",
             options=("vocab", "hub_id")),
)}


def exporter(format: str) -> Exporter:
    """The exporter of ``format``; InputError naming the formats if there is none, or naming the pip extra if its
    dependencies are not installed."""
    found = EXPORTERS.get(format)
    if found is None:
        raise InputError(f"unknown export format {format!r}; formats: {', '.join(EXPORTERS)}")
    missing = found.missing()
    if missing:
        raise InputError(f"--format {format} needs {', '.join(missing)}: pip install 'ernievil2torch[{found.extra}]'")
    return found


def export_model(format: str, model_dir: str, out: str, overwrite: bool = False, **options: Any) -> ExportResult:
    """Export ``model_dir`` to ``out`` in ``format``, passing it the ``options`` its :class:`Exporter` lists."""
    chosen = exporter(format)
    module, _, name = chosen.target.partition(":")
    function = getattr(importlib.import_module(module), name)
    # A Hub id: exporters read its snapshot folder like any directory. Anything else goes to the exporter as given,
    # so it checks the output first and reports a missing model directory itself.
    is_hub = not Path(model_dir).exists() and parse_hub_id(str(model_dir)) is not None
    folder = str(model_path(model_dir)) if is_hub else model_dir
    return function(folder, out, overwrite=overwrite, **{k: v for k, v in options.items() if k in chosen.options})
