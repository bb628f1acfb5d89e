"""The package's shape, read from the source with ``ast`` (nothing is imported): layers that depend one way.

Every ``import`` counts, function-local ones included. The layers, lowest first, are listed in ``LAYERS``; a module
may import its own component and the components of lower layers only, never the CLI, and never a private name of
another module. Optional heavy dependencies stay inside the one component that needs them.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = "ernievil2torch"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Lowest first. A component is a root module or a subpackage; same-rank components may not import each other.
LAYERS: List[Tuple[str, ...]] = [
    ("errors", "constants", "lazy_exports"),
    ("config",),
    ("storage",),
    ("modeling",),
    ("processing",),
    ("data",),          # dataset readers and input listings: no model
    ("pretrained", "conversion"),
    ("runtime",),       # batch encoding, progress, process groups
    ("retrieval",),     # metrics, top-k, search back ends
    ("export",),
    ("verify",),
    ("apps", "training"),  # siblings: neither imports the other
    ("cli",),
    ("embed", "finetune"),  # the ``python -m ernievil2torch.embed`` / ``.finetune`` shims: call the CLI
]
RANK = {component: rank for rank, group in enumerate(LAYERS) for component in group}
# Optional heavy dependencies and the components allowed to import them.
OPTIONAL = {"paddle": {"verify"}, "paddlenlp": set(), "transformers": {"export"}, "onnx": {"export"},
            "onnxruntime": {"export"}, "matplotlib": {"apps"}, "tqdm": {"runtime"},
            "faiss": {"retrieval"}, "fastapi": {"apps"}, "uvicorn": {"apps"}, "starlette": {"apps"}, "pydantic": {"apps"},
            "multipart": {"apps"}, "pylopdf_fonts_zh_cn": {"apps"}, "playwright": set(),
            "huggingface_hub": {"config"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def component(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" is the package's own __init__


def resolve(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_package(importer) else importer.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> List[Tuple[str, List[str], int]]:
    """(imported module, names taken from it, line) for every import statement of the module."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, node)
            found.append((target, [alias.name for alias in node.names], node.lineno))
    return found


def project_edges(name: str) -> Set[str]:
    """Project modules this module imports (``from pkg import submodule`` counts as the submodule)."""
    edges = set()
    for target, names, _ in imports(name):
        if target != PACKAGE and not target.startswith(PACKAGE + "."):
            continue
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        edges.update(subs or [target])
        if subs and len(subs) < len(names):
            edges.add(target)
    edges.discard(name)
    return {e for e in edges if e in MODULES}


GRAPH = {name: project_edges(name) for name in MODULES}


def test_modules_are_found():
    assert f"{PACKAGE}.modeling.model" in MODULES and f"{PACKAGE}.cli" in MODULES and len(MODULES) > 20


