"""The artifact listing of ``advgrid artifacts ls``: one line per indexed artifact."""

from __future__ import annotations

from typing import Any

from orchestrator.views.table import Column, TableView
from storage import ArtifactRecord

# what made an artifact, from its metadata: the model, the attack or the source and target
_ORIGIN = ("model", "source", "target")


def rows(records: list[ArtifactRecord]) -> list[dict[str, Any]]:
    """Each artifact as a plain row (the shape of ``--format json``)."""
    return [
        {
            "digest": r.digest,
            "kind": r.kind,
            "bytes": r.bytes,
            "uri": r.uri,
            **{k: r.meta[k] for k in _ORIGIN if isinstance(r.meta.get(k), str)},
            **(
                {"attack": r.meta["attack"].get("name")}
                if isinstance(r.meta.get("attack"), dict)
                else {}
            ),
        }
        for r in records
    ]


def _origin(row: dict[str, Any]) -> str:
    if "target" in row:
        return f"{row.get('source', '?')}→{row['target']}"
    return row.get("model") or row.get("source") or ""


def table(records: list[ArtifactRecord]) -> TableView:
    """Digest, kind, size, model (or source→target) and attack of every artifact."""
    heads = ("digest", "kind", "size", "model", "attack")
    body = [
        [r["digest"], r["kind"], f"{r['bytes'] / 1e3:.1f} kB", _origin(r), r.get("attack") or ""]
        for r in rows(records)
    ]
    return TableView(
        columns=[Column(h) for h in heads],
        rows=body,
        caption=f"{len(body)} artifacts",
    )
