"""Per-frame analysis on small grey images: sharpness and scene cuts; and centre choice.

All of it runs on downscaled frames, so it costs a small fraction of decoding.
"""
from __future__ import annotations

import cv2
import numpy as np

try:  # the optional C kernel (setup.py): the same sums without OpenCV's two gradient images
    from ._tenengrad import sums as _sums
except ImportError:  # pragma: no cover - depends on the build
    _sums = None


def _halve(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (max(8, img.shape[1] // 2), max(8, img.shape[0] // 2)),
                      interpolation=cv2.INTER_AREA)


def grey_pyramid(half: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From a half-size grey uint8 frame (sharpness): a 240-479 px wide uint8 copy (motion: the
    trajectory, gains and optical flow of ``blurforge.motion``); and half of that again, float32
    (cuts)."""
    motion = half
    while motion.shape[1] >= 480:
        motion = _halve(motion)
    return half, motion, _halve(motion).astype(np.float32)


def tenengrad(grey: np.ndarray, black: float = 0.0, fused: bool = True) -> float:
    """Mean squared Sobel gradient, divided by the squared mean level so flicker does not move it.

    ``black``: the code of black (16 for video-range luma); the ratio does not depend on the
    range's scale, so video-range luma needs no conversion first. ``fused=False`` uses OpenCV even
    where the C kernel is built (the kernel's sums are exact integers; OpenCV's norm may round its last bit).
    """
    if fused and _sums is not None and grey.flags.c_contiguous:
        energy, total = _sums(grey)
        energy, level = energy / grey.size, total * (1.0 / grey.size) - black + 1.0   # as cv2.mean
    else:
        gx, gy = cv2.spatialGradient(grey)  # 3x3 Sobel x and y in one pass
        energy = (cv2.norm(gx, cv2.NORM_L2SQR) + cv2.norm(gy, cv2.NORM_L2SQR)) / grey.size
        level = cv2.mean(grey)[0] - black + 1.0
    return energy / (level * level)


def cut_score(prev_small: np.ndarray, small: np.ndarray) -> float:
    """Mean absolute difference of mean-normalised small grey frames, in percent of the mean level.

    Like a content detector: consecutive 960 fps frames of one shot differ by a few percent at most;
    a cut changes most pixels by tens of percent. Normalising by the mean keeps flicker out.
    """
    a = prev_small / (prev_small.mean() + 1e-6)
    b = small / (small.mean() + 1e-6)
    return float(np.abs(a - b).mean() * 100.0)


class CentrePicker:
    """Chooses sharp centre frames while frames stream in; ``push`` returns the centres it decided.

    A frame is *eligible* when it is a local sharpness maximum (radius ``stride // 8``), its window
    ``[c-h, c+h]`` lies inside the clip and no cut falls inside it. Scanning forward, at the first
    eligible frame ``c0`` at least ``stride`` after the last centre, the sharpest eligible frame in
    ``[c0, c0 + stride // 4]`` is taken. A decision is made only once every frame it depends on has
    been seen, so streaming and offline (``choose_centres``) give the same centres; ``lookahead``
    frames past a centre are needed before it is returned. ``allowed = (lo, hi)`` restricts
    windows to frames ``lo <= t < hi`` (trimming; ``hi`` None: to the end of the clip).
    """

    def __init__(self, half_span: int, stride: int, allowed: tuple[int, int | None] = (0, None)):
        self.h, self.stride = half_span, max(1, stride)
        self.radius = max(1, self.stride // 8)
        self.slack = self.stride // 4
        self.lookahead = self.slack + max(self.radius, self.h)
        self.scores: list[float] = []
        self.cuts: list[bool] = []
        self.last = -(10 ** 9)
        self.lo, self.hi = max(0, int(allowed[0])), allowed[1]
        self.next_check = self.lo + self.h

    def _eligible(self, c: int, n: int) -> bool:
        if c < self.lo + self.h or c + self.h >= n or (self.hi is not None and c + self.h >= self.hi):
            return False
        lo, hi = max(0, c - self.radius), min(n, c + self.radius + 1)
        if int(np.argmax(self.scores[lo:hi])) + lo != c:
            return False
        return not any(self.cuts[c - self.h + 1:c + self.h + 1])

    def earliest(self) -> int:
        """No centre returned from now on lies before this frame (so frames before it minus the half
        span are in no window still to come)."""
        return max(self.next_check, self.last + self.stride)

    def push(self, score: float, cut: bool = False) -> list[int]:
        """Add the next frame's sharpness and whether a cut precedes it."""
        self.scores.append(float(score))
        self.cuts.append(bool(cut))
        return self._advance(final=False)

    def finish(self) -> list[int]:
        """The clip ended: decide what is left with the frames seen."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> list[int]:
        n, out = len(self.scores), []
        while True:
            c0 = max(self.next_check, self.last + self.stride)
            if c0 + self.h >= n or (not final and n <= c0 + self.lookahead):
                return out
            if not self._eligible(c0, n):
                self.next_check = c0 + 1
                continue
            span = [c for c in range(c0, min(c0 + self.slack, n - 1 - self.h) + 1) if self._eligible(c, n)]
            best = max(span, key=lambda c: self.scores[c])
            out.append(best)
            self.last = best
            self.next_check = best + self.stride


def choose_centres(scores, half_span: int, stride: int, cuts=None) -> list[int]:
    """Offline form of ``CentrePicker``: ``cuts[t]`` marks a cut between frames t-1 and t."""
    picker = CentrePicker(half_span, stride)
    out: list[int] = []
    for t, s in enumerate(scores):
        out += picker.push(s, bool(cuts[t]) if cuts is not None else False)
    return out + picker.finish()
