"""An artifact store given as a URL, through the whole CLI: run, verify, gc, export, import.

The study runs on a ``file://`` store (a real folder, named as a URL) and on the same kind
of folder given as a plain path: the results and the stored files must be the same.
``memory://`` is used once, as the store an import writes into, only to reach the
object-store code path of the fsspec backend through the commands (an in-memory
filesystem lives in this process, so it proves nothing about a store shared by nodes).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch

from orchestrator.config import Settings
from orchestrator.run.driver import Driver
from orchestrator.study.loader import load
from orchestrator.study.plan import expand
from storage import ArtifactStore, Database
from tests.conftest import Cli, data_env, tiny_study

Run = tuple[dict[str, str], Path]  # environment, store folder


def _run(root: Path, *, as_url: bool) -> Run:
    env = data_env(root)
    folder = Path(env["ADVGRID_STORE"])
    if as_url:
        env["ADVGRID_STORE"] = folder.as_uri()
    study = tiny_study(root / "tiny.yaml")
    result = Cli()("run", study, "--executor", "inline", "--no-mlflow", env=env)
    assert result.exit_code == 0, result.output
    return env, folder


@pytest.fixture(scope="module")
def by_path(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("path"), as_url=False)


@pytest.fixture(scope="module")
def by_url(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("url"), as_url=True)


def _transfer(cli: Cli, env: dict[str, str], attack: str) -> dict:
    result = cli("transfer", "tiny", "--attack", attack, "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _stored(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_file_url_store_gives_the_same_results_and_files(by_path: Run, by_url: Run, cli) -> None:
    (path_env, path_folder), (url_env, url_folder) = by_path, by_url
    assert url_env["ADVGRID_STORE"].startswith("file:///")
    for attack in ("fgsm", "pgd"):
        assert _transfer(cli, url_env, attack) == _transfer(cli, path_env, attack)
    url_digests = Database.open(url_env["ADVGRID_DB"]).artifact_digests()
    assert url_digests == Database.open(path_env["ADVGRID_DB"]).artifact_digests()
    assert len(url_digests) == 27  # 3 checkpoints, 6 adversarial sets, 18 predictions
    store = ArtifactStore(url_env["ADVGRID_STORE"])
    assert _stored(url_folder) == _stored(path_folder) == [store.uri(d) for d in url_digests]


def test_verify_and_gc_on_a_url_store(by_url: Run, cli) -> None:
    env, folder = by_url
    clean = cli("artifacts", "verify", env=env)
    assert clean.exit_code == 0, clean.output
    assert "27 indexed artifacts present" in clean.output
    store = ArtifactStore(env["ADVGRID_STORE"])
    orphan = store.put({"v": torch.zeros(3)}, {"kind": "orphan"}).digest
    assert (folder / store.uri(orphan)).is_file()
    gone = cli("artifacts", "gc", "--delete", "--min-age", "0", env=env)
    assert gone.exit_code == 0, gone.output
    assert f"deleted {orphan}" in gone.output
    assert "1 orphaned files" in gone.output
    assert not store.exists(orphan)
    assert cli("artifacts", "verify", env=env).exit_code == 0


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"/advgrid-import-{uuid.uuid4().hex[:12]}"
    yield f"memory://{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_export_from_and_import_into_url_stores(
    by_url: Run, cli, tmp_path: Path, memory_root: str
) -> None:
    env, _ = by_url
    bundle = tmp_path / "tiny.tar.gz"
    exported = cli("export", "tiny", "-o", bundle, env=env)
    assert exported.exit_code == 0, exported.output
    there = {
        **env,
        "ADVGRID_DB": f"sqlite:///{tmp_path / 'there.db'}",
        "ADVGRID_STORE": memory_root,
    }
    imported = cli("import", bundle, env=there)
    assert imported.exit_code == 0, imported.output
    assert "artifacts 27 copied, 0 already present" in imported.output
    assert _transfer(cli, there, "pgd") == _transfer(cli, env, "pgd")

    store = ArtifactStore(memory_root)
    assert sorted(store.iter_digests()) == Database.open(env["ADVGRID_DB"]).artifact_digests()
    digest = next(store.iter_digests())
    fs, key = fsspec.filesystem("memory"), f"{memory_root.removeprefix('memory://')}/"
    blob = bytearray(fs.cat_file(key + store.uri(digest)))
    blob[-1] ^= 0xFF
    fs.pipe_file(key + store.uri(digest), bytes(blob))
    broken = cli("artifacts", "verify", "--format", "json", env=there)
    assert broken.exit_code == 1
    [problem] = json.loads(broken.output)["problems"]
    assert problem["digest"] == digest
    assert memory_root in problem["problem"]


def test_the_driver_checks_reported_artifacts_in_a_url_store(
    by_url: Run, tmp_path: Path, memory_root: str
) -> None:
    env, _ = by_url
    study = load(tiny_study(tmp_path / "tiny.yaml"))
    settings = Settings(env["ADVGRID_DB"], memory_root, "", str(tmp_path))
    driver = Driver(expand(study), settings, Database.open(env["ADVGRID_DB"]), mlflow=False)
    digest = ArtifactStore(memory_root).put({"v": torch.ones(2)}, {}).digest
    present = {"worker": "w1", "artifacts": {"adversarial": {"digest": digest}}}
    assert driver._missing(present) is None
    absent = {"worker": "w1", "artifacts": {"adversarial": {"digest": "0" * 64}}}
    error = driver._missing(absent)
    assert error is not None
    assert f"is not in the store {memory_root}" in error


def test_store_urls_are_kept_as_given_and_shown_masked(cli, workdir: Path) -> None:
    from orchestrator.config import resolve

    assert resolve(store="s3://lab-bucket/advgrid/").store_root == "s3://lab-bucket/advgrid/"
    url = "s3://AKIAEXAMPLE:hunter2@lab-bucket/advgrid?region=x"
    result = cli("artifacts", "verify", "--store", url)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: artifact store URL 's3://AKIAEXAMPLE:***@lab-bucket/advgrid?region=x': a query "
        "string or fragment is not allowed; set backend options in the environment or the "
        "fsspec configuration instead"
    )
    assert "hunter2" not in result.output
