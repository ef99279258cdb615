"""advgrid's driver side: study files, runs, views of the index, reports and the CLI."""

from storage.version import __version__

VERSION = __version__
"""advgrid's version (the package metadata's), as studies record it."""
