"""How a fine-tuning run reports while it trains, without printing: hooks the caller sets.

The trainer calls them on the main process only. ``on_log`` receives each ``log_every`` record, the same object
that becomes a line of ``metrics.jsonl`` (``{"step", "epoch", "loss", "lr", "grad_norm", "items_per_s"}``);
``on_message`` receives a line for a person: each validation's recalls, an unreadable image skipped. Both are
called with the progress bar cleared (:func:`~ernievil2torch.runtime.progress.bar_cleared`), so a hook that prints
does not tear the bar. Everything they receive is also in ``metrics.jsonl``; without hooks a run is silent except
for its bar.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

LogHook = Callable[[Dict[str, Any]], None]
MessageHook = Callable[[str], None]


@dataclass(frozen=True)
class TrainingEvents:
    """The hooks of a run (each optional): ``on_log(record)`` per log step, ``on_message(text)`` per note."""

    on_log: Optional[LogHook] = None
    on_message: Optional[MessageHook] = None
