"""A training run's whole state at an epoch's end, so that a killed train cell continues
where it stopped instead of from zero, and ends with the weights it would have had.

:class:`TrainState` holds everything :func:`tasks.training.fit` carries from one epoch to
the next: the weights (and buffers), the optimizer's state, the weight average, and every
random stream (batch order, augmentation, the training defense's draws, torch's global
stream for dropout, CUDA's when on a GPU). The learning-rate schedule is not saved: it is a
function of the step, so the resumed run steps a fresh one as many times as the first run
had (its floats then follow the same operations in the same order). On the CPU the final
weights of an interrupted and resumed run are those of an uninterrupted one, bit for bit.

As an artifact a state is safetensors like any other: tensors named ``model/…``,
``optim/<param>/<name>``, ``average/…`` and ``rng/<stream>``, and JSON metadata with the
optimizer's parameter groups, the epoch reached and what must match for it to be used
again (:func:`mismatch`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

KIND = "train_state"


@dataclass
class Streams:
    """The random generators a training run draws from, by name."""

    generators: dict[str, torch.Generator] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")

    def states(self) -> dict[str, torch.Tensor]:
        out = {f"rng/{name}": g.get_state() for name, g in self.generators.items()}
        out["rng/torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            out["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        return out

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, g in self.generators.items():
            g.set_state(tensors[f"rng/{name}"])
        torch.set_rng_state(tensors["rng/torch"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)


@dataclass
class TrainState:
    """What a training run has after ``epoch`` epochs (see the module docstring)."""

    epoch: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @classmethod
    def capture(
        cls,
        epoch: int,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        average: nn.Module | None,
        streams: Streams,
    ) -> TrainState:
        tensors = {f"model/{k}": v.detach().clone() for k, v in model.state_dict().items()}
        saved = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, entries in saved["state"].items():
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{pid}/{name}"] = value.detach().clone()
                else:
                    scalars.setdefault(str(pid), {})[name] = value
        if average is not None:
            for k, v in average.state_dict().items():
                tensors[f"average/{k}"] = v.detach().clone()
        tensors.update(streams.states())
        meta = {
            "kind": KIND,
            "epoch": epoch,
            "optimizer_groups": saved["param_groups"],
            "optimizer_scalars": scalars,
            "device": streams.device.type,
        }
        return cls(epoch, tensors, meta)

    def restore(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler | None,
        average: nn.Module | None,
        streams: Streams,
        steps_done: int,
    ) -> None:
        """Put the state back into a run built as the first one was, before its first step."""
        t = self.tensors
        model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model/")})
        if schedule is not None:
            with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()"
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(steps_done):
                    schedule.step()
        state: dict[int, dict[str, Any]] = {}
        for key, value in t.items():
            if key.startswith("optim/"):
                _, pid, name = key.split("/", 2)
                state.setdefault(int(pid), {})[name] = value
        for pid, entries in self.meta.get("optimizer_scalars", {}).items():
            state.setdefault(int(pid), {}).update(entries)
        opt.load_state_dict({"state": state, "param_groups": self.meta["optimizer_groups"]})
        if average is not None:
            average.load_state_dict({k[8:]: v for k, v in t.items() if k.startswith("average/")})
        streams.restore(t)

    def history(self) -> list[dict[str, float]]:
        """The per-epoch records of the epochs before this state (see
        :func:`tasks.training.fit`)."""
        return _history(self.meta)


def _history(meta: dict[str, Any]) -> list[dict[str, float]]:
    return [dict(e) for e in meta.get("history") or []]


def mismatch(
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    expected: dict[str, Any],
    model: nn.Module,
) -> str | None:
    """Why a saved state cannot continue this run (None: it can): another cell, code version,
    device type or number of epochs, or weights of other names or shapes."""
    for name in ("kind", "cell_key", "code_version", "device", "epochs"):
        if meta.get(name) != expected.get(name):
            return f"its {name} is {meta.get(name)!r}, this run's {expected.get(name)!r}"
    epoch = meta.get("epoch")
    if not isinstance(epoch, int) or not 0 < epoch < int(expected["epochs"]):
        return f"its epoch {epoch!r} is not between 1 and {int(expected['epochs']) - 1}"
    own = model.state_dict()
    saved = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    if saved.keys() != own.keys():
        return "its weights have other names than this model's"
    for k, v in own.items():
        if tuple(saved[k].shape) != tuple(v.shape) or saved[k].dtype != v.dtype:
            return f"its weight {k!r} is {tuple(saved[k].shape)}, this model's {tuple(v.shape)}"
    return None
