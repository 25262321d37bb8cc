"""Photometric correction: per-frame exposure gains relative to the window's centre frame.

Gains are measured from what is the same scene in both frames: each frame of a window is
registered to the centre frame (``motion.track_window``), and its gain is a robust mean of the
per-pixel ratios of its linear light to the centre's at the same scene points (not chained from
frame to frame, so nothing drifts). Moving objects, occlusions, content entering or leaving, and
saturated or black pixels are outliers of that ratio and drop out; the whole-frame brightness,
which moves by percents when an object crosses, is never used.

Those measured gains are then explained by a model: a slow trend (exposure drift) and mains
flicker, a sinusoid at 100 or 120 Hz and its first harmonic. Each part is applied only when an F
test says the data need it, so a clip with no flicker and no exposure change gets gains of exactly
1 (plain linear-light averaging) instead of fitted noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SAT_CODE = 245
DARK_CODE = 8
GRID_STEP = 4            # ratio sample points: every 4th pixel of the small centre frame (3: flicker 0.5 dB closer)
BORDER = 4
# F statistic a model term must reach to be applied. For a 73-frame window (74 frames, 7
# parameters) F(4, 66) >= 12 has p < 1e-6 under pure noise, so noise is never "corrected"; real
# flicker of 0.3% under the 0.05% gain noise of a crf-16 encode scores in the hundreds.
F_MIN = 12.0
# ...and the size it must reach: a gain change below 0.4% moves no 8-bit code by half a step even
# at white (gamma 2.2: 0.5 / 255 * 2.2 = 0.43%), so smaller terms (including a slight bias that
# content leaves in the ratios, significant only because ratios over thousands of pixels are so
# precise) are not applied.
NEGLIGIBLE = 0.004


@dataclass
class GainFit:
    """Gains of a window's frames relative to its centre, and what the model found."""
    gains: np.ndarray        # [F], 1 at the centre; exactly 1 everywhere when nothing is significant
    measured: np.ndarray     # [F], the robust per-frame ratios the model was fitted to
    flicker_hz: float        # 100 or 120 when flicker was found and applied, else 0
    amplitude: float         # relative amplitude of the best-fitting flicker (half peak-to-peak), applied or not
    significance: float      # F statistic of the flicker term (0 when not tested)
    drift: bool              # whether a slow exposure trend was found and applied


def linear_small(codes: np.ndarray, lut: np.ndarray, video_range: bool) -> np.ndarray:
    """Small grey frame (uint8 codes, video- or full-range luma) -> linear light, float32."""
    if video_range:
        codes = cv2.convertScaleAbs(codes, alpha=255 / 219, beta=-16 * 255 / 219)
    return cv2.LUT(np.asarray(codes, np.uint8), np.asarray(lut, np.float32))


def _median(a: np.ndarray) -> np.floating:
    """Median (upper middle element for an even count): one partial sort, no copy of the result."""
    k = len(a) // 2
    return np.partition(a, k)[k]


