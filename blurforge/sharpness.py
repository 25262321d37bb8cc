"""Per-frame analysis on small grey images: sharpness, scene cuts, global motion; and centre choice.

All of it runs on downscaled frames, so it costs a small fraction of decoding.
"""
from __future__ import annotations

import cv2
import numpy as np


def _halve(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (max(8, img.shape[1] // 2), max(8, img.shape[0] // 2)),
                      interpolation=cv2.INTER_AREA)


def grey_pyramid(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-size grey uint8 (sharpness), quarter-size float32 (motion), eighth-size float32
    (brightness, cuts) of an RGB frame."""
    half = _halve(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    quarter = _halve(half)
    return half, quarter.astype(np.float32), _halve(quarter).astype(np.float32)


def tenengrad(grey: np.ndarray) -> float:
    """Mean squared Sobel gradient, divided by the squared mean level so flicker does not move it."""
    gx = cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_16S, 0, 1, ksize=3)
    energy = (cv2.norm(gx, cv2.NORM_L2SQR) + cv2.norm(gy, cv2.NORM_L2SQR)) / grey.size
    level = float(grey.mean()) + 1.0
    return energy / (level * level)


def cut_score(prev_small: np.ndarray, small: np.ndarray) -> float:
    """Mean absolute difference of mean-normalised small grey frames, in percent of the mean level.

    Like a content detector: consecutive 960 fps frames of one shot differ by a few percent at most;
    a cut changes most pixels by tens of percent. Normalising by the mean keeps flicker out.
    """
    a = prev_small / (prev_small.mean() + 1e-6)
    b = small / (small.mean() + 1e-6)
    return float(np.abs(a - b).mean() * 100.0)


_hann_cache: dict = {}


def shift_px(prev_small: np.ndarray, small: np.ndarray, scale: float) -> float:
    """Global frame-to-frame translation magnitude in full-resolution pixels (phase correlation)."""
    key = small.shape
    if key not in _hann_cache:
        _hann_cache[key] = cv2.createHanningWindow((small.shape[1], small.shape[0]), cv2.CV_32F)
    # phaseCorrelate windows its inputs in place: hand it copies
    (dx, dy), _ = cv2.phaseCorrelate(prev_small.copy(), small.copy(), _hann_cache[key])
    return float(np.hypot(dx, dy) * scale)


def is_local_max(scores: np.ndarray, i: int, radius: int) -> bool:
    """True when ``scores[i]`` is the maximum of ``scores[i-radius : i+radius+1]`` (first wins ties)."""
    lo, hi = max(0, i - radius), min(len(scores), i + radius + 1)
    seg = scores[lo:hi]
    return int(np.argmax(seg)) + lo == i


def choose_centres(scores: np.ndarray, half_span: int, stride: int, cuts: np.ndarray | None = None,
                   n_frames: int | None = None) -> list[int]:
    """Sharp centre frames: local sharpness maxima (radius ``stride//2``) whose window
    ``[c-half_span, c+half_span]`` lies inside the clip and crosses no cut, taken greedily in time
    at least ``stride`` frames apart. ``cuts[t]`` marks a cut between frames t-1 and t.

    This is the offline form of what ``extract`` does while streaming; both give the same centres.
    """
    n = len(scores) if n_frames is None else n_frames
    cut_idx = np.flatnonzero(cuts) if cuts is not None else np.array([], int)
    out: list[int] = []
    for c in range(half_span, n - half_span):
        if out and c - out[-1] < stride:
            continue
        if not is_local_max(scores, c, max(1, stride // 2)):
            continue
        if np.any((cut_idx > c - half_span) & (cut_idx <= c + half_span)):
            continue
        out.append(c)
    return out
