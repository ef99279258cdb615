"""What ``advgrid report`` shows, gathered from the index, the artifact store and this machine.

Everything here is plain data, no HTML: :func:`collect` returns a :class:`Report` that
:mod:`orchestrator.report.page` renders into one self-contained page.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from orchestrator.report import defended as report_defended
from orchestrator.report import joins as report_joins
from orchestrator.report.environment import Environment, environment
from orchestrator.views import curves, labels, result_rows, transfer
from storage import (
    ArtifactStore,
    CellRow,
    Database,
    StorageError,
    StudyRow,
    mask_secrets,
)
from storage.enums import CellKind, CellState
from storage.table_queries import AttackMetrics
from tasks.errors import TaskError

log = logging.getLogger(__name__)

STATES = tuple(CellState)


@dataclass(frozen=True)
class Failure:
    """A failed or quarantined cell and the last line of its error."""

    kind: str
    key: str
    state: str
    attempts: int
    last_line: str


@dataclass(frozen=True)
class CurveTable:
    """Robustness curves over one x axis: ``rows`` are (dataset, model, attack, values)."""

    axis: str
    xs: list[str]
    rows: list[tuple[str, str, str, list[str]]]
    curves: list[curves.Curve]


@dataclass(frozen=True)
class Sample:
    """One evaluation sample: its clean input and adversarial example, ``(C, H, W)`` in [0, 1]."""

    index: int
    label: int
    pred_clean: int
    pred_adv: int
    success: bool
    clean: torch.Tensor
    adv: torch.Tensor
    defended_clean: torch.Tensor | None = None
    defended_adv: torch.Tensor | None = None
    target_image: torch.Tensor | None = None  # an attack on a generator: the image it aimed at


@dataclass(frozen=True)
class ExampleSet:
    """Examples of one attack cell; ``note`` says why there are none when they could not load.
    ``defended`` names what an input-transform defense made of them (a purifier's images),
    shown beside them when set."""

    title: str
    cell_key: str
    samples: list[Sample] = field(default_factory=list)
    successes: int = 0
    total: int = 0
    note: str | None = None
    defended: str | None = None


@dataclass(frozen=True)
class Report:
    """Everything the page shows, in page order."""

    study: StudyRow
    description: str
    generated_at: datetime
    counts: dict[str, dict[str, int]]
    failures: list[Failure]
    denominator: str
    matrices: list[transfer.Matrix]
    joins: report_joins.Joins
    curve_tables: list[CurveTable]
    attack_rows: list[dict[str, Any]]
    examples: list[ExampleSet]
    environment: Environment


@dataclass(frozen=True)
class Options:
    """What :func:`collect` reads and how much of it.

    Attributes:
        db_url: The index (shown masked).
        store_root: The artifact store's folder or URL.
        denominator: Which adversarial examples a transfer rate counts.
        git_folder: Whose ``git rev-parse HEAD`` the page records.
        example_cells: Show examples of at most this many attack cells (0: none).
        samples: Examples per attack cell, successful ones first.
    """

    db_url: str
    store_root: str
    denominator: str = "source_success"
    git_folder: Path = field(default_factory=Path.cwd)
    example_cells: int = 8
    samples: int = 6


def collect(database: Database, name: str, options: Options) -> Report:
    """Gather the report of study ``name``.

    Raises:
        NotFoundError: No such study (the message lists the known ones).
        StorageError: The index cannot be read.
    """
    study = database.get_study(name)
    cells = database.cells(study.id)
    transfer_counts = database.transfer_counts(study.id, denominator=options.denominator)
    rows = database.attack_metrics(study.id)
    return Report(
        study=study,
        description=_description(study.spec_yaml),
        generated_at=datetime.now(timezone.utc),
        counts=database.counts(study.id),
        failures=failures(cells),
        denominator=options.denominator,
        matrices=transfer.matrices(transfer_counts, options.denominator),
        joins=report_joins.collect(
            database, study.id, options.store_root, with_images=options.example_cells
        ),
        curve_tables=[t for axis in curves.X_AXES if (t := curve_table(rows, axis))],
        attack_rows=[attack_row(c) for c in cells if c.kind == CellKind.ATTACK],
        examples=examples(cells, options),
        environment=environment(
            cells,
            git_folder=options.git_folder,
            db_url=options.db_url,
            store_root=options.store_root,
        ),
    )


def _description(spec_yaml: str) -> str:
    try:
        doc = yaml.safe_load(spec_yaml)
    except yaml.YAMLError:
        return ""
    return str(doc.get("description") or "") if isinstance(doc, dict) else ""


def failures(cells: list[CellRow]) -> list[Failure]:
    """The failed and quarantined cells, each with the last line of its error."""
    out = []
    for c in cells:
        if c.state in (CellState.FAILED, CellState.QUARANTINED):
            lines = (c.error or "").strip().splitlines()
            last = mask_secrets(lines[-1]) if lines else ""
            out.append(Failure(c.kind, c.key, c.state, c.attempts, last))
    return out


def curve_table(rows: list[AttackMetrics], axis: str) -> CurveTable | None:
    """Curves over ``axis`` with their points as ``mean ± std`` in %; None without curves."""
    found = curves.build(rows, axis)
    if not found:
        return None
    xs = sorted({p.x for c in found for p in c.points})
    out = []
    for c in found:
        by_x = {p.x: p for p in c.points}
        values = [_point_text(by_x.get(x)) for x in xs]
        out.append((c.dataset, c.model, labels.attack_title(c.attack, c.params), values))
    return CurveTable(axis, [labels.fmt_num(x) for x in xs], out, found)


def _point_text(p: curves.Point | None) -> str:
    if p is None:
        return "—"
    text = f"{p.mean * 100:.1f}"
    return text if p.std is None else f"{text} ± {p.std * 100:.1f} ({p.seeds} seeds)"


def _label(spec: dict, model_key: str, defense_key: str) -> str:
    defense = spec.get(defense_key) or {}
    name = defense.get("name", "none")
    return labels.model_label(str(spec.get(model_key)), (name, defense.get("label", name)))


def attack_row(cell: CellRow) -> dict[str, Any]:
    """One attack cell as the results table shows it (key metrics in %)."""
    base, spec = result_rows.row(cell), json.loads(cell.spec_json)
    metrics = base["metrics"]
    return {
        "key": cell.key,
        "state": cell.state,
        "dataset": base["dataset"] or "",
        "model": _label(spec, "source", "defense"),
        "attack": labels.attack_title(base["attack"] or "", base["params"]),
        "metrics": {
            name: None if name not in metrics else f"{metrics[name] * 100:.1f}"
            for name in result_rows.key_metrics("attack")
        },
        "n": None if "n" not in metrics else int(metrics["n"]),
        "duration_s": None if cell.duration_s is None else f"{cell.duration_s:.3g}",
    }


def examples(cells: list[CellRow], options: Options) -> list[ExampleSet]:
    """Examples of ``options.example_cells`` done attack cells: the first cell of each
    defended model in turn (so a purifier's images are shown), then the next ones."""
    done = [c for c in cells if c.kind == CellKind.ATTACK and "adversarial" in c.artifacts]
    by_model: dict[tuple[str, str, str], CellRow] = {}
    for c in done:
        by_model.setdefault(_defended_model(c), c)
    firsts = list(by_model.values())
    rest = [c for c in done if c not in firsts]
    chosen = (firsts + rest)[: options.example_cells]
    if not chosen:
        return []
    try:
        store = ArtifactStore(options.store_root)
    except StorageError as exc:
        return [_unavailable(c, exc) for c in chosen]
    loaded: dict[str, Any] = {}
    by_key = {c.key: c for c in cells}
    return [example_set(c, store, options.samples, loaded, by_key) for c in chosen]


def _defended_model(cell: CellRow) -> tuple[str, str, str]:
    spec = json.loads(cell.spec_json)
    defense = spec.get("defense") or {}
    return (spec["dataset"]["label"], spec["source"], str(defense.get("label")))


def _title(cell: CellRow) -> str:
    spec = json.loads(cell.spec_json)
    attack = labels.attack_title(spec["attack"]["name"], spec["attack"]["params"])
    return f"{_label(spec, 'source', 'defense')} · {attack} on {spec['dataset']['label']}"


def _unavailable(cell: CellRow, exc: Exception) -> ExampleSet:
    log.warning("examples of cell %s: %s", cell.key[:12], exc)
    return ExampleSet(_title(cell), cell.key, note=mask_secrets(f"examples unavailable: {exc}"))


def example_set(
    cell: CellRow,
    store: ArtifactStore,
    n: int,
    loaded: dict,
    cells: dict[str, CellRow] | None = None,
) -> ExampleSet:
    """Up to ``n`` examples of one attack cell, successful ones first; behind an
    input-transform defense, also what it made of the clean and adversarial images (its
    trained parts found among ``cells``, the study's cells by key).

    A stored set or dataset that cannot be read gives a set with a ``note`` instead of
    failing the whole report.
    """
    try:
        tensors, _ = store.get(cell.artifacts["adversarial"])
        success = tensors["success"].bool()
        order = torch.argsort((~success).to(torch.int8), stable=True)[:n]
        spec = json.loads(cell.spec_json)
        clean = _inputs(spec["dataset"], tensors["indices"][order], loaded)
    except (StorageError, TaskError, OSError, ValueError, KeyError) as exc:
        return _unavailable(cell, exc)
    adv = _unit(tensors["x_adv"][order])
    aimed = _unit(tensors["target_image"][order]) if "target_image" in tensors else None
    shown = report_defended.through(cell, spec["defense"], cells or {}, store, clean, adv)
    samples = [
        Sample(
            index=int(tensors["indices"][i]),
            label=int(tensors["labels"][i]),
            pred_clean=int(tensors["pred_clean"][i]),
            pred_adv=int(tensors["pred_adv"][i]),
            success=bool(success[i]),
            clean=clean[j],
            adv=adv[j],
            defended_clean=None if shown is None else shown.clean[j],
            defended_adv=None if shown is None else shown.adv[j],
            target_image=None if aimed is None else aimed[j],
        )
        for j, i in enumerate(order.tolist())
    ]
    caption = None if shown is None else shown.caption
    return ExampleSet(
        _title(cell), cell.key, samples, int(success.sum()), len(success), defended=caption
    )


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Images as float in [0, 1], also when stored as uint8."""
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def _inputs(dataset: dict, indices: torch.Tensor, loaded: dict) -> torch.Tensor:
    """Clean inputs ``indices`` of the dataset a cell spec names (each dataset loaded once)."""
    from tasks import datasets

    key = json.dumps([dataset["name"], dataset["params"]], sort_keys=True)
    if key not in loaded:
        params = datasets.params_of(dataset["name"], dataset["params"])
        loaded[key] = datasets.load(dataset["name"], params)
    return loaded[key].images(indices)
