"""Square Attack — score-based black-box random search with square-shaped updates (L∞, L2).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020.

Threat model: black-box with scores (the model's logits, no gradients),
``‖x' − x‖∞ ≤ eps`` or ``‖x' − x‖₂ ≤ eps``, inputs in [0, 1], at most ``max_queries`` model
queries per sample. Every iteration proposes, for every sample not yet fooled, a change
inside a square window (side from the share ``p`` of pixels, halved on the paper's schedule
rescaled to ``max_queries``) and keeps it if the margin loss ``z_y − max_{i≠y} z_i``
(targeted: cross-entropy to the target) went down.

- ``linf``: starts from vertical stripes of ±eps; a proposal sets the window to a random
  ±eps per channel.
- ``l2``: starts from a grid of blocks, each holding the paper's "meta" pattern (two
  halves of concentric rectangles of opposite sign, weights ``1/(k+1)²``) with a random
  sign per channel, scaled to ``‖δ‖₂ = eps``. A proposal draws two windows: the first gets a
  fresh signed pattern added to its normalized content and all the mass the budget allows
  (its own, the second window's and any slack below eps); the second is zeroed; the whole
  perturbation is rescaled to ``‖δ‖₂ = eps`` (Algorithm 3 of the paper).

Windows are drawn once per iteration for the batch; signs are drawn per sample and channel.
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

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.params import FixedBudgetParams

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_at(p_init: float, it: int, max_queries: int) -> float:
    """The share of pixels a square covers at iteration ``it`` (paper's halving schedule)."""
    it = int(it / max_queries * 10000)
    return p_init / 2 ** sum(it > t for t in _SCHEDULE)


class SquareParams(FixedBudgetParams):
    norm: Literal["linf", "l2"] = "linf"
    max_queries: int = Field(5000, ge=1)
    p_init: float = Field(0.8, gt=0, le=1)


@register("square")
class Square(FixedBudgetAttack):
    """Square Attack: query-efficient black-box random search, L∞ or L2 (Andriushchenko 2020)."""

    Params = SquareParams
    params: SquareParams
    black_box: ClassVar[bool] = True

    def _loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(margin, loss to minimize); margin < 0 means success."""
        with torch.inference_mode():
            logits = model(x)
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
        p, (h, w) = self.params, x.shape[2:]
        l2 = p.norm == "l2"
        best = self._init_l2(x, generator) if l2 else self._init_linf(x, generator)
        margin, loss = self._loss(model, best, y, target)
        for it in range(p.max_queries - 1):
            todo = (margin > 0).nonzero()[:, 0]
            if len(todo) == 0:
                break
            share = p_at(p.p_init, it, p.max_queries)
            if l2:
                side = max(int(round(math.sqrt(share * h * w))), 3)
                side = min(side + (side % 2 == 0), h, w)  # odd, as the paper's pattern
                x_new = self._propose_l2(x[todo], best[todo], side, generator)
            else:
                side = max(int(round(math.sqrt(share * h * w))), 1)
                side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
                x_new = self._propose(x[todo], best[todo], side, generator)
            m_new, l_new = self._loss(
                model, x_new, y[todo], None if target is None else target[todo]
            )
            better = (l_new < loss[todo]) | (m_new <= 0)
            idx = todo[better]
            best[idx], margin[idx], loss[idx] = x_new[better], m_new[better], l_new[better]
        return best

    def _init_linf(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, _, w = x.shape
        stripes = self._signs((n, c, 1, w), gen, x.device)
        return (x + self.params.eps * stripes).clamp(0, 1)

    def _init_l2(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A grid of signed meta patterns, ``‖δ‖₂ = eps``."""
        n, c, h, w = x.shape
        side = max(h // 5, 1)
        start = (h - side * 5) // 2 if h >= 5 else 0
        delta = torch.zeros_like(x)
        for top in range(max(start, 0), h, side):
            for left in range(max(start, 0), w, side):
                block = delta[:, :, top : top + side, left : left + side]
                pattern = _meta_pattern(side, gen, x)[: block.shape[2], : block.shape[3]]
                block += pattern * self._signs((n, c, 1, 1), gen, x.device)
        return (x + _to_sphere(delta, self.params.eps)).clamp(0, 1)

    def _propose_l2(
        self, x: torch.Tensor, best: torch.Tensor, side: int, gen: torch.Generator
    ) -> torch.Tensor:
        """Move the mass of two windows into the first, with a fresh pattern (Algorithm 3)."""
        eps, (n, c, h, w) = self.params.eps, x.shape
        tops = torch.randint(0, h - side + 1, (2,), generator=gen, device=x.device).tolist()
        lefts = torch.randint(0, w - side + 1, (2,), generator=gen, device=x.device).tolist()
        win1, win2 = (
            (slice(None), slice(None), slice(t, t + side), slice(v, v + side))
            for t, v in zip(tops, lefts, strict=True)
        )
        delta = best - x
        both = torch.zeros_like(delta)
        both[win1], both[win2] = delta[win1], delta[win2]
        slack = (eps**2 - _sq_norm(delta)).clamp_min(0)
        mass = (slack / c + _sq_norm(both)).sqrt().view(n, 1, 1, 1)
        old = delta[win1]
        fresh = _meta_pattern(side, gen, x) * self._signs((n, c, 1, 1), gen, x.device)
        fresh = fresh + old / (old.pow(2).sum((2, 3), keepdim=True).sqrt() + 1e-12)
        fresh = fresh / (fresh.pow(2).sum((2, 3), keepdim=True).sqrt() + 1e-12) * mass
        delta[win2] = 0
        delta[win1] = fresh
        return (x + _to_sphere(delta, eps)).clamp(0, 1)

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


def _sq_norm(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).pow(2).sum(1)


def _to_sphere(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """``delta`` rescaled to L2 norm ``eps`` (per sample)."""
    norm = _sq_norm(delta).sqrt().clamp_min(1e-12)
    return delta * (eps / norm).view(-1, *([1] * (delta.dim() - 1)))


def _rectangles(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """Concentric rectangles around the centre, ring ``k`` weighted ``1/(k+1)²``; unit L2."""
    out = torch.zeros(rows, cols, dtype=like.dtype, device=like.device)
    if rows == 0:
        return out
    top, left = rows // 2, cols // 2
    for k in range(max(top, left) + 1):
        out[max(top - k, 0) : top + k + 1, max(left - k, 0) : left + k + 1] += 1 / (k + 1) ** 2
    return out / out.pow(2).sum().sqrt()


def _meta_pattern(side: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """The L2 proposal's ``side × side`` pattern: two opposite halves, randomly transposed."""
    half = side // 2
    out = torch.cat([_rectangles(half, side, like), -_rectangles(side - half, side, like)])
    out = out / out.pow(2).sum().sqrt()
    flip = torch.rand((), generator=gen, device=like.device) > 0.5
    return out.T if bool(flip) else out
