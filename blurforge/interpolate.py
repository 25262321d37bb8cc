"""Ghost-free blur: sub-frames between consecutive frames where content moves more than a pixel.

Averaging N frames is the trapezoid rule for the exposure integral; it is exact only while nothing
moves more than about a pixel between frames, beyond which the blur shows stepped copies. For a
frame interval t..t+1 whose local motion needs K sub-steps (``factor_for``), sub-frames at t + j/K
are synthesised from both neighbours along bidirectional optical flow (the usual linear
flow-at-time-t approximation: frame t sampled at x - a F(t->t+1)(x), frame t+1 at
x - (1-a) F(t+1->t)(x), each at the fixed point that follows the flow of the point itself), each
weighted by its distance in time and by whether its flow is consistent (forward and backward
agree), and falling back to the linear blend of the two frames where neither is. The interval's
integral then gains

    delta_t = (1/K) sum_j [S(t + j/K) - ((1 - j/K) I_t + (j/K) I_(t+1))]

over the trapezoid rule's (I_t + I_(t+1)) / 2, so a window's blur is its plain average plus the
sum of the deltas of the intervals inside it, divided by W. Only n = K / 2^s of the sub-frames
are warped (n >= MIN_WARPED, s <= MAX_STAGES: one warped sub-frame up to K = 16); the trapezoid
sum over them is smeared along the velocity of what it shows by s two-tap stages, a box of one
warped sub-step's length as 2^s taps, which fills the gaps between the warped sub-frames as 2^s
times as many would (a box of 2^s taps is the convolution of two-tap filters at +-1/4, 1/8, ...
of its length).
Measured against the continuous exposure this is as close as warping all K, at a fraction of the
cost (bench/fidelity.py --only 13; bench/extract.py --interp).

Only the region that changes between the two frames (their difference, slightly dilated) is
corrected: flow that bleeds from a moving object onto the still background around it would
otherwise drag the background along. Everything is in linear light with the photometric gains
already divided out; the sharp frame is never touched. Work is limited to the box around what
moves; the flow is measured at half size in pictures of 1080 lines or more (``flow_scale``).
The per-pixel work after the flow (trust, sub-frames, smear) runs in the optional C kernel
``blurforge._subframe``, a pass over the crop per step on bands of rows; without it, on single
planes with OpenCV (the same correction to float rounding: OpenCV's remap samples at float
positions too).
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

SUBSTEP_PX = 1.5           # the largest motion one sub-step may leave (full-resolution px; 1.0 measured no better)
MAX_FACTOR = 32
CHANGE_CODES = 4           # grey codes two frames must differ by for a pixel to count as changing
FB_PX = 1.0                # forward and backward flow agree within this (flow px)
SLOW_PX = 0.5              # pixels moving less than this are left to plain averaging, full weight from 1.5
FLOW_REF_HEIGHT = 540      # the flow is measured on crops halved while the picture stays this tall ...
FLOW_MIN_SIDE = 64         # ... and the crop's short side this long
FLOW_MAX_SCALE = 4
SOURCE_ITERS = 2           # fixed-point iterations of the source maps (1 lost 0.5-1.2 dB at 24 px/frame)
MAX_STAGES = 3             # warp K / 2^s sub-steps, then smear along the motion in s stages
MIN_WARPED = 2             # ... leaving at least this many warped (2 and 3 stages measured no worse than 3 and 2)

try:  # the optional C kernel (setup.py): the sub-frames and the smear in single passes; OpenCV without it
    from . import _subframe as _kernel
except ImportError:  # pragma: no cover - depends on the build
    _kernel = None
BAND_ROWS = 32             # the C kernel runs on bands of at least this many rows, one per OpenCV thread
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _bands(fn, h: int, *args) -> None:
    """``fn(*args, y0, y1)`` over bands of the crop's rows, on as many threads as OpenCV may use
    (``cv2.getNumThreads``, which the engine sets per worker process), as OpenCV's own calls are:
    the kernel releases the GIL and each band writes only its own rows."""
    global _pool
    k = max(1, min(cv2.getNumThreads(), h // BAND_ROWS))
    if k == 1:
        fn(*args, 0, h)
        return
    with _pool_lock:        # one pool for all callers (extract makes sub-frames on several threads)
        if _pool is None:   # its threads start as bands are submitted, up to one per core
            _pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="subframe-bands")
    cuts = [h * i // k for i in range(k + 1)]
    rest = [_pool.submit(fn, *args, cuts[i], cuts[i + 1]) for i in range(1, k)]
    try:
        fn(*args, 0, cuts[1])
    finally:        # all bands done before their arrays are used (or reused) again
        for f in rest:
            f.result()


def _forget_pool() -> None:
    """A forked child has none of the pool's threads (nor a lock another thread held): it starts its own."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)

