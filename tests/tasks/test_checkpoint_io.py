"""Published checkpoint files: read without running their code, failed downloads named, and
a file that does not fit its architecture explained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tasks import models
from tasks.checkpoint_io import CheckpointError, LoadError, load_strict, read_state_dict

WRN = {"depth": 16, "widen": 4}


def _build(arch: str, params: dict | None = None, *, seed: int = 0, classes: int = 10):
    return models.build(
        arch,
        models.params_of(arch, params or {}),
        input_shape=(3, 32, 32),
        num_classes=classes,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        seed=seed,
    )


def _trained_looking(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with batch-norm statistics that are not the identity (as a trained one has)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(100)
    return net.eval()


def _zoo_file(net: models.Normalized, path: Path) -> Path:
    """How the zoo's files come: the bare network under ``state_dict``, saved from
    ``DataParallel`` (``module.`` on every key), next to training state."""
    state = {f"module.{k}": v for k, v in net.net.state_dict().items()}
    torch.save({"epoch": 99, "best_acc": 0.61, "state_dict": state}, path)
    return path


@pytest.mark.parametrize(("arch", "params"), [("resnet18", {}), ("wide_resnet", WRN)])
def test_a_zoo_layout_checkpoint_loads_strictly_and_gives_the_same_logits(
    arch: str, params: dict, tmp_path: Path
) -> None:
    source = _trained_looking(_build(arch, params, seed=1))
    state = read_state_dict(_zoo_file(source, tmp_path / f"{arch}.pt"))
    assert list(state) == list(source.net.state_dict())  # the zoo's names, prefixes gone
    loaded = _build(arch, params, seed=2)
    load_strict(loaded, state, arch=arch, path=tmp_path / f"{arch}.pt")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(_build(arch, params, seed=2).eval()(x), source(x))
        torch.testing.assert_close(loaded.eval()(x), source(x), rtol=0, atol=0)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    source = _build("resnet18", seed=3)
    save_file(
        {f"model.{k}": v for k, v in source.net.state_dict().items()}, tmp_path / "r.safetensors"
    )
    state = read_state_dict(tmp_path / "r.safetensors")
    expected = source.net.state_dict()
    assert set(state) == set(expected)  # safetensors files keep their keys sorted
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    (tmp_path / "pytorch_model.bin").write_bytes((tmp_path / "r.safetensors").read_bytes())
    assert set(read_state_dict(tmp_path / "pytorch_model.bin")) == set(expected)  # by content


def test_wrappers_and_prefixes_nest(tmp_path: Path) -> None:
    w = torch.ones(2)
    torch.save({"last": {"model_state_dict": {"module.model.fc.weight": w}}}, tmp_path / "n.pt")
    assert list(read_state_dict(tmp_path / "n.pt")) == ["fc.weight"]
    torch.save({"model.a": w, "b": w}, tmp_path / "mixed.pt")  # not every key: kept
    assert list(read_state_dict(tmp_path / "mixed.pt")) == ["model.a", "b"]


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_an_html_page_is_named_a_failed_download(name: str, tmp_path: Path) -> None:
    page = tmp_path / name
    page.write_text("\n  <!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(page)
    message = str(info.value)
    assert message.startswith(f"{name} is an HTML page, not a checkpoint: most likely a failed")
    assert "Google Drive" in message
    assert message.endswith("download it again")


def test_a_truncated_torch_file_is_named(tmp_path: Path) -> None:
    whole = _zoo_file(_build("wide_resnet", {"depth": 10, "widen": 1}), tmp_path / "w.pt")
    half = tmp_path / "half.pt"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError) as info:
        read_state_dict(half)
    message = str(info.value)
    assert message.startswith("half.pt is truncated or corrupt (not a whole zip archive")
    assert f"the file has {half.stat().st_size:,} bytes" in message
    assert message.endswith("download it again")


def test_flipped_bytes_in_a_torch_file_are_caught(tmp_path: Path) -> None:
    """torch.load itself would read them as weights without a word."""
    torch.save({"w": torch.zeros(10_000)}, tmp_path / "w.pt")
    data = bytearray((tmp_path / "w.pt").read_bytes())
    middle = data.index(b"\x00" * 1000) + 500
    data[middle] ^= 0xFF
    (tmp_path / "w.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"w\.pt is truncated or corrupt \(the CRC of "):
        read_state_dict(tmp_path / "w.pt")


def test_a_truncated_legacy_torch_file_is_named(tmp_path: Path) -> None:
    whole = tmp_path / "old.pt"
    torch.save({"w": torch.zeros(10_000)}, whole, _use_new_zipfile_serialization=False)
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"^old\.pt is truncated or corrupt"):
        read_state_dict(whole)


def test_a_truncated_safetensors_file_is_named(tmp_path: Path) -> None:
    whole = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(10_000)}, whole)
    data = whole.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "stub.safetensors").write_bytes(data[:40])  # inside the header
    with pytest.raises(CheckpointError, match=r"^cut\.safetensors is truncated or corrupt \(its t"):
        read_state_dict(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match=r"^stub\.safetensors is truncated .*bytes of header"):
        read_state_dict(tmp_path / "stub.safetensors")


class _Touch:
    """Unpickling this runs ``Path.touch(marker)``: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_Touch, _System])
