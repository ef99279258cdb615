"""Study validation: every problem is found before anything is written, and named."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from orchestrator.study.plan import expand
from orchestrator.study.schema import Study
from tests.conftest import TINY_STUDY, data_env, tiny_study


def _parse(text: str) -> Study:
    return loader.parse(text, "study.yaml")


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _parse(text)
    return info.value.problems


BASE = TINY_STUDY.format(name="t", lease=60)


def test_fraction_eps_and_defaults_are_normalized() -> None:
    study = _parse(BASE)
    pgd = next(a for a in study.attacks if a.name == "pgd")
    assert pgd.params["eps"] == pytest.approx(8 / 255)
    assert pgd.params["step_size"] == pytest.approx(2.5 * (8 / 255) / 3)  # Madry's rule
    assert study.defenses[0].name == "none"


def test_lists_expand_into_a_grid() -> None:
    text = BASE.replace("    eps: 0.1\n", "    eps: [0.05, 0.1, 0.2]\n", 1)
    text = text.replace("    steps: 3\n", "    steps: [3, 5]\n")
    study = _parse(text)
    assert sorted(a.params["eps"] for a in study.attacks if a.name == "fgsm") == [0.05, 0.1, 0.2]
    assert len([a for a in study.attacks if a.name == "pgd"]) == 2
    counts = expand(study).counts()
    assert counts == {"train": 3, "attack": 3 * 5, "transfer": 3 * 5 * 3}


def test_keys_are_stable_and_change_with_the_spec() -> None:
    a, b = expand(_parse(BASE)), expand(_parse(BASE))
    assert [c.key for c in a.cells] == [c.key for c in b.cells]
    assert len({c.key for c in a.cells}) == len(a.cells)
    changed = expand(_parse(BASE.replace("eps: 0.1", "eps: 0.2")))
    same = {c.key for c in a.cells} & {c.key for c in changed.cells}
    # train cells and the untouched pgd branch keep their keys; fgsm cells change
    assert len(same) == 3 + 3 + 9


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  - name: pgd\n",
            "  - name: pgdd\n",
            "line 21: attacks[1].name: unknown attack 'pgdd'; did you mean 'pgd',",
        ),
        ("    eps: 0.1\n", "    eps: -1\n", "line 20: attacks[0].eps: must be ≥ 0 (got -1)"),
        (
            "    eps: 0.1\n",
            "    eps: [0.1, -1]\n",
            "line 20: attacks[0].eps[1]: must be ≥ 0 (got -1)",
        ),
        (
            "    eps: 0.1\n",
            "    eps: 0.1\n    stepz: 3\n",
            "line 21: attacks[0].stepz: unknown key 'stepz'; "
            "allowed keys: eps, norm, seed, target, targeted",
        ),
        (
            "execution:\n",
            "executon: {}\nexecution:\n",
            "line 24: executon: unknown key 'executon'; did you mean 'execution'? allowed keys: "
            "allow_imports, attacks, datasets, defenses, description, execution, models, name, "
            "sources, storage, targets",
        ),
    ],
)
def test_errors_name_the_place(old: str, new: str, expected: str) -> None:
    problems = _problems(BASE.replace(old, new, 1))
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_unknown_target_model_suggests_a_name() -> None:
    problems = _problems(BASE + "targets: [mlp, cnnn]\n")
    assert problems == [
        "line 27: targets[1]: no model named 'cnnn' in this study; did you "
        "mean 'cnn'? known: mlp, cnn, mlp2"
    ]


def test_yaml_syntax_error_names_line_and_column() -> None:
    problems = _problems(BASE.replace("  - name: fgsm\n", "  - name: [fgsm\n"))
    assert len(problems) == 1
    assert problems[0].startswith("line 20, column 8: YAML syntax error: expected ',' or ']'")


def test_all_problems_are_reported_together() -> None:
    text = BASE.replace("eps: 0.1", "eps: -1").replace("arch: small_cnn", "arch: small_cn")
    problems = _problems(text)
    assert any("attacks[0].eps" in p for p in problems)
    assert any(
        "models[1].arch: unknown model 'small_cn'; did you mean 'small_cnn'?" in p for p in problems
    )


def test_model_needs_train_or_checkpoint() -> None:
    problems = _problems(BASE.replace("    train: {epochs: 10, lr: 0.005, seed: 0}\n", ""))
    assert problems == [
        "line 10: models[1]: give exactly one of `train:` (a recipe) or `checkpoint:` (a file)"
    ]


def _tree_digest(root: Path) -> str:
    """Digest of what the data folder holds: the index's rows and the store's files.

    The index is compared by its SQL dump, not its bytes: SQLite may checkpoint its
    write-ahead log into the file whenever a connection closes, which changes bytes, not data.
    """
    h = hashlib.sha256()
    with sqlite3.connect(root / "advgrid.db") as conn:
        for line in conn.iterdump():
            h.update(line.encode())
    for p in sorted((root / "store").rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


MALFORMED = {
    "unknown_attack": ("  - name: pgd\n", "  - name: pgdd\n", "attacks[1].name: unknown attack"),
    "negative_eps": ("    eps: 0.1\n", "    eps: -1\n", "attacks[0].eps: must be ≥ 0"),
    "unknown_key": ("execution:\n", "colour: red\nexecution:\n", "colour: unknown key 'colour'"),
    "unknown_target": (
        "execution:\n",
        "targets: [mlp, nope]\nexecution:\n",
        "targets[1]: no model named 'nope'",
    ),
    "yaml_syntax": ("  - name: fgsm\n", "  - name: [fgsm\n", "YAML syntax error"),
}


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A data folder holding one finished study, shared by the malformed-study cases."""
    from tests.conftest import Cli

    root = tmp_path_factory.mktemp("populated")
    env = data_env(root)
    good = tiny_study(root / "good.yaml", name="keep")
    result = Cli()("run", good, "--executor", "inline", "--no-mlflow", "-q", env=env)
    assert result.exit_code == 0, result.output
    return root, env


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_study_exits_1_and_changes_nothing(case: str, cli, populated) -> None:
    root, env = populated
    before = _tree_digest(root / "data")
    old, new, fragment = MALFORMED[case]
    bad = root / f"bad_{case}.yaml"
    bad.write_text(TINY_STUDY.format(name="bad", lease=60).replace(old, new, 1))
    result = cli("run", bad, "--executor", "inline", env=env)
    assert result.exit_code == 1
    assert f"Error: {bad}: line " in result.output
    assert fragment in result.output
    assert _tree_digest(root / "data") == before


