"""PSNR and SSIM in torch, on the device, matching scikit-image on RGB uint8 images (the numpy PSNR
for single images on the host is ``blurforge.metrics.psnr``).

Conventions (the GoPro tables'): images are RGB uint8 (a network output in [0, 1] is clamped and
rounded to 8 bits first, :func:`quantize`), no border is cropped, values are per image and then
averaged over images.

* :func:`psnr` = ``skimage.metrics.peak_signal_noise_ratio(sharp, restored)`` on uint8 images
  (data range 255, MSE over all pixels and channels). Identical images would give infinity; we
  cap at ``max_db`` (100 dB) so averages stay finite.
* :func:`ssim` = ``skimage.metrics.structural_similarity(sharp, restored, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``: an 11x11 Gaussian
  window (sigma 1.5, truncated at 3.5 sigma), C1 = (0.01*255)^2, C2 = (0.03*255)^2, the SSIM map
  averaged over the image minus a 5-pixel border (where the window lies fully inside the image, as
  scikit-image crops it) and over the three channels. Most published deblurring tables used
  MATLAB's ``ssim`` instead (which differs slightly); these numbers are scikit-image's.

Everything runs on whatever device the tensors are on. On CPU the default precision is float64
(bit-for-bit close to scikit-image); elsewhere float32 with the means removed before the variances
are formed, which keeps the error far below 1e-4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
MAX_DB = 100.0


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> float tensor of 8-bit codes 0..255 (clamped, rounded half to even)."""
    return x.detach().float().clamp(0, 1).mul(255.0).round()


def as_codes(x: torch.Tensor) -> torch.Tensor:
    """uint8 tensor -> float codes; float tensors are taken to be in [0, 1] and quantized."""
    if x.dtype == torch.uint8:
        return x.float()
    return quantize(x)


def _work_dtype(x: torch.Tensor, dtype):
    if dtype is not None:
        return dtype
    return torch.float64 if x.device.type == "cpu" else torch.float32


def _batched_pair(a: torch.Tensor, b: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that two images match in shape; give both a batch dimension."""
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.unsqueeze(0), b.unsqueeze(0)) if a.dim() == 3 else (a, b)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0, max_db: float = MAX_DB,
         dtype=None) -> torch.Tensor:
    """Per-image PSNR in dB of ``[B, C, H, W]`` (or ``[C, H, W]``) images given as codes 0..255."""
    a, b = _batched_pair(a, b, "psnr")
    dt = _work_dtype(a, dtype)
    d = a.to(dt) - b.to(dt)
    mse = d.pow(2).flatten(1).mean(1)
    val = 10.0 * torch.log10((data_range ** 2) / mse.clamp_min(1e-30))
    return val.clamp(max=max_db)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE, dtype=torch.float64,
                    device=None) -> torch.Tensor:
    """The 1-D Gaussian scipy.ndimage.gaussian_filter uses (radius int(truncate*sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _blur_valid(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``[N, C, H, W]`` keeping only fully-inside positions."""
    c = x.shape[1]
    k = w.numel()
    x = F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0, sigma: float = SSIM_SIGMA,
             dtype=None) -> torch.Tensor:
    """SSIM map ``[B, C, H - 2r, W - 2r]`` (r = window radius, 5): the part scikit-image averages."""
    a, b = _batched_pair(a, b, "ssim")
    dt = _work_dtype(a, dtype)
    w = gaussian_window(sigma, dtype=dt, device=a.device)
    k = w.numel()
    if a.shape[-1] < k or a.shape[-2] < k:
        raise ValueError(f"ssim: image {a.shape[-1]}x{a.shape[-2]} is smaller than the {k}x{k} window")
    # remove a per-image offset: leaves SSIM unchanged in exact arithmetic, avoids cancellation
    a, b = a.to(dt), b.to(dt)
    off = 0.5 * data_range
    a0, b0 = a - off, b - off
    n, c = a.shape[:2]
    stack = torch.cat([a0, b0, a0 * a0, b0 * b0, a0 * b0], dim=1)
    f = _blur_valid(stack, w)
    mu_a0, mu_b0, e_aa, e_bb, e_ab = f.split(c, dim=1)
    va = e_aa - mu_a0 * mu_a0
    vb = e_bb - mu_b0 * mu_b0
    cov = e_ab - mu_a0 * mu_b0
    mu_a, mu_b = mu_a0 + off, mu_b0 + off
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (va + vb + c2)
    return num / den


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0, sigma: float = SSIM_SIGMA,
         dtype=None) -> torch.Tensor:
    """Per-image SSIM of ``[B, C, H, W]`` code images (see the module docstring)."""
    return ssim_map(a, b, data_range, sigma, dtype).flatten(1).mean(1)


class MetricSums:
    """Running per-label sums of PSNR/SSIM (restored and blurred baseline) that all-reduce as one
    tensor: columns = count, psnr, ssim, psnr_blur, ssim_blur."""

    COLS = ("count", "psnr", "ssim", "psnr_blur", "ssim_blur")

    def __init__(self, labels: list[str], device=None):
        self.labels = list(labels)
        self.t = torch.zeros(len(self.labels), len(self.COLS), dtype=torch.float64, device=device)

    def add(self, label_idx: torch.Tensor, psnr_r, ssim_r, psnr_b, ssim_b):
        rows = torch.stack([torch.ones_like(psnr_r, dtype=torch.float64), psnr_r.double(), ssim_r.double(),
                            psnr_b.double(), ssim_b.double()], dim=1)
        self.t.index_add_(0, label_idx.to(self.t.device).long(), rows.to(self.t.device))

    def all_reduce(self):
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.t)
        return self

    def summary(self) -> dict:
        """{"all": {...}, "<label>": {...}} with count and mean values (NaN-free: empty labels dropped)."""
        t = self.t.cpu()
        out = {}
        for i, lab in enumerate(self.labels):
            n = float(t[i, 0])
            if n > 0:
                out[lab] = {"count": int(n), **{k: float(t[i, j]) / n for j, k in enumerate(self.COLS) if j}}
        tot = t.sum(0)
        if tot[0] > 0:
            out["all"] = {"count": int(tot[0]), **{k: float(tot[j]) / float(tot[0])
                                                    for j, k in enumerate(self.COLS) if j}}
        return out
