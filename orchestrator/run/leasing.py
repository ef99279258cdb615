"""Lease owners: who holds a cell's lease (``host:pid:nonce``), the heartbeat that renews the
leases of cells in flight, and releasing the leases of dead processes on this host."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from storage import Database

log = logging.getLogger(__name__)


def owner_id() -> str:
    """``host:pid:nonce`` — lets a later run on this host see that the owner is gone."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_dead_local_owners(db: Database, study_id: int) -> int:
    """Expire leases held by processes of this host that no longer exist."""
    host, dead = socket.gethostname(), []
    for owner in db.running_owners(study_id):
        parts = owner.split(":")
        local = len(parts) == 3 and parts[0] == host and parts[1].isdigit()
        if local and not _pid_alive(int(parts[1])):
            dead.append(owner)
    return db.expire_leases(study_id, dead) if dead else 0


class Heartbeat(threading.Thread):
    """Extends the leases of in-flight cells every ``lease_s / 4`` seconds."""

    def __init__(self, db: Database, lease_s: float) -> None:
        super().__init__(name="advgrid-heartbeat", daemon=True)
        self.db, self.lease_s = db, lease_s
        self.tokens: set[str] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_s / 4):
            with self.lock:
                tokens = list(self.tokens)
            if tokens:
                try:
                    self.db.heartbeat(tokens, self.lease_s)
                except Exception:  # a missed beat is retried; the lease has slack
                    log.warning("lease heartbeat failed; retrying", exc_info=True)
