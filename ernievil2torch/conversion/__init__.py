"""Conversion: the restricted ``.pdparams`` reader, checkpoint ops and layouts, and the streaming converter."""
from .convert import ConversionReport, convert_checkpoint, convert_state, find_default_checkpoint
from .layouts import LAYOUTS, OFFICIAL, PADDLENLP, Layout, Rule, detect_layout, plan_conversion, to_layout
from .pdparams import load_pdparams, save_pdparams

__all__ = ["ConversionReport", "LAYOUTS", "Layout", "OFFICIAL", "PADDLENLP", "Rule", "convert_checkpoint",
           "convert_state", "detect_layout", "find_default_checkpoint", "load_pdparams", "plan_conversion",
           "save_pdparams", "to_layout"]
