"""``cifar10`` and ``cifar100``: the binary records, the python version read by its opcodes
(never unpickled), the label sets, and the errors of missing, truncated and hostile files."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks import datasets
from tasks.datasets.cifar_pickle import PickleLayoutError
from tasks.errors import InputError
from tests.tasks.datasets.writers import (
    CIFAR10,
    CIFAR100,
    cifar_entries,
    cifar_samples,
    write_cifar_binary,
    write_cifar_python,
)


def load(name: str, root: Path, **params: object) -> datasets.Data:
    return datasets.load(name, datasets.params_of(name, {"root": str(root), **params}))


def describe(name: str, root: Path, **params: object) -> datasets.Info:
    return datasets.describe(name, datasets.params_of(name, {"root": str(root), **params}))


def test_cifar10_binary_loads_uint8_images_labels_and_the_official_split(tmp_path: Path) -> None:
    x, y = write_cifar_binary(tmp_path)
    data = load("cifar10", tmp_path)
    assert data.x.dtype == torch.uint8
    assert data.x.shape == (23, 3, 32, 32)
    assert data.n_train == 20
    assert data.num_classes == 10
    assert torch.equal(data.x, torch.from_numpy(x))
    assert data.y.tolist() == y[:, 0].tolist()
    # the red plane comes first in a record: pixel (0, 0) of channel 0 is image byte 0
    record = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()
    assert record[0] == y[0, 0]
    assert data.x[0, 0, 0, 0] == record[1]
    assert data.x[0, 1, 0, 0] == record[1 + 1024]
    assert data.x[0, 2, 31, 31] == record[3072]
    info = describe("cifar10", tmp_path)
    assert (info.size, info.n_train, info.input_shape, info.num_classes) == (
        23,
        20,
        (3, 32, 32),
        10,
    )


def test_root_may_be_the_folder_or_its_parent_with_the_same_digest(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path)
    inner = tmp_path / "cifar-10-batches-bin"
    assert torch.equal(load("cifar10", inner).x, load("cifar10", tmp_path).x)
    assert describe("cifar10", inner).digest == describe("cifar10", tmp_path).digest


def test_cifar100_has_fine_and_coarse_labels(tmp_path: Path) -> None:
    x, y = write_cifar_binary(tmp_path, CIFAR100, per_batch=10, n_test=4)
    fine, coarse = load("cifar100", tmp_path), load("cifar100", tmp_path, labels="coarse")
    assert fine.num_classes == 100
    assert coarse.num_classes == 20
    assert fine.y.tolist() == y[:, 1].tolist()
    assert coarse.y.tolist() == y[:, 0].tolist()
    assert fine.y.tolist() != coarse.y.tolist()
    assert fine.n_train == coarse.n_train == 10
    assert torch.equal(fine.x, torch.from_numpy(x))
    assert describe("cifar100", tmp_path, labels="coarse").num_classes == 20
    with pytest.raises(ValueError, match="labels"):
        datasets.params_of("cifar100", {"labels": "medium"})


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path)
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    batch.write_bytes(batch.read_bytes()[:-5])
    for call in (describe, load):
        with pytest.raises(InputError, match=rf"{batch}: truncated .*3073-byte records"):
            call("cifar10", tmp_path)


@pytest.mark.parametrize("protocol", [None, 2, 3, 4])
@pytest.mark.parametrize("layout", [CIFAR10, CIFAR100], ids=["cifar10", "cifar100"])
def test_the_python_version_read_by_opcodes_equals_the_binary_version(
    tmp_path: Path, layout, protocol: int | None
) -> None:
    name = "cifar10" if layout is CIFAR10 else "cifar100"
    write_cifar_binary(tmp_path / "bin", layout)
    write_cifar_python(tmp_path / "py", layout, protocol=protocol)
    for labels in ("fine", "coarse") if layout is CIFAR100 else (None,):
        extra = {"labels": labels} if labels else {}
        binary, python = load(name, tmp_path / "bin", **extra), load(name, tmp_path / "py", **extra)
        assert torch.equal(binary.x, python.x)
        assert torch.equal(binary.y, python.y)
        assert binary.n_train == python.n_train
        assert binary.num_classes == python.num_classes
    assert describe(name, tmp_path / "py").size == len(binary.y)


def test_the_binary_version_is_preferred_when_both_are_there(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path)
    write_cifar_python(tmp_path)
    fmt = datasets.DATASETS.get("cifar10").obj
    _, files = fmt.files(datasets.params_of("cifar10", {"root": str(tmp_path)}))
    assert [f.parent.name for f in files] == ["cifar-10-batches-bin"] * 6


class RunsCode:
    """Pickles as a call that writes a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class RunsPython:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("where", ["top", "data", "extra key"])
