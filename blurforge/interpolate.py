"""Ghost-free blur: sub-frames between consecutive frames where content moves more than a pixel.

Averaging N frames is the trapezoid rule for the exposure integral; it is exact only while nothing
moves more than about a pixel between frames, beyond which the blur shows stepped copies. For a
frame interval t..t+1 whose local motion needs it, K-1 sub-frames at t + j/K are synthesised from
both neighbours along bidirectional optical flow (the usual linear flow-at-time-t approximation:
frame t sampled at x - a F(t->t+1)(x), frame t+1 at x - (1-a) F(t+1->t)(x)), each weighted by
its distance in time and by whether its flow is consistent (forward and backward agree), and
falling back to the linear blend of the two frames where neither is. The interval's integral
then gains

    delta_t = (1/K) sum_j [S(t + j/K) - ((1 - j/K) I_t + (j/K) I_(t+1))]

over the trapezoid rule's (I_t + I_(t+1)) / 2, so a window's blur is its plain average plus the
sum of the deltas of the intervals inside it, divided by W. Only the region that changes between
the two frames (their difference, slightly dilated) is corrected: flow that bleeds from a moving
object onto the still background around it would otherwise drag the background along. Everything
is in linear light with the photometric gains already divided out; the sharp frame is never
touched. Work is limited to the box around what moves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SUBSTEP_PX = 1.5           # the largest motion one sub-step may leave (full-resolution px; 1.0 measured no better)
MAX_FACTOR = 32
CHANGE_CODES = 4           # grey codes two frames must differ by for a pixel to count as changing
FB_PX = 1.0                # forward and backward flow agree within this (flow px)
SLOW_PX = 0.5              # pixels moving less than this are left to plain averaging, full weight from 1.5
FLOW_SCALE = 1             # flow at 1/FLOW_SCALE of the size, upsampled (2 lost 1-2 dB of the gain at 24 px/frame)


@dataclass
class IntervalFix:
    """The correction of one frame interval: ``delta`` (float32 linear RGB) over ``box``."""
    box: tuple[int, int, int, int]     # x0, y0, x1, y1 in full-resolution px
    delta: np.ndarray
    factor: int                         # K: the interval was split into K sub-steps
    confidence: float                   # share of the changing pixels whose flow is consistent
    before: np.ndarray | None = None    # correction of the half interval before frame a (odd windows' ends)
    after: np.ndarray | None = None     # ... and after frame b


def factor_for(speed_px: float, substep: float = SUBSTEP_PX, cap: int = MAX_FACTOR) -> int:
    """Sub-steps an interval needs so that none moves more than ``substep`` px."""
    return int(min(cap, max(1, math.ceil(speed_px / substep - 1e-6))))


def grow_box(box, scale: float, pad: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A box (x, y, w, h) in small-frame px -> (x0, y0, x1, y1) in full-resolution px, padded and
    clipped to the picture."""
    x, y, w, h = box
    return (max(0, int(math.floor(x * scale - pad))), max(0, int(math.floor(y * scale - pad))),
            min(width, int(math.ceil((x + w) * scale + pad))), min(height, int(math.ceil((y + h) * scale + pad))))


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DIS flow (medium preset) from ``a`` to ``b``. A new instance each time: a reused one keeps
    state between calls that changed results with what it computed before (measured: the same clip
    gave other pixels after another clip in the same process)."""
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)


def _grey_half(rgb_lin: np.ndarray) -> np.ndarray:
    """8-bit grey (gamma 2.2 codes) at 1/FLOW_SCALE size, from a linear-light RGB crop, for the flow."""
    g = cv2.cvtColor(rgb_lin, cv2.COLOR_RGB2GRAY)
    g = cv2.resize(g, (max(8, g.shape[1] // FLOW_SCALE), max(8, g.shape[0] // FLOW_SCALE)),
                   interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(255.0 * np.power(np.maximum(g, 0.0), 1 / 2.2)), 0, 255).astype(np.uint8)


def interval_fix(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int], factor: int | None = None,
                 before: bool = False, after: bool = False, reach: float = 0.0) -> IntervalFix:
    """The correction for the interval from frame ``a`` to frame ``b`` (linear-light float32 RGB
    crops of ``box``, gains divided out) with ``factor`` sub-steps (None: as many as the flow of
    what changes needs, ``factor_for`` of its 99th percentile).

    ``before``/``after``: also the correction of the half interval before ``a`` / after ``b``.
    An odd window W averages W frames, each standing for one frame interval, so its first and last
    frames stand alone for the half intervals at the exposure's ends; there the motion of the
    interval next to them is carried on (one-sided, from that frame only). ``reach``: how far
    (px) content may move, from the coarse motion measure: the work is done on the pixels that
    change between the frames, padded by it, which is often a fraction of ``box``.
    """
    h, w = a.shape[:2]
    change_full = _changing(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY))
    zero = IntervalFix(box, np.zeros_like(a), 1, 1.0, np.zeros_like(a) if before else None,
                       np.zeros_like(a) if after else None)
    if not change_full.any():
        return zero
    rx, ry, rw, rh = cv2.boundingRect(change_full.view(np.uint8))
    pad = int(math.ceil(reach)) + 8
    x0, y0, x1, y1 = max(0, rx - pad), max(0, ry - pad), min(w, rx + rw + pad), min(h, ry + rh + pad)
    crop = np.s_[y0:y1, x0:x1]
    a, b, change = a[crop], b[crop], change_full[crop]
    ch, cw = a.shape[:2]
    ga, gb = _grey_half(a), _grey_half(b)
    up = (cw, ch)
    ff = cv2.resize(_flow(ga, gb), up, interpolation=cv2.INTER_LINEAR) * np.float32(cw / ga.shape[1])
    fb = cv2.resize(_flow(gb, ga), up, interpolation=cv2.INTER_LINEAR) * np.float32(cw / ga.shape[1])
    ys, xs = np.mgrid[0:ch, 0:cw].astype(np.float32)
    grid = np.dstack([xs, ys])
    back = cv2.remap(fb, cv2.add(grid, ff), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ok_a = np.linalg.norm(ff + back, axis=2) < FB_PX
    fwd_b = cv2.remap(ff, cv2.add(grid, fb), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ok_b = np.linalg.norm(fb + fwd_b, axis=2) < FB_PX
    ok_a = (ok_a & _inside(grid + ff, cw, ch)).astype(np.float32)
    ok_b = (ok_b & _inside(grid + fb, cw, ch)).astype(np.float32)
    if not factor:      # enough sub-steps for what moves here, by this interval's own (finer) flow
        speed = np.linalg.norm(ff, axis=2)[change & (ok_a > 0)]
        factor = factor_for(float(np.percentile(speed, 99))) if speed.size >= 16 else 1
        if factor <= 1:
            return zero
    full = np.zeros((h, w, 3), np.float32)
    delta = full[crop]
    speed_a, speed_b = cv2.magnitude(ff[..., 0], ff[..., 1]), cv2.magnitude(fb[..., 0], fb[..., 1])
    for j in range(1, factor):
        t = j / factor
        map_a = _source(grid, ff, t)
        map_b = _source(grid, fb, 1.0 - t)
        sa = cv2.remap(a, map_a, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sb = cv2.remap(b, map_b, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        va = cv2.remap(ok_a, map_a, None, cv2.INTER_LINEAR) * np.float32(1.0 - t)
        vb = cv2.remap(ok_b, map_b, None, cv2.INTER_LINEAR) * np.float32(t)
        den = va + vb
        trust = den > 1e-3
        blend = cv2.addWeighted(a, 1.0 - t, b, t, 0.0)
        sub = (sa * va[..., None] + sb * vb[..., None]) / np.maximum(den, 1e-3)[..., None]
        # sub-pixel motion is already integrated well by the frames themselves; flow noise is not
        fast = np.clip(np.maximum(cv2.remap(speed_a, map_a, None, cv2.INTER_LINEAR),
                                  cv2.remap(speed_b, map_b, None, cv2.INTER_LINEAR)) - SLOW_PX, 0.0, 1.0)
        use = np.where(trust & change, fast, 0.0).astype(np.float32)[..., None]
        delta += (sub - blend) * use
    delta /= np.float32(factor)
    moving = int(np.count_nonzero(change))
    conf = float(np.count_nonzero(change & (ok_a > 0) & (ok_b > 0))) / moving if moving else 1.0
    fix = IntervalFix(box, full, factor, conf)
    mask = change.astype(np.float32)
    if before:      # the point at x at time a - s was at p in a, with p - s ff(p) = x
        fix.before = np.zeros_like(full)
        fix.before[crop] = _half_end(a, grid, -ff, ok_a * mask, factor)
    if after:       # ... at time b + s at p in b, with p - s fb(p) = x
        fix.after = np.zeros_like(full)
        fix.after[crop] = _half_end(b, grid, -fb, ok_b * mask, factor)
    return fix


def _half_end(img: np.ndarray, grid: np.ndarray, velocity: np.ndarray, ok: np.ndarray, factor: int) -> np.ndarray:
    """Correction of the half interval beyond ``img``'s time, which the rectangle rule fills with
    ``img`` alone: the trapezoid over sub-steps of that half interval of ``img`` moved on along
    ``velocity`` (its points' motion per frame, outward in time), minus half of ``img``."""
    m = max(1, math.ceil(factor / 2))
    acc = np.zeros_like(img)
    for j in range(1, m + 1):
        s = 0.5 * j / m
        src = _source(grid, velocity, s)
        moved = cv2.remap(img, src, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        use = cv2.remap(ok, src, None, cv2.INTER_LINEAR) > 0.5
        wt = np.float32(0.25 / m if j == m else 0.5 / m)
        acc += np.where(use[..., None], (moved - img) * wt, 0.0).astype(np.float32)
    return acc


def _source(grid: np.ndarray, flow: np.ndarray, t: float, iters: int = 2) -> np.ndarray:
    """Where the point at each pixel at time ``t`` (0..1 of the interval) was in the flow's frame:
    p with p + t flow(p) = x, by fixed-point iteration from p = x - t flow(x) (the flow of the
    point itself, not of whatever is at x in the first frame: the two differ at moving edges)."""
    p = cv2.addWeighted(grid, 1.0, flow, -t, 0.0)
    for _ in range(iters):
        f = cv2.remap(flow, p, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        p = cv2.addWeighted(grid, 1.0, f, -t, 0.0)
    return p


def _inside(p: np.ndarray, w: int, h: int) -> np.ndarray:
    return (p[..., 0] >= 0) & (p[..., 0] <= w - 1) & (p[..., 1] >= 0) & (p[..., 1] <= h - 1)


def _changing(grey_a: np.ndarray, grey_b: np.ndarray) -> np.ndarray:
    """Pixels that differ between the two frames by more than CHANGE_CODES (in gamma-2.2 codes),
    with isolated pixels removed and the rest dilated by two pixels: where content moves."""
    ca = np.power(np.maximum(grey_a, 0.0), 1 / 2.2) * 255.0
    cb = np.power(np.maximum(grey_b, 0.0), 1 / 2.2) * 255.0
    d = (np.abs(ca - cb) > CHANGE_CODES).astype(np.uint8)
    d = cv2.morphologyEx(d, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.dilate(d, np.ones((5, 5), np.uint8)).astype(bool)
