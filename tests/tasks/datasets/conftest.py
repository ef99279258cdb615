"""A local HTTP server for the download tests: the machine's own, no network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tasks.datasets.serving import Served, serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """An empty folder served over HTTP; tests put the files to download in it."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serve(folder) as state:
        yield state
