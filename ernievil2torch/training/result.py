"""What a fine-tuning run returns: :class:`FinetuneResult` and its one-paragraph ``summary()``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

@dataclass
class FinetuneResult:
    """What a run did: where things are, its last and best validation, the images it had to skip."""

    out: Path
    steps: int
    final: Path
    best: Optional[Path] = None
    best_step: Optional[int] = None
    best_mean_recall: Optional[float] = None
    last_validation: Optional[Dict[str, Any]] = None
    skipped_images: List[Tuple[str, str]] = field(default_factory=list)
    resumed_from: Optional[int] = None

    def summary(self) -> str:
        lines = [f"fine-tuned {self.steps} steps" + (f" (resumed at step {self.resumed_from})"
                                                     if self.resumed_from else "") + f"; final model: {self.final}"]
        if self.best is not None:
            lines.append(f"best validation mean recall {self.best_mean_recall:.2f} at step {self.best_step}: "
                         f"{self.best}")
        if self.last_validation:
            v = self.last_validation
            lines.append(f"last validation: t2i R@1 {v['t2i']['R@1']:.2f}, i2t R@1 {v['i2t']['R@1']:.2f}, "
                         f"mean recall {v['mean_recall']:.2f}")
        if self.skipped_images:
            shown = "; ".join(f"{name}: {reason}" for name, reason in self.skipped_images[:5])
            lines.append(f"{len(self.skipped_images)} unreadable training image(s) skipped: {shown}")
        return "\n".join(lines)
