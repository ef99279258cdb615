"""One version, from the package metadata, everywhere advgrid states it."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from storage import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_version_is_the_installed_packages() -> None:
    assert __version__ == metadata.version("advgrid")
    declared = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared is not None
    assert __version__ == declared.group(1)


def test_no_module_writes_the_version_itself() -> None:
    written = [
        str(f.relative_to(ROOT))
        for package in ("orchestrator", "tasks", "storage")
        for f in (ROOT / package).rglob("*.py")
        if f'"{__version__}"' in f.read_text()
    ]
    assert written == []


def test_cli_version_is_the_same(cli) -> None:
    result = cli("--version")
    assert result.output == f"advgrid, version {__version__}\n"
