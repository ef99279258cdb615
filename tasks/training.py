"""Deterministic supervised training (the ``train`` cell's work), plain or with a defense."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)
from torch import nn

from tasks import augmentation, gat, train_defenses  # noqa: F401  (gat: registration)
from tasks.batches import batches
from tasks.datasets import ImageSource, to_float
from tasks.registry import Params

StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], train_defenses.Step]


class DefenseChoice(BaseModel):
    """A training defense by name with its parameters, flat: ``{name: pgd_at, eps: 0.1}``.

    The parameters are checked against the defense's params model by the study validation
    (which stores them normalized, defaults filled in) and again when training starts.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def values(self) -> dict[str, Any]:
        """The parameters, without the name."""
        return dict(self.model_extra or {})


Augment = Literal["crop", "flip"]


class TrainParams(Params):
    """A training recipe; every field enters the train cell's key (``defense``, ``schedule``
    and ``augment`` only when set, so recipes without them keep the keys they had before
    they existed)."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    schedule: Literal["constant", "cosine", "step"] = Field(
        "constant",
        description="learning rate per step: constant; cosine decay to 0; or step (×0.1 at "
        "half and at three quarters of the epochs, Madry et al.'s and Rice et al.'s recipe)",
    )
    augment: tuple[Augment, ...] = Field(
        (),
        description="per-batch augmentation: crop (pad 4 and crop back, per sample), flip "
        "(horizontal, half the samples)",
    )
    defense: DefenseChoice | None = None

    @field_validator("defense", mode="before")
    @classmethod
    def _mapping(cls, value: object) -> object:
        if isinstance(value, str):  # `defense: pgd_at`: the defense with its defaults
            return {"name": value}
        if value is not None and not isinstance(value, dict | DefenseChoice):
            raise ValueError(
                "expected a training defense: a mapping such as {name: pgd_at, eps: 0.1}, "
                "or just its name"
            )
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.defense is None:
            data.pop("defense", None)
        if self.schedule == "constant":
            data.pop("schedule", None)
        if not self.augment:
            data.pop("augment", None)
        return data


def _optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=params.lr,
            momentum=params.momentum,
            weight_decay=params.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def _plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> train_defenses.Step:
    logits = model(x)
    return train_defenses.Step(nn.functional.cross_entropy(logits, y), logits)


def defense_seed(seed: int) -> int:
    """The seed of a defense's generator (random starts, noise), derived from the recipe's
    seed so that it is not the stream that shuffles the batches."""
    return (seed * 0x9E3779B97F4A7C15 + 0x5EED) % 2**63


def _step_fn(
    params: TrainParams, device: torch.device, artifacts: Mapping[str, nn.Module]
) -> StepFn:
    """The per-minibatch loss: plain cross-entropy, or the recipe's defense."""
    if params.defense is None:
        return _plain
    defense = train_defenses.build(params.defense.name, params.defense.values, **artifacts)
    gen = torch.Generator(device=device).manual_seed(defense_seed(params.seed))
    return lambda model, x, y: defense.loss(model, x, y, gen)


def fit(
    model: nn.Module,
    x: torch.Tensor | ImageSource,
    y: torch.Tensor,
    params: TrainParams,
    *,
    indices: torch.Tensor | None = None,
    workers: int = 0,
    artifacts: Mapping[str, nn.Module] | None = None,
) -> dict[str, float]:
    """Train ``model`` in place on ``(x, y)``; same inputs and seed give the same weights.

    With ``indices``, only those samples of ``x`` are trained on (none is copied out).
    ``x`` stays where it is (uint8 or float on the CPU, or a lazy :class:`ImageSource`):
    each minibatch is converted to float and moved to the model's device on its own, read
    by ``workers`` DataLoader processes when asked (pinned memory on a GPU). With
    ``params.defense`` each minibatch's loss is the defense's (adversarial examples against
    the current weights, noise, …), its randomness drawn from a generator seeded from
    ``params.seed``, built with the trained ``artifacts`` its class ``requires`` (``gat``'s
    generator, by role); augmentation draws from its own stream. Returns the final epoch's mean
    loss and accuracy on the inputs trained on (see :class:`tasks.train_defenses.Step`);
    the model is left in eval mode.
    """
    dev = _device_of(model, x)
    gen = torch.Generator().manual_seed(params.seed)
    opt = _optimizer(model, params)
    n = len(y) if indices is None else len(indices)
    steps = params.epochs * -(-n // params.batch_size)
    schedule = _schedule(opt, params, steps)
    step_fn = _step_fn(params, dev, artifacts or {})
    augment = augmentation.Augmenter(params.augment, params.seed, dev)
    model.train()
    loss_sum = correct = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)  # dropout and other in-model randomness
        for _ in range(params.epochs):
            loss_sum = correct = 0.0
            order = torch.randperm(n, generator=gen)
            if indices is not None:
                order = indices[order]
            for xb, yb in batches(x, y, order.split(params.batch_size), dev, workers=workers):
                step = step_fn(model, augment(xb), yb)
                opt.zero_grad(set_to_none=True)
                step.loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                loss_sum += float(step.loss.detach()) * len(yb)
                correct += float((step.logits.argmax(1) == yb).sum())
    opt.zero_grad(set_to_none=True)  # a checkpoint carries no stale gradients
    model.eval()
    return {"train_loss": loss_sum / n, "train_accuracy": correct / n}


def _device_of(model: nn.Module, x: object) -> torch.device:
    for p in model.parameters():
        return p.device
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def _schedule(
    opt: torch.optim.Optimizer, params: TrainParams, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The recipe's learning-rate schedule, stepped once per minibatch."""
    if params.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    if params.schedule == "step":
        marks = sorted({max(1, steps // 2), max(1, (3 * steps) // 4)})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=marks, gamma=0.1)
    return None


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels of ``x`` in eval mode, batched (uint8 images converted per batch,
    each batch moved to the model's device)."""
    model.eval()
    dev = _device_of(model, x)
    return torch.cat([model(to_float(b).to(dev)).argmax(1) for b in x.split(batch_size)])
