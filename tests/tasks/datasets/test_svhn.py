"""``svhn``: the MATLAB files' layout turned into ``(N, 3, 32, 32)``, label 10 read as the
digit 0, the optional extra samples, and shapes read from the headers alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from tasks import datasets
from tasks.errors import InputError
from tests.tasks.datasets.writers import write_svhn


def params(root: Path, **values: object) -> datasets.DatasetParams:
    return datasets.params_of("svhn", {"root": str(root), **values})


def test_svhn_loads_channels_first_with_label_10_as_digit_0(tmp_path: Path) -> None:
    written = write_svhn(tmp_path)
    stored = scipy.io.loadmat(tmp_path / "train_32x32.mat")
    assert stored["X"].shape == (32, 32, 3, 10)
    assert stored["y"].shape == (10, 1)
    assert 10 in stored["y"]
    assert 0 not in stored["y"]

    data = datasets.load("svhn", params(tmp_path))
    assert data.x.dtype == torch.uint8
    assert data.x.shape == (14, 3, 32, 32)
    assert data.n_train == 10
    assert data.num_classes == 10
    assert torch.equal(data.x, torch.from_numpy(written.x))
    assert data.y.tolist() == written.y.tolist()
    assert data.y[0] == 0
    assert int(data.y.max()) == 9
    # X[h, w, c, n] is pixel (h, w) of channel c of sample n
    assert data.x[1, 2, 3, 4] == stored["X"][3, 4, 2, 1]


def test_extra_samples_join_the_training_split_only_when_asked(tmp_path: Path) -> None:
    written = write_svhn(tmp_path, n_extra=5)
    plain = datasets.load("svhn", params(tmp_path))
    extra = datasets.load("svhn", params(tmp_path, extra=True))
    assert plain.n_train == 10
    assert len(plain.y) == 14
    assert extra.n_train == 15
    assert len(extra.y) == 19
    assert torch.equal(extra.x, torch.from_numpy(written.x))
    assert torch.equal(extra.x[15:], plain.x[10:])  # the test split comes last in both


def test_info_reads_only_the_headers(tmp_path: Path) -> None:
    write_svhn(tmp_path, n_train=7, n_test=3)
    info = datasets.describe("svhn", params(tmp_path))
    assert (info.size, info.n_train, info.input_shape, info.num_classes) == (10, 7, (3, 32, 32), 10)
    assert info.digest is not None
    assert len(info.digest) == 64


def test_missing_files_are_named_with_the_download_command(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(datasets.MissingDataError) as caught:
        datasets.load("svhn", params(tmp_path))
    assert "missing test_32x32.mat" in str(caught.value)
    assert f"`advgrid data download svhn --root {tmp_path}`" in str(caught.value)
    write_svhn(tmp_path)
    with pytest.raises(datasets.MissingDataError) as caught:
        datasets.load("svhn", params(tmp_path, extra=True))
    assert "missing extra_32x32.mat" in str(caught.value)
    assert f"`advgrid data download svhn --root {tmp_path} --optional`" in str(caught.value)


def test_a_file_of_another_layout_is_refused_naming_it(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    bad = tmp_path / "test_32x32.mat"
    scipy.io.savemat(bad, {"X": np.zeros((28, 28, 4), np.uint8), "y": np.ones((4, 1))})
    with pytest.raises(InputError, match=rf"{bad}: X is \(28, 28, 4\)"):
        datasets.load("svhn", params(tmp_path))
    bad.write_bytes(b"no MATLAB here")
    with pytest.raises(InputError, match=rf"{bad}: not a readable"):
        datasets.describe("svhn", params(tmp_path))