@pytest.mark.parametrize("payload", [RunsCode, RunsPython])
def test_a_pickle_that_would_run_code_is_refused_without_running_it(
    tmp_path: Path, where: str, payload: type
) -> None:
    write_cifar_python(tmp_path)
    marker = tmp_path / "ran"
    x, y = cifar_samples(CIFAR10, 4, 3)
    entries = cifar_entries(x[:4], y[:4], CIFAR10, "batch 1")
    if where == "top":
        obj: object = payload(marker)
    elif where == "data":
        obj = {**entries, "data": payload(marker)}
    else:
        obj = {**entries, "note": payload(marker)}
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps(obj, protocol=2))
    for call in (load, describe):
        with pytest.raises(PickleLayoutError) as caught:
            call("cifar10", tmp_path)
        message = str(caught.value)
        assert str(batch) in message
        assert "refused without running it" in message
        assert f"`advgrid data download cifar10 --root {tmp_path}`" in message
    assert not marker.exists()


def test_a_pickle_of_another_layout_says_why(tmp_path: Path) -> None:
    write_cifar_python(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    x, y = cifar_samples(CIFAR10, 4, 3)
    entries = cifar_entries(x[:4], y[:4], CIFAR10, "batch 1")
    cases = {
        "no labels": ({k: v for k, v in entries.items() if k != "labels"}, "no labels"),
        "float data": ({**entries, "data": x[:4].reshape(4, 3072) / 255}, "expected uint8"),
        "wrong shape": ({**entries, "data": x[:4].reshape(12, 1024)}, r"shape \(12, 1024\)"),
        "a list": ([1, 2, 3], "not a dict"),
        "protocol 5": (entries, "_frombuffer"),
    }
    for case, (obj, why) in cases.items():
        (folder / "data_batch_1").write_bytes(
            pickle.dumps(obj, protocol=5 if case == "protocol 5" else 2)
        )
        with pytest.raises(PickleLayoutError, match=why):
            load("cifar10", tmp_path)
    (folder / "data_batch_1").write_bytes(b"not a pickle at all")
    with pytest.raises(PickleLayoutError, match="data_batch_1: "):
        load("cifar10", tmp_path)


def test_a_missing_or_partial_folder_names_the_files_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(datasets.MissingDataError) as caught:
        load("cifar10", tmp_path)
    message = str(caught.value)
    assert "cifar-10-batches-bin/ nor cifar-10-batches-py/" in message
    assert "cifar-10-batches-bin/data_batch_1.bin" in message
    assert f"`advgrid data download cifar10 --root {tmp_path}`" in message

    write_cifar_binary(tmp_path)
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(datasets.MissingDataError, match="missing data_batch_3.bin in "):
        load("cifar10", tmp_path)

    shutil.rmtree(tmp_path / "cifar-10-batches-bin")
    write_cifar_binary(tmp_path, CIFAR100)
    (tmp_path / "cifar-100-binary" / "test.bin").unlink()
    with pytest.raises(datasets.MissingDataError, match="missing test.bin"):
        load("cifar100", tmp_path / "cifar-100-binary")


def test_images_come_back_as_floats_per_batch(tmp_path: Path) -> None:
    x, _ = write_cifar_binary(tmp_path)
    data = load("cifar10", tmp_path)
    batch = data.images(torch.tensor([0, 5]))
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.from_numpy(x[[0, 5]].astype(np.float32) / 255))
