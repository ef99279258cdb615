"""Deterministic supervised training (the ``train`` cell's work)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tasks.registry import Params


class TrainParams(Params):
    """A training recipe; every field enters the train cell's key."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0


def _optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=params.lr,
            momentum=params.momentum,
            weight_decay=params.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: TrainParams
) -> dict[str, float]:
    """Train ``model`` in place on ``(x, y)``; same inputs and seed give the same weights.

    Returns the final epoch's mean loss and accuracy on the training data.
    """
    gen = torch.Generator().manual_seed(params.seed)
    opt = _optimizer(model, params)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    loss_sum = correct = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)  # dropout and other in-model randomness
        for _ in range(params.epochs):
            loss_sum = correct = 0.0
            order = torch.randperm(len(x), generator=gen).to(x.device)
            for batch in order.split(params.batch_size):
                logits = model(x[batch])
                loss = loss_fn(logits, y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(batch)
                correct += float((logits.argmax(1) == y[batch]).sum())
    opt.zero_grad(set_to_none=True)  # a checkpoint carries no stale gradients
    model.eval()
    return {"train_loss": loss_sum / len(x), "train_accuracy": correct / len(x)}


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels of ``x`` in eval mode, batched."""
    model.eval()
    return torch.cat([model(b).argmax(1) for b in x.split(batch_size)])
