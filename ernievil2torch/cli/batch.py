"""Adapters of the commands whose library functions report more than one result: ``embed`` and ``finetune``.

Imported only when one of them runs or shows its help (both import torch). Each adapter keeps the library
function's signature and docstring (``functools.wraps``), so the command line is checked against the library's own
parameters, and decides what reaches the console.
"""
from __future__ import annotations

import functools
import json
import sys
from typing import Any

from ..apps.embed import embed as embed_items
from ..training import FinetuneSettings, TrainingEvents, finetune as finetune_model, run_finetune


@functools.wraps(embed_items)
def embed(*args: Any, **kwargs: Any) -> None:
    """``ernievil2 embed``: the summary line on the error stream, from the process that joins the shards (standard
    output stays free for a pipeline)."""
    result = embed_items(*args, **kwargs)
    if result.joined:
        print(result.summary(), file=sys.stderr)


@functools.wraps(finetune_model)
def finetune(*args: Any, **kwargs: Any):
    """``ernievil2 finetune``: validation lines as they come, one JSON record per logged step when the progress bar
    is off, and the run's summary at the end."""
    settings = FinetuneSettings.from_arguments(*args, **kwargs)

    def print_record(record: dict) -> None:
        print(json.dumps(record), flush=True)

    events = TrainingEvents(on_log=None if settings.progress else print_record, on_message=print)
    return run_finetune(settings, events)
