"""The command line behind ``convert.py``, ``check.py``, ``test.py`` and ``ernievil2``.

* :mod:`~ernievil2torch.cli.commands`: the command table (what each command calls, the constraints on its values,
  what Ctrl-C leaves) and the adapters where the command line differs from the library call;
* :mod:`~ernievil2torch.cli.arguments`: argv -> keyword arguments, checked against the function's signature and the
  table before any work;
* :mod:`~ernievil2torch.cli.help`: the help, read off the signature and the docstring (``Args:``);
* :mod:`~ernievil2torch.cli.checks`: the constraints (positive sizes, ports, dtypes, existing files, ...);
* :mod:`~ernievil2torch.cli.runner`: runs one command, prints its result, maps failures to exit statuses;
* :mod:`~ernievil2torch.cli.outcome`: the exit statuses and what an interrupted command leaves behind.

Only this package prints; no library module imports it.
"""
from __future__ import annotations

from typing import Dict

from .arguments import Command, parse_arguments, parse_bool
from .help import render_help
from .commands import (COMMANDS, CONSOLE_SUMMARY, classify, convert, dedup, export, logit_check, performance_check,
                       serve)
from .outcome import (ATOMIC_OUTPUT, CHECKPOINTED_OUTPUT, EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERNAL_ERROR,
                      EXIT_INTERRUPTED, INDEX_RESUMABLE, NO_OUTPUT, RESUMABLE_OUTPUT, SERVICE_STOPPED, CommandInterrupted,
                      leaves_on_interrupt)
from .runner import render_result, run_command

__all__ = ["ATOMIC_OUTPUT", "CHECKPOINTED_OUTPUT", "COMMANDS", "Command", "CommandInterrupted", "EXIT_BAD_INPUT",
           "EXIT_CHECK_FAILED", "EXIT_INTERNAL_ERROR", "EXIT_INTERRUPTED", "INDEX_RESUMABLE", "NO_OUTPUT", "RESUMABLE_OUTPUT",
           "SERVICE_STOPPED", "classify", "commands", "convert", "dedup", "export", "leaves_on_interrupt",
           "logit_check", "main", "main_embed", "main_finetune", "parse_arguments", "parse_bool",
           "performance_check", "render_help", "render_result", "run_command", "serve"]


def commands() -> Dict[str, Command]:
    """The ``ernievil2`` subcommands (building the table imports no torch)."""
    return dict(COMMANDS)


def main() -> None:
    """The ``ernievil2`` console command."""
    run_command(COMMANDS, name="ernievil2", summary=CONSOLE_SUMMARY)


def main_embed() -> None:
    """``python -m ernievil2torch.embed`` (also under torchrun): the embed command alone."""
    run_command(COMMANDS["embed"], name="python -m ernievil2torch.embed")


def main_finetune() -> None:
    """``python -m ernievil2torch.finetune`` (also under torchrun): the finetune command alone."""
    run_command(COMMANDS["finetune"], name="python -m ernievil2torch.finetune")
