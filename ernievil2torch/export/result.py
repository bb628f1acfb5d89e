"""What an export wrote: the result object every exporter returns (the console prints its :meth:`summary`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional


@dataclass
class ExportResult:
    """One export.

    Attributes:
        format: the exporter's name in :data:`~ernievil2torch.export.registry.EXPORTERS` (``hf``, ``onnx``, ...).
        out: the folder or file written.
        wrote: one line saying what was written (the last line of :meth:`summary`).
        notes: what the user should know about this run (a skipped part, a check's measured difference).
        max_abs_diff: the largest difference a runtime check measured against PyTorch, if one ran.
    """

    format: str
    out: Path
    wrote: str
    notes: List[str] = field(default_factory=list)
    max_abs_diff: Optional[float] = None

    def summary(self) -> str:
        return "\n".join([*self.notes, self.wrote])