def test_no_import_cycles():
    state: Dict[str, int] = {}
    stack: List[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layers_depend_one_way():
    problems = []
    for name, edges in GRAPH.items():
        src = component(name)
        if src == "":
            continue  # the package facade re-exports lazily (importlib), nothing to check
        assert src in RANK, f"{name}: component '{src}' is not placed in LAYERS"
        for target in edges:
            dst = component(target)
            if dst == src:
                continue
            if dst == "" or RANK[dst] >= RANK[src]:
                problems.append(f"{name} imports {target} ({src} may only use layers below it)")
    assert not problems, "\n".join(sorted(problems))


def test_no_library_module_imports_the_cli():
    callers = {"cli", "embed", "finetune"}  # the CLI itself and the torchrun shims that call it
    offenders = sorted(f"{n} imports {target}" for n, edges in GRAPH.items() for target in edges
                       if component(target) == "cli" and component(n) not in callers)
    assert not offenders, offenders


SERVICE = f"{PACKAGE}.apps.serve"
#: Components whose modules never import ``verify`` (proofs against references are not a dependency of a tool).
VERIFY_FREE = ("apps", "training")


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_no_batch_app_imports_the_service():
    """Batch tools (everything in ``apps`` but ``apps.serve``) share helpers through lower rooms, not the service."""
    problems = sorted(f"{name} imports {target}" for name, edges in GRAPH.items()
                      if _within(name, f"{PACKAGE}.apps") and not _within(name, SERVICE)
                      for target in edges if _within(target, SERVICE))
    assert not problems, "\n".join(problems)


def test_no_app_or_training_module_imports_verify():
    problems = sorted(f"{name} imports {target}" for name, edges in GRAPH.items() if component(name) in VERIFY_FREE
                      for target in edges if component(target) == "verify")
    assert not problems, "\n".join(problems)


def test_no_private_name_imported_across_modules():
    problems = []
    for name in MODULES:
        for target, names, line in imports(name):
            if target.startswith(PACKAGE) and target != name:
                problems += [f"{name}:{line} imports {target}.{n}" for n in names if n.startswith("_")]
    assert not problems, "\n".join(problems)


def test_optional_dependencies_stay_in_their_component():
    problems = []
    for name in MODULES:
        for target, _, line in imports(name):
            top = target.split(".")[0]
            if top in OPTIONAL and component(name) not in OPTIONAL[top]:
                problems.append(f"{name}:{line} imports {target} (allowed only in {sorted(OPTIONAL[top])})")
    assert not problems, "\n".join(problems)


def test_flat_root_and_subpackages():
    flat = sorted(p.name for p in ROOT.glob("*.py"))
    subpackages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    assert len(flat) <= 8, flat
    assert len(subpackages) >= 3, subpackages


def test_no_module_named_like_the_standard_library():
    stdlib = set(sys.stdlib_module_names)
    clashes = sorted(n for n in MODULES if n.split(".")[-1] in stdlib)
    assert not clashes, clashes


#: The modules that write to the terminal: the command line, and the progress bar (which draws on stderr).
TERMINAL_WRITERS = ("cli", f"{PACKAGE}.runtime.progress")


def terminal_writes(name: str) -> List[Tuple[str, int]]:
    """``print(...)`` calls and ``sys.stdout`` / ``sys.stderr`` uses in a module: (what, line)."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(("print()", node.lineno))
        elif (isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr")
              and isinstance(node.value, ast.Name) and node.value.id == "sys"):
            found.append((f"sys.{node.attr}", node.lineno))
    return found


def test_only_the_cli_writes_to_the_terminal():
    """Library functions return results; the CLI decides what a person sees (progress bars excepted)."""
    problems = [f"{name}:{line} uses {what}" for name in MODULES
                if component(name) not in TERMINAL_WRITERS and name not in TERMINAL_WRITERS
                for what, line in terminal_writes(name)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("bad", ["cycle", "layer", "private", "cli", "optional", "batch_app_service",
                                 "app_verify", "training_verify", "training_apps", "apps_training",
                                 "print"])
def test_the_checks_can_fail(bad, monkeypatch):
    """Each rule above rejects a planted violation (so a green run means the tree obeys it)."""
    fake = {
        "cycle": (f"{PACKAGE}.config", f"{PACKAGE}.apps.similarity"),
        "layer": (f"{PACKAGE}.modeling.model", f"{PACKAGE}.apps.similarity"),
        "cli": (f"{PACKAGE}.apps.similarity", f"{PACKAGE}.cli.runner"),
        "batch_app_service": (f"{PACKAGE}.apps.dedup", f"{PACKAGE}.apps.serve.gallery"),
        "app_verify": (f"{PACKAGE}.apps.similarity", f"{PACKAGE}.verify.synthetic"),
        "training_verify": (f"{PACKAGE}.training", f"{PACKAGE}.verify"),
        "training_apps": (f"{PACKAGE}.training", f"{PACKAGE}.apps.similarity"),  # siblings: neither way
        "apps_training": (f"{PACKAGE}.apps.similarity", f"{PACKAGE}.training"),
    }
    if bad in fake:
        src, dst = fake[bad]
        graph = {k: set(v) for k, v in GRAPH.items()}
        graph[src].add(dst)
        monkeypatch.setitem(globals(), "GRAPH", graph)
        check = {"cycle": test_no_import_cycles, "layer": test_layers_depend_one_way,
                 "cli": test_no_library_module_imports_the_cli,
                 "batch_app_service": test_no_batch_app_imports_the_service,
                 "app_verify": test_no_app_or_training_module_imports_verify,
                 "training_verify": test_no_app_or_training_module_imports_verify,
                 "training_apps": test_layers_depend_one_way, "apps_training": test_layers_depend_one_way}[bad]
    elif bad == "print":
        real_writes = terminal_writes
        monkeypatch.setitem(globals(), "terminal_writes",
                            lambda name: real_writes(name) + ([("print()", 1)] if name.endswith("apps.dedup") else []))
        check = test_only_the_cli_writes_to_the_terminal
    else:
        real = imports
        planted = {"private": (f"{PACKAGE}.conversion.pdparams", ["_short"]), "optional": ("paddle", [])}[bad]

        def with_plant(name):
            extra = [(planted[0], planted[1], 1)] if name == f"{PACKAGE}.modeling.layers" else []
            return real(name) + extra
        monkeypatch.setitem(globals(), "imports", with_plant)
        check = {"private": test_no_private_name_imported_across_modules,
                 "optional": test_optional_dependencies_stay_in_their_component}[bad]
    with pytest.raises(AssertionError):
        check()
