"""A folder served over HTTP by a thread of the test process: the download tests' network."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Served:
    """A folder served over HTTP: ``url`` is its root; ``requests`` the paths asked for."""

    folder: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)


@contextmanager
def serve(folder: Path) -> Iterator[Served]:
    """Serve ``folder`` on 127.0.0.1 (a free port) until the block ends."""
    state = Served(folder)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the API's name)
            return

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
