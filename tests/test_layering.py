"""Imports point down: orchestrator → tasks → storage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"storage": {"orchestrator", "tasks"}, "tasks": {"orchestrator"}, "orchestrator": set()}
# inside orchestrator/: cli on top of everything, report over views, run over study
INNER = {
    "study": {"run", "views", "report", "cli"},
    "views": {"study", "run", "report", "cli"},
    "run": {"views", "report", "cli"},
    "report": {"study", "run", "cli"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found in {package}/"
    bad = {str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files}
    assert {f: v for f, v in bad.items() if v} == {}


def _inner_imports(path: Path) -> set[str]:
    """The packages of ``orchestrator`` (``study``, ``run``…) that ``path`` imports from."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        names |= {m.split(".")[1] for m in modules if m.startswith("orchestrator.")}
    return names


@pytest.mark.parametrize("package", sorted(INNER))
def test_orchestrator_packages_point_down(package: str) -> None:
    files = sorted((ROOT / "orchestrator" / package).rglob("*.py"))
    assert files, f"no modules found in orchestrator/{package}/"
    bad = {str(f.relative_to(ROOT)): sorted(_inner_imports(f) & INNER[package]) for f in files}
    assert {f: v for f, v in bad.items() if v} == {}


def test_the_check_sees_violations(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import orchestrator.cli\nfrom tasks import cells\n")
    assert _imports(sample) == {"orchestrator", "tasks"}


def test_the_inner_check_sees_violations(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("from orchestrator.run import driver\nimport orchestrator.views.render\n")
    assert _inner_imports(sample) == {"run", "views"}
