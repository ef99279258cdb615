"""MLflow as a view of the SQL index, written off the driver's critical path.

One experiment per study (``advgrid/<study>``), one parent run per study and one child run
per done cell, with flattened params, metrics and the tags ``advgrid.cell_key``,
``advgrid.kind`` and ``advgrid.study``. A background thread logs each cell after its SQL
commit and stores the run id; cells done but never logged (a crash, MLflow down) form an
outbox that the next run drains. Before logging, existing child runs are matched by their
cell-key tag, so a crash between MLflow and the SQL update never makes a second run.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from typing import Any

from rich.console import Console

from orchestrator.config import Settings
from orchestrator.study.schema import Study
from storage import Database

log = logging.getLogger(__name__)

_STOP = object()


def experiment_name(study: str) -> str:
    return f"advgrid/{study}"


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """``{"attack": {"params": {"eps": 0.1}}}`` → ``{"attack.params.eps": "0.1"}``."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    text = json.dumps(value) if isinstance(value, list | bool) or value is None else str(value)
    return {prefix: text[:6000]}


class Tracker(threading.Thread):
    """Logs done cells to MLflow from a queue of cell keys."""

    def __init__(self, settings: Settings, study: Study, db: Database, study_id: int) -> None:
        super().__init__(name="advgrid-mlflow", daemon=True)
        self.settings, self.study, self.db, self.study_id = settings, study, db, study_id
        self.queue: queue.Queue = queue.Queue()
        self.logged = 0
        self.error: str | None = None

    @classmethod
    def launch(cls, settings: Settings, study: Study, db: Database, study_id: int) -> Tracker:
        tracker = cls(settings, study, db, study_id)
        threading.Thread.start(tracker)
        return tracker

    def enqueue(self, cell_id: int) -> None:
        self.queue.put(cell_id)

    def close(self, console: Console | None = None, timeout: float = 600) -> None:
        """Wait until every queued cell is logged (or MLflow has failed)."""
        self.queue.put(_STOP)
        self.join(timeout)
        if self.error and console is not None:
            console.print(
                f"[yellow]MLflow logging stopped: {self.error}; "
                "the cells left will be logged by the next run."
            )

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # MLflow is a view: never fail the study because of it
            log.warning("MLflow logging failed", exc_info=True)
            self.error = f"{type(exc).__name__}: {exc}"

    def _run(self) -> None:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # no "View run … at http://…" line per cell when logging to a tracking server
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.settings.mlflow_uri)
        exp_id = self._experiment(client)
        parent = self._parent(client, exp_id)
        existing = self._existing(client, exp_id)
        for cell in self.db.unlogged_done(self.study_id):
            self._log(client, exp_id, parent, cell, existing)
        cells_by_id: dict[int, Any] = {}
        while (item := self.queue.get()) is not _STOP:
            if item not in cells_by_id:
                cells_by_id = {c.id: c for c in self.db.unlogged_done(self.study_id)}
            cell = cells_by_id.pop(item, None)
            if cell is not None:
                self._log(client, exp_id, parent, cell, existing)
        client.set_terminated(parent)

    def _experiment(self, client: Any) -> str:
        name = experiment_name(self.study.name)
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        tags = {"advgrid.study": self.study.name}
        if self.settings.mlflow_uri.startswith(("http://", "https://", "databricks")):
            # a tracking server has its own artifact store: let it place the artifacts
            return client.create_experiment(name, tags=tags)
        location = f"file://{self.settings.mlflow_artifacts}"
        return client.create_experiment(name, artifact_location=location, tags=tags)

    def _parent(self, client: Any, exp_id: str) -> str:
        runs = client.search_runs(
            [exp_id], filter_string="tags.`advgrid.role` = 'study'", max_results=1
        )
        if runs:
            return runs[0].info.run_id
        run = client.create_run(
            exp_id,
            run_name=self.study.name,
            tags={"advgrid.role": "study", "advgrid.study": self.study.name},
        )
        client.log_text(run.info.run_id, self.study.shareable_text, "study.yaml")
        return run.info.run_id

    def _existing(self, client: Any, exp_id: str) -> dict[str, str]:
        found, token = {}, None
        while True:
            page = client.search_runs(
                [exp_id],
                filter_string="tags.`advgrid.role` = 'cell'",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                found[run.data.tags.get("advgrid.cell_key", "")] = run.info.run_id
            token = page.token
            if not token:
                return found

    def _history(self, cell: Any) -> list[dict[str, float]]:
        """A train cell's per-epoch records (training loss and accuracy, learning rate), from
        its checkpoint's metadata: MLflow gets them as step metrics ``epoch/…``."""
        digest = cell.artifacts.get("checkpoint") if cell.kind == "train" else None
        if digest is None:
            return []
        from storage import ArtifactStore
        from storage.artifacts import metadata
        from storage.errors import StorageError

        try:
            meta = metadata(ArtifactStore(self.settings.store_root).read_bytes(digest))
        except (StorageError, ValueError):
            return []
        return [e for e in meta.get("history") or [] if isinstance(e, dict) and "epoch" in e]

    def _log(self, client: Any, exp_id: str, parent: str, cell: Any, existing: dict) -> None:
        from mlflow.entities import Metric, Param

        run_id = existing.get(cell.key)
        if run_id is None:
            spec = json.loads(cell.spec_json)
            tags = {
                "mlflow.parentRunId": parent,
                "advgrid.role": "cell",
                "advgrid.cell_key": cell.key,
                "advgrid.kind": cell.kind,
                "advgrid.study": self.study.name,
            }
            label = spec.get("source") or spec.get("model", {}).get("name", "")
            run = client.create_run(
                exp_id, run_name=f"{cell.kind}:{label}:{cell.key[:8]}", tags=tags
            )
            run_id = run.info.run_id
            now = int(time.time() * 1000)
            params = [Param(k, v) for k, v in flatten(spec).items()]
            metrics = [Metric(k, float(v), now, 0) for k, v in cell.metrics.items()]
            metrics += [
                Metric(f"epoch/{name}", float(value), now, int(entry["epoch"]))
                for entry in self._history(cell)
                for name, value in entry.items()
                if name != "epoch"
            ]
            for i in range(0, max(len(params), len(metrics)), 100):
                client.log_batch(run_id, metrics=metrics[i : i + 100], params=params[i : i + 100])
            client.set_terminated(run_id)
            existing[cell.key] = run_id
        self.db.set_mlflow_run_id(cell.id, run_id)
        self.logged += 1
