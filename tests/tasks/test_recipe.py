"""Training recipes: every option enters the key and changes the weights; schedules exact;
options that do not fit together refused; recipes without the new options keep their keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from tasks import augmentation, recipe, training

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = {"epochs": 3, "batch_size": 16, "lr": 0.05, "seed": 0}
# (option, its value, the base values it is compared against where the default is not enough)
OPTIONS = [
    ({"optimizer": "adamw", "weight_decay": 0.05}, {"weight_decay": 0.05}),
    ({"optimizer": "sgd", "nesterov": True}, {"optimizer": "sgd"}),
    ({"weight_decay": 0.05, "norm_bias_decay": False}, {"weight_decay": 0.05}),
    ({"schedule": "multistep", "milestones": [1, 2], "gamma": 0.5}, {}),
    ({"schedule": "multistep", "milestones": [1], "gamma": 0.5},
     {"schedule": "multistep", "milestones": [1], "gamma": 0.1}),
    ({"schedule": "onecycle"}, {}),
    ({"warmup_epochs": 1}, {}),
    ({"warmup_epochs": 1, "schedule": "cosine"}, {"schedule": "cosine"}),
    ({"label_smoothing": 0.1}, {}),
    ({"ema": 0.9}, {}),
    ({"augment": ["cutout"]}, {}),
    ({"epochs": 4}, {}),
    ({"batch_size": 32}, {}),
    ({"lr": 0.01}, {}),
    ({"optimizer": "sgd", "momentum": 0.5}, {"optimizer": "sgd"}),
    ({"seed": 1}, {}),
    ({"defense": {"name": "fgsm_at", "eps": 0.1}}, {}),
]  # fmt: skip
# tested on their own below: eval_every records and does not train differently; compile
# trains the same recipe through other kernels (slow: it compiles)
LEAVES_THE_WEIGHTS = {"eval_every", "compile"}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )


def _fit(values: dict) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(96, 1, 8, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    net = _net()
    training.fit(net, x, y, training.TrainParams(**{**BASE, **values}))
    return net.state_dict()


@pytest.mark.parametrize(("option", "base"), OPTIONS, ids=lambda v: str(v))
def test_each_option_changes_the_key_and_the_weights(option: dict, base: dict) -> None:
    with_it = training.TrainParams(**{**BASE, **base, **option}).model_dump(mode="json")
    without = training.TrainParams(**{**BASE, **base}).model_dump(mode="json")
    assert with_it != without
    a, b = _fit({**base, **option}), _fit(base)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    again = _fit({**base, **option})
    assert all(torch.equal(a[k], again[k]) for k in a)  # and it replays


def test_every_option_is_tested_and_in_the_readme_table() -> None:
    fields = set(training.TrainParams.model_fields)
    tested = {k for option, _ in OPTIONS for k in option} | LEAVES_THE_WEIGHTS
    assert fields - tested == set()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("**Training recipes.**") : readme.index("Options that do not fit")]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    listed = {name.strip(" `") for row in rows for name in row.split(",")}
    assert fields - listed == set()


def test_recipes_without_the_new_options_keep_their_dump() -> None:
    dump = training.TrainParams(epochs=4, optimizer="sgd", weight_decay=5e-4).model_dump()
    assert sorted(dump) == [
        "batch_size",
        "epochs",
        "lr",
        "momentum",
        "optimizer",
        "seed",
        "weight_decay",
    ]
    explicit = training.TrainParams(
        epochs=4, nesterov=False, gamma=0.1, warmup_epochs=0, label_smoothing=0, ema=None
    )
    assert explicit.model_dump() == training.TrainParams(epochs=4).model_dump()


def _rates(values: dict, steps_per_epoch: int) -> list[float]:
    p = training.TrainParams(**values)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=p.lr)
    sched = recipe.schedule(opt, p, steps_per_epoch)
    out = []
    for _ in range(p.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def test_schedules_are_exact() -> None:
    assert _rates({"epochs": 4, "lr": 1.0}, 1) == [1.0] * 4
    multi = _rates({"epochs": 4, "lr": 1.0, "schedule": "multistep", "milestones": [1, 3]}, 2)
    assert multi == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])
    # onecycle: 0 up to lr at 2/5 of the 10 steps, back down to 0 at the end
    cyc = _rates({"epochs": 5, "lr": 1.0, "schedule": "onecycle"}, 2)
    assert cyc == pytest.approx([0, 0.25, 0.5, 0.75, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    warm = _rates({"epochs": 3, "lr": 1.0, "warmup_epochs": 1}, 4)
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    warm_cos = _rates({"epochs": 2, "lr": 1.0, "warmup_epochs": 1, "schedule": "cosine"}, 2)
    cos = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert warm_cos == pytest.approx([0.5 * cos[0], cos[1], cos[2], cos[3]])
    # the schedules of earlier recipes are torch's own, as they were
    old = training.TrainParams(epochs=2, schedule="step")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    assert isinstance(recipe.schedule(opt, old, 3), torch.optim.lr_scheduler.MultiStepLR)


def test_no_decay_on_biases_and_norms() -> None:
    p = training.TrainParams(optimizer="sgd", weight_decay=0.1, norm_bias_decay=False)
    groups = recipe.optimizer(_net(), p).param_groups
    decayed = {tuple(q.shape) for q in groups[0]["params"]}
    assert decayed == {(4, 1, 3, 3), (3, 256)}
    assert groups[1]["weight_decay"] == 0.0
    assert all(q.ndim == 1 for q in groups[1]["params"])


def test_the_average_becomes_the_model_and_counters_are_kept() -> None:
    net = _net()
    avg = recipe.WeightAverage(net, 0.5)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for q in net.parameters():
            q.add_(1.0)
        net[1].num_batches_tracked += 7
    avg.update()  # the first update copies; the second averages
    with torch.no_grad():
        for q in net.parameters():
            q.add_(2.0)
    avg.update()
    avg.finish()
    state = net.state_dict()
    assert torch.allclose(state["0.weight"], first["0.weight"] + 2.0)  # 0.5·(w+1) + 0.5·(w+3)
    assert int(state["1.num_batches_tracked"]) == 7


def test_cutout_zeroes_one_square_per_image() -> None:
    x = torch.ones(64, 1, 8, 8)
    out = augmentation.cutout(x, torch.Generator().manual_seed(0))
    holes = (out == 0).flatten(1).sum(1)
    assert int(holes.max()) == 16  # a 4×4 square where it falls fully inside
    assert int(holes.min()) >= 4  # its centre is always on the image
    again = augmentation.cutout(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nesterov": True}, "nesterov applies to `optimizer: sgd`"),
        ({"optimizer": "sgd", "nesterov": True, "momentum": 0}, "nesterov needs a momentum"),
        ({"schedule": "multistep"}, "`schedule: multistep` takes `milestones:`"),
        ({"milestones": [2]}, "`schedule: multistep` takes `milestones:`"),
        ({"schedule": "multistep", "milestones": [3, 2]}, "milestones must be increasing"),
        ({"schedule": "multistep", "milestones": [10]}, "between 1 and epochs - 1 (9)"),
        ({"warmup_epochs": 10}, "warmup_epochs must be below epochs (10)"),
        (
            {"label_smoothing": 0.1, "defense": "pgd_at"},
            "label_smoothing applies to plain training",
        ),
        ({"ema": 1.0}, "less than 1"),
        ({"augment": ["mixup"]}, "'crop', 'flip' or 'cutout'"),
    ],
)
def test_options_that_do_not_fit_are_refused(values: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        training.TrainParams(**values)


def test_eval_every_records_the_held_out_accuracy_and_leaves_the_weights() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(96, 1, 8, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    hx, hy = torch.rand(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    plain, evaluated = _net(), _net()
    history: list[dict] = []
    training.fit(plain, x, y, training.TrainParams(**BASE))
    recipe = training.TrainParams(**BASE, eval_every=2)
    assert recipe.model_dump() != training.TrainParams(**BASE).model_dump()  # in the key
    training.fit(evaluated, x, y, recipe, history=history, holdout=(hx, hy))
    a, b = plain.state_dict(), evaluated.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert ["eval_accuracy" in e for e in history] == [False, True, False]
    two = _net()  # the same recipe stopped after 2 epochs: the weights epoch 2 was scored on
    training.fit(two, x, y, training.TrainParams(**{**BASE, "epochs": 2}))
    with torch.no_grad():
        at_two = float((two(hx).argmax(1) == hy).float().mean())
    assert history[1]["eval_accuracy"] == at_two
    assert history[-1]["lr"] == BASE["lr"]


@pytest.mark.slow
def test_compile_trains_the_same_recipe_through_other_kernels() -> None:
    recipe = training.TrainParams(**{**BASE, "epochs": 1}, compile=True)
    eager = training.TrainParams(**{**BASE, "epochs": 1})
    assert recipe.model_dump() != eager.model_dump()  # in the key: its floats may differ
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(96, 1, 8, 8, generator=g), torch.randint(0, 3, (96,), generator=g)

    def fitted(params: training.TrainParams) -> dict[str, torch.Tensor]:
        # no normalization layer: a conv bias before BatchNorm gets a zero gradient up to
        # rounding, which Adam turns into ±lr steps of either sign, kernels apart
        torch.manual_seed(3)
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        net.append(nn.Linear(4 * 8 * 8, 3))
        training.fit(net, x, y, params)
        return net.state_dict()

    a, b = fitted(recipe), fitted(eager)
    assert a.keys() == b.keys()  # the model's own names, not the compiled wrapper's
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4), k


def test_a_preset_is_the_papers_recipe_and_the_same_key_written_out() -> None:
    rice = training.TrainParams(preset="rice")
    spelled = training.TrainParams(**training.PRESETS["rice"])
    assert rice.model_dump() == spelled.model_dump()  # one recipe, one key
    assert (rice.optimizer, rice.lr, rice.weight_decay, rice.milestones) == (
        "sgd",
        0.1,
        5e-4,
        [100, 150],
    )
    short = training.TrainParams(preset="fast_at", epochs=3)  # what is given wins
    assert (short.epochs, short.schedule, short.lr) == (3, "onecycle", 0.2)
    assert "preset" not in short.model_dump()
    for name in training.PRESETS:  # each one is a valid recipe on its own
        training.TrainParams(preset=name)
    with pytest.raises(ValidationError, match="unknown preset 'madri'; the presets: fast_at"):
        training.TrainParams(preset="madri")
