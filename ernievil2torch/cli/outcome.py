"""How a command ends: exit statuses, and what an interrupted command leaves behind.

* success: exit 0;
* a check that ran and failed (``check``): :data:`EXIT_CHECK_FAILED`;
* bad input the project detected (:class:`~ernievil2torch.errors.ErnieViL2Error`, a wrong flag or value): one
  ``error:`` line, :data:`EXIT_BAD_INPUT`;
* an operating-system error (disk full, permission denied, ...): one ``error:`` line naming the file and the
  system's reason, :data:`EXIT_BAD_INPUT`;
* anything else is a bug: the traceback and "internal error, please report", :data:`EXIT_INTERNAL_ERROR`;
* Ctrl-C: what the interrupted command leaves behind, :data:`EXIT_INTERRUPTED`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])

# What an interrupted command leaves behind; tests/cli/test_cli_failures.py interrupts each command and checks it.
ATOMIC_OUTPUT = "interrupted; no partial output was left behind"  # every file it writes is published atomically
NO_OUTPUT = "interrupted; nothing was written"  # the command writes no file
RESUMABLE_OUTPUT = "interrupted; finished shards are kept in OUT: run the same command again to resume"
CHECKPOINTED_OUTPUT = ("interrupted; the checkpoints written so far are complete: run the same command with --resume "
                       "to continue exactly")
SERVICE_STOPPED = "stopped (the service writes no files)"
INDEX_RESUMABLE = ("interrupted; every row written so far is complete: run the same command again to finish the "
                   "index (nothing is embedded twice)")


class CommandInterrupted(Exception):
    """Ctrl-C inside a command, with what that command leaves behind."""


def leaves_on_interrupt(message: str) -> Callable[[F], F]:
    """Declare what an interrupted command leaves behind: a ``KeyboardInterrupt`` inside the wrapped function
    becomes :class:`CommandInterrupted` carrying ``message`` (printed after Ctrl-C)."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                raise CommandInterrupted(message) from None
        return wrapper  # type: ignore[return-value]
    return decorate
