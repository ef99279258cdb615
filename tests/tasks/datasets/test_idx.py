"""``mnist`` and ``fashion_mnist`` from idx files written here, gzipped or not, and the real
Fashion-MNIST where Debian's package installs it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from tasks import datasets
from tests.conftest import need_fashion_mnist
from tests.tasks.datasets.writers import write_idx


def load(name: str, root: Path | None = None) -> datasets.Data:
    values = {} if root is None else {"root": str(root)}
    return datasets.load(name, datasets.params_of(name, values))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_gzipped_and_raw_idx_files_give_the_same_data(tmp_path: Path, name: str) -> None:
    written = write_idx(tmp_path / "gz", gz=True)
    write_idx(tmp_path / "raw", gz=False)
    gz, raw = load(name, tmp_path / "gz"), load(name, tmp_path / "raw")
    assert gz.x.dtype == torch.uint8
    assert gz.x.shape == (17, 1, 28, 28)
    assert gz.n_train == raw.n_train == 12
    assert gz.num_classes == 10
    assert torch.equal(gz.x, raw.x)
    assert torch.equal(gz.y, raw.y)
    assert torch.equal(gz.x, torch.from_numpy(written.x))
    assert gz.y.tolist() == written.y.tolist()
    assert (tmp_path / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert not list((tmp_path / "raw").glob("*.gz"))


def test_a_missing_file_is_named_with_the_download_command(tmp_path: Path) -> None:
    write_idx(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(datasets.MissingDataError) as caught:
        load("mnist", tmp_path)
    assert "missing train-labels-idx1-ubyte" in str(caught.value)
    assert f"`advgrid data download mnist --root {tmp_path}`" in str(caught.value)


def test_the_real_fashion_mnist_loads_with_its_official_split() -> None:
    folder = need_fashion_mnist()
    data = load("fashion_mnist")  # found in the system folder: no root given
    assert data.x.dtype == torch.uint8
    assert data.x.shape == (70_000, 1, 28, 28)
    assert data.n_train == 60_000
    assert data.num_classes == 10
    # the first training sample is an ankle boot (class 9), the first test sample too
    assert int(data.y[0]) == 9
    assert int(data.y[60_000]) == 9
    head = gzip.decompress((folder / "train-labels-idx1-ubyte.gz").read_bytes())[8:20]
    assert data.y[:12].tolist() == list(head) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9]
    assert torch.bincount(data.y[:60_000]).tolist() == [6000] * 10
    info = datasets.describe("fashion_mnist", datasets.params_of("fashion_mnist", {}))
    assert (info.size, info.n_train, info.input_shape) == (70_000, 60_000, (1, 28, 28))