def measure_ratios(lin: list[np.ndarray], centre: int, warps: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Robust linear-light ratio of every frame to the centre frame over the same scene points.

    ``lin``: small linear-light grey frames; ``warps[t]``: 2x3, centre px -> frame t px. At each
    sample point of the centre frame whose code is neither black nor saturated, the frame's value
    at the warped position is divided by the centre's. Points whose log ratio is more than 3 MADs
    from the median are outliers (moving content), trimmed again around the median of the rest so
    that even a large moving object does not pull the estimate; the gain is the ratio of the light
    sums over the rest. A sum, not a mean of per-pixel ratios: codecs carry an exposure change as
    code offsets, which change dark pixels relatively more, and what must match is the picture's light.
    """
    ref = lin[centre]
    h, w = ref.shape
    ys, xs = np.mgrid[BORDER:h - BORDER:GRID_STEP, BORDER:w - BORDER:GRID_STEP]
    xs, ys = xs.ravel().astype(np.float64), ys.ravel().astype(np.float64)
    lo, hi = float(lut[DARK_CODE + 1]), float(lut[SAT_CODE - 1])
    rv = ref[ys.astype(int), xs.astype(int)]
    keep = (rv >= lo) & (rv <= hi)
    xs, ys, ref_lin = xs[keep], ys[keep], rv[keep].astype(np.float64)
    log_ref = np.log(ref_lin)
    pts = np.stack([xs, ys, np.ones_like(xs)])
    out = np.ones(len(lin))
    for t, img in enumerate(lin):
        if t == centre or len(xs) < 16:
            continue
        p = warps[t] @ pts
        v = cv2.remap(img, p[0].astype(np.float32)[None], p[1].astype(np.float32)[None], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)[0].astype(np.float64)
        ok = (v >= lo) & (v <= hi)
        if np.count_nonzero(ok) < 16:
            continue
        r = (np.log(v[ok]) - log_ref[ok]).astype(np.float32)
        rs = np.sort(r)                 # the inliers are always a run of the sorted ratios
        i0, i1 = 0, rs.size
        for _ in range(3):              # trimming again around the inliers' median walks to the main mode
            sel = rs[i0:i1]
            med = sel[sel.size // 2]
            mad = np.float32(1.4826) * _median(np.abs(sel - med)) + np.float32(1e-6)
            i0 = int(np.searchsorted(rs, med - 3 * mad, "left"))
            i1 = max(i0 + 1, int(np.searchsorted(rs, med + 3 * mad, "right")))
        inl = (r >= rs[i0]) & (r <= rs[i1 - 1])
        out[t] = float(v[ok][inl].sum() / ref_lin[ok][inl].sum())
    return out


def _design(t: np.ndarray, fps: float, flicker_hz: float, harmonics: int = 2) -> np.ndarray:
    """Columns cos/sin of each harmonic of ``flicker_hz`` below Nyquist (sampled at ``fps``)."""
    cols = []
    for k in range(1, harmonics + 1):
        if k * flicker_hz * 2 >= fps:  # at or above Nyquist: aliases, skip
            continue
        w = 2 * np.pi * k * flicker_hz / fps
        cols += [np.cos(w * t), np.sin(w * t)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(t), 0))


def _rss(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    r = y - a @ coef
    return coef, float(r @ r)


def _f_stat(rss_small: float, rss_big: float, extra: int, dof: int) -> float:
    if extra <= 0 or dof <= 0:
        return 0.0
    return ((rss_small - rss_big) / extra) / max(rss_big / dof, 1e-30)


def fit_gains(measured: np.ndarray, fps: float, flicker_hz: float | None) -> GainFit:
    """Explain measured gains (``measure_ratios``; the centre is the middle element) by exposure.

    ``flicker_hz``: 100 or 120 (twice the mains frequency), ``None`` to try both and keep the better
    fit, or 0 for no correction at all. The trend (constant, linear, quadratic in time) is applied
    when it beats a constant and flicker when it beats the trend, each by ``F_MIN``, and only when
    it changes a gain by ``NEGLIGIBLE`` or more.
    """
    n = len(measured)
    c = n // 2
    ones = np.ones(n)
    if (flicker_hz is not None and not flicker_hz) or n < 9:
        return GainFit(ones, np.asarray(measured, float), 0.0, 0.0, 0.0, False)
    t = np.arange(n) - c
    use = t != 0                      # the centre's ratio to itself is 1 by construction, not a measurement
    y = np.log(np.maximum(np.asarray(measured, np.float64), 1e-9))[use]
    tn = t / max(1, c)
    base = np.stack([np.ones(n), tn, tn * tn], axis=1)
    _, rss_const = _rss(base[use, :1], y)
    coef_b, rss_base = _rss(base[use], y)
    m = int(use.sum())
    trend = base @ coef_b
    drift = (_f_stat(rss_const, rss_base, 2, m - 3) >= F_MIN
             and float(np.max(np.abs(trend - trend[c]))) >= NEGLIGIBLE)
    best = None
    for hz in ([flicker_hz] if flicker_hz else [120.0, 100.0]):
        s = _design(t.astype(np.float64), fps, hz)
        if not s.shape[1]:
            continue
        full = np.hstack([base, s])
        coef, rss = _rss(full[use], y)
        f = _f_stat(rss_base, rss, s.shape[1], m - full.shape[1])
        if best is None or rss < best[1]:
            best = (hz, rss, f, coef, full)
    f = amp = 0.0
    if best is not None:
        hz, _, f, coef, full = best
        amp = float(np.ptp(np.exp(full[:, 3:] @ coef[3:]))) / 2
        if f >= F_MIN and amp >= NEGLIGIBLE:
            gains = np.exp(full @ coef)
            gains[c] = 1.0
            return GainFit(gains, np.asarray(measured, float), float(hz), amp, float(f), drift)
    gains = np.exp(trend) if drift else ones
    gains[c] = 1.0
    return GainFit(gains, np.asarray(measured, float), 0.0, amp, float(f), drift)
