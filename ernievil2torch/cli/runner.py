"""Run one command from argv: pick it, parse and check its arguments, call it, print its result, map failures to
the exit statuses of :mod:`~ernievil2torch.cli.outcome`.

Everything that can be wrong with the command line is found before the command's function is called; only then
is the function (and what it imports) run.
"""
from __future__ import annotations

import sys
import traceback
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from ..errors import ErnieViL2Error, InputError
from .arguments import Command, HelpRequested, parse_arguments
from .help import render_commands
from .outcome import (EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, CommandInterrupted,
                      leaves_on_interrupt)

Component = Union[Callable[..., Any], Command, Mapping[str, Union[Callable[..., Any], Command]]]


def _as_command(name: str, entry: Union[Callable[..., Any], Command]) -> Command:
    return entry if isinstance(entry, Command) else Command(name, entry)


def render_result(result: Any) -> Optional[str]:
    """What the console prints for a command's return value: ``result.summary()`` for a result object, a string
    as it is, a mapping as ``key: value`` lines, nothing for ``None``."""
    if result is None:
        return None
    if hasattr(result, "summary") and callable(result.summary):
        return str(result.summary())
    if isinstance(result, Mapping):
        width = max((len(str(key)) for key in result), default=0)
        return "\n".join(f"{str(key).ljust(width)}: {value}" for key, value in result.items())
    return str(result)


def failed_check(result: Any) -> bool:
    """Whether ``result`` is a check that ran and failed: its ``passed`` attribute is false (exit status 1)."""
    return getattr(result, "passed", None) is False


def describe_os_error(exc: OSError) -> str:
    """An operating-system error in one line: the file(s) it names and the system's reason (``strerror``)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    files = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return f"{' -> '.join(files)}: {reason}" if files else reason


def _dispatch(component: Component, prog: str, argv: Sequence[str], summary: str) -> Any:
    if isinstance(component, Mapping):
        commands: Dict[str, Command] = {name: _as_command(name, entry) for name, entry in component.items()}
        if not argv or argv[0] in ("-h", "--help"):
            raise HelpRequested(render_commands(commands, prog, summary))
        name, rest = argv[0], list(argv[1:])
        if name not in commands:
            raise InputError(f"{prog}: unknown command {name!r}; commands: {', '.join(commands)}")
        command, prog = commands[name], f"{prog} {name}"
    else:
        command, rest = _as_command(prog, component), list(argv)
    kwargs = parse_arguments(command, rest, prog)
    function = command.function()
    if command.leaves is not None:
        function = leaves_on_interrupt(command.leaves)(function)
    return function(**kwargs)


def run_command(component: Component, name: Optional[str] = None, argv: Optional[Sequence[str]] = None,
                summary: str = "") -> None:
    """Run ``component`` (a function, a :class:`Command`, or a mapping name -> either) as the command ``name`` on
    ``argv`` (default ``sys.argv[1:]``), print its result, and exit as :mod:`~ernievil2torch.cli.outcome` says.

    ``--help`` prints the help to stdout (exit 0). Returns normally after a successful command.
    """
    prog = name or (getattr(component, "__name__", None) if callable(component) else None) or "command"
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        result = _dispatch(component, prog, args, summary)
        text = render_result(result)
        if text is not None:
            print(text)
        if failed_check(result):
            sys.exit(EXIT_CHECK_FAILED)
    except HelpRequested as shown:
        print(str(shown), end="")
    except ErnieViL2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except (CommandInterrupted, KeyboardInterrupt) as exc:
        print(str(exc) if isinstance(exc, CommandInterrupted) else "interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Exception:  # noqa: BLE001 - a bug: show everything
        traceback.print_exc()
        print("internal error: this is a bug in ernievil2torch; please report it with the traceback above",
              file=sys.stderr)
        sys.exit(EXIT_INTERNAL_ERROR)
