"""Square Attack — score-based black-box random search with square-shaped updates (L∞).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020.

Threat model: black-box with scores (the model's logits, no gradients),
``‖x' − x‖∞ ≤ eps``, inputs in [0, 1], at most ``max_queries`` model queries per sample.
Starts from vertical stripes of ±eps, then repeatedly proposes, for every sample not yet
fooled, a square window (side from the share ``p`` of pixels, halved on the paper's
schedule rescaled to ``max_queries``) set to a random ±eps per channel, and keeps it if the
margin loss ``z_y − max_{i≠y} z_i`` (targeted: cross-entropy to the target) went down.
Defaults: ``max_queries=5000``, ``p_init=0.8`` (AutoAttack's). Cost: one forward pass per
query; no backward passes. The queries used are counted in ``forward``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tasks.attacks.base import Attack, AttackParams, register

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_at(p_init: float, it: int, max_queries: int) -> float:
    """The share of pixels a square covers at iteration ``it`` (paper's halving schedule)."""
    it = int(it / max_queries * 10000)
    return p_init / 2 ** sum(it > t for t in _SCHEDULE)


class SquareParams(AttackParams):
    norm: Literal["linf"] = "linf"
    max_queries: int = Field(5000, ge=1)
    p_init: float = Field(0.8, gt=0, le=1)


@register("square")
class Square(Attack):
    """Square Attack: query-efficient black-box random search, L∞ (Andriushchenko 2020)."""

    Params = SquareParams
    params: SquareParams
    black_box: ClassVar[bool] = True

    def _loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(margin, loss to minimize); margin < 0 means success."""
        with torch.inference_mode():
            logits = model(x)
        self.forward += len(x)
        if t is not None:
            z_t = logits.gather(1, t[:, None])[:, 0]
            margin = logits.scatter(1, t[:, None], -math.inf).amax(1) - z_t
            return margin, F.cross_entropy(logits, t, reduction="none")
        z_y = logits.gather(1, y[:, None])[:, 0]
        margin = z_y - logits.scatter(1, y[:, None], -math.inf).amax(1)
        return margin, margin

    def _signs(
        self, shape: tuple[int, ...], gen: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=gen, device=device).float() * 2 - 1

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, (n, c, h, w) = self.params, x.shape
        stripes = self._signs((n, c, 1, w), generator, x.device)
        best = (x + p.eps * stripes).clamp(0, 1)
        margin, loss = self._loss(model, best, y, target)
        for it in range(p.max_queries - 1):
            todo = (margin > 0).nonzero()[:, 0]
            if len(todo) == 0:
                break
            side = max(int(round(math.sqrt(p_at(p.p_init, it, p.max_queries) * h * w))), 1)
            side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
            x_new = self._propose(x[todo], best[todo], side, generator)
            m_new, l_new = self._loss(
                model, x_new, y[todo], None if target is None else target[todo]
            )
            better = l_new < loss[todo]
            idx = todo[better]
            best[idx], margin[idx], loss[idx] = x_new[better], m_new[better], l_new[better]
        return best

    def _propose(
        self, x: torch.Tensor, best: torch.Tensor, side: int, gen: torch.Generator
    ) -> torch.Tensor:
        """Replace one random square window of ``best``'s perturbation by ±eps per channel."""
        eps, (n, c, h, w) = self.params.eps, x.shape
        vh = int(torch.randint(0, h - side + 1, (1,), generator=gen, device=x.device))
        vw = int(torch.randint(0, w - side + 1, (1,), generator=gen, device=x.device))
        delta = best - x
        window = (slice(None), slice(None), slice(vh, vh + side), slice(vw, vw + side))
        delta[window] = eps * self._signs((n, c, 1, 1), gen, x.device)
        return (x + delta).clamp(0, 1)
