"""The house's shape: no import cycle, no module importing its own package back, every
module importable on its own, and no module over 400 lines in the three packages."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "tasks", "storage")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Dotted name → file of every module in the three packages (migrations aside: Alembic
    loads those files by path, never by import)."""
    found = {}
    for package in PACKAGES:
        for f in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in f.parts:
                continue
            parts = f.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return found


MODULES = _modules()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imported(name: str, path: Path) -> set[str]:
    """The modules of :data:`MODULES` that ``name`` imports, anywhere in the file:
    functions and ``TYPE_CHECKING`` blocks included (a cycle there is still a knot).

    ``from package import module`` is an edge to the module; ``from package import name``
    of anything else is an edge to the package's ``__init__``, whose names it needs."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = _package_of(name, path).split(".")[: -node.level + 1 or None]
                base = ".".join([*up, base] if base else up)
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = [t if t in MODULES else base for t in subs]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _without_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without a module's edges to the packages above it (reported apart)."""
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}


def test_no_import_cycle() -> None:
    assert _cycles(_without_parents(GRAPH)) == []


def test_no_module_imports_a_package_above_it() -> None:
    """A package's ``__init__`` imports its modules (registration, re-exports); a module
    that takes a name from it back (``from tasks.defenses import DEFENSES`` inside
    ``tasks/defenses/``) sits in a cycle that only import order resolves. Importing a
    sibling module through the package (``from tasks import datasets``) is no such name."""
    back = {m: sorted(t for t in ts if m.startswith(t + ".")) for m, ts in GRAPH.items()}
    assert {m: ts for m, ts in back.items() if ts} == {}


def test_no_module_over_the_limit() -> None:
    sizes = {m: len(f.read_text().splitlines()) for m, f in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_the_checks_see_what_they_look_for() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "p.m": {"p"}, "p": {"p.m"}}
    assert _cycles(_without_parents(graph)) == [["a", "b", "c"]]
    assert _cycles(graph) == [["a", "b", "c"], ["p", "p.m"]]


def _third_party() -> list[str]:
    """The top-level packages outside the standard library that advgrid's modules import."""
    names = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return sorted(names - set(PACKAGES) - set(sys.stdlib_module_names) - {"__future__"})


# one parent imports the third-party libraries once, then forks a child per module, which
# imports that module alone: a fresh interpreter as far as advgrid's own modules go
_FORKER = textwrap.dedent(
    """
    import importlib, os, sys
    shared, ours = sys.argv[1].split(","), sys.argv[2:]
    for name in shared:
        importlib.import_module(name)
    failed, running = [], {}
    for name in ours:
        if len(running) >= (os.cpu_count() or 1):
            pid, status = os.wait()
            if status:
                failed.append(running[pid])
            del running[pid]
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(name)
            except BaseException as exc:
                sys.stderr.write(f"{name}: {type(exc).__name__}: {exc}\\n")
                sys.stderr.flush()
                os._exit(1)
            os._exit(0)
        running[pid] = name
    for pid, name in running.items():
        if os.waitpid(pid, 0)[1]:
            failed.append(name)
    sys.stdout.write(" ".join(failed))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_on_its_own() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _FORKER,
            ",".join(_third_party()),
            *sorted(m for m in MODULES if not m.endswith("__main__")),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], done.stderr


def test_no_test_module_sets_torch_threads_when_imported() -> None:
    """A thread count set at import lasts for every test after it: results would depend on
    which modules were collected. The ``one_thread`` fixture sets and restores it."""
    setting = [
        str(f.relative_to(ROOT))
        for f in sorted((ROOT / "tests").rglob("*.py"))
        if any(line.startswith("torch.set_num_threads(") for line in f.read_text().splitlines())
    ]
    assert setting == []


def _imported_names(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from advgrid-module import name`` in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        ours = isinstance(node, ast.ImportFrom) and node.module and not node.level
        if ours and node.module.split(".")[0] in PACKAGES:
            out += [(node.module, a.name) for a in node.names]
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")  # __version__ is public


def test_no_module_takes_another_modules_private_names() -> None:
    taken = {
        m: [f"{mod}.{name}" for mod, name in _imported_names(f) if _private(name)]
        for m, f in MODULES.items()
    }
    assert {m: names for m, names in taken.items() if names} == {}


def test_only_the_cli_package_and_main_module_import_the_main_group() -> None:
    allowed = {"orchestrator.cli", "orchestrator.__main__"}
    users = [
        m
        for m, f in MODULES.items()
        if m not in allowed
        and ("orchestrator.cli", "main") in _imported_names(f)
        or m not in allowed
        and ("orchestrator.cli.app", "main") in _imported_names(f)
    ]
    assert users == []
