"""SIGKILL for Ray worker processes running advgrid cells, found by their process title."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path


def cell_workers() -> list[int]:
    """PIDs of Ray workers executing a cell right now (title ``ray::advgrid:KIND:KEY``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::advgrid:"):
            pids.append(int(proc.name))
    return pids


def kill_one_worker(rng: random.Random) -> int | None:
    """SIGKILL one randomly chosen cell worker; its PID, or None if none was running."""
    pids = cell_workers()
    if not pids:
        return None
    pid = rng.choice(pids)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return pid
