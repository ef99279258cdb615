"""The field's standard architectures: output shapes, the published parameter counts, and the
parameter names of RobustBench's model zoo (so that its files load strictly)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from tasks import models
from tasks.errors import FactoryError, ImportNotAllowedError, UnknownComponentError

# (arch, params): every new architecture at its defaults, WRN also small
ARCHS = [
    ("lenet5", {}),
    ("madry_cnn", {}),
    ("resnet18", {}),
    ("resnet34", {}),
    ("resnet50", {}),
    ("preact_resnet18", {}),
    ("preact_resnet18", {"bn_before_fc": True, "shortcut_from": "activation"}),
    ("wide_resnet", {"depth": 16, "widen": 4, "dropout": 0.3}),
    ("wide_resnet", {}),
    ("torchvision:resnet18", {}),
]


def _build(arch: str, params: dict, shape: tuple[int, int, int], classes: int = 10, seed: int = 0):
    channels = shape[0]
    return models.build(
        arch,
        models.params_of(arch, params),
        input_shape=shape,
        num_classes=classes,
        mean=[0.5] * channels,
        std=[0.25] * channels,
        seed=seed,
    )


def _bare(arch: str, params: dict | None = None, shape=(3, 32, 32), classes: int = 10):
    """The network without normalization, on the meta device: shapes and names, no memory."""
    with torch.device("meta"):
        return models.MODELS.get(arch).obj(models.params_of(arch, params or {}), shape, classes)


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["mnist", "cifar"])
@pytest.mark.parametrize(("arch", "params"), ARCHS, ids=[f"{a}{p or ''}" for a, p in ARCHS])
def test_forward_gives_one_logit_per_class(arch: str, params: dict, shape) -> None:
    net = _build(arch, params, shape, classes=7).eval()
    with torch.no_grad():
        out = net(torch.rand(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("arch", "params", "shape", "count"),
    [
        # CIFAR-10 ResNets as in RobustBench (and Kuang Liu's pytorch-cifar)
        ("resnet18", {}, (3, 32, 32), 11_173_962),
        ("resnet34", {}, (3, 32, 32), 21_282_122),
        ("resnet50", {}, (3, 32, 32), 23_520_842),
        ("preact_resnet18", {}, (3, 32, 32), 11_171_146),
        ("preact_resnet18", {"bn_before_fc": True}, (3, 32, 32), 11_172_170),
        # WRN-28-10 and WRN-34-10 of Zagoruyko and Komodakis, TRADES and RobustBench
        ("wide_resnet", {}, (3, 32, 32), 36_479_194),
        ("wide_resnet", {"depth": 34}, (3, 32, 32), 46_160_474),
        # Carmon2019Unlabeled's file: WRN-28-10 with the unused copy of block1
        ("wide_resnet", {"sub_block1": True}, (3, 32, 32), 38_119_866),
        ("wide_resnet", {"depth": 16, "widen": 4}, (3, 32, 32), 2_748_890),
        # LeNet-5 on 32×32 grayscale: the 61,706 of LeCun et al.'s C1…F6 with a 10-way output
        ("lenet5", {}, (1, 32, 32), 61_706),
        ("lenet5", {}, (1, 28, 28), 61_706),
        # the MNIST challenge model of Madry et al.
        ("madry_cnn", {}, (1, 28, 28), 3_274_634),
    ],
)
def test_parameter_counts_are_the_published_ones(arch, params, shape, count) -> None:
    assert _count(_bare(arch, params, shape)) == count


RESNET18_HEAD = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
]
RESNET18_LAYER2_0 = [
    "layer2.0.conv1.weight",
    "layer2.0.bn1.weight",
    "layer2.0.bn1.bias",
    "layer2.0.bn1.running_mean",
    "layer2.0.bn1.running_var",
    "layer2.0.bn1.num_batches_tracked",
    "layer2.0.conv2.weight",
    "layer2.0.bn2.weight",
    "layer2.0.bn2.bias",
    "layer2.0.bn2.running_mean",
    "layer2.0.bn2.running_var",
    "layer2.0.bn2.num_batches_tracked",
    "layer2.0.shortcut.0.weight",
    "layer2.0.shortcut.1.weight",
    "layer2.0.shortcut.1.bias",
    "layer2.0.shortcut.1.running_mean",
    "layer2.0.shortcut.1.running_var",
    "layer2.0.shortcut.1.num_batches_tracked",
]


def _keys(net: torch.nn.Module, prefix: str) -> list[str]:
    return [k for k in net.state_dict() if k.startswith(prefix)]


def test_resnet18_has_robustbench_parameter_names() -> None:
    net = _bare("resnet18")
    keys = list(net.state_dict())
    assert keys[:6] == RESNET18_HEAD
    assert _keys(net, "layer2.0.") == RESNET18_LAYER2_0
    assert _keys(net, "layer1.0.shortcut") == []  # identity: no parameters
    assert keys[-2:] == ["linear.weight", "linear.bias"]
    assert len(keys) == 122
    assert tuple(net.state_dict()["layer2.0.shortcut.0.weight"].shape) == (128, 64, 1, 1)


def test_resnet50_blocks_have_a_third_conv() -> None:
    net = _bare("resnet50")
    assert [k for k in _keys(net, "layer1.0.") if k.endswith("weight")] == [
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.conv2.weight",
        "layer1.0.bn2.weight",
        "layer1.0.conv3.weight",
        "layer1.0.bn3.weight",
        "layer1.0.shortcut.0.weight",
        "layer1.0.shortcut.1.weight",
    ]
    assert tuple(net.state_dict()["linear.weight"].shape) == (10, 2048)


def test_preact_resnet18_has_robustbench_parameter_names() -> None:
    plain, with_bn = _bare("preact_resnet18"), _bare("preact_resnet18", {"bn_before_fc": True})
    assert list(plain.state_dict())[:2] == ["conv1.weight", "layer1.0.bn1.weight"]
    assert [k for k in _keys(plain, "layer2.0.") if not k.startswith("layer2.0.bn")] == [
        "layer2.0.conv1.weight",
        "layer2.0.conv2.weight",
        "layer2.0.shortcut.0.weight",
    ]
    assert list(plain.state_dict())[-2:] == ["linear.weight", "linear.bias"]
    assert set(with_bn.state_dict()) - set(plain.state_dict()) == {
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    }


WRN_BLOCK1_0 = [
    "block1.layer.0.bn1.weight",
    "block1.layer.0.bn1.bias",
    "block1.layer.0.bn1.running_mean",
    "block1.layer.0.bn1.running_var",
    "block1.layer.0.bn1.num_batches_tracked",
    "block1.layer.0.conv1.weight",
    "block1.layer.0.bn2.weight",
    "block1.layer.0.bn2.bias",
    "block1.layer.0.bn2.running_mean",
    "block1.layer.0.bn2.running_var",
    "block1.layer.0.bn2.num_batches_tracked",
    "block1.layer.0.conv2.weight",
    "block1.layer.0.convShortcut.weight",
]


def test_wide_resnet_has_robustbench_parameter_names() -> None:
    net = _bare("wide_resnet", {"depth": 34})
    keys = list(net.state_dict())
    assert keys[0] == "conv1.weight"
    assert _keys(net, "block1.layer.0.") == WRN_BLOCK1_0
    assert _keys(net, "block1.layer.1.convShortcut") == []  # same width: identity
    assert [k for k in keys if k.endswith("convShortcut.weight")] == [
        "block1.layer.0.convShortcut.weight",
        "block2.layer.0.convShortcut.weight",
        "block3.layer.0.convShortcut.weight",
    ]
    assert keys[-7:] == [
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "fc.weight",
        "fc.bias",
    ]
    assert "block3.layer.4.conv2.weight" in keys  # 34 = 6 × 5 + 4: five blocks per group
    assert "block3.layer.5.conv1.weight" not in keys
    assert tuple(net.state_dict()["block3.layer.0.conv1.weight"].shape) == (640, 320, 3, 3)
    assert not any(k.startswith("sub_block1.") for k in keys)
    with_sub = _bare("wide_resnet", {"depth": 34, "sub_block1": True}).state_dict()
    assert {k[len("sub_block1.") :] for k in with_sub if k.startswith("sub_block1.")} == {
        k[len("block1.") :] for k in keys if k.startswith("block1.")
    }


def test_sub_block1_changes_no_output() -> None:
    x = torch.rand(2, 3, 32, 32)
    small = {"depth": 10, "widen": 2}
    plain = _build("wide_resnet", small, (3, 32, 32)).eval()
    with_sub = _build("wide_resnet", {**small, "sub_block1": True}, (3, 32, 32)).eval()
    with_sub.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(with_sub(x), plain(x))


def test_build_wraps_the_zoo_names_in_normalization() -> None:
    keys = list(_build("wide_resnet", {"depth": 10, "widen": 1}, (3, 32, 32)).state_dict())
    assert keys[:3] == ["mean", "std", "net.conv1.weight"]
    assert keys[-2:] == ["net.fc.weight", "net.fc.bias"]


@pytest.mark.parametrize("arch", ["resnet18", "wide_resnet", "lenet5", "madry_cnn"])
def test_the_seed_decides_the_weights(arch: str) -> None:
    params = {"depth": 10, "widen": 1} if arch == "wide_resnet" else {}
    a, b, c = (_build(arch, params, (1, 28, 28), seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_wide_resnet_depth_must_be_six_n_plus_four() -> None:
    with pytest.raises(ValidationError, match=r"depth must be 6n\+4, e\.g\. 16, 28, 34 \(got 30\)"):
        models.params_of("wide_resnet", {"depth": 30})
    assert models.params_of("wide_resnet", {"depth": 40}).depth == 40


def test_torchvision_names_are_not_import_paths() -> None:
    assert not models.is_import_path("torchvision:resnet50")
    assert models.is_torchvision("torchvision:resnet50")
    assert models.is_import_path("mylab.nets:resnet_tiny")
    assert models.params_of("torchvision:resnet18", {"zero_init_residual": True}) == {
        "zero_init_residual": True
    }
    models.factory("torchvision:resnet50")  # allow_imports is not needed
    with pytest.raises(ImportNotAllowedError):
        models.factory("torchvision.models:resnet50")  # an import path still is one


def test_torchvision_params_reach_get_model() -> None:
    net = _build("torchvision:resnet18", {"zero_init_residual": True}, (3, 32, 32)).net
    assert set(net.state_dict()) >= {"conv1.weight", "layer1.0.bn2.weight", "fc.weight"}
    assert torch.count_nonzero(net.state_dict()["layer1.0.bn2.weight"]) == 0
    assert tuple(net.state_dict()["fc.weight"].shape) == (10, 512)
    with pytest.raises(FactoryError, match="torchvision could not build 'torchvision:resnet18'"):
        _build("torchvision:resnet18", {"no_such_option": 1}, (3, 32, 32))


def test_unknown_torchvision_name_lists_close_matches() -> None:
    with pytest.raises(UnknownComponentError) as info:
        models.factory("torchvision:resnet5")
    message = str(info.value)
    assert message.startswith("unknown torchvision model 'resnet5'; did you mean")
    assert "'torchvision:resnet50'" in message
    assert "list_models" in message


def test_torchvision_weights_are_never_asked_for() -> None:
    with pytest.raises(FactoryError, match="may not set 'weights'"):
        _build("torchvision:resnet18", {"weights": "DEFAULT"}, (3, 32, 32))
    with pytest.raises(FactoryError, match="3-channel"):
        _build("torchvision:resnet18", {}, (2, 32, 32))


STUDY = """\
name: tv
datasets:
  - name: digits
    eval_size: 32
models:
  - name: net
    arch: {arch}
    params: {params}
    train: {{epochs: 1}}
attacks:
  - name: fgsm
    eps: 0.1
"""


def test_a_study_names_torchvision_models_without_allow_imports() -> None:
    loader.parse(STUDY.format(arch="torchvision:resnet18", params="{}"), "s.yaml")
    with pytest.raises(ConfigError) as info:
        loader.parse(STUDY.format(arch="torchvision:resnet5", params="{}"), "s.yaml")
    assert info.value.problems[0].startswith(
        "line 7: models[0].arch: unknown torchvision model 'resnet5'; did you mean"
    )
    with pytest.raises(ConfigError) as info:
        loader.parse(STUDY.format(arch="torchvision:resnet18", params="{weights: x}"), "s.yaml")
    assert info.value.problems[0].startswith("line 8: models[0].params: params of")


def test_a_study_checks_wide_resnet_depth() -> None:
    with pytest.raises(ConfigError) as info:
        loader.parse(STUDY.format(arch="wide_resnet", params="{depth: 30}"), "s.yaml")
    assert "depth must be 6n+4, e.g. 16, 28, 34 (got 30)" in info.value.problems[0]
