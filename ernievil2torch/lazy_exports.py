"""Public names of a package imported on first use (PEP 562), so importing the package stays cheap."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Mapping, Tuple


def lazy_exports(package: str, namespace: Dict[str, Any],
                 table: Mapping[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` whose public name ``N`` lives in its submodule
    ``table[N]`` (relative to the package): the submodule is imported when ``N`` is first read, and ``N`` is then
    cached in ``namespace`` (the package's ``globals()``). An unknown name raises :class:`AttributeError`."""

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
