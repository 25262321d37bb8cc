"""Photometric correction: per-frame gains from mains flicker, estimated in linear light.

At 960 fps, 120 Hz flicker repeats every 8 frames and 100 Hz every 9.6 frames, while scene content
and exposure drift change the mean brightness far more slowly. So for each window we fit the log
mean brightness of its frames with a slow quadratic trend plus a sinusoid at the flicker frequency
and its first harmonic, and take the sinusoid (relative to the centre frame) as the gain. A linear
exposure drift across a window is symmetric about the centre and cancels in the average, so the
trend is left to the content. Saturated and near-black pixels do not follow the gain: they are
left out of the brightness.
"""
from __future__ import annotations

import cv2
import numpy as np

SAT_CODE = 245
DARK_CODE = 8
# A flicker whose amplitude (relative, half the peak-to-peak gain) is below this moves no 8-bit code
# by half a step even at white (gamma 2.2: 0.5 / 255 * 2.2 = 0.43%), so sharp and blur agree without
# correction. Flicker-free synth clips measure 0.01-0.2% (codec noise fitted as a sinusoid).
NEGLIGIBLE_FLICKER = 0.004


def frame_brightness(small_grey_codes: np.ndarray, lut: np.ndarray) -> float:
    """Mean linear brightness of the unsaturated, non-black pixels of a small grey frame (codes)."""
    codes = cv2.convertScaleAbs(cv2.max(np.asarray(small_grey_codes, np.float32), 0.0))  # round, saturate
    lin = cv2.LUT(codes, np.asarray(lut, np.float64))
    mask = cv2.inRange(codes, DARK_CODE + 1, SAT_CODE - 1)
    if cv2.countNonZero(mask) < 16:
        return float(lin.mean()) + 1e-9
    return cv2.mean(lin, mask)[0]


def _design(t: np.ndarray, fps: float, flicker_hz: float, harmonics: int = 2) -> tuple[np.ndarray, int]:
    """Columns: 1, t, t^2 (trend), then cos/sin of each harmonic. Returns (matrix, trend columns)."""
    tn = t / max(1.0, np.abs(t).max())
    cols = [np.ones_like(tn), tn, tn * tn]
    for k in range(1, harmonics + 1):
        w = 2 * np.pi * k * flicker_hz / fps
        if k * flicker_hz * 2 > fps:  # above Nyquist: aliases, skip
            continue
        cols += [np.cos(w * t), np.sin(w * t)]
    return np.stack(cols, axis=1), 3


def fit_flicker(log_b: np.ndarray, offsets: np.ndarray, fps: float, flicker_hz: float):
    """Least-squares fit; returns (log flicker component, residuals, residual RMS)."""
    A, k = _design(offsets.astype(np.float64), fps, flicker_hz)
    coef, *_ = np.linalg.lstsq(A, log_b, rcond=None)
    resid = log_b - A @ coef
    return A[:, k:] @ coef[k:], resid, float(np.sqrt(np.mean(resid ** 2)))


def window_gains(brightness: np.ndarray, fps: float, flicker_hz: float | None) -> tuple[np.ndarray, float]:
    """Gains of a window's frames relative to its centre frame (the middle element, whose measured
    brightness, not only its fitted flicker, defines gain 1).

    ``flicker_hz``: 100 or 120 (twice the mains frequency), ``None`` to try both and keep the better
    fit, or 0 to disable. Returns (gains, chosen flicker frequency or 0).
    """
    n = len(brightness)
    c = n // 2
    if not flicker_hz and flicker_hz is not None or n < 9:
        return np.ones(n), 0.0
    log_b = np.log(np.maximum(brightness, 1e-9))
    offsets = np.arange(n) - c
    candidates = [flicker_hz] if flicker_hz else [120.0, 100.0]
    best = None
    for hz in candidates:
        comp, resid, rms = fit_flicker(log_b, offsets, fps, hz)
        if best is None or rms < best[2]:
            best = (comp, resid, rms, hz)
    comp, resid, _, hz = best
    # The sharp target is the centre frame as decoded: its own departure from the fitted model
    # (codec noise on that one frame) is part of its gain, so the blur matches it in brightness.
    return np.exp(comp - comp[c] - resid[c]), float(hz)


def flicker_found(amplitude: float) -> bool:
    """Whether a measured flicker amplitude (relative) is large enough to matter in 8-bit output."""
    return bool(amplitude >= NEGLIGIBLE_FLICKER)
