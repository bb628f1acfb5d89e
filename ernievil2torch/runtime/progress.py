"""Progress bars on stderr, the one terminal output library code may produce."""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator


class _MessagesOnly:
    """The bar's interface without a bar: :meth:`write` still shows a message (on stderr), the rest does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def write(self, message: str) -> None:
        print(message, file=sys.stderr)

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool, position: int = 0, unit: str = "item") -> Any:
    """A tqdm bar on stderr counting to ``total`` (hidden unless ``enabled``; ``position`` stacks the bars of several
    processes). Without tqdm installed: an object with the same ``update`` / ``set_postfix`` / ``write`` / ``close``
    whose ``write`` prints the message to stderr."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is an optional dependency
        return _MessagesOnly()
    return tqdm(total=total, desc=desc, disable=not enabled, position=position, unit=unit, dynamic_ncols=True,
                file=sys.stderr)


@contextlib.contextmanager
def bar_cleared(bar: Any) -> Iterator[None]:
    """Hide the progress bars while the block writes to the terminal, then draw them again (tqdm's
    ``external_write_mode``); a plain block for a stand-in without that method."""
    pause = getattr(type(bar), "external_write_mode", None)
    with (pause() if pause is not None else contextlib.nullcontext()):
        yield
