"""Minibatches of a dataset's samples as float32 on a device, converted one batch at a time.

Images stay as they were loaded (uint8 for the published formats, a quarter of float32's
memory; or decoded on demand by an :class:`~tasks.datasets.ImageSource`). A batch is
gathered, converted to float in [0, 1] and moved to the device on its own, so a training
run's memory is its dataset's uint8 size plus a few batches. With ``workers`` the batches
are gathered by DataLoader worker processes (for data decoded on demand), in pinned memory
when the device is a GPU; the batches and their order are the same either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from tasks.datasets import ImageSource, to_float


class _Indexed(Dataset):
    """``(x[index], y[index])`` for a whole batch of indices at once (``__getitems__``)."""

    def __init__(self, x: torch.Tensor | ImageSource, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.x[index], self.y[index]


def _as_is(batch: Any) -> Any:
    """A batch as ``__getitems__`` gathered it (no per-sample collation)."""
    return batch


def batches(
    x: torch.Tensor | ImageSource,
    y: torch.Tensor,
    order: Iterable[torch.Tensor],
    dev: torch.device,
    *,
    workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` of each index batch in ``order``: float32 images and labels on ``dev``."""
    cuda = dev.type == "cuda"
    if workers <= 0:  # pinning here would be one more copy per batch, not an overlap
        for index in order:
            yield to_float(x[index].to(dev)), y[index].to(dev)
        return
    loader = DataLoader(
        _Indexed(x, y),
        batch_sampler=[b.tolist() for b in order],
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=cuda,
        persistent_workers=False,
    )
    for xb, yb in loader:
        yield to_float(xb.to(dev, non_blocking=cuda)), yb.to(dev, non_blocking=cuda)
