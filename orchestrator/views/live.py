"""The running cells of a study and how far each is: what each last reported to the store
(:mod:`tasks.progress`), wherever its driver and worker are."""

from __future__ import annotations

import json
from typing import Any

from storage import ArtifactStore, Database
from storage.enums import CellState
from storage.errors import StorageError


def running(db: Database, study_id: int, store_root: str) -> list[dict[str, Any]]:
    """Each running cell of the study: key, kind, what it works on, its worker, and its last
    progress report (None before its first, or when the store cannot be read)."""
    store = ArtifactStore(store_root)
    out = []
    for cell in db.cells(study_id, state=CellState.RUNNING):
        try:
            report = store.progress(cell.key)
        except StorageError:
            report = None
        out.append(
            {
                "cell_key": cell.key,
                "kind": cell.kind,
                "what": _what(cell.kind, json.loads(cell.spec_json)),
                "worker": cell.worker or cell.lease_owner,
                "progress": report,
            }
        )
    return out


def _what(kind: str, spec: dict[str, Any]) -> str:
    if kind == "train":
        return str(spec.get("model", {}).get("name", "?"))
    if kind in ("attack", "transfer"):
        defense = spec.get("defense", {}).get("label", "none")
        target = f" → {spec['target']}" if kind == "transfer" else ""
        return (
            f"{spec.get('attack', {}).get('name', '?')} on {spec.get('source')}+{defense}{target}"
        )
    return kind


def describe(row: dict[str, Any]) -> str:
    """One line: ``train cnn (3fa9c2e1b0a4) on host:1:ab: epoch 2.4 of 4, loss 0.412, …``."""
    head = f"{row['kind']} {row['what']} ({row['cell_key'][:12]})"
    if row.get("worker"):
        head += f" on {row['worker']}"
    p = row.get("progress")
    if not p:
        return f"{head}: no progress reported yet"
    parts = [f"{p.get('unit', 'step')} {_num(p.get('done'))} of {p.get('of')}"]
    for name in ("loss", "accuracy"):
        if isinstance(p.get(name), int | float):
            parts.append(f"{name} {p[name]:.3f}")
    if p.get("samples_per_s"):
        parts.append(f"{p['samples_per_s']:.0f} samples/s")
    if p.get("eta_s") is not None:
        parts.append(f"ETA {_duration(float(p['eta_s']))}")
    said = f" (said {_duration(float(p['age_s']))} ago)" if "age_s" in p else ""
    return f"{head}: {', '.join(parts)}{said}"


def _num(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}"
    return str(int(value)) if isinstance(value, int | float) else str(value)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
