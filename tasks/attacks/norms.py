"""Norm-ball geometry as small strategy objects (random start, ascent direction, projection).

An attack holds one ``Ball`` and never branches on the norm itself. Shapes: ``x`` and
``delta`` are ``(N, ...)``; per-sample quantities are ``(N,)``.
"""

from __future__ import annotations

import torch


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class LinfBall:
    """``‖δ‖∞ ≤ ε``: sign ascent, box clipping."""

    name = "linf"

    @staticmethod
    def norm(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(1)

    @staticmethod
    def random_start(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """Uniform in the cube, as Madry et al."""
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps

    @staticmethod
    def ascent(grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    @staticmethod
    def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        delta = torch.clamp(x_adv - x, min=-eps, max=eps)
        return torch.clamp(x + delta, min=0, max=1)


class L2Ball:
    """``‖δ‖₂ ≤ ε``: normalized-gradient ascent, radial projection."""

    name = "l2"
    _tiny = 1e-12

    @staticmethod
    def norm(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(p=2, dim=1)

    @classmethod
    def random_start(cls, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """Uniform direction, radius uniform in ``[0, ε]``.

        Not uniform in the ball (radius ``ε·u^(1/d)``, as ART and foolbox draw it): in
        ``d`` dimensions that start sits almost on the sphere, and ten steps from there are
        weaker. Measured on the digits CNN, PGD-L2 with 10 steps over 5 seeds: 44.6 % robust
        accuracy from a start uniform in the ball, 42.3 % from this one (eps 0.5; 28.6 % vs
        25.8 % at eps 0.6), the same as torchattacks' start.
        """
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        radius = eps * torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        return g / _per_sample(cls.norm(g).clamp_min(cls._tiny), g) * _per_sample(radius, g)

    @classmethod
    def ascent(cls, grad: torch.Tensor) -> torch.Tensor:
        return grad / _per_sample(cls.norm(grad).clamp_min(cls._tiny), grad)

    @classmethod
    def project(cls, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        delta = x_adv - x
        scale = (eps / cls.norm(delta).clamp_min(cls._tiny)).clamp(max=1.0)
        return torch.clamp(x + delta * _per_sample(scale, delta), min=0, max=1)


class L1Ball:
    """``‖δ‖₁ ≤ ε``: sparse ascent on the largest gradient coordinates, simplex projection.

    The ascent direction follows SLIDE (Tramèr & Boneh 2019): the signs of the top
    ``sparsity`` share of gradient coordinates (at least one), scaled to unit L1 norm. The
    projection is Duchi et al.'s (2008) exact Euclidean projection onto the L1 ball, then
    clipping to [0, 1], which can only shrink the perturbation.
    """

    name = "l1"
    sparsity = 0.01

    @staticmethod
    def norm(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().sum(1)

    @staticmethod
    def random_start(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """Uniform in the L1 ball: d+1 exponentials normalized, random signs."""
        n, d = x.shape[0], x[0].numel()
        e = -torch.log(
            torch.rand((n, d + 1), generator=generator, device=x.device, dtype=x.dtype).clamp_min(
                1e-12
            )
        )
        point = e[:, :d] / e.sum(1, keepdim=True)
        signs = torch.randint(0, 2, (n, d), generator=generator, device=x.device) * 2 - 1
        return (eps * point * signs).view_as(x)

    @classmethod
    def ascent(cls, grad: torch.Tensor) -> torch.Tensor:
        flat = grad.flatten(1)
        k = max(1, int(cls.sparsity * flat.shape[1]))
        top = flat.abs().topk(k, dim=1).indices
        direction = torch.zeros_like(flat).scatter(1, top, flat.gather(1, top).sign())
        return (direction / k).view_as(grad)

    @staticmethod
    def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        delta = (x_adv - x).flatten(1)
        mag = delta.abs()
        u = mag.sort(dim=1, descending=True).values
        cssv = u.cumsum(1) - eps
        ranks = torch.arange(1, u.shape[1] + 1, device=u.device, dtype=u.dtype)
        rho = (u * ranks > cssv).sum(1, keepdim=True).clamp_min(1)
        theta = (cssv.gather(1, rho - 1) / rho.to(u.dtype)).clamp_min(0)
        inside = mag.sum(1, keepdim=True) <= eps
        shrunk = torch.where(inside, delta, delta.sign() * (mag - theta).clamp_min(0))
        return torch.clamp(x + shrunk.view_as(x), min=0, max=1)


Ball = LinfBall | L2Ball | L1Ball
BALLS: dict[str, type[LinfBall] | type[L2Ball] | type[L1Ball]] = {
    "linf": LinfBall,
    "l2": L2Ball,
    "l1": L1Ball,
}


def ball(norm: str) -> type[LinfBall] | type[L2Ball] | type[L1Ball]:
    """The strategy for ``norm`` (``linf`` or ``l2``)."""
    try:
        return BALLS[norm]
    except KeyError:
        raise ValueError(
            f"norm {norm!r} is not supported here; use one of {sorted(BALLS)}"
        ) from None
