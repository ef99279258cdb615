"""The run loop: plan, record, claim, submit, commit, repeat — resumable at every step.

Everything a run learns goes to the SQL index first; the loop keeps only what is in flight.
A cell is claimed with a lease before it is submitted; a heartbeat thread extends the leases
of in-flight cells; a result is committed only while its lease token is still valid. If
this process dies, its leases expire (or, on this host, are released at once when the next
run sees the owning process is gone) and the next run picks the cells up.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from rich.console import Console

from orchestrator.config import Settings
from orchestrator.errors import AdvgridError
from orchestrator.run.executor import Executor
from orchestrator.run.inline_executor import InlineExecutor
from orchestrator.run.leasing import Heartbeat, owner_id, release_dead_local_owners
from orchestrator.run.progress import RunProgress
from orchestrator.run.tracking import Tracker
from orchestrator.study.plan import Plan, PlannedCell, canonical_json
from storage import (
    ArtifactRecord,
    ArtifactStore,
    ClaimedCell,
    Database,
    DatabaseUnavailableError,
    NewCell,
    StorageError,
    __version__,
)
from storage.enums import CellState, Outcome
from tasks.cells import CELL_KINDS, CellPayload

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Summary:
    """What one ``advgrid run`` did."""

    study: str
    planned: dict[str, int]
    new_cells: int
    to_run: int
    ran: int = 0
    done: int = 0
    failed: int = 0
    dropped: int = 0
    blocked: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        bad = {CellState.FAILED, CellState.QUARANTINED, CellState.PENDING, CellState.RUNNING}
        return not any(n for states in self.counts.values() for s, n in states.items() if s in bad)


GROUP_MAX = 16  # transfer cells of one adversarial set sent to one worker as one task


def _group_key(cell_id: int, payload: dict) -> tuple:
    """Transfer cells that read the same adversarial set share a key; others are alone.

    A group runs as one task on one worker: the set is read once and a transfer cell (a
    forward pass over the slice) does not pay a task's scheduling cost on its own.
    """
    role = CELL_KINDS[payload["kind"]].group_by
    if role is not None:
        return (payload["kind"], payload["inputs"][role])
    return ("cell", cell_id)


class DatabaseLostError(AdvgridError):
    """The database stayed unreachable for longer than ``execution.db_retry_seconds``."""


class Driver:
    """Runs one study's plan to completion on an executor."""

    def __init__(
        self,
        plan: Plan,
        settings: Settings,
        db: Database,
        *,
        max_inflight: int | None = None,
        console: Console | None = None,
        mlflow: bool = True,
        file_digests: dict[str, str] | None = None,
    ) -> None:
        self.plan, self.settings, self.db = plan, settings, db
        self.study = plan.study
        self.execution = self.study.file.execution
        self.max_inflight = max_inflight or self.execution.max_inflight or 0
        self.executor: Executor = InlineExecutor()
        self.console = console or Console(stderr=True, quiet=True)
        self.mlflow = mlflow
        self.owner = owner_id()
        self.cells = plan.by_key()
        self.keys = set(self.cells)  # what a claim may take: this plan's cells
        self.inflight: dict[int, tuple[ClaimedCell, PlannedCell]] = {}
        self.artifacts: dict[str, dict[str, str]] = {}
        self.file_digests = dict(file_digests or {})
        self.store = ArtifactStore(settings.store_root)

    def prepare(self, *, retry_failed: bool = False) -> tuple[int, Summary]:
        """Record the study and its cells; returns the study id and a summary so far."""
        row = self.db.upsert_study(
            self.study.name,
            self.study.shareable_text,
            self.study.spec_hash,
            getpass.getuser(),
            __version__,
        )
        new = self.db.add_cells(
            row.id,
            (
                NewCell(c.key, c.kind, canonical_json(c.spec), list(c.depends_on))
                for c in self.plan.cells
            ),
        )
        if retry_failed:
            self.db.retry_quarantined(row.id)
        release_dead_local_owners(self.db, row.id)
        done = self.db.cells(row.id, state=CellState.DONE)
        self.artifacts = {c.key: dict(c.artifacts) for c in done}
        done_keys = {c.key for c in done}
        to_run = sum(1 for c in self.plan.cells if c.key not in done_keys)
        summary = Summary(self.study.name, self.plan.counts(), new, to_run)
        return row.id, summary

    def run(self, study_id: int, summary: Summary, executor: Executor) -> Summary:
        """Run every runnable cell of the plan on ``executor`` until none is left."""
        start = time.perf_counter()
        self.executor = executor
        kinds = {c.kind for c in self.plan.cells}
        needs = [self.execution.resources_for(k).model_dump() for k in sorted(kinds)]
        self.max_inflight = self.max_inflight or executor.default_inflight(needs)
        tracker = (
            Tracker.launch(self.settings, self.study, self.db, study_id) if self.mlflow else None
        )
        beat = Heartbeat(self.db, self.execution.lease_seconds)
        beat.start()
        try:
            with RunProgress(self.console, summary.to_run, self.settings.store_root) as progress:
                self._loop(study_id, summary, beat, tracker, progress)
        except DatabaseLostError:
            self.executor.cancel_all()  # their leases expire; the database cannot be told
            self.inflight.clear()
            raise
        except BaseException:
            self._release_inflight()
            raise
        finally:
            beat.stopped.set()
            if tracker is not None:
                tracker.close(self.console)
        summary.counts = self._db("counting cells", self.db.counts, study_id)
        summary.elapsed_s = time.perf_counter() - start
        return summary

    def _loop(
        self,
        study_id: int,
        summary: Summary,
        beat: Heartbeat,
        tracker: Tracker | None,
        progress: RunProgress,
    ) -> None:
        quiet = 0  # consecutive looks that found nothing to claim and nothing running
        while True:
            claimed = self._fill(study_id, beat)
            if not self.inflight and not claimed:
                if self._db("checking other drivers", self._others_running, study_id):
                    quiet = 0
                    time.sleep(min(2.0, self.execution.lease_seconds / 4))
                    continue
                # on PostgreSQL another driver's claim that has not committed yet hides its
                # cells from our claim (SKIP LOCKED) and from the running count alike: look
                # once more. SQLite claims wait for each other, so one look is enough.
                quiet += 1
                if quiet >= 2 or self.db.dialect != "postgresql":
                    break
                time.sleep(0.5)
                continue
            quiet = 0
            for outcome in self.executor.poll(timeout=0.5):
                cell, planned = self.inflight.pop(outcome.cell_id)
                with beat.lock:
                    beat.tokens.discard(cell.token)
                self._commit(cell, outcome, summary, tracker)
                progress.update(summary, running=len(self.inflight))
            progress.update(summary, running=len(self.inflight))
            progress.cells({c.key: p.kind for c, p in self.inflight.values()})
        pending = self._db(
            "listing blocked cells", self.db.cells, study_id, state=CellState.PENDING
        )
        summary.blocked = [c.key for c in pending if c.key in self.cells]

    def _fill(self, study_id: int, beat: Heartbeat) -> int:
        free = self.max_inflight - len(self.inflight)
        if free <= 0:
            return 0
        claimed = self._db(
            "claiming cells",
            self.db.claim,
            study_id,
            self.owner,
            free,
            self.execution.lease_seconds,
            self.execution.max_attempts,
            keys=self.keys,
        )
        groups: dict[tuple, list[tuple[int, dict]]] = {}
        for cell in claimed:
            planned = self.cells[cell.key]
            self.inflight[cell.id] = (cell, planned)
            with beat.lock:
                beat.tokens.add(cell.token)
            try:
                payload = self._db("reading inputs", self._payload, study_id, planned)
            except DatabaseLostError:
                raise
            except AdvgridError as exc:
                self.inflight.pop(cell.id)
                self._db(
                    "recording a failure",
                    self.db.fail,
                    cell.id,
                    cell.token,
                    error=str(exc),
                    worker=self.owner,
                    max_attempts=self.execution.max_attempts,
                )
                continue
            groups.setdefault(_group_key(cell.id, payload), []).append((cell.id, payload))
        for group in groups.values():
            for part in range(0, len(group), GROUP_MAX):
                ids, payloads = zip(*group[part : part + GROUP_MAX], strict=True)
                kind = payloads[0]["kind"]
                resources = self.execution.resources_for(kind).model_dump()
                self.executor.submit_group(list(ids), list(payloads), resources)
        return len(claimed)

    def _others_running(self, study_id: int) -> bool:
        counts = self.db.counts(study_id)
        return any(states.get(CellState.RUNNING, 0) for states in counts.values())

    def _payload(self, study_id: int, cell: PlannedCell) -> dict:
        inputs = {}
        for role, src in cell.inputs.items():
            if src[0] == "file":
                inputs[role] = self.file_digests[src[1]]
                continue
            key, dep_role = src[1], src[2]
            if key not in self.artifacts:
                found = self.db.artifacts_of(study_id, [key], dep_role)
                self.artifacts[key] = {dep_role: found[key]} if key in found else {}
            if dep_role not in self.artifacts[key]:
                raise AdvgridError(
                    f"input {role!r} of cell {cell.key[:12]}: dependency "
                    f"{key[:12]} has no {dep_role!r} artifact"
                )
            inputs[role] = self.artifacts[key][dep_role]
        # typed here (the spec as the planner typed it), so a payload no worker could read
        # fails its cell before it is sent; what travels is the plain dict (Ray pickles it,
        # tasks.cells reads it back)
        return CellPayload(
            key=cell.key,
            kind=cell.kind,
            spec=cell.typed,
            inputs=inputs,
            store=self.settings.store_root,
            batch_size=self.execution.batch_size,
            channels_last=self.execution.channels_last,
            allow_imports=self.study.file.allow_imports,
            num_cpus=self.execution.resources_for(cell.kind).num_cpus,
            data_workers=self.execution.data_workers,
            checkpoint_every=self.execution.checkpoint_every,
            checkpoint_minutes=self.execution.checkpoint_minutes,
        ).wire()

    def _commit(
        self, cell: ClaimedCell, outcome, summary: Summary, tracker: Tracker | None
    ) -> None:
        summary.ran += 1
        result = outcome.result
        # an error the cell says recurs on every attempt (bad input) is not retried
        recurring = outcome.error is None and bool(result and result.get("recurs"))
        error = outcome.error if outcome.error is not None else self._missing(result)
        if recurring:
            error = str(result["error"])
        if error is not None:
            state = self._db(
                "recording a failure",
                self.db.fail,
                cell.id,
                cell.token,
                error=error,
                worker="?",
                max_attempts=1 if recurring else self.execution.max_attempts,
            )
            summary.failed += 1
            log.warning(
                "cell %s (%s) failed: %s",
                cell.key[:12],
                cell.kind,
                error.strip().splitlines()[-1] if error.strip() else "",
            )
            if state is None:
                summary.dropped += 1
            return
        records = {role: ArtifactRecord(**rec) for role, rec in result["artifacts"].items()}
        ok = self._db(
            "recording a result",
            self.db.complete,
            cell.id,
            cell.token,
            metrics=result["metrics"],
            artifacts=records,
            duration_s=result["duration_s"],
            worker=result["worker"],
            notes=result.get("notes", ()),
        )
        if not ok:
            summary.dropped += 1
            log.warning("cell %s: lease lost before commit; result dropped", cell.key[:12])
            return
        summary.done += 1
        self.artifacts[cell.key] = {role: r.digest for role, r in records.items()}
        if tracker is not None:
            tracker.enqueue(cell.id)

    def _missing(self, result: dict | None) -> str | None:
        """An error text if an artifact the worker reported is not in the store.

        A row must never point at a missing file: a worker whose store differs from the
        driver's (a misconfigured mount) fails its cell here instead.
        """
        if result is None:
            return None
        for role, rec in result.get("artifacts", {}).items():
            try:
                present = self.store.exists(rec["digest"])
            except StorageError as exc:  # not a digest, or the store cannot be reached
                return f"artifact {role!r} reported by the worker: {exc}"
            if not present:
                return (
                    f"artifact {role!r} ({rec['digest'][:12]}) reported by worker "
                    f"{result.get('worker', '?')} is not in the store {self.store.location()}: "
                    "is the artifact root the same path on every worker?"
                )
        return None

    def _db(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Call ``fn`` and retry while the database is unreachable, with backoff.

        Each call is one transaction, rolled back when the connection drops, so a retry
        never half-writes; a commit whose acknowledgement was lost is harmless to repeat
        (``complete`` recognises its own result). After ``execution.db_retry_seconds``
        the run stops with :class:`DatabaseLostError`.
        """
        limit = self.execution.db_retry_seconds
        deadline, delay = time.monotonic() + limit, 0.5
        while True:
            try:
                return fn(*args, **kwargs)
            except DatabaseUnavailableError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DatabaseLostError(
                        f"lost the database {self.db.masked_url} while {what} and it did not "
                        f"come back within {limit:g} s (execution.db_retry_seconds): {exc}\n"
                        f"Stopped; {len(self.inflight)} cells in flight were not recorded. "
                        "Run the same command again to resume once the database is back."
                    ) from exc
                log.warning("database unreachable while %s; retrying in %.1f s", what, delay)
                time.sleep(min(delay, left))
                delay = min(delay * 2, 10.0)

    def _release_inflight(self) -> None:
        self.executor.cancel_all()
        for cell, _ in self.inflight.values():
            try:
                self.db.release(cell.id, cell.token, outcome=Outcome.KILLED)
            except Exception:
                log.warning("could not release cell %s", cell.key[:12], exc_info=True)
        self.inflight.clear()
