"""How far a running cell is, said while it runs: epochs of a train cell, batches of an
attack cell, with samples/s and an ETA, at most every few seconds.

A :class:`Reporter` hands each report to a sink (a train or attack cell writes it to the
store, :meth:`storage.ArtifactStore.set_progress`, where ``advgrid status`` and every
driver's progress bar read it). A report is never worth failing a cell for: a sink that
raises is logged and dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]
EVERY_S = 2.0  # the shortest time between two reports (the last one is always made)

# where the training loops of a defense's parts (a generator, an autoencoder) report, set by
# the train cell around them: those loops are reached through their recipes' fit, which
# does not pass a sink along
_SINK: ContextVar[Sink | None] = ContextVar("advgrid_progress_sink", default=None)


@contextmanager
def reporting(sink: Sink | None) -> Iterator[None]:
    """Make ``sink`` the :func:`current` one inside the block."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def current() -> Sink | None:
    """The sink :func:`reporting` set here; None outside one."""
    return _SINK.get()


class Reporter:
    """Throttled progress in ``unit`` s (``epoch``, ``batch``) out of ``of``.

    Args:
        sink: Where reports go; None: nowhere (every call is a no-op).
        unit: What is counted.
        of: How many of them the cell has.
        start: How many were done before this run (a resumed cell): the rate and the ETA
            count only what this run did.
    """

    def __init__(self, sink: Sink | None, unit: str, of: int, start: float = 0.0) -> None:
        self.sink, self.unit, self.of, self.start = sink, unit, of, start
        self.began = self.last = time.monotonic()
        self.samples = 0

    def __call__(self, done: float, samples: int = 0, *, final: bool = False, **extra: Any) -> None:
        """``done`` units so far (a fraction within one), ``samples`` more since the last
        call, and anything else worth showing (``loss``, ``accuracy``)."""
        self.samples += samples
        now = time.monotonic()
        if self.sink is None or (not final and now - self.last < EVERY_S):
            return
        self.last = now
        elapsed = max(now - self.began, 1e-9)
        rate = (done - self.start) / elapsed
        report = {
            "unit": self.unit,
            "done": round(done, 4),
            "of": self.of,
            "samples_per_s": round(self.samples / elapsed, 1),
            "eta_s": round((self.of - done) / rate, 1) if rate > 0 else None,
            "elapsed_s": round(elapsed, 1),
            **extra,
        }
        try:
            self.sink(report)
        except Exception as exc:  # a progress report never fails a cell
            log.warning("progress report dropped: %s", exc)
            self.sink = None
