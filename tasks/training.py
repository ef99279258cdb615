"""Deterministic supervised training (the ``train`` cell's work), plain or with a defense."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import nn

from tasks import augmentation, gat, progress, recipe, resume, train_defenses  # noqa: F401
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


Augment = Literal["crop", "flip", "cutout"]

# options that enter the train cell's key only when they differ from these defaults, so
# recipes written before an option existed keep their keys (and their weights)
_LATER = {
    "defense": None,
    "schedule": "constant",
    "augment": (),
    "nesterov": False,
    "norm_bias_decay": True,
    "milestones": None,
    "gamma": 0.1,
    "warmup_epochs": 0.0,
    "label_smoothing": 0.0,
    "ema": None,
    "eval_every": None,
    "compile": False,
}


# the recipes the training defenses' papers state for CIFAR-10, as `train: {preset: NAME}`:
# the values it names fill what the entry does not give, and the key holds those values (a
# preset written out in full is the same recipe, the same key)
PRESETS: dict[str, dict[str, Any]] = {
    # Madry et al. 2018: 80 000 steps of 128 (≈ 205 epochs), ×0.1 at 40 000 and 60 000
    "madry": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4,
              "batch_size": 128, "epochs": 205, "schedule": "step", "augment": ["crop", "flip"]},
    # Rice et al. 2020: 200 epochs, ×0.1 at 100 and 150
    "rice": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
             "batch_size": 128, "epochs": 200, "schedule": "multistep", "milestones": [100, 150],
             "augment": ["crop", "flip"]},
    # Zhang et al. 2019 (TRADES's code): 76 epochs, ×0.1 at 75
    "trades": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4,
               "batch_size": 128, "epochs": 76, "schedule": "multistep", "milestones": [75],
               "augment": ["crop", "flip"]},
    # Wong et al. 2020 (fast adversarial training): 15 epochs, cyclic rate peaking at 0.2
    "fast_at": {"optimizer": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 5e-4,
                "batch_size": 128, "epochs": 15, "schedule": "onecycle",
                "augment": ["crop", "flip"]},
}  # fmt: skip


class TrainParams(Params):
    """A training recipe; every field enters the train cell's key (those added after the
    first recipes only when set, so recipes without them keep the keys they had before
    they existed). :mod:`tasks.recipe` builds the optimizer, schedule and weight average."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, description="the learning rate (the peak, under a schedule)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="adam; adamw (decoupled weight decay); sgd (with momentum)"
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd's momentum")
    nesterov: bool = Field(False, description="sgd: Nesterov's momentum")
    weight_decay: float = Field(0.0, ge=0)
    norm_bias_decay: bool = Field(
        True,
        description="weight decay on biases and normalization layers too; false: on the "
        "weights of convolutions and linear layers only",
    )
    seed: int = 0
    schedule: Literal["constant", "cosine", "step", "multistep", "onecycle"] = Field(
        "constant",
        description="learning rate per step: constant; cosine decay to 0; step (×0.1 at "
        "half and at three quarters of the epochs, Madry et al.'s and Rice et al.'s recipe); "
        "multistep (×gamma at each epoch of milestones); onecycle (0 up to lr at 2/5 of the "
        "steps and back to 0, Wong et al.'s fast AT)",
    )
    milestones: list[int] | None = Field(
        None, description="multistep: the epochs after which the rate is multiplied by gamma"
    )
    gamma: float = Field(0.1, gt=0, le=1, description="multistep: the factor at each milestone")
    warmup_epochs: float = Field(
        0.0, ge=0, description="a linear ramp of the rate from 0 over these first epochs"
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="plain training: the cross-entropy's label smoothing"
    )
    ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="decay per step of an exponential moving average of the weights, which "
        "becomes the trained model (e.g. 0.999)",
    )
    eval_every: int | None = Field(
        None,
        ge=1,
        description="every this many epochs, the clean accuracy on the evaluation slice, "
        "kept in the history (epoch/eval_accuracy in MLflow); the weights do not change",
    )
    compile: bool = Field(
        False,
        description="train through torch.compile (fused kernels; its floats differ from "
        "eager's, so it is part of the key)",
    )
    augment: tuple[Augment, ...] = Field(
        (),
        description="per-batch augmentation: crop (pad 4 and crop back, per sample), flip "
        "(horizontal, half the samples), cutout (a square of half the side zeroed)",
    )
    defense: DefenseChoice | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError("nesterov applies to `optimizer: sgd`")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum > 0")
        if (self.schedule == "multistep") != (self.milestones is not None):
            raise ValueError(
                "`schedule: multistep` takes `milestones:` (epochs, e.g. [75, 90]), and "
                "milestones apply to that schedule only"
            )
        marks = self.milestones or []
        if marks and (marks != sorted(set(marks)) or marks[0] < 1 or marks[-1] >= self.epochs):
            raise ValueError(
                f"milestones must be increasing epochs between 1 and epochs - 1 "
                f"({self.epochs - 1}); got {marks}"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be below epochs ({self.epochs})")
        if self.label_smoothing > 0 and self.defense is not None:
            raise ValueError(
                "label_smoothing applies to plain training: a training defense computes its "
                "own loss"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "preset" not in data:
            return data
        data = dict(data)
        name = data.pop("preset")
        if name not in PRESETS:
            known = ", ".join(sorted(PRESETS))
            raise ValueError(f"unknown preset {name!r}; the presets: {known}")
        return {**PRESETS[name], **data}

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
        for key, default in _LATER.items():
            value = getattr(self, key)
            if value == default or (key == "augment" and not value):
                data.pop(key, None)
        return data


def _plain(smoothing: float) -> StepFn:
    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> train_defenses.Step:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=smoothing)
        return train_defenses.Step(loss, logits)

    return step


def defense_seed(seed: int) -> int:
    """The seed of a defense's generator (random starts, noise), derived from the recipe's
    seed so that it is not the stream that shuffles the batches."""
    return (seed * 0x9E3779B97F4A7C15 + 0x5EED) % 2**63


def _step_fn(
    params: TrainParams, device: torch.device, artifacts: Mapping[str, nn.Module]
) -> tuple[StepFn, torch.Generator | None]:
    """The per-minibatch loss: plain cross-entropy, or the recipe's defense; and the
    defense's random stream (None for plain training)."""
    if params.defense is None:
        return _plain(params.label_smoothing), None
    defense = train_defenses.build(params.defense.name, params.defense.values, **artifacts)
    gen = torch.Generator(device=device).manual_seed(defense_seed(params.seed))
    return (lambda model, x, y: defense.loss(model, x, y, gen)), gen


class Checkpoints(Protocol):
    """Where :func:`fit` saves its state at an epoch's end (a train cell's store)."""

    def due(self, epoch: int) -> bool:
        """Whether to save after ``epoch`` epochs (never called after the last)."""
        ...

    def save(self, state: resume.TrainState) -> None: ...


def fit(
    model: nn.Module,
    x: torch.Tensor | ImageSource,
    y: torch.Tensor,
    params: TrainParams,
    *,
    indices: torch.Tensor | None = None,
    workers: int = 0,
    artifacts: Mapping[str, nn.Module] | None = None,
    checkpoints: Checkpoints | None = None,
    start: resume.TrainState | None = None,
    report: progress.Sink | None = None,
    history: list[dict[str, float]] | None = None,
    holdout: tuple[torch.Tensor, torch.Tensor] | None = None,
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

    With ``checkpoints``, the whole state is handed to it after each epoch it says is due
    (:class:`tasks.resume.TrainState`); with ``start``, a state saved by a run of the same
    recipe on the same data, training continues after its epoch and ends with the weights
    the uninterrupted run would have had. ``report`` gets the run's progress in epochs
    (:class:`tasks.progress.Reporter`: loss and accuracy so far in the epoch, samples/s, ETA).
    ``history`` gets one entry per epoch: ``epoch``, ``train_loss``, ``train_accuracy`` and
    ``lr`` (the rate the epoch started at), and every ``params.eval_every`` epochs
    ``eval_accuracy`` on ``holdout`` (images, labels); a resumed run puts back the saved
    epochs' first.
    """
    dev = _device_of(model, x)
    gen = torch.Generator().manual_seed(params.seed)
    opt = recipe.optimizer(model, params)
    n = len(y) if indices is None else len(indices)
    per_epoch = -(-n // params.batch_size)
    schedule = recipe.schedule(opt, params, per_epoch)
    average = recipe.WeightAverage(model, params.ema)
    step_fn, defense_gen = _step_fn(params, dev, artifacts or {})
    augment = augmentation.Augmenter(params.augment, params.seed, dev)
    streams = resume.Streams({"batches": gen, "augment": augment.gen}, dev)
    if defense_gen is not None:
        streams.generators["defense"] = defense_gen
    # the steps run through the compiled module; the weights, their average and a saved
    # state are the model's own (the compiled one shares its parameters)
    run: nn.Module = torch.compile(model) if params.compile else model  # type: ignore[assignment]
    model.train()
    loss_sum = correct = 0.0
    first = 0 if start is None else start.epoch
    reporter = progress.Reporter(report, "epoch", params.epochs, first)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)  # dropout and other in-model randomness
        if start is not None:
            start.restore(model, opt, schedule, average.average, streams, first * per_epoch)
            model.train()
        epochs: list[dict[str, float]] = [] if start is None else start.history()
        for epoch in range(first, params.epochs):
            loss_sum = correct = 0.0
            rate = float(opt.param_groups[0]["lr"])
            order = torch.randperm(n, generator=gen)
            if indices is not None:
                order = indices[order]
            seen = 0
            for xb, yb in batches(x, y, order.split(params.batch_size), dev, workers=workers):
                step = step_fn(run, augment(xb), yb)
                opt.zero_grad(set_to_none=True)
                step.loss.backward()
                opt.step()
                average.update()
                if schedule is not None:
                    schedule.step()
                loss_sum += float(step.loss.detach()) * len(yb)
                correct += float((step.logits.argmax(1) == yb).sum())
                seen += len(yb)
                reporter(epoch + seen / n, len(yb), loss=loss_sum / seen, accuracy=correct / seen)
            done = epoch + 1
            reporter(done, final=True, loss=loss_sum / n, accuracy=correct / n)
            entry = {"epoch": done, "train_loss": loss_sum / n, "train_accuracy": correct / n}
            entry["lr"] = rate
            if params.eval_every and holdout is not None and done % params.eval_every == 0:
                pred = predict(model, holdout[0])  # eval mode: no statistics, no draws
                entry["eval_accuracy"] = float((pred.cpu() == holdout[1]).float().mean())
                model.train()
            epochs.append(entry)
            if checkpoints is not None and done < params.epochs and checkpoints.due(done):
                opt.zero_grad(set_to_none=True)
                state = resume.TrainState.capture(done, model, opt, average.average, streams)
                state.meta["history"] = list(epochs)
                checkpoints.save(state)
    opt.zero_grad(set_to_none=True)  # a checkpoint carries no stale gradients
    average.finish()
    if history is not None:
        history.extend(epochs)
    model.eval()
    return {"train_loss": loss_sum / n, "train_accuracy": correct / n}


def _device_of(model: nn.Module, x: object) -> torch.device:
    for p in model.parameters():
        return p.device
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels of ``x`` in eval mode, batched (uint8 images converted per batch,
    each batch moved to the model's device)."""
    model.eval()
    dev = _device_of(model, x)
    return torch.cat([model(to_float(b).to(dev)).argmax(1) for b in x.split(batch_size)])
