"""``advgrid data ls``, ``verify`` and ``download``: exit codes, the tables and the hints."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tasks.datasets import sources
from tasks.datasets.sources import Expect, Remote, Source
from tests.conftest import FASHION_MNIST
from tests.tasks.datasets.serving import Served
from tests.tasks.datasets.writers import CIFAR10, write_cifar_binary, write_idx

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]
STEMS.append("t10k-labels-idx1-ubyte")


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize(
    "args", [["data"], ["data", "ls"], ["data", "download"], ["data", "verify"]]
)
def test_every_data_command_has_examples(cli, args: list[str]) -> None:
    result = cli(*args, "--help")
    assert result.exit_code == 0, result.output
    assert "Examples:\n" in result.output


def test_ls_shows_each_file_dataset_its_folder_and_whether_it_is_there(cli, tmp_path: Path) -> None:
    write_idx(tmp_path / "mnist")
    result = cli("data", "ls", env={"ADVGRID_DATA": str(tmp_path)})
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells
        for line in result.output.splitlines()
        if line.startswith("│")
        and len(cells := [c.strip() for c in line.strip()[1:-1].split("│")]) == 5
    }
    assert set(rows) == {
        "cifar10",
        "cifar100",
        "fashion_mnist",
        "imagefolder",
        "mnist",
        "svhn",
    }  # digits and synthetic are generated
    assert rows["mnist"][1:4] == [f"{tmp_path}/mnist", "yes", ""]
    assert rows["cifar10"][1:] == [
        f"{tmp_path}/cifar10",
        "no",
        "there is no such folder",
        "advgrid data download cifar10",
    ]
    assert rows["imagefolder"][4] == ""  # nothing to download
    if (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        assert rows["fashion_mnist"][1:3] == [str(FASHION_MNIST), "yes"]
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"")
    partial = cli("data", "ls", env={"ADVGRID_DATA": str(tmp_path)})
    assert "missing test_32x32.mat" in partial.output


def test_verify_reports_ok_then_a_mismatch_with_exit_1(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx(tmp_path)
    gz = {s: (tmp_path / f"{s}.gz").read_bytes() for s in STEMS}
    checks = {f"{s}.gz": Expect(md5(b), md5(gzip.decompress(b))) for s, b in gz.items()}
    monkeypatch.setitem(sources.SOURCES, "mnist", Source((), tuple(checks), checks))
    ok = cli("data", "verify", "mnist", "--root", tmp_path)
    assert ok.exit_code == 0, ok.output
    assert ok.output.count(" ok ") == 4
    assert "mismatch" not in ok.output

    images = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(images.read_bytes()))
    raw[100] ^= 0xFF
    images.write_bytes(gzip.compress(bytes(raw)))
    bad = cli("data", "verify", "mnist", "--root", tmp_path)
    assert bad.exit_code == 1
    assert bad.output.count(" ok ") == 3
    assert bad.output.count("mismatch") == 1
    assert f"`advgrid data download mnist --root {tmp_path}`" in bad.output


def test_verify_of_a_missing_folder_lists_the_files_and_the_command(cli, tmp_path: Path) -> None:
    result = cli("data", "verify", "cifar10", "--root", tmp_path / "none")
    assert result.exit_code == 1
    assert result.output.count("missing") >= 6
    assert "data_batch_5.bin" in result.output
    assert "6 of 6 files missing or not matching" in result.output
    assert "`advgrid data download cifar10 --root" in result.output


def test_verify_the_real_fashion_mnist(cli) -> None:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the real Fashion-MNIST is not at {FASHION_MNIST}")
    result = cli("data", "verify", "fashion_mnist")
    assert result.exit_code == 0, result.output
    assert result.output.count(" ok ") == 4
    assert str(FASHION_MNIST) in result.output


def test_download_into_a_folder_then_load_it(
    cli, tmp_path: Path, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar_binary(tmp_path / "made")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "made" / CIFAR10.binary, arcname=CIFAR10.binary)
    (served.folder / "c.tar.gz").write_bytes(buf.getvalue())
    records = {f: 4 for f in CIFAR10.train} | {CIFAR10.test: 3}
    source = Source(
        (Remote("c.tar.gz", (f"{served.url}/c.tar.gz",), md5(buf.getvalue()), extract=True),),
        tuple(f"{CIFAR10.binary}/{f}" for f in records),
        {f: Expect(records=n, record_bytes=3073) for f, n in records.items()},
    )
    monkeypatch.setitem(sources.SOURCES, "cifar10", source)
    root = tmp_path / "cifar"
    result = cli("data", "download", "cifar10", "--root", root)
    assert result.exit_code == 0, result.output
    assert f"cifar10: files in {root} downloaded and checked" in result.output
    assert (root / CIFAR10.binary / "test_batch.bin").is_file()
    assert cli("data", "verify", "cifar10", "--root", root).exit_code == 0


def test_a_refused_download_is_an_error_line(
    cli, tmp_path: Path, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = Remote("x.tar.gz", (f"{served.url}/x.tar.gz",), "0" * 32, extract=True)
    monkeypatch.setitem(sources.SOURCES, "cifar10", Source((remote,), ("x",), {}))
    result = cli("data", "download", "cifar10", "--root", tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith("Error: could not download x.tar.gz: http://127.0.0.1:")
    assert "404" in result.output


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["verify", "digits"], "Error: dataset 'digits' is generated, not read from files"),
        (["download", "imagefolder"], "Error: dataset 'imagefolder' has no published files"),
        (["verify", "cifar"], "Error: unknown dataset 'cifar'; did you mean 'cifar10'"),
    ],
)
def test_names_that_cannot_be_fetched_are_errors(cli, args: list[str], error: str) -> None:
    result = cli("data", *args)
    assert result.exit_code == 1
    assert result.output.startswith(error), result.output
