"""``execution.precision`` (bfloat16 autocast) and ``execution.channels_last``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.study.loader import parse
from orchestrator.study.plan import expand
from tests.conftest import Cli, data_env

STUDY = """\
name: {name}
datasets:
  - name: digits
    eval_size: 64
models:
  - name: cnn
    arch: small_cnn
    params: {{width: 8, hidden: 32}}
    train: {{epochs: 8, lr: 0.005, seed: 0}}
attacks:
  - name: fgsm
    eps: 0.1
execution:
  batch_size: 32
{extra}"""


def _text(name: str = "p", extra: str = "") -> str:
    return STUDY.format(name=name, extra=extra)


def test_bf16_changes_every_key_and_fp32_or_channels_last_none() -> None:
    default = [c.key for c in expand(parse(_text())).cells]
    assert [c.key for c in expand(parse(_text(extra="  precision: fp32\n"))).cells] == default
    assert [c.key for c in expand(parse(_text(extra="  channels_last: true\n"))).cells] == default
    bf16 = expand(parse(_text(extra="  precision: bf16\n"))).cells
    assert not {c.key for c in bf16} & set(default)
    assert all(c.spec["precision"] == "bf16" for c in bf16)


def test_fp16_is_refused_with_the_choices() -> None:
    from orchestrator.errors import AdvgridError

    with pytest.raises(AdvgridError, match=r"execution.precision.*'fp32' or 'bf16'"):
        parse(_text(extra="  precision: fp16\n"), "s.yaml")


def _run(root: Path, extra: str) -> dict[str, dict[str, float]]:
    root.mkdir()
    (root / "s.yaml").write_text(_text("p", extra))
    env = data_env(root)
    cli = Cli()
    result = cli("run", root / "s.yaml", "--executor", "inline", "--no-mlflow", "-q", env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(cli("results", "p", "--format", "json", env=env).output)
    return {r["kind"]: r["metrics"] for r in rows}


def test_bf16_and_channels_last_run_and_agree_with_fp32(tmp_path: Path) -> None:
    fp32 = _run(tmp_path / "fp32", "")
    layout = _run(tmp_path / "cl", "  channels_last: true\n")
    bf16 = _run(tmp_path / "bf16", "  precision: bf16\n")
    for kind in ("train", "attack"):  # a memory layout does not change the numbers
        assert layout[kind]["eval_accuracy" if kind == "train" else "robust_accuracy"] == (
            pytest.approx(fp32[kind]["eval_accuracy" if kind == "train" else "robust_accuracy"])
        )
    assert bf16["train"]["eval_accuracy"] > 0.8
    assert bf16["train"]["eval_accuracy"] == pytest.approx(fp32["train"]["eval_accuracy"], abs=0.05)
    assert bf16["attack"]["clean_accuracy"] == pytest.approx(
        fp32["attack"]["clean_accuracy"], abs=0.05
    )
    assert bf16["attack"]["robust_accuracy"] == pytest.approx(
        fp32["attack"]["robust_accuracy"], abs=0.1
    )
    assert bf16["attack"]["robust_accuracy"] < bf16["attack"]["clean_accuracy"] - 0.1
