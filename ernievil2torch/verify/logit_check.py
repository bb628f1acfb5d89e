"""The logit check behind ``check.py logit_check``: the Paddle reference and the PyTorch port on the same inputs.

What it proves: the converted directory computes, in PyTorch, the function that the independent Paddle
implementation of the official architecture (:mod:`~ernievil2torch.verify.paddle_reference`) computes from the
original ``.pdparams`` — features of both towers and the scaled logits agree within the bounds. It does not compare
against Baidu's own code; the test suite does that too, against PaddleNLP 2.8.1's ``ErnieViLModel``.

Without a checkpoint it builds a seeded SYNTHETIC one (every weight random, full size by default), converts it with
the converter ``convert.py`` uses, and checks that end to end.
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ..config import ErnieViL2Config, base_config, tiny_config
from ..conversion.convert import convert_checkpoint
from ..conversion.layouts import OFFICIAL, from_layout, plan_conversion, to_layout
from ..conversion.pdparams import load_pdparams
from ..errors import ErnieViL2Error
from ..modeling import ErnieViL2
from ..storage.provenance import SYNTHETIC_NOTICE
from . import parity
from .synthetic import write_synthetic_pdparams, write_synthetic_vocab

Log = Callable[[str], None]

WHAT_IT_PROVES = ("what this proves: the converted directory computes the function of the Paddle reference (an "
                  "independent implementation of the official architecture, sharing no config with the port) on "
                  "the weights of the file; it does not compare with Baidu's own code, which the test suite does "
                  "(PaddleNLP 2.8.1)")


def to_official_layout(state: Dict[str, np.ndarray]) -> Tuple[ErnieViL2Config, Dict[str, np.ndarray]]:
    """Any supported layout -> (its config, the same arrays in the official layout), for the Paddle reference."""
    plan = plan_conversion({k: tuple(a.shape) for k, a in state.items()})
    if plan.layout is OFFICIAL:
        return plan.config, state
    return plan.config, to_layout(from_layout(state, plan.layout, plan.config), OFFICIAL, plan.config)


@dataclass
class LogitCheckResult:
    """Everything one check compared, and whether it passed the bounds."""

    paddle: str
    torch: str
    inputs: parity.ParityInputs
    ours: Dict[str, Optional[np.ndarray]]
    reference: Dict[str, object]
    report: parity.ParityReport
    feature_atol: float
    min_cosine: float
    logit_atol: float

    @property
    def passed(self) -> bool:
        """Whether every bound is met."""
        return self.report.passed(self.feature_atol, self.min_cosine, self.logit_atol)

    def summary(self) -> str:
        """The side-by-side values, the comparison table and the verdict, as printed by ``check.py`` (which exits
        with status 1 when :attr:`passed` is false)."""
        ids = self.inputs.input_ids
        lines = [f"inputs: {self.inputs.pixel_values.shape[0]} images (seeded pixels), {ids.shape[0]} texts "
                 f"(token ids, lengths {(ids != 0).sum(1).tolist()}, padded to {ids.shape[1]})",
                 "### pytorch vs paddle"]
        with np.printoptions(precision=8, suppress=True, linewidth=160):
            for label, key in (("visual_output", "image_features"), ("text_output", "text_features")):
                lines += [f"  {label} (first 10 values of row 0)",
                          f"    pytorch: {self.ours[key][0, :10]}",
                          f"    paddle : {self.reference[key][0, :10]}"]
        scale = self.ours["logit_scale"]
        lines.append(f"  logit_scale: pytorch {None if scale is None else float(scale[0]):} "
                     f"paddle {self.reference['logit_scale']}")
        lines += ["", self.report.table(), "",
                  f"{'PASS' if self.passed else 'FAIL'}: bounds features max abs <= {self.feature_atol:g}, cosine >= "
                  f"{self.min_cosine}, logits max abs <= {self.logit_atol:g}", WHAT_IT_PROVES]
        return "\n".join(lines)


def _reference_runner():
    try:
        with warnings.catch_warnings():  # Paddle warns about a missing ccache at import
            warnings.simplefilter("ignore")
            from .paddle_reference import run_reference
    except ImportError as exc:
        raise ErnieViL2Error(f"the logit check needs paddlepaddle ({exc}); pip install -r "
                             "requirements-paddle.txt") from None
    return run_reference


def run_logit_check(paddle: Optional[str] = None, torch_dir: Optional[str] = None, *, seed: int = 0,
                    tiny: bool = False, feature_atol: float = parity.FEATURE_ATOL,
                    min_cosine: float = parity.MIN_COSINE, logit_atol: float = parity.LOGIT_ATOL,
                    workdir: Optional[str] = None, log: Log = lambda line: None) -> LogitCheckResult:
    """Compare ``torch_dir`` (a converted directory) with the Paddle reference running ``paddle`` (its source).

    With neither given, a synthetic checkpoint (official layout, ``seed``; full size unless ``tiny``) and its
    conversion are made in ``workdir`` (default: a temporary directory, removed afterwards). ``log`` receives
    progress lines (the synthetic notice, the conversion summary) as they happen. Raises :class:`ErnieViL2Error`
    when only one path is given, when Paddle is missing, or when the two hold different model sizes.
    """
    if (paddle is None) != (torch_dir is None):
        raise ErnieViL2Error("give both --paddle X.pdparams and --torch DIR, or neither (synthetic check)")
    run_reference = _reference_runner()
    with tempfile.TemporaryDirectory(prefix="ernievil2-check-") as scratch:
        base = Path(workdir) if workdir else Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        if paddle is None:
            log(f"*** {SYNTHETIC_NOTICE}")
            config = tiny_config() if tiny else base_config()
            paddle = str(write_synthetic_pdparams(base / "synthetic_official.pdparams", config, "official", seed))
            # The tiny size exists for speed; only the full size gets a (synthetic) vocab for performance_check.
            vocab = None if tiny else write_synthetic_vocab(base / "synthetic_vocab.txt", config.text.vocab_size)
            torch_dir = str(base / "synthetic_converted")
            log(convert_checkpoint(paddle, torch_dir, overwrite=True, vocab=vocab).summary())
        config, official = to_official_layout(load_pdparams(paddle))
        model = ErnieViL2.from_pretrained(torch_dir)
        if model.config.text != config.text or model.config.vision != config.vision:
            raise ErnieViL2Error(f"{torch_dir} holds a different model size than {paddle}")
        inputs = parity.synthetic_inputs(config, seed)
        reference = run_reference(official, inputs.pixel_values, inputs.input_ids)
        ours = parity.run_torch(model, inputs)
    return LogitCheckResult(paddle, torch_dir, inputs, ours, reference, parity.compare(ours, reference),
                            feature_atol, min_cosine, logit_atol)
