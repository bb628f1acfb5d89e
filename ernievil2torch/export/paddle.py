"""Export a converted (or fine-tuned) model back to Paddle: a ``.pdparams`` in the official or the PaddleNLP layout.

The state dict is our weights run backwards through the same layout engine the converter uses
(:func:`~ernievil2torch.conversion.layouts.to_layout`): Linear weights transposed to Paddle's [in, out], the fused
``qkv`` split into q/k/v where the layout keeps them apart, the official ViT's leading unit dimensions restored. The
file is what ``paddle.save(model.state_dict())`` writes: a pickle (protocol 4) of ``{name: numpy array}`` plus the
``StructuredToParameterName@@`` table, nothing but dicts, strings and arrays, written atomically, no Paddle needed.

* ``layout="official"``: the keys of Baidu's ``MultiModalModel`` (``visual.*``, ``text_model.*``,
  ``contrastive_loss_mm.temperature_b``); the unused ``visual.classfy`` head of the released file is not written.
* ``layout="paddlenlp"``: PaddleNLP's ``ErnieViLModel`` (398 keys at Base size); loads with
  ``model.set_state_dict(paddle.load(path))`` reporting no missing and no unexpected key.

Converting an official or a PaddleNLP file and exporting it again gives back every array bit for bit.
bfloat16 weights (a ``--dtype bfloat16`` conversion) are widened to float32 exactly; float16 and float32 stay.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import numpy as np
import torch

from ..conversion.layouts import LAYOUTS, to_layout
from ..conversion.pdparams import save_pdparams
from ..errors import InputError
from ..storage.model_dir import read_model_dir
from ..storage.outputs import check_output_file
from .result import ExportResult

PathLike = Union[str, Path]

#: The suffix of the file :func:`export_paddle` writes (appended when ``out`` lacks it).
PDPARAMS_SUFFIX = ".pdparams"


def paddle_state(model_dir: PathLike, layout: str = "official") -> Dict[str, np.ndarray]:
    """A converted directory's weights as a Paddle state dict in ``layout`` (numpy arrays)."""
    if layout not in LAYOUTS:
        raise InputError(f"--layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    config, tensors = read_model_dir(model_dir)
    state = {name: (t.float() if t.dtype == torch.bfloat16 else t).numpy() for name, t in tensors.items()}
    return to_layout(state, LAYOUTS[layout], config)


def export_paddle(model_dir: PathLike, out: PathLike, layout: str = "official", overwrite: bool = False
                  ) -> ExportResult:
    """Write ``out`` (a ``.pdparams`` file) from a converted directory in ``layout`` (``official`` or
    ``paddlenlp``); returns the :class:`~ernievil2torch.export.result.ExportResult` (arrays, values and layout in
    its summary).

    ``.pdparams`` is appended to an ``out`` without it (as ``np.savez`` appends ``.npz``); the result names the file
    written. Before any work, :func:`~ernievil2torch.storage.outputs.check_output_file` refuses an ``out`` whose
    folder does not exist, a folder, ``model_dir`` or a path holding it, and an existing file unless ``overwrite``
    (the old file stays until the new one is complete).
    """
    out = Path(out)
    if out.suffix != PDPARAMS_SUFFIX and out.name not in ("", ".."):  # "", "." and ".." are refused as they are
        out = out.with_name(out.name + PDPARAMS_SUFFIX)
    check_output_file(out, overwrite, inputs=[model_dir])
    state = paddle_state(model_dir, layout)
    save_pdparams(state, out)
    values = sum(int(a.size) for a in state.values())
    return ExportResult("paddle", out, f"wrote {out}: {len(state)} arrays, {values:,} values, {layout} layout "
                                       f"({LAYOUTS[layout].description})")
