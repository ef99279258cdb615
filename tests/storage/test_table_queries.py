"""Table queries in SQL: filters on attack name, eps and params, the metric pivot; both backends."""

from __future__ import annotations

import json

import pytest

from storage import Database, NewCell, StorageError
from storage.spec_json import AttackFilter
from tests.storage.storage_builders import k, record

DEF_NONE = {"name": "none", "label": "none", "params": {}}
DEF_JPEG = {"name": "jpeg", "label": "jpeg75", "params": {"quality": 75}}


def _spec(kind: str, source: str, attack: dict, **extra: object) -> str:
    spec = {
        "kind": kind,
        "dataset": {"name": "digits", "label": "digits", "params": {}},
        "source": source,
        "defense": DEF_NONE,
        "attack": attack,
        **extra,
    }
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _finish(db: Database, sid: int, name: str, spec_json: str, kind: str, metrics: dict) -> None:
    db.add_cells(sid, [NewCell(k(name), kind, spec_json, [])])
    (c,) = db.claim(sid, "me", 1, 60, 3, keys={k(name)})
    assert db.complete(c.id, c.token, metrics=metrics, artifacts={}, duration_s=1, worker="w")


PGD = {"norm": "linf", "eps": 0.1, "steps": 10, "targeted": False, "seed": 0}


@pytest.fixture
def filled(db: Database) -> tuple[Database, int]:
    sid = db.upsert_study("s", "name: s", "h", "tester", "0.1.0").id
    attacks = {
        "pgd-a": {"name": "pgd", "params": PGD},
        "pgd-b": {"name": "pgd", "params": {**PGD, "eps": 8 / 255, "steps": 40}},
        "pgd-t": {"name": "pgd", "params": {**PGD, "targeted": True}},
        "cw": {"name": "cw_l2", "params": {"eps": [0.5, 1.0], "steps": 10}},
    }
    for n, (label, attack) in enumerate(attacks.items()):
        for src in ("a", "b"):
            for tgt, tdef in (("a", DEF_NONE), ("b", DEF_NONE), ("b", DEF_JPEG)):
                spec = _spec("transfer", src, attack, target=tgt, target_defense=tdef)
                metrics = {"fooled_all": float(n + 1), "n_all": 10.0, "n_source_success": 0.0}
                metrics["fooled_source_success"] = 0.0
                _finish(db, sid, f"{label}-{src}-{tgt}-{tdef['label']}", spec, "transfer", metrics)
        _finish(db, sid, f"atk-{label}", _spec("attack", "a", attack), "attack", _attack_metrics())
    # a cell still pending is never counted
    spec = _spec("transfer", "c", attacks["pgd-a"], target="a", target_defense=DEF_NONE)
    db.add_cells(sid, [NewCell(k("pending"), "transfer", spec, [])])
    return db, sid


def _attack_metrics() -> dict[str, float]:
    return {
        "clean_accuracy": 0.9,
        "robust_accuracy": 0.2,
        "robust_accuracy_eps_0.5": 0.5,
        "l2_mean": 3.0,  # not a curve metric: left out
    }


def test_transfer_counts_pivot_and_labels(filled: tuple[Database, int]) -> None:
    db, sid = filled
    rows = db.transfer_counts(sid, denominator="all")
    assert len(rows) == 4 * 6
    first = rows[0]
    assert (first.dataset, first.attack, first.source, first.target) == ("digits", "pgd", "a", "a")
    assert json.loads(first.params_json) == PGD
    assert (first.fooled, first.n) == (1, 10)
    assert {r.target_defense for r in rows} == {("none", "none"), ("jpeg", "jpeg75")}
    assert {r.fooled for r in rows if r.attack == "cw_l2"} == {4}


