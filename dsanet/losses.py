"""DSANet's multi-scale loss: sum over scales of MSE(restored_s, sharp_s) + mu * FFT term (Sec. 3.2).

The paper writes the FFT term as ``FFT_MSE = 1/(MN) sum_ij |FFT(f)_ij - FFT(f')_ij|^2``. By Parseval a
mean *squared* spectral error is the pixel MSE times a constant: with the orthonormal FFT the constant
is exactly 1 (with the unnormalised FFT it is M*N, which would make mu = 0.1 depend on the crop size),
so the paper's total, as written, is (1 + mu) x MSE. ``fft="mse"`` implements that literally (orthonormal
FFT, mean over complex entries). The default ``fft="l1"`` is what a frequency loss that adds something
needs and what MIMO-UNet uses: the mean absolute difference of the stacked real and imaginary parts of
the full orthonormal 2-D FFT; it weighs every frequency's error by its amplitude, not its power, so an
error concentrated at a few frequencies costs less than the same energy spread as white noise.

Targets: ``sharp`` is resized to each output's size. For the sizes ``DSANet`` produces
(ceil(H / 2**k)), the target is built exactly as the network builds its input pyramid - replicate pad
to even, 2x2 mean, i.e. bilinear x1/2 without antialiasing - so targets and inputs stay aligned on any
size; other sizes fall back to bilinear resizing with antialiasing. Everything is computed in float32,
also under autocast.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["fft_loss", "MultiScaleLoss", "resize_target"]

FFT_KINDS = ("l1", "mse", "none")


def fft_loss(x: torch.Tensor, y: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Spectral distance between images ``[..., H, W]``, orthonormal 2-D FFT over the last two dims.

    ``"l1"``: mean |Re| + |Im| differences over all (real and imaginary) entries (MIMO-UNet);
    ``"mse"``: mean |F(x) - F(y)|^2 over the complex entries (the paper's FFT_MSE; equals the pixel MSE).
    """
    if kind not in ("l1", "mse"):
        raise ValueError(f"fft kind must be 'l1' or 'mse', got {kind!r}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        d = torch.fft.fft2(x.float() - y.float(), norm="ortho")   # linear: F(x) - F(y) = F(x - y)
        if kind == "mse":
            return (d.real.square() + d.imag.square()).mean()
        return torch.view_as_real(d).abs().mean()


def _halve(x: torch.Tensor) -> torch.Tensor:
    """Replicate-pad to even size, then 2x2 mean (= bilinear x1/2, no antialias): DSANet's pyramid step."""
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(x, 2)


def resize_target(sharp: torch.Tensor, size: tuple[int, int], cache: dict | None = None) -> torch.Tensor:
    """``sharp`` [B,C,H,W] at ``size`` = (h, w); exact DSANet pyramid level when h, w = ceil(H, W / 2**k)."""
    H, W = sharp.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return sharp
    k = 1
    while -(-H // 2 ** k) > h:                                  # smallest k with ceil(H / 2**k) <= h
        k += 1
    if (-(-H // 2 ** k), -(-W // 2 ** k)) == (h, w):
        levels = {} if cache is None else cache
        x = sharp
        for j in range(1, k + 1):
            if j not in levels:
                levels[j] = _halve(x)
            x = levels[j]
        return x
    return F.interpolate(sharp, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


class MultiScaleLoss(nn.Module):
    """``crit(outs, sharp)``: sum over outputs of MSE + mu * FFT term against ``sharp`` resized.

    ``last_terms`` gives the last call's summed terms as floats ({"mse", "fft", "total"}); they are kept as
    tensors and converted only when read, so reading them is the only device sync.
    """

    def __init__(self, mu: float = 0.1, fft: str = "l1"):
        super().__init__()
        if fft not in FFT_KINDS:
            raise ValueError(f"fft must be one of {FFT_KINDS}, got {fft!r}")
        self.mu = float(mu)
        self.fft = fft
        self._terms: dict[str, torch.Tensor] = {}

    def forward(self, outs, sharp: torch.Tensor) -> torch.Tensor:
        if isinstance(outs, torch.Tensor):
            outs = [outs]
        sharp = sharp.float()
        cache: dict = {}
        mse_sum = fft_sum = None
        for o in outs:
            t = resize_target(sharp, o.shape[-2:], cache)
            mse = F.mse_loss(o.float(), t)
            mse_sum = mse if mse_sum is None else mse_sum + mse
            if self.fft != "none" and self.mu != 0.0:
                f = fft_loss(o, t, self.fft)
                fft_sum = f if fft_sum is None else fft_sum + f
        total = mse_sum if fft_sum is None else mse_sum + self.mu * fft_sum
        self._terms = {"mse": mse_sum.detach(), "total": total.detach()}
        if fft_sum is not None:
            self._terms["fft"] = fft_sum.detach()
        return total

    @property
    def last_terms(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._terms.items()}

    def extra_repr(self) -> str:
        return f"mu={self.mu}, fft={self.fft!r}"
