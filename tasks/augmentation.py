"""Per-batch data augmentation of a training recipe: random crops, horizontal flips, cutout.

The field's CIFAR recipe: pad each image by 4 pixels (zeros) and crop it back at a random
offset, and flip half the images left to right; ``cutout`` (DeVries & Taylor 2017) zeroes one
square of half the image's side (16 pixels on CIFAR) per image, centred anywhere on it (so
part of the square may fall outside). All run on the whole batch on its device,
each sample with its own draw, from a generator seeded by the recipe's seed, so a recipe
trains the same weights every time and its augmentation draws never shift the stream that
shuffles the batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F  # noqa: N812

PAD = 4


def augment_seed(seed: int) -> int:
    """The augmentation stream's seed, derived from the recipe's seed."""
    return (seed * 0x2545F4914F6CDD1D + 0xA06) % 2**63


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``pad`` and cropped back to its size at its own offset."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half the images (each by its own draw) flipped left to right."""
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image with one square of side ``H // 2`` zeroed, centred at its own draw."""
    n, _, h, w = x.shape
    side = max(1, h // 2)
    cy = torch.randint(0, h, (n,), generator=gen, device=x.device)
    cx = torch.randint(0, w, (n,), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    top, left = cy[:, None] - side // 2, cx[:, None] - side // 2
    inside_r = (rows >= top) & (rows < top + side)  # (n, h)
    inside_c = (cols >= left) & (cols < left + side)  # (n, w)
    hole = inside_r[:, :, None] & inside_c[:, None, :]
    return x.masked_fill(hole[:, None], 0.0)


AUGMENTATIONS = {
    "crop": lambda x, gen: random_crop(x, PAD, gen),
    "flip": random_flip,
    "cutout": cutout,
}


class Augmenter:
    """The recipe's augmentations in order, applied per batch; the identity without any."""

    def __init__(self, names: Sequence[str], seed: int, dev: torch.device) -> None:
        self.names = tuple(names)
        self.gen = torch.Generator(device=dev).manual_seed(augment_seed(seed))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = AUGMENTATIONS[name](x, self.gen)
        return x