def test_a_pickle_that_would_run_code_is_refused_unexecuted(payload, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": payload(marker)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path / "x.pt")
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith("x.pt holds Python objects beyond tensors (it needs ")
    assert "would run code, so it was refused: nothing in it was executed" in message
    assert "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')" in message


def test_something_other_than_a_state_dict_is_described(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "acc": 0.9, "w": torch.zeros(1)}, tmp_path / "s.pt")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path / "s.pt")
    assert str(info.value).startswith(
        "s.pt holds no state dict (parameter name -> tensor): found a dict with keys "
        "'epoch', 'acc', 'w', of which 'epoch', 'acc' are not tensors"
    )
    torch.save([torch.zeros(1)], tmp_path / "l.pt")
    with pytest.raises(CheckpointError, match=r"^l\.pt holds a list, not a state dict"):
        read_state_dict(tmp_path / "l.pt")


def _meta_state(arch: str, params: dict) -> dict[str, torch.Tensor]:
    """A state dict's names and shapes, without memory: enough for the mismatch report."""
    with torch.device("meta"):
        net = models.MODELS.get(arch).obj(models.params_of(arch, params), (3, 32, 32), 10)
    return net.state_dict()


def test_wrong_architecture_lists_keys_and_names_the_closest() -> None:
    state = _meta_state("wide_resnet", {"depth": 34, "sub_block1": True})
    with torch.device("meta"):
        net = models.MODELS.get("resnet18").obj(models.params_of("resnet18", {}), (3, 32, 32), 10)
    with pytest.raises(LoadError) as info:
        load_strict(net, state, arch="resnet18", path="/data/zoo/Zhang2019Theoretically.pt")
    message = str(info.value)
    assert message.startswith("Zhang2019Theoretically.pt does not load into resnet18: ")
    expected = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    missing = f"{len(expected - set(state))} missing keys: 'layer1.0.conv1.weight', "
    assert missing in message
    # the names both have, stem and last batch norm, differ in shape
    assert "5 shape mismatches: conv1.weight (checkpoint [16, 3, 3, 3], model [64, 3, 3, 3])" in (
        message
    )
    assert f"{len(set(state) - set(net.state_dict()))} unexpected keys: " in message
    assert "'block1.layer.0.bn1.weight'" in message
    assert "… and " in message  # only the first ten of each
    assert message.endswith(
        "these keys match wide_resnet (depth 34, widen 10, sub_block1 true) best "
        "(100% of names and 100% of shapes agree)"
    )
    assert info.value.detail in message


def test_wrong_depth_and_width_of_a_wide_resnet_are_read_off_the_keys() -> None:
    state = _meta_state("wide_resnet", {"depth": 28, "widen": 4})
    with torch.device("meta"):
        net = models.MODELS.get("wide_resnet").obj(
            models.params_of("wide_resnet", {}), (3, 32, 32), 10
        )
    with pytest.raises(
        LoadError, match=r"match wide_resnet \(depth 28, widen 4\) best \(100% of names and 100%"
    ):
        load_strict(net, state, arch="wide_resnet", path="Carmon2019Unlabeled.pt")


def test_a_shape_mismatch_names_key_and_both_shapes(tmp_path: Path) -> None:
    _zoo_file(_build("resnet18", classes=100), tmp_path / "c100.pt")
    with pytest.raises(LoadError) as info:
        load_strict(
            _build("resnet18"),
            read_state_dict(tmp_path / "c100.pt"),
            arch="resnet18",
            path=tmp_path / "c100.pt",
        )
    detail = info.value.detail
    assert detail.startswith(
        "2 shape mismatches: linear.weight (checkpoint [100, 512], model [10, 512]), "
        "linear.bias (checkpoint [100], model [10]); these keys match resnet18 best"
    )
    assert "missing" not in detail
    assert "unexpected" not in detail


def test_advgrid_files_load_whole_and_old_files_without_step_counters(tmp_path: Path) -> None:
    source = _trained_looking(_build("resnet18", seed=4))
    save_file(source.state_dict(), tmp_path / "own.safetensors")  # net.* plus mean and std
    loaded = _build("resnet18", seed=5)
    load_strict(loaded, read_state_dict(tmp_path / "own.safetensors"), arch="resnet18", path="own")
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), source.state_dict().values(), strict=True)
    )
    old = {
        k: v for k, v in source.net.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    load_strict(_build("resnet18"), old, arch="resnet18", path="old.pt")