def test_parameters_that_take_lists_are_not_a_grid() -> None:
    text = BASE.replace(
        "execution:\n", "  - name: deepfool\n    eps: [0.5, 1.0]\n    steps: [20, 50]\nexecution:\n"
    )
    deepfool = [a for a in _parse(text).attacks if a.name == "deepfool"]
    assert [a.params["eps"] for a in deepfool] == [[0.5, 1.0], [0.5, 1.0]]
    assert [a.params["steps"] for a in deepfool] == [20, 50]
    problems = _problems(text.replace("eps: [0.5, 1.0]", "eps: [0.5, -1]"))
    assert problems == ["line 25: attacks[2].eps[1]: must be ≥ 0 (got -1)"]  # once, not per point


def test_resources_name_registered_cell_kinds() -> None:
    text = BASE.replace(
        "  batch_size: 32\n", "  batch_size: 32\n  resources:\n    trian: {num_cpus: 1}\n"
    )
    (problem,) = _problems(text)
    assert problem.startswith(
        "line 27: execution.resources: unknown cell kind 'trian'; the kinds are 'train', "
        "'attack', 'transfer'"
    )
    good = BASE.replace(
        "  batch_size: 32\n", "  batch_size: 32\n  resources:\n    train: {num_cpus: 2}\n"
    )
    execution = _parse(good).file.execution
    assert execution.resources_for("train").num_cpus == 2
    assert execution.resources_for("attack").num_cpus == 1
