"""Input-transform defenses: JPEG, bit-depth reduction, median and Gaussian smoothing, random
resizing and padding, Gaussian noise. Each is registered in :data:`tasks.defenses.DEFENSES`.

Every transform takes float ``(N, C, H, W)`` images in [0, 1] and returns new ones of the same
shape, dtype and device in [0, 1]; none modifies its input. Which ones autograd can see
through (``differentiable``) and which ones draw randomness (``randomized``) is declared on
each class; :mod:`tasks.defenses` explains what a wrapper does with the two flags.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from tasks.defenses.base import InputTransform, register
from tasks.errors import InputError
from tasks.params import Number
from tasks.registry import Params


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by half-sample symmetric reflection (scipy.ndimage's
    ``mode="reflect"``: ``d c b a | a b c d | d c b a``)."""
    i = torch.arange(-before, n + after, device=device)
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _pad_reflect(x: torch.Tensor, before: int, after: int, name: str) -> torch.Tensor:
    """``x`` padded on both spatial axes by reflection; a gather, so gradients flow through."""
    h, w = x.shape[-2:]
    if max(before, after) > min(h, w):
        raise InputError(
            f"defense {name!r}: a window reaching {max(before, after)} pixels past the border "
            f"needs images of at least that size, got {h}×{w}; use a smaller window"
        )
    rows = _reflect_index(h, before, after, x.device)
    cols = _reflect_index(w, before, after, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


class JPEGParams(Params):
    quality: int = Field(75, ge=1, le=100, description="JPEG quality on libjpeg's 1-100 scale")


@register("jpeg")
class JPEG(InputTransform):
    """JPEG compression: encode and decode each image (Dziugaite 2016; Guo et al. 2018).

    Dziugaite, Ghahramani & Roy, "A study of the effect of JPG compression on adversarial
    images" (2016); Guo, Rana, Cisse & van der Maaten, "Countering Adversarial Images using
    Input Transformations" (ICLR 2018), whose quality is 75. Pixels are rounded to 8 bits and
    coded by libjpeg (torchvision) on the CPU, one image at a time; 1-channel images are coded
    as grayscale, 3-channel ones as YCbCr with libjpeg's default 4:2:0 chroma subsampling.

    Not differentiable: the 8-bit rounding and the codec are outside autograd (BPDA with the
    identity is the usual adaptive attack, Athalye et al. 2018).
    """

    Params = JPEGParams
    params: JPEGParams
    differentiable = False

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise InputError(f"defense 'jpeg' codes 1- or 3-channel images, got {x.shape[1]}")
        if len(x) == 0:
            return x.detach().clone()
        # imported here: torchvision costs the driver a second at start-up, and only
        # workers code images
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

        with torch.no_grad():
            pixels = x.detach().mul(255).round().clamp(0, 255).to(torch.uint8).cpu()
            coded = encode_jpeg([p.contiguous() for p in pixels], quality=self.params.quality)
            decoded = decode_jpeg(coded, mode=ImageReadMode.UNCHANGED)
            return torch.stack(decoded).to(device=x.device, dtype=x.dtype).div(255)


class BitDepthParams(Params):
    bits: int = Field(4, ge=1, le=8, description="bits per channel kept (2^bits levels)")


@register("bit_depth")
class BitDepth(InputTransform):
    """Bit-depth reduction: keep 2^bits levels per channel (Xu et al. 2018).

    ``round(x·(2^b − 1)) / (2^b − 1)``, from Xu, Evans & Qi, "Feature Squeezing: Detecting
    Adversarial Examples in Deep Neural Networks" (NDSS 2018). The paper squeezes MNIST to 1
    bit and CIFAR-10 and ImageNet to 4 or 5; the default, 4, is one of its colour-image
    settings, not its MNIST one (``bits: 1`` there).

    Not differentiable in the useful sense: rounding has zero gradient almost everywhere, so
    autograd returns a masked (zero) gradient. BPDA with the identity is the adaptive attack.
    """

    Params = BitDepthParams
    params: BitDepthParams
    differentiable = False

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        levels = 2**self.params.bits - 1
        return torch.round(x.clamp(0, 1) * levels) / levels


class MedianParams(Params):
    size: int = Field(2, ge=2, le=9, description="side of the square window (Xu: 2 or 3)")


@register("median_filter")
class MedianFilter(InputTransform):
    """Median smoothing over a size × size window per channel (Xu et al. 2018).

    Xu, Evans & Qi, "Feature Squeezing" (NDSS 2018), who use 2×2 (MNIST, CIFAR-10) and 3×3
    windows with scipy.ndimage's ``median_filter(mode="reflect")``; this matches it: borders
    are reflected including the edge pixel, an even window reaches one pixel further up and
    left than down and right, and of an even count the upper median is taken.

    Differentiable: the output is one of the window's inputs, so autograd routes the gradient
    to it (like max pooling), which is the true gradient except at ties.
    """

    Params = MedianParams
    params: MedianParams
    differentiable = True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        k = self.params.size
        padded = _pad_reflect(x, k // 2, k - 1 - k // 2, self.name)
        windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        flat = windows.reshape(*windows.shape[:4], k * k)
        return flat.kthvalue(k * k // 2 + 1, dim=-1).values


class GaussianBlurParams(Params):
    sigma: Number = Field(1.0, gt=0, description="standard deviation in pixels")
    kernel_size: int | None = Field(
        None, ge=1, description="odd window side; default 2·round(3σ) + 1 (scipy's truncate=3)"
    )

    @model_validator(mode="after")
    def _odd(self) -> GaussianBlurParams:
        if self.kernel_size is not None and self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


@register("gaussian_blur")
class GaussianBlur(InputTransform):
    """Gaussian smoothing per channel, reflected borders: the differentiable control.

    The linear member of the local-smoothing squeezers of Xu, Evans & Qi, "Feature Squeezing"
    (NDSS 2018), who use the median; there is no canonical sigma, so the default (1 pixel) is
    a mild blur. Matches scipy.ndimage's ``gaussian_filter(mode="reflect", truncate=3)``.

    Differentiable: a convolution, so autograd gives the exact gradient; this defense is the
    control that a plain gradient attack should break without any adaptive machinery.
    """

    Params = GaussianBlurParams
    params: GaussianBlurParams
    differentiable = True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        sigma = self.params.sigma
        k = self.params.kernel_size or 2 * int(3 * sigma + 0.5) + 1
        r, c = k // 2, x.shape[1]
        t = torch.arange(k, device=x.device, dtype=x.dtype) - r
        weights = torch.exp(-(t**2) / (2 * sigma**2))
        weights = weights / weights.sum()
        # a bf16 autocast would blur in bf16: the transform stays in the input's precision
        with torch.autocast(x.device.type, enabled=False):
            out = _pad_reflect(x, r, r, self.name)
            out = F.conv2d(out, weights.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
            out = F.conv2d(out, weights.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
        return out.clamp(0, 1)  # a convex combination: the clamp only absorbs rounding


class RandomResizePadParams(Params):
    max_scale: Number = Field(
        331 / 299, ge=1, description="canvas side as a multiple of the input side (Xie: 331/299)"
    )
    fill: Number = Field(
        0.5, ge=0, le=1, description="value of the padding (Xie's zeros in [-1, 1] are 0.5)"
    )
    seed: int = 0


@register("random_resize_pad")
class RandomResizePad(InputTransform):
    """Random resizing and padding, resized back to the input size (Xie et al. 2018).

    Xie, Wang, Zhang, Ren & Yuille, "Mitigating Adversarial Effects Through Randomization"
    (ICLR 2018): resize an ``H × W`` image (nearest neighbour) to a random height in
    ``[H, ⌊H·max_scale⌋]`` (width in proportion), pad it at a random offset with ``fill`` to the
    ``⌊H·max_scale⌋ × ⌊W·max_scale⌋`` canvas, then (unlike the paper, whose network takes the
    canvas) resize bilinearly back to ``H × W`` so the classifier sees its usual shape. As in
    the reference implementation, one size and one offset are drawn per call, i.e. per batch.

    Randomized (draws from the wrapper's generator) and differentiable given the draw: every
    step is linear in the pixels, so autograd gives the gradient of the sampled transform
    (EOT averages it over draws, Athalye et al. 2018).
    """

    Params = RandomResizePadParams
    params: RandomResizePadParams
    differentiable = True
    randomized = True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        canvas_h, canvas_w = _canvas(h, self.params.max_scale), _canvas(w, self.params.max_scale)
        if (canvas_h, canvas_w) == (h, w) and self.params.max_scale > 1:  # 1: the identity
            side = min(h, w)
            raise InputError(
                f"random_resize_pad: with max_scale {self.params.max_scale:.4g} the canvas of a "
                f"{h}×{w} image is {h}×{w}, which leaves no room to resize or pad: the defense "
                f"would be the identity; set max_scale ≥ {(side + 1) / side:.4g} for images "
                "this small"
            )
        size_h = _draw(h, canvas_h, generator)
        size_w = min(canvas_w, max(w, round(w * size_h / h)))
        top, left = _draw(0, canvas_h - size_h, generator), _draw(0, canvas_w - size_w, generator)
        resized = F.interpolate(x, size=(size_h, size_w), mode="nearest")
        pad = (left, canvas_w - size_w - left, top, canvas_h - size_h - top)
        padded = F.pad(resized, pad, value=self.params.fill)
        out = F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False)
        return out.clamp(0, 1)  # bilinear weights are convex: the clamp only absorbs rounding


def _canvas(side: int, scale: float) -> int:
    """``⌊side·scale⌋``, where a product that should be whole is not lost to rounding
    (``299 · (331/299)`` is 331, not 330)."""
    return math.floor(side * scale + 1e-9)


def _draw(low: int, high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in ``[low, high]`` (both included) from ``generator``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


class GaussianNoiseParams(Params):
    l2: Number = Field(1.0, gt=0, description="L2 norm of the noise added to each image")
    seed: int = 0


@register("gaussian_noise")
class GaussianNoise(InputTransform):
    """Gaussian noise rescaled to a fixed L2 norm per image: the noise-only control.

    The ablation of generative purification (Serez et al., WACV 2025, whose purifier adds
    such noise before encoding): ``clip(x + l2·ε/‖ε‖₂)``, ``ε ~ N(0, I)`` per image.
    Randomized and differentiable given the draw. ``per_batch_draws`` (an EOT surrogate turns
    it on while it runs): one ``ε`` per call for the whole batch.
    """

    Params = GaussianNoiseParams
    params: GaussianNoiseParams
    differentiable = True
    randomized = True

    def __init__(self, params: GaussianNoiseParams) -> None:
        super().__init__(params)
        self.per_batch_draws = False

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        where = generator.device if generator is not None else x.device
        shape = (1, *x.shape[1:]) if self.per_batch_draws else tuple(x.shape)
        eps = torch.randn(shape, generator=generator, device=where, dtype=x.dtype).to(x.device)
        norm = eps.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        return (x + self.params.l2 * eps / norm).clamp(0, 1)
