"""Models named by import path: refused unless the study allows imports, on both sides."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from orchestrator.study.plan import PlannedCell, expand
from tasks import datasets, models
from tasks.cells import run_cell
from tasks.errors import FactoryError
from tests.conftest import TINY_STUDY

MODULE = "tests.orchestrator.factories"
PATH = f"{MODULE}:tiny_mlp"
ALLOW = "allow_imports: true\n"
FIX = "add `allow_imports: true` to the study if you trust this code"

STUDY = """\
name: imports
{allow}datasets:
  - name: digits
    eval_size: 32
models:
  - name: ref
    arch: mlp
    params: {{hidden: [32]}}
    train: {{epochs: 5, lr: 0.01}}
  - name: mine
    arch: {arch}
    params: {{hidden: 24}}
    train: {{epochs: 10, lr: 0.01}}
{extra}attacks:
  - name: fgsm
    eps: 0.1
"""


def _study(arch: str = PATH, *, allow: bool = True, extra: str = "") -> str:
    return STUDY.format(allow=ALLOW if allow else "", arch=arch, extra=extra)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader.parse(text, "study.yaml")
    return info.value.problems


def test_import_path_is_refused_without_allow_imports_and_not_imported() -> None:
    sys.modules.pop(MODULE, None)
    problems = _problems(_study(allow=False))
    assert problems == [
        f"line 11: models[1].arch: '{PATH}' is a model factory import path, and importing it "
        f"runs its code; {FIX}"
    ]
    assert MODULE not in sys.modules


def test_refusal_names_the_file_and_writes_nothing(cli, workdir: Path) -> None:
    study = workdir / "s.yaml"
    study.write_text(_study(allow=False))
    result = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {study}: line 11: models[1].arch: '{PATH}' is a")
    assert FIX in result.output
    assert not (workdir / "data").exists()


def test_allow_imports_must_be_a_boolean() -> None:
    problems = _problems(
        _study(allow=False).replace("datasets:\n", "allow_imports: 'true'\ndatasets:\n", 1)
    )
    assert problems[0].startswith("line 2: allow_imports: Input should be a valid boolean")


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        (
            "no_such_module_xyz:net",
            "cannot import module 'no_such_module_xyz' of model factory 'no_such_module_xyz:net': "
            "no module named 'no_such_module_xyz'; install it or put its folder on PYTHONPATH "
            "(of the driver and of every Ray worker)",
        ),
        (
            f"{MODULE}:tiny_mlpp",
            f"'{MODULE}' has no attribute 'tiny_mlpp'; did you mean 'tiny_mlp'?",
        ),
        (
            f"{MODULE}:WIDTH",
            f"'{MODULE}:WIDTH' is not callable (it is of type 'int'); a model factory is called "
            "as factory(params: dict, input_shape: tuple, num_classes: int) -> torch.nn.Module",
        ),
        (
            f"{MODULE}:tiny-mlp",
            f"'{MODULE}:tiny-mlp' is not an import path of the form package.module:factory",
        ),
    ],
)
def test_bad_import_paths_are_named(arch: str, expected: str) -> None:
    assert _problems(_study(arch)) == [f"line 12: models[1].arch: {expected}"]


def test_factory_params_must_be_json_data() -> None:
    text = _study().replace("{hidden: 24}", "{hidden: 24, when: 2024-01-01, w: [1, .nan]}")
    assert _problems(text) == [
        "line 13: models[1].params.when: must be a string, number, boolean, null, list or "
        "mapping (got a date)",
        "line 13: models[1].params.w[1]: must be a finite number (got nan)",
    ]


def test_allow_imports_does_not_enter_keys() -> None:
    plain = TINY_STUDY.format(name="t", lease=60)
    allowed = plain.replace("datasets:\n", ALLOW + "datasets:\n", 1)
    keys = [c.key for c in expand(loader.parse(plain)).cells]
    assert keys == [c.key for c in expand(loader.parse(allowed)).cells]

    study = loader.parse(_study())
    plan = expand(study)
    train = _train_cell(plan.cells)
    assert train.spec["model"] == {"name": "mine", "arch": PATH, "params": {"hidden": 24}}
    study.file = study.file.model_copy(update={"allow_imports": False})
    assert [c.key for c in expand(study).cells] == [c.key for c in plan.cells]


def _train_cell(cells: list[PlannedCell]) -> PlannedCell:
    return next(c for c in cells if c.kind == "train" and c.spec["model"]["name"] == "mine")


def _payload(cell: PlannedCell, store: Path, inputs: dict | None = None, **flag: object) -> dict:
    return {
        "key": cell.key,
        "kind": cell.kind,
        "spec": cell.spec,
        "inputs": inputs or {},
        "store": str(store),
        "batch_size": 32,
        **flag,
    }


def test_worker_refuses_an_import_path_unless_the_payload_allows_it(tmp_path: Path) -> None:
    plan = expand(loader.parse(_study()))
    train = _train_cell(plan.cells)
    sys.modules.pop(MODULE, None)
    refused = f"ImportNotAllowedError: refusing to import model factory '{PATH}'"

    def refuses(result: dict) -> bool:
        """The cell failed with the refusal, as an error that recurs (never retried)."""
        return result.get("recurs") is True and refused in result["error"]

    for flag in ({}, {"allow_imports": False}, {"allow_imports": "true"}):
        assert refuses(run_cell(_payload(train, tmp_path, **flag)))
    assert MODULE not in sys.modules

    trained = run_cell(_payload(train, tmp_path, allow_imports=True))
    inputs = {"checkpoint": trained["artifacts"]["checkpoint"]["digest"]}
    attack = next(c for c in plan.cells if c.kind == "attack" and c.spec["source"] == "mine")
    attacked = run_cell(_payload(attack, tmp_path, inputs, allow_imports=True))
    assert "robust_accuracy" in attacked["metrics"]
    # the model is cached now; a payload without the flag must still not get it
    assert refuses(run_cell(_payload(attack, tmp_path, inputs)))


def test_factory_must_return_a_module_and_its_errors_are_wrapped() -> None:
    shape = {"input_shape": (1, 8, 8), "num_classes": 10, "mean": [0.5], "std": [0.5]}
    with pytest.raises(FactoryError, match="returned a str, not a torch.nn.Module"):
        models.build(f"{MODULE}:not_a_module", {}, allow_imports=True, **shape)
    with pytest.raises(FactoryError, match=f"model factory '{PATH}' raised ValueError: invalid"):
        models.build(PATH, {"hidden": "wide"}, allow_imports=True, **shape)


@pytest.fixture
def factory_weights(tmp_path: Path) -> Path:
    """An untrained tiny_mlp's bare state dict, saved as safetensors."""
    data = datasets.load("digits", datasets.params_of("digits", {}))
    net = models.build(
        PATH,
        {"hidden": 16},
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        allow_imports=True,
    )
    path = tmp_path / "given.safetensors"
    save_file({k: v.contiguous() for k, v in net.net.state_dict().items()}, path)
    return path


def test_import_path_models_run_end_to_end(cli, workdir: Path, factory_weights: Path) -> None:
    from tests.orchestrator import factories

    given = f"  - name: given\n    arch: {PATH}\n    params: {{hidden: 16}}\n"
    given += f"    checkpoint: {factory_weights}\n"
    study = workdir / "s.yaml"
    study.write_text(_study(extra=given))
    factories.CALLS.clear()
    result = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert result.exit_code == 0, result.output
    assert "14 cells (2 train + 3 attack + 9 transfer)" in result.output
    assert ({"hidden": 24}, (1, 8, 8), 10) in factories.CALLS  # the documented signature
    rows = json.loads(cli("results", "imports", "--format", "json").output)
    trained = next(r for r in rows if r["kind"] == "train" and r["model"] == "mine")
    assert trained["params"]["arch"] == PATH
    attacked = next(r for r in rows if r["kind"] == "attack" and r["model"] == "mine")
    assert attacked["metrics"]["clean_accuracy"] > 0.8
    again = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert "0 new, 0 to run" in again.output
