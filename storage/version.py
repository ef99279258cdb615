"""advgrid's version, read once from the installed package's metadata (``pyproject.toml``).

Studies record it as ``advgrid_version`` and artifacts as ``code_version``; it is written
nowhere else, so a release changes one line.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("advgrid")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