@pytest.mark.parametrize(
    ("where", "fooled"),
    [
        (AttackFilter(attack="cw_l2"), {4}),
        (AttackFilter(eps=0.1), {1, 3}),
        (AttackFilter(eps=0.10000001), {1, 3}),  # within the relative tolerance
        (AttackFilter(eps=8 / 255), {2}),
        (AttackFilter(attack="pgd", params=(("steps", "40"),)), {2}),
        (AttackFilter(params=(("steps", "10.0"),)), {1, 3, 4}),
        (AttackFilter(params=(("targeted", "true"),)), {3}),
        (AttackFilter(params=(("targeted", "False"),)), {1, 2}),
        (AttackFilter(params=(("norm", "LINF"),)), {1, 2, 3}),
        (AttackFilter(params=(("norm", "2"),)), set()),  # a number never equals a string
        (AttackFilter(attack="fgsm"), set()),
    ],
)
def test_transfer_filters_run_in_sql(
    filled: tuple[Database, int], where: AttackFilter, fooled: set[int]
) -> None:
    db, sid = filled
    assert {r.fooled for r in db.transfer_counts(sid, denominator="all", where=where)} == fooled


def test_denominator_selects_the_metric_pair(filled: tuple[Database, int]) -> None:
    db, sid = filled
    rows = db.transfer_counts(sid, denominator="source_success")
    assert len(rows) == 24
    assert all((r.fooled, r.n) == (0, 0) for r in rows)
    # target_correct was never recorded for these cells: no row rather than a made-up one
    assert db.transfer_counts(sid, denominator="target_correct") == []
    with pytest.raises(StorageError, match="unknown denominator 'bogus'"):
        db.transfer_counts(sid, denominator="bogus")


def test_param_names_are_checked(filled: tuple[Database, int]) -> None:
    db, sid = filled
    with pytest.raises(StorageError, match="is not a name"):
        db.transfer_counts(sid, where=AttackFilter(params=(("eps') or 1=1 --", "1"),)))


def test_attack_metrics_reads_the_curve_metrics(filled: tuple[Database, int]) -> None:
    db, sid = filled
    rows = db.attack_metrics(sid)
    assert [r.attack for r in rows] == ["pgd", "pgd", "pgd", "cw_l2"]
    assert rows[0].metrics == {
        "clean_accuracy": 0.9,
        "robust_accuracy": 0.2,
        "robust_accuracy_eps_0.5": 0.5,
    }
    assert rows[0].defense == ("none", "none")
    only = db.attack_metrics(sid, where=AttackFilter(attack="pgd", eps=8 / 255))
    assert [json.loads(r.params_json)["steps"] for r in only] == [40]


def test_transfer_outputs_follow_the_dependency_to_the_adversarial_set(db: Database) -> None:
    sid = db.upsert_study("s", "name: s", "h", "tester", "0.1.0").id
    attack = {"name": "pgd", "params": PGD}
    db.add_cells(
        sid,
        [
            NewCell(k("train"), "train", '{"kind":"train"}', []),
            NewCell(k("atk"), "attack", _spec("attack", "a", attack), [k("train")]),
        ],
    )
    adv, pred = record("adv", "adversarial"), record("pred", "predictions")
    for name, arts in (("train", {"checkpoint": record("ckpt")}), ("atk", {"adversarial": adv})):
        (c,) = db.claim(sid, "me", 1, 60, 3, keys={k(name)})
        assert db.complete(c.id, c.token, metrics={}, artifacts=arts, duration_s=1, worker="w")
    for tgt, arts in (("a", {"predictions": pred}), ("b", {})):
        spec = _spec("transfer", "a", attack, target=tgt, target_defense=DEF_NONE)
        db.add_cells(sid, [NewCell(k(tgt), "transfer", spec, [k("atk"), k("train")])])
        (c,) = db.claim(sid, "me", 1, 60, 3, keys={k(tgt)})
        assert db.complete(c.id, c.token, metrics={}, artifacts=arts, duration_s=1, worker="w")
    rows = db.transfer_outputs(sid)
    assert [(r.target, r.attack_key, r.adversarial, r.predictions) for r in rows] == [
        ("a", k("atk"), adv.digest, pred.digest),
        ("b", k("atk"), adv.digest, None),  # recorded without per-sample predictions
    ]
    assert db.transfer_outputs(sid, where=AttackFilter(attack="fgsm")) == []
