"""The adaptive-evaluation query: attack cells on M (+ defense) with the oblivious transfer
cell M (none) → M+D beside them; on both backends."""

from __future__ import annotations

import json

import pytest

from storage import Database, NewCell
from storage.spec_json import AttackFilter
from tests.storage.storage_builders import k

NONE = {"name": "none", "label": "none", "params": {}}
JPEG = {"name": "jpeg", "label": "jpeg75", "params": {"quality": 75}}
BITS = {"name": "bit_depth", "label": "bits2", "params": {"bits": 2}}
FGSM = {"name": "fgsm", "params": {"eps": 0.1, "norm": "linf", "seed": 0}}
PGD = {"name": "pgd", "params": {"eps": 0.1, "norm": "linf", "steps": 10, "seed": 0}}
DIGITS = {"name": "digits", "label": "digits", "params": {}}


def _adapted(defense: dict, how: str) -> dict:
    return {**defense, "adaptive": how}


def _attack(source: str, defense: dict, attack: dict, **extra: object) -> dict:
    spec = {"kind": "attack", "dataset": DIGITS, "eval_hash": "e0", "source": source}
    return {**spec, "defense": defense, "attack": attack, **extra}


def _transfer(attack_spec: dict, target: str, target_defense: dict) -> dict:
    return {**attack_spec, "kind": "transfer", "target": target, "target_defense": target_defense}


def _add(db: Database, sid: int, name: str, spec: dict, metrics: dict, done: bool = True) -> None:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    db.add_cells(sid, [NewCell(k(name), spec["kind"], text, [])])
    if done:
        (c,) = db.claim(sid, "me", 1, 60, 3, keys={k(name)})
        assert db.complete(c.id, c.token, metrics=metrics, artifacts={}, duration_s=1, worker="w")


def _attack_metrics(robust: float, **more: float) -> dict[str, float]:
    return {"n": 100.0, "clean_accuracy": 0.95, "robust_accuracy": robust, "l2_mean": 1.0, **more}


def _transfer_metrics(robust: float, clean: float = 0.9) -> dict[str, float]:
    return {"target_robust_accuracy": robust, "target_clean_accuracy": clean, "n_all": 100.0}


@pytest.fixture
def filled(db: Database) -> tuple[Database, int]:
    sid = db.upsert_study("s", "name: s", "h", "tester", "0.1.0").id
    for attack in (FGSM, PGD):
        a = attack["name"]
        plain = _attack("m", NONE, attack)
        _add(db, sid, f"{a}-none", plain, _attack_metrics(0.3, grad_l1_median=0.02))
        for d, robust in ((JPEG, 0.35), (BITS, 0.4)):
            adapted = _attack("m", _adapted(d, "bpda"), attack)
            _add(db, sid, f"{a}-{d['label']}", adapted, _attack_metrics(robust, adaptive_bpda=1.0))
            # the oblivious number: crafted on m, evaluated on m + d
            _add(db, sid, f"{a}-obl-{d['label']}", _transfer(plain, "m", d), _transfer_metrics(0.8))
            # not oblivious: crafted on m + d (the diagonal), or evaluated on another model
            _add(
                db,
                sid,
                f"{a}-diag-{d['label']}",
                _transfer(adapted, "m", d),
                _transfer_metrics(0.0),
            )
            _add(db, sid, f"{a}-m2-{d['label']}", _transfer(plain, "m2", d), _transfer_metrics(0.1))
        _add(db, sid, f"{a}-self", _transfer(plain, "m", NONE), _transfer_metrics(0.3, 0.95))
    # another budget with no transfer cell, and a pending cell: neither has an oblivious number
    _add(
        db,
        sid,
        "pgd-eps2-jpeg",
        _attack("m", JPEG, {**PGD, "params": {**PGD["params"], "eps": 0.2}}),
        _attack_metrics(0.1),
    )
    _add(db, sid, "pending", _attack("m", BITS, FGSM), {}, done=False)
    return db, sid


def test_each_attack_cell_gets_the_oblivious_number_of_its_defended_model(
    filled: tuple[Database, int],
) -> None:
    db, sid = filled
    rows = db.defense_evaluations(sid)
    got = [
        (r.attack, json.loads(r.params_json)["eps"], r.defense, r.adaptive, r.oblivious_robust)
        for r in rows
    ]
    assert got == [
        ("fgsm", 0.1, ("none", "none"), "none", 0.3),
        ("fgsm", 0.1, ("jpeg", "jpeg75"), "bpda", 0.8),
        ("fgsm", 0.1, ("bit_depth", "bits2"), "bpda", 0.8),
        ("pgd", 0.1, ("none", "none"), "none", 0.3),
        ("pgd", 0.1, ("jpeg", "jpeg75"), "bpda", 0.8),
        ("pgd", 0.1, ("bit_depth", "bits2"), "bpda", 0.8),
        ("pgd", 0.2, ("jpeg", "jpeg75"), "none", None),
    ]
    jpeg = rows[1]
    assert jpeg.cell_key == k("fgsm-jpeg75")
    assert jpeg.oblivious_key == k("fgsm-obl-jpeg75")
    assert (jpeg.model, jpeg.dataset, jpeg.oblivious_clean) == ("m", "digits", 0.9)
    # the attack cell's own metrics, only those the table reads
    assert jpeg.metrics == {
        "n": 100.0,
        "clean_accuracy": 0.95,
        "robust_accuracy": 0.35,
        "adaptive_bpda": 1.0,
    }
    assert rows[0].metrics["grad_l1_median"] == 0.02
    assert rows[-1].oblivious_key is None
    assert rows[-1].oblivious_clean is None


def test_the_attack_filter_runs_on_the_attack_cells(filled: tuple[Database, int]) -> None:
    db, sid = filled
    only = db.defense_evaluations(sid, where=AttackFilter(attack="pgd", eps=0.1))
    assert [(r.attack, r.defense[1]) for r in only] == [
        ("pgd", "none"),
        ("pgd", "jpeg75"),
        ("pgd", "bits2"),
    ]
    assert [r.oblivious_robust for r in only] == [0.3, 0.8, 0.8]
    steps = db.defense_evaluations(sid, where=AttackFilter(params=(("steps", "10"),)))
    assert len(steps) == 4
    assert db.defense_evaluations(sid, where=AttackFilter(attack="square")) == []
