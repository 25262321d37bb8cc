"""Window averaging in linear light, exactly centred on the sharp frame.

A window label W is an exposure of exactly W frame intervals centred on frame c:
odd W averages the W frames c-(W-1)/2 .. c+(W-1)/2 with equal weights; even W averages the W+1
frames c-W/2 .. c+W/2 with half weight on the two end frames. Either way the weights sum to 1 and
their centre of mass is c.
"""
from __future__ import annotations

import cv2
import numpy as np

from .curves import CameraCurve


def half_span(window: int) -> int:
    """Frames on each side of the centre that window ``window`` touches."""
    return window // 2


def window_weights(window: int) -> np.ndarray:
    """Weights of frames c-h .. c+h (length 2h+1), summing to 1."""
    h = half_span(window)
    w = np.full(2 * h + 1, 1.0 / window)
    if window % 2 == 0:
        w[0] = w[-1] = 0.5 / window
    return w


def average_windows(frames: list[np.ndarray], gains: np.ndarray, windows: list[int],
                    curve: CameraCurve) -> dict[int, np.ndarray]:
    """Blurred images for several windows sharing one centre, in one outward pass.

    ``frames``: the 2H+1 uint8 RGB frames c-H .. c+H (H = the largest half span);
    ``gains``: their gains relative to the centre (divided out before averaging).
    Frames are added outward from the centre, ring by ring; running sums S(d) over |t-c| <= d give
    odd W as S(h)/W and even W as (S(h-1) + S(h)) / 2W, so all windows cost one pass.
    """
    H = (len(frames) - 1) // 2
    c = H
    lut32 = curve.lut.astype(np.float32)
    need = {}
    for w in windows:
        h = half_span(w)
        if h > H:
            raise ValueError(f"window {w} needs {2 * h + 1} frames, got {len(frames)}")
        need.setdefault(h, []).append(w)
        if w % 2 == 0:
            need.setdefault(h - 1, [])
    acc = cv2.LUT(frames[c], lut32 / np.float32(gains[c]))
    snaps: dict[int, np.ndarray] = {}
    max_h = max(need)
    for d in range(0, max_h + 1):
        if d > 0:
            for t in (c - d, c + d):
                lin = cv2.LUT(frames[t], lut32 / np.float32(gains[t]))
                cv2.add(acc, lin, dst=acc)
        if d in need:
            snaps[d] = acc.copy() if d < max_h else acc
    out = {}
    for w in windows:
        h = half_span(w)
        mean = snaps[h] / w if w % 2 else (snaps[h - 1] + snaps[h]) / (2 * w)
        out[w] = curve.encode(mean)
    return out
