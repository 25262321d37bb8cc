"""Motion inside a window: the camera's trajectory over the exposure, and local motion.

Every frame of a window is sharp and decoded, so the camera's path over the exposure can be
measured rather than guessed from the blur. ``Tracker`` registers each frame of a window to its
centre frame directly (not chained, so errors do not add up along the window) by inverse-
compositional Lucas-Kanade on small grey frames: a similarity warp (shift, roll, zoom) plus a
brightness gain and offset (flicker), on a few thousand strong-gradient pixels of the centre frame
spread over the picture, with pixels that do not follow the camera (moving objects, occlusions)
dropped as outliers.
The template's gradients are computed once per window, so each frame costs a few small
``remap`` calls. The weighted mean of the per-frame warps is where the blur of each point is
centred (the blur kernel's centroid): the warp ``align`` registers the blur with.

Local motion, which decides whether averaging discrete frames leaves ghost steps, is measured by
dense optical flow (OpenCV's DIS) between consecutive small frames; a global measure misses a fast
object on a still background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .align import level_matrix
from .interpolate import SUBSTEP_PX

TRACK_POINTS = 1000        # template pixels used, the strongest gradients (2000: centroid 0.018 vs 0.020 px)
TRACK_ITERS = 10
BORDER = 6                 # template pixels this close to the edge are not used
MOVING_SHARE = 0.0025      # motion_px: the speed reached by at least this share of the picture


@dataclass
class Track:
    """Warps of a window's frames relative to its centre, in the small frames' pixel coordinates."""
    warps: np.ndarray        # float64 [F, 2, 3]: centre-frame px -> frame t px (identity at the centre)
    inliers: np.ndarray      # float32 [F]: share of the template pixels that followed the warp (1 at centre)

    def step(self, i: int, gap: int = 1) -> np.ndarray:
        """2x3 camera warp from frame i-gap to frame i (frame i-gap px -> frame i px)."""
        a = np.vstack([self.warps[i], [0.0, 0.0, 1.0]])
        b = np.vstack([self.warps[i - gap], [0.0, 0.0, 1.0]])
        return (a @ np.linalg.inv(b))[:2]


def _smooth(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(np.asarray(img, np.float32), (0, 0), 1.0)


def _similarity(d: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """3x3 matrix of a small similarity step (tx, ty, roll, zoom) about the image centre."""
    tx, ty, th, s = d
    a, b = 1.0 + s, th
    return np.array([[a, -b, tx + cx - a * cx + b * cy],
                     [b, a, ty + cy - b * cx - a * cy],
                     [0.0, 0.0, 1.0]])


def _spread_strongest(mag: np.ndarray, points: int, cells: int = 8) -> np.ndarray:
    """Flat indices of about ``points`` pixels with the strongest gradients, taken cell by cell on a
    cells x cells grid (the strongest per cell, if textured at all): spread over the picture, so a
    textured moving object cannot hold most of them and drag the camera's warp along with it."""
    h, w = mag.shape
    per = max(1, points // (cells * cells))
    floor = 1e-4 * float(mag.max()) if mag.size else 0.0
    out = []
    for r in range(cells):
        y0, y1 = r * h // cells, (r + 1) * h // cells
        for c in range(cells):
            x0, x1 = c * w // cells, (c + 1) * w // cells
            cell = mag[y0:y1, x0:x1].ravel()
            k = min(per, int(np.count_nonzero(cell > floor)))
            if not k:
                continue
            best = np.argpartition(cell, cell.size - k)[cell.size - k:]
            by, bx = np.divmod(best, x1 - x0)
            out.append((by + y0) * w + bx + x0)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


class Tracker:
    """Registers frames to one template (the window's centre frame), see the module docstring."""

    def __init__(self, template: np.ndarray, points: int = TRACK_POINTS):
        t = _smooth(template)
        h, w = t.shape
        self.size = (w, h)
        self.cx, self.cy = (w - 1) / 2.0, (h - 1) / 2.0
        gx = cv2.Sobel(t, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
        gy = cv2.Sobel(t, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
        mag = gx * gx + gy * gy
        b = min(BORDER, h // 4, w // 4)
        mag[:b], mag[-b:], mag[:, :b], mag[:, -b:] = 0, 0, 0, 0
        idx = _spread_strongest(mag, points)
        ys, xs = np.divmod(idx, w)
        self.pts = np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)      # [3, K]
        self.tval = t.ravel()[idx].astype(np.float64)
        gxs, gys = gx.ravel()[idx].astype(np.float64), gy.ravel()[idx].astype(np.float64)
        xc, yc = xs - self.cx, ys - self.cy
        # steepest-descent images: shift x, shift y, roll, zoom, then gain and offset
        self.sd = np.stack([gxs, gys, xc * gys - yc * gxs, xc * gxs + yc * gys, self.tval,
                            np.ones_like(self.tval)], axis=1)
        # each point weighs the same whatever its contrast (residual / gradient: a displacement),
        # so a few strongly textured points (a moving object) cannot outvote the rest
        self.wt = 1.0 / np.sqrt(gxs * gxs + gys * gys + float(np.median(gxs * gxs + gys * gys)) * 0.01 + 1e-6)
        self.ok = len(idx) >= 32

    def _sample(self, img: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = m @ self.pts                                                         # [2, K]
        mx, my = p[0].astype(np.float32)[None], p[1].astype(np.float32)[None]
        vals = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)[0]
        w, h = self.size
        inside = (p[0] >= 0) & (p[0] <= w - 1) & (p[1] >= 0) & (p[1] <= h - 1)
        return vals.astype(np.float64), inside

    def track(self, image: np.ndarray, init: np.ndarray, iters: int = TRACK_ITERS) -> tuple[np.ndarray, float]:
        """Refine ``init`` (2x3, template px -> image px); returns (warp, inlier share)."""
        m = np.vstack([np.asarray(init, np.float64), [0.0, 0.0, 1.0]])
        if not self.ok:
            return m[:2], 0.0
        img = _smooth(image)
        keep = None
        share = 0.0
        for it in range(iters):
            vals, inside = self._sample(img, m[:2])
            e = vals - self.tval
            use = inside if keep is None else inside & keep
            if np.count_nonzero(use) < 32:
                return m[:2], 0.0
            a = self.sd[use] * self.wt[use, None]
            try:
                d = np.linalg.solve(a.T @ a, a.T @ (e[use] * self.wt[use]))
            except np.linalg.LinAlgError:
                return m[:2], 0.0
            r = (e - self.sd @ d) * self.wt          # residuals as displacements (px), comparable across points
            sigma = 1.4826 * float(np.median(np.abs(r[use]))) + 1e-3
            keep = np.abs(r) <= 3.0 * sigma
            share = float(np.count_nonzero(inside & keep)) / len(e)
            m = m @ np.linalg.inv(_similarity(d[:4], self.cx, self.cy))
            if it >= 1 and np.hypot(d[0], d[1]) < 2e-3 and abs(d[2]) < 1e-5 and abs(d[3]) < 1e-5:
                break
        return m[:2], share


def _hermite(times: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Piecewise cubic Hermite interpolation with finite-difference (Catmull-Rom) tangents.

    ``values``: [len(times), ...]; exact at the samples, smooth between them."""
    times = np.asarray(times, np.float64)
    m = np.empty_like(values)
    m[1:-1] = (values[2:] - values[:-2]) / (times[2:] - times[:-2]).reshape(-1, *[1] * (values.ndim - 1))
    m[0] = (values[1] - values[0]) / (times[1] - times[0])
    m[-1] = (values[-1] - values[-2]) / (times[-1] - times[-2])
    i = np.clip(np.searchsorted(times, query, side="right") - 1, 0, len(times) - 2)
    dt = (times[i + 1] - times[i]).reshape(-1, *[1] * (values.ndim - 1))
    u = ((query - times[i]) / (times[i + 1] - times[i])).reshape(-1, *[1] * (values.ndim - 1))
    h00, h10 = 2 * u ** 3 - 3 * u ** 2 + 1, u ** 3 - 2 * u ** 2 + u
    h01, h11 = -2 * u ** 3 + 3 * u ** 2, u ** 3 - u ** 2
    return h00 * values[i] + h10 * dt * m[i] + h01 * values[i + 1] + h11 * dt * m[i + 1]


TRACK_EVERY = 3            # windows of TRACK_SPARSE frames or more track every 3rd frame, the rest by a spline
TRACK_SPARSE = 25
FLOW_GAP = 2               # ... and measure local motion over 2-frame steps (see ``flow_gap``)


def track_window(frames: list[np.ndarray], centre: int) -> Track:
    """Warps of every frame of a window to ``frames[centre]`` (small grey uint8 or float images).

    Frames are tracked outward from the centre, each started from the last tracked warp carried on
    at the same velocity; the first step on each side starts from phase correlation, so a fast pan
    is caught from the start. In windows of TRACK_SPARSE frames or more only every TRACK_EVERY-th
    frame (and the two ends) is tracked and the others are interpolated by a cubic spline through
    them: a camera path is smooth over 3 ms, and measured against synth truth (accelerating shake)
    the centroid moves by < 0.005 px, at a third of the cost.
    """
    n = len(frames)
    every = TRACK_EVERY if n >= TRACK_SPARSE else 1
    tr = Tracker(frames[centre])
    warps = np.zeros((n, 2, 3))
    warps[centre] = np.eye(2, 3)
    inliers = np.ones(n, np.float32)
    tmpl = np.asarray(frames[centre], np.float32)
    tracked = {centre}
    for step in (1, -1):
        last = n - 1 if step > 0 else 0
        sample = list(range(centre + step * every, last, step * every)) + [last]
        if sample and sample[0] == centre:
            sample = sample[1:]
        prev2_t, prev2, prev_t, prev = centre, np.eye(2, 3), centre, np.eye(2, 3)
        for t in sample:
            if prev_t == centre:
                (dx, dy), _ = cv2.phaseCorrelate(tmpl, np.asarray(frames[t], np.float32))
                init = np.array([[1.0, 0, dx], [0, 1.0, dy]])
            else:
                init = prev + (prev - prev2) * ((t - prev_t) / (prev_t - prev2_t))
            warps[t], inliers[t] = tr.track(frames[t], init)
            tracked.add(t)
            prev2_t, prev2, prev_t, prev = prev_t, prev, t, warps[t]
    if len(tracked) < n:
        ts = np.array(sorted(tracked))
        rest = np.array([t for t in range(n) if t not in tracked])
        warps[rest] = _hermite(ts, warps[ts], rest)
        inliers[rest] = np.minimum(inliers[ts[np.searchsorted(ts, rest) - 1]], inliers[ts[np.searchsorted(ts, rest)]])
    return Track(warps, inliers)


def flow_gap(window_frames: int) -> int:
    """Frames between the two images of each local-motion step in a window of this many frames.

    In long windows (high frame rates) motion is measured over 2-frame steps, each standing for
    both its frame intervals: half the flow work, and on the 1080p bench clip (disc at 12 px/frame)
    ``motion_px`` moved by < 6%. Short windows (240 fps clips: windows 9, 18) keep 1-frame steps,
    where content moves farther between frames.
    """
    return FLOW_GAP if window_frames >= TRACK_SPARSE else 1


def to_full(warps: np.ndarray, small_hw: tuple[int, int], full_hw: tuple[int, int]) -> np.ndarray:
    """Warps [F, 2, 3] between small frames -> 3x3 warps [F, 3, 3] in full-resolution pixels."""
    a = level_matrix(full_hw, small_hw)
    a_inv = np.linalg.inv(a)
    out = np.empty((len(warps), 3, 3))
    for i, m in enumerate(warps):
        out[i] = a_inv @ np.vstack([m, [0.0, 0.0, 1.0]]) @ a
    return out


def centroid(warps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Where the exposure centres each point: the weighted mean of the frames' affine warps.

    A point at x in the centre frame is at ``W_t x`` in frame t; its blur is spread around
    ``sum_t w_t W_t x``, which for affine warps is the single warp ``sum_t w_t W_t``.
    """
    return np.tensordot(np.asarray(weights, np.float64), warps, axes=1)


def _within(fn, img: np.ndarray, box: tuple[int, int, int, int], pad: int) -> np.ndarray:
    """``fn(img)`` inside ``box`` (x, y, w, h), computed on the box grown by ``pad`` px: the same
    values as over the whole image when ``fn`` reaches no farther than ``pad`` px."""
    x, y, w, h = box
    y0, x0 = max(0, y - pad), max(0, x - pad)
    out = fn(img[y0:y + h + pad, x0:x + w + pad])
    return out[y - y0:y - y0 + h, x - x0:x - x0 + w]


def _kth_largest(flat: np.ndarray, k: int, stride: int = 17) -> float:
    """The k-th largest value of ``flat``, exactly: partitioned among the candidates above a bound
    taken from a strided sample (a prime stride, so that it does not fall on the same columns of
    every row; the bound itself when ties at it reach k, as in a camera's uniform motion; the full
    array only when the bound leaves fewer than k)."""
    sample = flat[::stride]
    j = min(sample.size, 4 * -(-k // stride))
    bound = np.partition(sample, sample.size - j)[sample.size - j]
    cand = flat[flat > bound]
    if cand.size < k:
        if np.count_nonzero(flat >= bound) >= k:    # the k-th is among values tied at the bound
            return float(bound)
        cand = flat
    return float(np.partition(cand, cand.size - k)[cand.size - k])


class Step(NamedTuple):
    """Motion between two consecutive frames (see ``FlowMeter.step``)."""
    speed: float                                  # full-res px/frame reached by MOVING_SHARE of the picture
    share: float                                  # share of the picture moving more than 1 px/frame
    box: tuple[int, int, int, int] | None         # x, y, w, h (small px) of what moves more than 1 px/frame
    sub_boxes: tuple = ()     # boxes (x, y, w, h) of the connected parts moving more than SUBSTEP_PX


class FlowMeter:
    """Local frame-to-frame motion: the camera's part from the trajectory, the rest from optical flow.

    DIS flow (OpenCV, ultrafast preset) from each small grey frame to the next. A pixel moves on its
    own where the flow departs from the camera's warp by more than OWN_PX (full-resolution px) after
    a 3x3 median, the flow carries the frame onto the next within MATCH_CODES (a backward flow
    measured the same at twice the cost, bench/extract.py) while the camera's warp does not, and
    the picture has texture there (flow in a flat region is noise, and nothing moving over it can
    show ghosts). There its speed is the
    flow's; elsewhere the camera warp's, which is exact where flow is noisy (its tail over-reads a
    1 px/frame shake by up to 2x).
    """

    OWN_PX = 1.0
    MATCH_CODES = 12       # the flow is trusted where it carries prev onto cur within this many codes
    TEXTURE = 1.0          # codes per px, mean over 5x5: flow in flat regions (black, sky) is noise

    @classmethod
    def _textured(cls, img: np.ndarray) -> np.ndarray:
        f = np.asarray(img, np.float32)
        g = cv2.magnitude(cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8),
                          cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8))
        return cv2.blur(g, (5, 5)) > cls.TEXTURE

    def __init__(self):
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._grid: dict = {}

    def _grid2(self, h: int, w: int) -> np.ndarray:
        """float32 [h, w, 2]: each pixel's own (x, y)."""
        if (h, w) not in self._grid:
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grid = {(h, w): np.dstack([xs, ys])}
        return self._grid[(h, w)]

    def step(self, prev: np.ndarray, cur: np.ndarray, camera: np.ndarray, scale: float, gap: int = 1) -> Step:
        """Motion from ``prev`` to ``cur`` (small grey frames ``gap`` frames apart), in full-resolution
        px per frame.

        ``camera``: 2x3, prev px -> cur px (small frames). Returns the speed that at least
        MOVING_SHARE of the picture reaches, the share moving more than 1 px per frame, and the
        bounding box of what does (small-frame px, or None), and the boxes of the connected parts
        that move more than SUBSTEP_PX: a camera shaking a little over a pixel per frame moves the
        whole picture past 1 px but needs no sub-frames, while an object crossing it does; and an
        object and a corner that the camera's roll moves fast get sub-frames of their own.
        """
        prev, cur = np.asarray(prev, np.uint8), np.asarray(cur, np.uint8)
        h, w = prev.shape
        grid = self._grid2(h, w)
        fwd = self.dis.calc(prev, cur, None)
        cam = cv2.transform(grid, np.asarray(camera, np.float32) - np.eye(2, 3, dtype=np.float32))
        rx, ry = cv2.split(cv2.subtract(fwd, cam))
        s = np.float32(scale)
        departs = cv2.medianBlur(cv2.magnitude(rx, ry), 3) > self.OWN_PX * gap / s
        speed = cv2.magnitude(*cv2.split(cam))
        if departs.any():      # the flow's own checks, only in the box where it departs from the camera
            box = cv2.boundingRect(departs.view(np.uint8))
            x, y, bw, bh = box
            roi = np.s_[y:y + bh, x:x + bw]
            near, p = grid[roi], prev[roi]
            moved = cv2.remap(cur, cv2.add(near, fwd[roi]), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            by_camera = cv2.remap(cur, cv2.add(near, cam[roi]), None, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            own = (departs[roi] & (cv2.absdiff(moved, p) < self.MATCH_CODES)
                   & (cv2.absdiff(by_camera, p) >= self.MATCH_CODES) & _within(self._textured, prev, box, 3))
            flow_speed = _within(lambda f: cv2.medianBlur(cv2.magnitude(*cv2.split(f)), 3), fwd, box, 1)
            speed[roi] = np.where(own, flow_speed, speed[roi])
        speed *= s / gap
        flat = speed.ravel()
        top = _kth_largest(flat, max(1, int(MOVING_SHARE * flat.size)))
        fast = speed > 1.0
        share = float(np.count_nonzero(fast)) / flat.size
        box = cv2.boundingRect(fast.view(np.uint8)) if share else None
        sub = (speed > SUBSTEP_PX).view(np.uint8)
        parts = ()
        if sub.any():
            n, _, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
            parts = tuple(tuple(int(v) for v in stats[k, :4]) for k in range(1, n))
        return Step(top, share, box, parts)


def window_motion(steps: list[Step]) -> tuple[float, float]:
    """(motion px, moving share) of a window from its frame-to-frame steps: the largest median of
    three consecutive steps, so a single step where the flow failed does not count."""
    if not steps:
        return 0.0, 0.0
    a = np.asarray([(st.speed, st.share) for st in steps], np.float64)
    if len(a) >= 3:
        a = np.median(np.stack([a[:-2], a[1:-1], a[2:]]), axis=0)
    return float(a[:, 0].max()), float(a[:, 1].max())
