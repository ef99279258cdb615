"""random_resize_pad on images too small for its canvas: an error, not a silent identity."""

from __future__ import annotations

import pytest
import torch

from tasks.errors import InputError
from tests.tasks.test_defense_contract import build, defend, images


def test_a_canvas_no_larger_than_the_image_is_refused() -> None:
    # Xie's 331/299 gives an 8-pixel canvas for 8-pixel digits: nothing to resize or pad
    rrp = defend("random_resize_pad", build((1, 8, 8)), max_scale=331 / 299)
    with pytest.raises(InputError, match=r"8×8 .* set max_scale ≥ 1\.125"):
        rrp.transform(images((1, 8, 8), n=2))
    wider = defend("random_resize_pad", build((1, 8, 8)), max_scale=1.125)
    x = images((1, 8, 8), n=2)
    draws = [wider.transform(x) for _ in range(20)]
    assert any(not torch.equal(d, x) for d in draws)
