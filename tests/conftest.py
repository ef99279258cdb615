"""Fixtures shared by the whole suite: one local Ray per session, study files, a CLI runner,
finished studies run once per session, one thread for tests that compare numbers."""

from __future__ import annotations

import os
import shutil
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from storage import ArtifactStore, Database, mask_url

TINY_STUDY = """\
name: {name}
datasets:
  - name: digits
    eval_size: 64
models:
  - name: mlp
    arch: mlp
    params: {{hidden: [64]}}
    train: {{epochs: 15, lr: 0.005, seed: 0}}
  - name: cnn
    arch: small_cnn
    params: {{width: 8, hidden: 32}}
    train: {{epochs: 10, lr: 0.005, seed: 0}}
  - name: mlp2
    arch: mlp
    params: {{hidden: [32]}}
    train: {{epochs: 15, lr: 0.005, seed: 1}}
attacks:
  - name: fgsm
    eps: 0.1
  - name: pgd
    eps: 8/255
    steps: 3
execution:
  batch_size: 32
  lease_seconds: {lease}
"""


# Fashion-MNIST as Debian's dataset-fashion-mnist installs it (`.ci/install-datasets`)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_HINT = ".ci/install-datasets (run by `make test`) installs Debian's dataset-fashion-mnist"


def need_fashion_mnist() -> Path:
    """The real Fashion-MNIST's folder; skips (fails under CI) when it is not installed."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        reason = f"the real Fashion-MNIST is not at {FASHION_MNIST}: {FASHION_HINT}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI requires it)")
        pytest.skip(reason)
    return FASHION_MNIST


@pytest.fixture(scope="session", autouse=True)
def _data_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Datasets and the file-digest cache in folders of the session's own: no test reads a
    developer's ~/.advgrid/data or writes their ~/.cache/advgrid."""
    saved = {k: os.environ.get(k) for k in ("ADVGRID_DATA", "ADVGRID_CACHE")}
    os.environ["ADVGRID_DATA"] = str(tmp_path_factory.mktemp("advgrid-data"))
    os.environ["ADVGRID_CACHE"] = str(tmp_path_factory.mktemp("advgrid-cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def tiny_study(path: Path, name: str = "tiny", lease: float = 60) -> Path:
    """Write a 3-model × 2-attack study (3 train, 6 attack, 18 transfer cells)."""
    path.write_text(TINY_STUDY.format(name=name, lease=lease))
    return path


def data_env(root: Path) -> dict[str, str]:
    """Environment that points the index, store and MLflow store under ``root``."""
    return {
        "ADVGRID_DB": f"sqlite:///{root / 'data' / 'advgrid.db'}",
        "ADVGRID_STORE": str(root / "data" / "store"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'data' / 'mlflow.db'}",
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data folder: the index, store and MLflow store all live under it."""
    for key, value in data_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Cli:
    """Runs ``advgrid`` in-process with click's runner."""

    def __init__(self) -> None:
        from orchestrator.cli import main

        self.main = main
        self.runner = CliRunner()

    def __call__(self, *args: object, env: dict[str, str] | None = None) -> Result:
        return self.runner.invoke(
            self.main, [str(a) for a in args], env=env, catch_exceptions=False
        )


@pytest.fixture
def cli() -> Cli:
    return Cli()


@dataclass(frozen=True)
class FinishedStudy:
    """A study run to the end inline: its folder, data environment, study file and output.

    A finished study is shared by every test that asks for the same one, so tests read it
    and never change it; a test that changes what is stored works on :meth:`copy`.
    """

    root: Path
    env: dict[str, str]
    study: Path
    output: str

    def db(self) -> Database:
        return Database.open(self.env["ADVGRID_DB"])

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.env["ADVGRID_STORE"])

    def copy(self, dest: Path) -> FinishedStudy:
        """The same study and data under ``dest`` (index, store and MLflow store), for a
        test that changes them: copying is much cheaper than running the study again."""
        shutil.copytree(self.root / "data", dest / "data")
        study = dest / self.study.name
        shutil.copyfile(self.study, study)
        return FinishedStudy(dest, data_env(dest), study, self.output)


RunStudy = Callable[..., FinishedStudy]


@pytest.fixture(scope="session")
def run_study(tmp_path_factory: pytest.TempPathFactory) -> RunStudy:
    """``run_study(text, *args, file="study.yaml", executor="inline")``: the study ``text``
    run with ``advgrid run FILE --executor EXECUTOR *args`` in a folder of its own, once per
    session for each text and arguments; later calls return the same :class:`FinishedStudy`.
    (A study on Ray also needs the ``ray_cluster`` fixture.)"""
    done: dict[tuple[str, tuple[str, ...], str, str], FinishedStudy] = {}

    def run(
        text: str, *args: str, file: str = "study.yaml", executor: str = "inline"
    ) -> FinishedStudy:
        key = (text, args, file, executor)
        if key not in done:
            root = tmp_path_factory.mktemp(Path(file).stem)
            study = root / file
            study.write_text(text)
            env = data_env(root)
            result = Cli()("run", study, "--executor", executor, *args, env=env)
            assert result.exit_code == 0, result.output
            done[key] = FinishedStudy(root, env, study, result.output)
        return done[key]

    return run


@pytest.fixture(scope="session")
def tiny_finished(run_study: RunStudy) -> FinishedStudy:
    """:data:`TINY_STUDY` (3 train, 6 attack, 18 transfer cells) run inline with MLflow on."""
    return run_study(TINY_STUDY.format(name="tiny", lease=60), file="tiny.yaml")


@dataclass(frozen=True)
class TinyModel:
    """An ``mlp`` on scikit-learn's digits, as :func:`tasks.models.build` makes it.

    Attributes:
        net: The model (normalization inside, the network as ``net.net``), in eval mode.
        data: The digits dataset; ``split`` its training part and evaluation slice.
    """

    net: Any
    data: Any
    split: Any

    def bare_state(self) -> dict[str, Any]:
        """The network's own state dict, contiguous: what a checkpoint file from outside
        advgrid holds (no normalization buffers)."""
        return {k: v.contiguous() for k, v in self.net.net.state_dict().items()}


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., TinyModel]:
    """``tiny_model(hidden=(16,), seed=0, epochs=0)``: a small mlp on digits, trained for
    ``epochs`` on the training part (0: as initialized by ``seed``)."""
    from tasks import datasets, models, training

    params = datasets.params_of("digits", {})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)

    def make(hidden: tuple[int, ...] = (16,), *, seed: int = 0, epochs: int = 0) -> TinyModel:
        net = models.build(
            "mlp",
            models.MODELS.params_of("mlp", {"hidden": list(hidden)}),
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            mean=data.mean,
            std=data.std,
            seed=seed,
        )
        if epochs:
            recipe = training.TrainParams(epochs=epochs)
            training.fit(net, data.x[split.train], data.y[split.train], recipe)
        return TinyModel(net.eval(), data, split)

    return make


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module's tests and fixtures, as a cell with ``num_cpus: 1``
    runs: float sums in the same order, so numbers a test recomputes match the cell's bit for
    bit. Restored after the module, so no other module depends on the order tests run in.
    A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``, which
    sets it up before the module's other fixtures."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray for the whole session (starting one costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


# PostgreSQL: a fresh, uniquely named database per test on the server at
# ADVGRID_TEST_PG_URL, dropped afterwards; with no server the cases that need one skip.
PG_URL = os.environ.get(
    "ADVGRID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An autocommit engine on the test server's maintenance database."""
    engine = create_engine(
        PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # no server (or no driver): the postgres cases skip, saying why
        engine.dispose()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        pytest.skip(
            f"no PostgreSQL server answers at {mask_url(PG_URL)} ({reason}); "
            "set ADVGRID_TEST_PG_URL to run the postgres cases"
        )
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    """URL of a fresh, uniquely named PostgreSQL database, dropped afterwards."""
    name = f"advgrid_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


os.environ.setdefault("PYTHONHASHSEED", "0")
