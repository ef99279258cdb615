"""Smoke test of ``benchmarks/tables.py``: it runs, fills what it says, and its matrix check
passes on the real matrices and fails on wrong ones (never its timings)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator.views.transfer import Entry, Matrix

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tables.py"
TINY = ["--sources", "2", "--targets", "3", "--attacks", "pgd,fgsm", "--eps", "2"]
TINY += ["--eval-size", "16", "--repeats", "2", "--api-transfer", "3", "--chunk", "7"]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tables", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_tiny_run_on_sqlite(tmp_path: Path) -> None:
    out = tmp_path / "tables"
    args = [*TINY, "--backends", "sqlite", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    study = results["meta"]["study"]
    assert study["cells"] == {"train": 3, "attack": 8, "transfer": 24}
    assert study["transfer_metric_rows"] == 11 * 24
    (fill,) = results["fill"]
    assert fill["shape_ok"]
    assert (fill["api_cells"], fill["bulk_cells"], fill["done_transfer"]) == (14, 21, 24)
    assert fill["metric_rows"] > study["transfer_metric_rows"]
    assert [(c["case"], c["matrices"], c["entries"], c["ok"]) for c in results["checks"]] == [
        ("one", 1, 6, True),
        ("all", 4, 24, True),
    ]
    rows = {(t["case"], t["impl"]): t for t in results["timings"]}
    assert {k: (t["rows"], t["matrices"]) for k, t in rows.items()} == {
        ("one", "advgrid"): (6, 1),
        ("one", "peer"): (24, 1),
        ("all", "advgrid"): (24, 4),
        ("all", "peer"): (24, 4),
    }
    assert all(len(t[f"{n}_s"]) == 2 for t in rows.values() for n in ("query", "build", "total"))
    assert [(r["backend"], r["case"]) for r in results["ratios"]] == [
        ("sqlite", "one"),
        ("sqlite", "all"),
    ]
    assert "## Building the matrices" in out.with_suffix(".md").read_text()


def _expected(bench: ModuleType, layout: Any) -> list[Matrix]:
    """The matrices the study's cells should give, built from what the benchmark writes."""
    keys = {layout.position(c): c.key for c in layout.transfers()}
    out = []
    for c, config in enumerate(layout.configs):
        entries: list[list[Entry | None]] = []
        for i, _ in enumerate(layout.sources):
            row: list[Entry | None] = []
            for j, _ in enumerate(layout.targets):
                v = bench.transfer_values(c, i, j, layout.n)
                row.append(
                    Entry(
                        int(v["fooled_source_success"]), int(v["n_source_success"]), keys[c, i, j]
                    )
                )
            entries.append(row)
        a = json.loads(config)
        out.append(
            Matrix(
                "digits",
                a["name"],
                a["params"],
                layout.sources,
                layout.targets,
                entries,
                "source_success",
            )
        )
    return out


def _as_peer(m: Matrix) -> dict:
    grid = [[(e.fooled, e.n) if e else (None, None) for e in row] for row in m.entries]
    return {
        "dataset": m.dataset,
        "attack": m.attack,
        "params": m.params,
        "sources": m.sources,
        "targets": m.targets,
        "fooled": [[f for f, _ in row] for row in grid],
        "n": [[n for _, n in row] for row in grid],
    }


def test_check_fails_on_wrong_matrices(bench: ModuleType) -> None:
    from orchestrator.study.loader import parse
    from orchestrator.study.plan import expand

    args = bench.parse_args(TINY)
    layout = bench.Layout.of(expand(parse(bench.study_text(args), "t.yaml")), args.eval_size)
    good = _expected(bench, layout)
    everything = list(range(len(layout.configs)))
    assert bench.check(layout, good, [_as_peer(m) for m in good], everything)["ok"]
    assert not bench.check(layout, good[1:], [_as_peer(m) for m in good[1:]], everything)["ok"]
    wrong = [dataclasses.replace(m, entries=[list(r) for r in m.entries]) for m in good]
    entry = wrong[2].entries[1][0]
    assert entry is not None
    wrong[2].entries[1][0] = dataclasses.replace(entry, fooled=entry.fooled + 1)
    result = bench.check(layout, wrong, [_as_peer(m) for m in wrong], everything)
    assert (result["wrong"], result["ok"]) == (1, False)
    wrong[2].entries[1][0] = None
    result = bench.check(layout, wrong, [_as_peer(m) for m in good], everything)
    assert (result["entries"], result["peer_equal"], result["ok"]) == (23, False, False)