# the C kernel's work arrays of a crop: float32, (name, channels)
_LAYOUT = (("flow4_a", 4), ("flow4_b", 4), ("speed_a", 1), ("speed_b", 1), ("pack_a", 4), ("pack_b", 4),
           ("ok_a", 1), ("ok_b", 1), ("img", 3), ("chg", 1), ("out", 4), ("tmp", 4), ("vel", 2))
SCRATCH_BYTES = 64 << 20   # each thread keeps work arrays up to this size between calls (crops up to ~0.45 MP)
_scratch = threading.local()


def _work(h: int, w: int) -> dict:
    """The C kernel's work arrays for an h x w crop (``_LAYOUT``), views of one buffer that each
    thread keeps between calls: a fresh page costs a fault on first touch, about as much as the
    kernel's work on it (measured at 0.1 MP: 3200 faults, a quarter of the interval's time).
    Crops needing more than SCRATCH_BYTES get a buffer of their own."""
    need = h * w * sum(c for _, c in _LAYOUT)
    buf = getattr(_scratch, "buf", None)
    if need * 4 > SCRATCH_BYTES:
        buf = np.empty(need, np.float32)
    elif buf is None or buf.size < need:
        buf = _scratch.buf = np.empty(need, np.float32)
    out, at = {}, 0
    for name, c in _LAYOUT:
        out[name] = buf[at:at + h * w * c].reshape((h, w, c) if c > 1 else (h, w))
        at += h * w * c
    return out


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


