"""The one numpy PSNR (dsanet.metrics has the batched torch version for the training device)."""
from __future__ import annotations

import math

import numpy as np


def psnr(a, b, data_range: float = 255.0, mask=None, max_db: float = math.inf) -> float:
    """PSNR in dB of two images of the same shape (codes); with ``mask`` (HxW bool) only those
    pixels count. Identical images give ``max_db`` (infinity unless capped); an empty mask NaN."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d2 = d * d
    if mask is not None:
        m = np.asarray(mask, bool)
        if not m.any():
            return float("nan")
        d2 = d2[m]
    mse = float(d2.mean())
    if mse == 0:
        return float(max_db)
    return float(min(max_db, 10.0 * math.log10(data_range ** 2 / mse)))