def merge_boxes(boxes, most: int = 8) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) with those that overlap or touch merged, until none does (more than
    ``most`` left: their union), so that no pixel is corrected twice."""
    boxes = [tuple(b) for b in boxes]
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    if len(boxes) > most:
        boxes = [(min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                  max(b[3] for b in boxes))]
    return sorted(boxes)


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DIS flow (medium preset, without its variational refinement) from ``a`` to ``b``.

    The refinement was half the flow's cost and none of its use here (bench/fidelity.py --only
    13, smallest gain in the swept region with / without it: 7.71 / 7.77 dB at 12 px/frame,
    3.32 / 3.37 at 24, 4.62 / 4.43 at 240 fps; at 1080p 14.7 / 14.1 and 11.7 / 11.7), where the
    coarser presets lose most of the gain at 24 px/frame (fast: 0.26 dB). A new instance each
    time: a reused one keeps state between calls that changed results with what it computed
    before (measured: the same clip gave other pixels after another clip in the same process)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setVariationalRefinementIterations(0)
    return dis.calc(a, b, None)


def _percentile99(v: np.ndarray) -> float:
    """``np.percentile(v, 99)`` (linear between the two nearest ranks) from one partition of a
    1-D array, in place: about 5x faster on the 10^4-10^5 speeds of an interval."""
    pos = 0.99 * (v.size - 1)
    lo = int(pos)
    hi = min(lo + 1, v.size - 1)
    v.partition((lo, hi))
    return float(v[lo] + (v[hi] - v[lo]) * np.float32(pos - lo))


def _grey_codes(g: np.ndarray, scale: int = 1) -> np.ndarray:
    """8-bit grey (gamma 2.2 codes) at 1/``scale`` of the size, from a linear-light grey crop, for the flow."""
    if scale > 1:
        g = cv2.resize(g, (max(8, g.shape[1] // scale), max(8, g.shape[0] // scale)), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(255.0 * cv2.pow(np.maximum(g, 0.0), 1 / 2.2)), 0, 255).astype(np.uint8)


def flow_scale(height: int, width: int, picture_height: int = 0) -> int:
    """How much smaller than a crop of ``height`` x ``width`` the flow is measured: halved (up to
    FLOW_MAX_SCALE) while the picture stays at least FLOW_REF_HEIGHT tall and the crop's short side
    at least FLOW_MIN_SIDE. What a picture shows scales with its resolution, so a 1080p crop halved
    sees what a 540p one does at full size (measured at 1080p: as close to the exposure, and 4x
    cheaper); a small picture halved loses the detail and pyramid levels the flow needs (1-2 dB
    of the gain at 24 px/frame in a 640x360 clip). ``picture_height`` 0: unknown, full size."""
    s = 1
    while (s < FLOW_MAX_SCALE and picture_height // (2 * s) >= FLOW_REF_HEIGHT
           and min(height, width) // (2 * s) >= FLOW_MIN_SIDE):
        s *= 2
    return s


def interval_fix(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int], factor: int | None = None,
                 before: bool = False, after: bool = False, reach: float = 0.0,
                 picture_height: int = 0) -> IntervalFix:
    """The correction for the interval from frame ``a`` to frame ``b`` (linear-light float32 RGB
    crops of ``box``, gains divided out) with ``factor`` sub-steps (None: as many as the flow of
    what changes needs, ``factor_for`` of its 99th percentile).

    ``before``/``after``: also the correction of the half interval before ``a`` / after ``b``.
    An odd window W averages W frames, each standing for one frame interval, so its first and last
    frames stand alone for the half intervals at the exposure's ends; there the motion of the
    interval next to them is carried on (one-sided, from that frame only). ``reach``: how far
    (px) content may move, from the coarse motion measure: the work is done on the pixels that
    change between the frames, padded by it, which is often a fraction of ``box``.
    ``picture_height``: the full picture's, which sets the flow's scale (``flow_scale``).
    """
    h, w = a.shape[:2]
    grey_a, grey_b = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    change_full = _changing(grey_a, grey_b)

    def zero() -> IntervalFix:
        return IntervalFix(box, np.zeros_like(a), 1, 1.0, np.zeros_like(a) if before else None,
                           np.zeros_like(a) if after else None)
    if not change_full.any():
        return zero()
    rx, ry, rw, rh = cv2.boundingRect(change_full.view(np.uint8))
    pad = int(math.ceil(reach)) + 8
    x0, y0, x1, y1 = max(0, rx - pad), max(0, ry - pad), min(w, rx + rw + pad), min(h, ry + rh + pad)
    crop = np.s_[y0:y1, x0:x1]
    a, b, change = a[crop], b[crop], change_full[crop]
    ch, cw = a.shape[:2]
    fs = flow_scale(ch, cw, picture_height)
    ga, gb = _grey_codes(grey_a[crop], fs), _grey_codes(grey_b[crop], fs)
    ff, fb = _flow(ga, gb), _flow(gb, ga)
    if fs != 1:
        up, s = (cw, ch), np.float32(cw / ga.shape[1])
        ff = cv2.resize(ff, up, interpolation=cv2.INTER_LINEAR) * s
        fb = cv2.resize(fb, up, interpolation=cv2.INTER_LINEAR) * s
    xs = ys = work = None       # the pixel grid only for the OpenCV path; the kernel's arrays for the kernel
    if _kernel is not None:
        work = _work(ch, cw)
        side_a = _Side.packed(a, ff, work["flow4_a"], work["speed_a"])
        side_b = _Side.packed(b, fb, work["flow4_b"], work["speed_b"])
        ok_a = side_a.trust_packed(side_b, work["pack_a"], work["ok_a"], work["img"])
        ok_b = side_b.trust_packed(side_a, work["pack_b"], work["ok_b"], work["img"])
    else:
        xs = np.tile(np.arange(cw, dtype=np.float32), (ch, 1))
        ys = np.tile(np.arange(ch, dtype=np.float32)[:, None], (1, cw))
        side_a, side_b = _Side(a, ff), _Side(b, fb)
        ok_a, ok_b = side_a.trust(xs, ys, side_b), side_b.trust(xs, ys, side_a)
    if not factor:      # enough sub-steps for what moves here, by this interval's own (finer) flow
        speed = side_a.speed[change & (ok_a > 0)]
        factor = factor_for(_percentile99(speed)) if speed.size >= 16 else 1
        if factor <= 1:
            return zero()
    if work is None:
        chg = change.astype(np.float32)
    else:
        chg = work["chg"]
        np.copyto(chg, change)
    full = np.zeros((h, w, 3), np.float32)
    full[crop] = _substeps(a, b, xs, ys, side_a, side_b, chg, factor, work)
    moving = int(np.count_nonzero(change))
    conf = float(np.count_nonzero(change & (ok_a > 0) & (ok_b > 0))) / moving if moving else 1.0
    fix = IntervalFix(box, full, factor, conf)
    if before:      # the point at x at time a - s was at p in a, with p - s ff(p) = x
        fix.before = np.zeros_like(full)
        fix.before[crop] = (_half_end(a, xs, ys, _Side(a, -ff), cv2.multiply(ok_a, chg), factor) if work is None
                            else _half_end_fused(a, side_a.flow4, cv2.multiply(ok_a, chg), factor))
    if after:       # ... at time b + s at p in b, with p - s fb(p) = x
        fix.after = np.zeros_like(full)
        fix.after[crop] = (_half_end(b, xs, ys, _Side(b, -fb), cv2.multiply(ok_b, chg), factor) if work is None
                           else _half_end_fused(b, side_b.flow4, cv2.multiply(ok_b, chg), factor))
    return fix


class _Side:
    """One frame of the interval and its flow, ready to be sampled along it: the flow's planes, the
    flow packed with the fast weight (how far above SLOW_PX the point moves, 0..1) and, once its
    trust is known, the frame packed with it, each in 4 channels (which remap faster than 2 or 3)."""

    def __init__(self, img: np.ndarray, flow: np.ndarray):
        self.img = img
        self.fx, self.fy = cv2.split(flow)
        self.speed = cv2.magnitude(self.fx, self.fy)
        self.fast = np.clip(self.speed - np.float32(SLOW_PX), 0.0, 1.0)
        self.flow4 = cv2.merge([self.fx, self.fy, self.fast, np.zeros_like(self.fast)])
        self.ok = self.pack = None

    @classmethod
    def packed(cls, img: np.ndarray, flow: np.ndarray, flow4: np.ndarray, speed: np.ndarray) -> _Side:
        """With the C kernel: only what it samples (``flow4``, then the pack) and ``speed``, written
        into the arrays given in one pass instead of OpenCV's split, magnitude, clip and merge."""
        side = cls.__new__(cls)
        h, w = flow.shape[:2]
        side.img, side.ok, side.pack, side.flow4, side.speed = img, None, None, flow4, speed
        _kernel.pack_flow(np.ascontiguousarray(flow, np.float32), flow4, speed, h, w, SLOW_PX)
        return side

    def trust_packed(self, other: _Side, pack: np.ndarray, ok: np.ndarray, img: np.ndarray) -> np.ndarray:
        """``trust`` with the C kernel (sides made by ``packed``): the same test, and the pack, in one
        pass into the arrays given (``img``: room for a contiguous copy of the frame)."""
        h, w = self.speed.shape
        np.copyto(img, self.img)
        self.ok, self.pack = ok, pack
        _bands(_kernel.trust, h, self.flow4, other.flow4, img, pack, ok, h, w, FB_PX)
        return ok

    def trust(self, xs: np.ndarray, ys: np.ndarray, other: _Side) -> np.ndarray:
        """1 where following this flow and then ``other``'s comes back within FB_PX and lands
        inside the picture, else 0 (kept, and packed with the frame)."""
        h, w = xs.shape
        tx, ty = cv2.add(xs, self.fx), cv2.add(ys, self.fy)
        bx, by = (cv2.remap(f, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for f in (other.fx, other.fy))
        ok = cv2.magnitude(cv2.add(self.fx, bx), cv2.add(self.fy, by)) < FB_PX
        ok &= (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        self.set_trust(ok.astype(np.float32))
        return self.ok

    def set_trust(self, ok: np.ndarray) -> None:
        self.ok = ok
        self.pack = cv2.merge([self.img, ok])

    def sample(self, xs: np.ndarray, ys: np.ndarray, t: float):
        """The frame seen at time ``t`` along its flow: at each pixel x, the frame at p with
        p + t flow(p) = x, by fixed-point iteration from p = x - t flow(x) (the flow of the point
        itself, not of whatever is at x in this frame: the two differ at moving edges). Returns
        (colour planes, trust, fast weight, velocity planes of the point sampled)."""
        mx, my = cv2.scaleAdd(self.fx, -t, xs), cv2.scaleAdd(self.fy, -t, ys)
        vx, vy, fast = self.fx, self.fy, self.fast
        for _ in range(SOURCE_ITERS):
            vx, vy, fast, _ = cv2.split(cv2.remap(self.flow4, mx, my, cv2.INTER_LINEAR,
                                                  borderMode=cv2.BORDER_REPLICATE))
            mx, my = cv2.scaleAdd(vx, -t, xs), cv2.scaleAdd(vy, -t, ys)
        r, g, b, ok = cv2.split(cv2.remap(self.pack, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        return (r, g, b), ok, fast, (vx, vy)


def _substeps(a: np.ndarray, b: np.ndarray, xs: np.ndarray | None, ys: np.ndarray | None, side_a: _Side,
              side_b: _Side, chg: np.ndarray, factor: int, work: dict | None = None) -> np.ndarray:
    """The interval's correction over the crop: sub-frames at j / K (K = ``factor``), each the
    blend of ``a`` moved on by j/K along its flow and ``b`` moved back by 1 - j/K along its own,
    weighted by their distance in time and their trust, replacing the linear blend of the two
    frames where the flow is trusted and fast (above SLOW_PX) and the picture changes (``chg``),
    minus that blend.

    With s smear stages (``_stages``), only K / 2^s sub-steps are warped; the trapezoid sum over
    them is then smeared along the velocity of what it shows in s two-tap stages (a box of one
    sub-step's length, as 2^s taps), which fills the gaps between sub-steps as 2^s times as many
    would. With the C kernel's ``work`` arrays, ``_substeps_fused``; else everything per pixel is
    done on single planes with OpenCV (numpy on interleaved channels cost more than the warps)."""
    stages = _stages(factor)
    n = math.ceil(factor / 2 ** stages)
    if work is not None:
        return _substeps_fused(side_a, side_b, chg, n, stages, work)
    acc = [np.zeros_like(chg) for _ in range(3)]
    u_a, u_b = np.zeros_like(chg), np.zeros_like(chg)
    vel = (np.zeros_like(chg), np.zeros_like(chg)) if stages else None
    for j in range(1, n):
        t = j / n
        col_a, ok_a, fast_a, v_a = side_a.sample(xs, ys, t)
        col_b, ok_b, fast_b, v_b = side_b.sample(xs, ys, 1.0 - t)
        den = cv2.addWeighted(ok_a, 1.0 - t, ok_b, t, 0.0)
        # sub-pixel motion is already integrated well by the frames themselves; flow noise is not
        use = cv2.multiply(cv2.max(fast_a, fast_b), chg)
        use = cv2.multiply(use, cv2.threshold(den, 1e-3, 1.0, cv2.THRESH_BINARY)[1])
        r = cv2.divide(use, cv2.max(den, 1e-3))
        wa, wb = cv2.multiply(ok_a, r, scale=1.0 - t), cv2.multiply(ok_b, r, scale=t)
        for k in range(3):
            cv2.accumulateProduct(col_a[k], wa, acc[k])
            cv2.accumulateProduct(col_b[k], wb, acc[k])
        cv2.scaleAdd(use, 1.0 - t, u_a, dst=u_a)
        cv2.scaleAdd(use, t, u_b, dst=u_b)
        if vel is not None:      # the velocity (per interval, forward in time) of what the sub-frame shows
            nwb = cv2.multiply(wb, -1.0)
            for k in range(2):
                cv2.accumulateProduct(v_a[k], wa, vel[k])
                cv2.accumulateProduct(v_b[k], nwb, vel[k])
    # sum_j use_j (S_j - blend_j), with the blend (1 - t) a + t b
    planes_a, planes_b = cv2.split(a), cv2.split(b)
    delta = [acc[k] - planes_a[k] * u_a - planes_b[k] * u_b for k in range(3)]
    if vel is not None:      # the two frames themselves move with their own flows
        end_a = cv2.multiply(cv2.multiply(side_a.fast, side_a.ok), chg, scale=0.5)
        end_b = cv2.multiply(cv2.multiply(side_b.fast, side_b.ok), chg, scale=-0.5)
        for k, (fa, fb) in enumerate(((side_a.fx, side_b.fx), (side_a.fy, side_b.fy))):
            cv2.accumulateProduct(fa, end_a, vel[k])
            cv2.accumulateProduct(fb, end_b, vel[k])
            vel[k][...] *= np.float32(1.0 / n)
        ends = [(planes_a[k] + planes_b[k]) * np.float32(0.5 * n) for k in range(3)]
        total = _smear(cv2.merge([delta[k] + ends[k] for k in range(3)] + [chg]), xs, ys, vel, 1.0 / n, stages)
        delta = [(total[k] - ends[k]) * chg for k in range(3)]
    return cv2.merge(delta) * np.float32(1.0 / n)


def _substeps_fused(side_a: _Side, side_b: _Side, chg: np.ndarray, n: int, stages: int, work: dict) -> np.ndarray:
    """``_substeps`` with the C kernel: all n - 1 warped sub-frames in one pass over the crop (the
    sums stay in registers, no intermediate planes), then one pass per smear stage, on bands of rows,
    in ``work``'s arrays (the result is a view of one of them)."""
    h, w = chg.shape
    pa, pb, out, vel, tmp = side_a.pack, side_b.pack, work["out"], work["vel"], work["tmp"]
    _bands(_kernel.substeps, h, side_a.flow4, pa, side_b.flow4, pb, chg, out, vel, h, w, n, SOURCE_ITERS, stages > 0)
    d = 0.25 / n
    for s in range(stages):
        _bands(_kernel.smear, h, out, vel, chg, pa, pb, tmp, h, w, d, n, s == stages - 1)
        out, tmp, d = tmp, out, d / 2.0
    return out[..., :3]


def _stages(factor: int) -> int:
    """Smear stages for ``factor`` sub-steps: as many as leave at least MIN_WARPED warped sub-steps,
    at most MAX_STAGES."""
    s = 0
    while s < MAX_STAGES and math.ceil(factor / 2 ** (s + 1)) >= MIN_WARPED:
        s += 1
    return s


def _smear(pack: np.ndarray, xs: np.ndarray, ys: np.ndarray, vel: tuple, span: float, stages: int) -> list:
    """A 4-channel image averaged along ``vel`` (x, y planes, px per unit time) over a box of
    ``span`` time, as 2^stages taps: each stage averages two copies shifted by +-1/4, 1/8, ... of
    the span. Returns its planes."""
    d = span / 4.0
    for _ in range(stages):
        lo = cv2.remap(pack, cv2.scaleAdd(vel[0], -d, xs), cv2.scaleAdd(vel[1], -d, ys), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
        hi = cv2.remap(pack, cv2.scaleAdd(vel[0], d, xs), cv2.scaleAdd(vel[1], d, ys), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
        pack = cv2.addWeighted(lo, 0.5, hi, 0.5, 0.0)
        d /= 2.0
    return cv2.split(pack)


def _half_end(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, side: _Side, ok: np.ndarray, factor: int) -> np.ndarray:
    """Correction of the half interval beyond ``img``'s time, which the rectangle rule fills with
    ``img`` alone: the trapezoid over sub-steps of that half interval of ``img`` moved on along
    ``side``'s flow (its points' motion per frame, outward in time) where ``ok``, minus half of ``img``."""
    m = max(1, math.ceil(factor / 2))
    side.set_trust(ok)
    planes = cv2.split(img)
    acc = [np.zeros_like(ok) for _ in range(3)]
    for j in range(1, m + 1):
        s = 0.5 * j / m
        col, trust, _, _ = side.sample(xs, ys, s)
        use = cv2.threshold(trust, 0.5, 0.25 / m if j == m else 0.5 / m, cv2.THRESH_BINARY)[1]
        for k in range(3):
            cv2.accumulateProduct(cv2.subtract(col[k], planes[k]), use, acc[k])
    return cv2.merge(acc)


def _half_end_fused(img: np.ndarray, flow4: np.ndarray, ok: np.ndarray, factor: int) -> np.ndarray:
    """``_half_end`` with the C kernel, from the frame's packed flow (``_Side.packed``; turned
    outward in time here): the m sub-steps of the half interval in one pass over the crop."""
    m = max(1, math.ceil(factor / 2))
    h, w = ok.shape
    out, pack = np.empty((h, w, 4), np.float32), np.empty((h, w, 4), np.float32)
    pack[..., :3], pack[..., 3] = img, ok
    _bands(_kernel.half_end, h, flow4 * np.float32([-1.0, -1.0, 1.0, 1.0]), pack, out, h, w, m, SOURCE_ITERS)
    return out[..., :3]


def _changing(grey_a: np.ndarray, grey_b: np.ndarray) -> np.ndarray:
    """Pixels that differ between the two frames by more than CHANGE_CODES (in gamma-2.2 codes),
    with isolated pixels removed and the rest dilated by two pixels: where content moves."""
    ca = cv2.pow(np.maximum(grey_a, 0.0), 1 / 2.2)
    cb = cv2.pow(np.maximum(grey_b, 0.0), 1 / 2.2)
    d = (cv2.absdiff(ca, cb) > CHANGE_CODES / 255.0).astype(np.uint8)
    d = cv2.morphologyEx(d, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.dilate(d, np.ones((5, 5), np.uint8)).astype(bool)
