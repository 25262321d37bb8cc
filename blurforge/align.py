"""Align each blurred image onto its sharp frame: geometric warp by ECC, then a per-channel gain.

The sharp frame is the training target and is never resampled; only the blurred image moves.

Geometry: ``findTransformECC`` on linear-light grey images (blur forms in linear light; codes would
bias the optimum towards the dark side of edges), coarse to fine (1/4 then 1/2 size by default),
initialised by phase correlation at 1/4 size. The finest warp is rescaled to full resolution with
the pixel-centre convention of ``cv2.resize(INTER_AREA)``. Measured at 720p (``bench/align.py``):
the same error as full-resolution ECC at ~1/5 of its time.

Photometry: one gain per channel in linear light (the window's camera curve, else gamma 2.2): a
ratio of light sums over the valid overlap, with outliers (moving objects) rejected on cells
larger than the blur, leaving out pixels saturated in the blurred image.

Warp convention (as stored in ``align/<W>/warp``): a 3x3 matrix ``M`` mapping sharp-frame pixel
coordinates ``x`` to blurred-image coordinates, ``blur(M x) ~ sharp(x)``; the aligned image is
``aligned(x) = gain * blur(M x)``. Everything here is a pure function of numpy arrays (RGB order);
``blurforge.align_shards`` applies them to a shard file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
# Chosen by measurement (bench/align.py, 720p pairs, camera shake, 5-40 px streaks): median error
# euclidean 0.095 px, affine 0.12, homography 0.15, translation 0.94 (no roll); euclidean is also
# the cheapest model that follows roll. See data/README.md "Alignment".
DEFAULT_MOTION = "euclidean"
# Measured ECC scores at 720p: good pairs 0.96 (20 px streak), 0.90 (40), 0.82 (90), 0.77 (130);
# blurs paired with another scene <= 0.71 (and ECC usually fails outright).
DEFAULT_MIN_SCORE = 0.75
DEFAULT_MAX_SHIFT = 16.0     # px; blur-to-centre misalignment in 960 fps windows is ~0.2-2 px
DEFAULT_LEVELS = (4, 2)
# Where the shard carries the exposure's centroid (extract's trajectory), it is the warp; ECC's
# correlation peak then only cross-checks it. Under accelerating shake the two differ by design
# (0.6 px median for 73-frame windows, up to the blur's length for strong blur): only a
# disagreement larger than this and than the path's own extent (``path_extent``) flags the pair.
DEFAULT_MAX_DISAGREE = 4.0   # px, median over the picture
MIN_TRACK_INLIERS = 0.5      # a trajectory whose worst frame kept fewer template pixels is not used
SCORE_SLACK = 0.05           # at the centroid, a score this close to ECC's own optimum passes below min_score
MIN_LEVEL_SIDE = 48          # a pyramid level whose short side is below this is skipped
FINE_LEVEL_SIDE = 240        # the finest level is refined further until its short side reaches this
CLIP_HI = 250                # codes at or above count as saturated (left out of the gain fit)
GAMMA = 2.2


@dataclass
class PairAlignment:
    """Result of aligning one blurred image onto its sharp frame."""
    warp: np.ndarray                 # float64 3x3, sharp px -> blur px
    gain: np.ndarray                 # float64 (3,), linear-light gain applied to the blur
    score: float                     # ECC correlation at the finest level (0 if ECC failed)
    shift: float                     # largest displacement of the warp over the image corners, px
    margin: int                      # border width (px) that the warp leaves invalid
    ok: bool
    reason: str = ""                 # "" | "ecc failed" | "low score" | "large shift" | "trajectory disagrees"
    aligned: np.ndarray | None = field(default=None, repr=False)
    ecc_px: float = math.nan         # median distance between ECC's warp and the centroid warp (trajectory only)


def gamma_lut(gamma: float = GAMMA) -> np.ndarray:
    """Inverse camera curve of a pure gamma: linear value of each 8-bit code."""
    return (np.arange(256) / 255.0) ** gamma


def grey(rgb: np.ndarray, lut: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 -> grey float32 in linear light (through ``lut``, default gamma 2.2).

    Blur forms in linear light; correlating gamma-encoded codes instead pulls the optimum towards the
    dark side of every edge (measured: ~0.07 px per pixel of blur length), so ECC runs on this.
    """
    lut = gamma_lut() if lut is None else lut
    return cv2.cvtColor(cv2.LUT(rgb, np.asarray(lut, np.float32)), cv2.COLOR_RGB2GRAY)


def level_sizes(h: int, w: int, levels=DEFAULT_LEVELS) -> list[int]:
    """The pyramid factors actually used for an HxW image, coarse to fine.

    Levels with a short side under MIN_LEVEL_SIDE are skipped; if the finest one is under
    FINE_LEVEL_SIDE (small images), finer octaves are added down to full resolution, since too few
    pixels leave affine/homography warps poorly determined. 720p and up keep ``levels`` as given.
    """
    short = min(h, w)
    usable = sorted({int(k) for k in levels if short / k >= MIN_LEVEL_SIDE}, reverse=True) or [1]
    while usable[-1] > 1 and short / usable[-1] < FINE_LEVEL_SIDE:
        usable.append(max(1, usable[-1] // 2))
    return usable


def _resize(img: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w / k)), max(1, round(h / k))), interpolation=cv2.INTER_AREA)


def level_matrix(full_hw: tuple[int, int], level_hw: tuple[int, int]) -> np.ndarray:
    """Full-resolution pixel coordinates -> pyramid-level coordinates (pixel centres line up)."""
    sy, sx = level_hw[0] / full_hw[0], level_hw[1] / full_hw[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def rescale_warp(warp: np.ndarray, a_from: np.ndarray, a_to: np.ndarray) -> np.ndarray:
    """Express a warp given in one level's coordinates in another level's (both via full res)."""
    full = np.linalg.solve(a_from, warp @ a_from)          # A_from^-1 W A_from
    out = a_to @ full @ np.linalg.inv(a_to)
    return out / out[2, 2]


_hann: dict = {}


def phase_shift(sharp_grey: np.ndarray, blur_grey: np.ndarray) -> tuple[float, float]:
    """Translation t with blur(x + t) ~ sharp(x), by phase correlation (Hann window)."""
    h, w = sharp_grey.shape
    if (h, w) not in _hann:
        _hann[(h, w)] = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(np.array(sharp_grey, np.float32), np.array(blur_grey, np.float32),
                                     _hann[(h, w)])
    return float(dx), float(dy)


def _ecc(template: np.ndarray, image: np.ndarray, warp: np.ndarray, motion: str, iters: int,
         eps: float, gauss: int) -> tuple[float, np.ndarray]:
    """One findTransformECC call on 3x3 warps (float64 in, float64 out)."""
    if motion == "homography":
        w0 = warp.astype(np.float32)
    else:
        w0 = (warp / warp[2, 2])[:2].astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iters, eps)
    score, w1 = cv2.findTransformECC(template, image, w0, MOTIONS[motion], criteria, None, gauss)
    out = np.eye(3)
    out[:w1.shape[0]] = w1
    return float(score), out


@dataclass
class Reference:
    """Everything about a sharp frame that aligning several blurs onto it can share."""
    rgb: np.ndarray
    lut: np.ndarray
    pyramid: dict            # factor -> linear-light grey float32 image (ECC levels + phase level)
    levels: list[int]        # ECC levels, coarse to fine
    phase_level: int         # factor at which phase correlation initialises the warp
    _half: tuple | None = field(default=None, repr=False)

    def half_views(self) -> tuple[np.ndarray, np.ndarray]:
        """Half-size linear RGB and saturated fraction of the sharp frame (computed on first use)."""
        if self._half is None:
            self._half = _half_views(self.rgb, self.lut)
        return self._half


def _half_views(rgb: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-size linear-light RGB (averaged in linear light) and its saturated-pixel fraction.

    Only saturation is masked: near-black pixels carry almost no linear-light energy, and masking
    them would bias the fit (their blurred neighbours exchange light with them).
    """
    lin = _resize(cv2.LUT(rgb, np.asarray(lut, np.float32)), 2)
    bad = _resize((rgb >= CLIP_HI).astype(np.float32), 2)
    return lin, bad


def prepare_reference(sharp: np.ndarray, levels=DEFAULT_LEVELS, lut: np.ndarray | None = None) -> Reference:
    """Pre-compute the linear-light grey pyramid of a sharp RGB uint8 frame."""
    lut = gamma_lut() if lut is None else check_lut(lut)
    g = grey(sharp, lut)
    used = level_sizes(*g.shape, levels=levels)
    pk = max(level_sizes(*g.shape, levels=tuple(levels) + (4,)))
    return Reference(sharp, lut, {k: _resize(g, k) for k in set(used) | {pk}}, used, pk)


def check_lut(lut: np.ndarray) -> np.ndarray:
    """A camera curve usable in both directions: 256 strictly increasing linear values."""
    lut = np.asarray(lut, np.float64)
    if lut.shape != (256,) or not np.all(np.isfinite(lut)) or not np.all(np.diff(lut) > 0):
        raise ValueError("camera curve must be 256 finite, strictly increasing values")
    return lut


def estimate_warp(ref: Reference, blur: np.ndarray, motion: str = DEFAULT_MOTION, iters: int = 20,
                  eps: float = 1e-4, coarse_iters: int = 50, coarse_eps: float = 1e-4,
                  gauss: int = 5) -> tuple[np.ndarray, float]:
    """Coarse-to-fine ECC warp (full-resolution 3x3, sharp px -> blur px) and its final score.

    Each level stops when the correlation changes by less than ``eps`` or after ``iters``
    iterations (``coarse_*`` for the levels before the finest). Near its optimum ECC can fall into
    a limit cycle (the correlation alternating by ~3e-5 on blurred 720p pairs), so a tighter eps
    only burns the iteration cap; measured: tighter criteria change the error by < 0.001 px.
    Raises cv2.error when ECC does not converge (uncorrelated content).
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {', '.join(MOTIONS)}")
    g = grey(blur, ref.lut)
    full_hw = g.shape
    warp, a_prev = initial_warp(ref, g)
    score = 0.0
    for j, k in enumerate(ref.levels):
        tmpl = ref.pyramid[k]
        a = level_matrix(full_hw, tmpl.shape)
        warp = rescale_warp(warp, a_prev, a)
        last = j == len(ref.levels) - 1
        score, warp = _ecc(tmpl, _resize(g, k), warp, motion, iters if last else coarse_iters,
                           eps if last else coarse_eps, gauss)
        a_prev = a
    return rescale_warp(warp, a_prev, np.eye(3)), score


def initial_warp(ref: Reference, blur_grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phase-correlation translation at the phase level: (warp, that level's coordinate matrix)."""
    k = ref.phase_level
    tmpl = ref.pyramid[k]
    dx, dy = phase_shift(tmpl, _resize(blur_grey, k))
    return (np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]]),
            level_matrix(blur_grey.shape, tmpl.shape))


def _apply(warp: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = pts @ warp[:, :2].T + warp[:, 2]
    return p[:, :2] / p[:, 2:3]


def corners(h: int, w: int, inset: float = 0.0) -> np.ndarray:
    return np.array([[inset, inset], [w - 1 - inset, inset], [inset, h - 1 - inset],
                     [w - 1 - inset, h - 1 - inset]], dtype=np.float64)


def warp_shift(warp: np.ndarray, h: int, w: int) -> float:
    """Largest displacement |M x - x| over the image corners and centre, in pixels."""
    pts = np.vstack([corners(h, w), [[(w - 1) / 2, (h - 1) / 2]]])
    q = _apply(warp, pts)
    d = np.hypot(*(q - pts).T)
    return float(np.max(d)) if np.all(np.isfinite(d)) else math.inf


def valid_margin(warp: np.ndarray, h: int, w: int) -> int:
    """Smallest border m such that every sharp pixel at least m from the edge samples inside the blur.

    The image of a rectangle under an affine map (or a homography that keeps it finite) is a convex
    quadrilateral, so checking the inner rectangle's corners suffices.
    """
    tol = 1e-6
    for m in range(0, (min(h, w) + 1) // 2):
        q = _apply(warp, corners(h, w, m))
        if (np.all(np.isfinite(q)) and q[:, 0].min() >= -tol and q[:, 1].min() >= -tol
                and q[:, 0].max() <= w - 1 + tol and q[:, 1].max() <= h - 1 + tol):
            return m
    return (min(h, w) + 1) // 2


def warp_image(img: np.ndarray, warp: np.ndarray, interpolation=cv2.INTER_CUBIC) -> np.ndarray:
    """out(x) = img(M x), replicating the border (the margin says which border pixels are invalid)."""
    h, w = img.shape[:2]
    flags = interpolation | cv2.WARP_INVERSE_MAP
    if np.allclose(warp[2], [0, 0, 1], atol=1e-12):
        return cv2.warpAffine(img, warp[:2], (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpPerspective(img, warp, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def cell_sums(img: np.ndarray, cell: int) -> np.ndarray:
    """Sums over cell x cell tiles (the partial tiles at the right and bottom are left out)."""
    h, w = img.shape[:2]
    ny, nx = h // cell, w // cell
    t = img[:ny * cell, :nx * cell].reshape(ny, cell, nx, cell, *img.shape[2:])
    return t.sum(axis=(1, 3), dtype=np.float64)


def fit_gain(sharp_lin: np.ndarray, blur_lin: np.ndarray, mask: np.ndarray, cell: int,
             tol: float = 0.03, k: float = 4.0) -> np.ndarray:
    """Per-channel gain g with sharp ~ g * blur in linear light, robust to outliers.

    Blur only moves light around, so a plain ratio of sums is unbiased; pixel-level robust weights
    are not (a highlight's sharp peak is trimmed but not the faint spill the blur spreads from it:
    several percent on real photos). So outliers are rejected at a scale larger than the blur:
    light sums over cells of ``cell`` px, cells whose ratio is more than ``max(k * MAD, tol)``
    (relative) off the median are dropped (moving objects, occlusions), and the gain is the ratio of
    sums over the cells kept. ``mask``: HxWx3 bool of usable pixels. A channel without enough
    usable cells gets gain 1.
    """
    gains = np.ones(3)
    for c in range(3):
        m = mask[..., c].astype(np.float32)
        ss = cell_sums(sharp_lin[..., c] * m, cell)
        bb = cell_sums(blur_lin[..., c] * m, cell)
        use = (cell_sums(m, cell) >= 0.25 * cell * cell) & (bb > 1e-6 * cell * cell) & (ss > 0)
        if use.sum() < 3:
            continue
        g = float(np.median(ss[use] / bb[use]))
        for _ in range(3):
            dev = np.abs(ss / np.maximum(bb, 1e-12) / g - 1)
            scale = 1.4826 * float(np.median(dev[use]))
            keep = use & (dev <= max(k * scale, tol))
            if not keep.any():
                break
            g_new = float(ss[keep].sum() / bb[keep].sum())
            done = abs(g_new - g) < 1e-7 * g
            g = g_new
            if done:
                break
        gains[c] = g
    return gains


def estimate_gain(ref: Reference, blur: np.ndarray, warp: np.ndarray, margin: int) -> np.ndarray:
    """Per-channel linear-light gain of ``blur`` (warped by ``warp``) against the sharp reference,
    inside the valid margin, leaving out pixels saturated in the blurred image.

    Saturated *sharp* pixels stay in: blurred images are averages of frames that were clipped
    the same way, so light is conserved through them, and in linear light highlights carry so much
    of the energy that masking them (but not the light the blur spreads from them) biases the fit
    by percents.
    """
    h, w = blur.shape[:2]
    lin, bad = _half_views(blur, ref.lut)
    hh, ww = lin.shape[:2]
    w2 = rescale_warp(warp, np.eye(3), level_matrix((h, w), (hh, ww)))
    lin_w = warp_image(lin, w2, cv2.INTER_LINEAR)
    sat = warp_image(bad, w2, cv2.INTER_LINEAR) > 0
    m2 = int(math.ceil((margin + 1) * ww / w))
    inner = np.zeros((hh, ww), bool)
    inner[m2:hh - m2, m2:ww - m2] = True
    return fit_gain(ref.half_views()[0], lin_w, inner[..., None] & ~sat, cell=max(8, min(hh, ww) // 8))


def gain_table(lut: np.ndarray, gain: float, steps: int = 4) -> np.ndarray:
    """uint8 output code for every uint16 input ``code * steps`` after a linear-light gain.

    Entries past ``255 * steps`` (cubic overshoot) saturate like code 255.
    """
    x = np.arange(255 * steps + 1) / steps
    lin = np.clip(np.interp(x, np.arange(256), lut) * gain, lut[0], lut[-1])
    t = np.clip(np.rint(np.interp(lin, lut, np.arange(256.0))), 0, 255).astype(np.uint8)
    return np.concatenate([t, np.full(65536 - t.size, t[-1], np.uint8)])


def render_aligned(blur: np.ndarray, warp: np.ndarray, gain: np.ndarray, lut: np.ndarray,
                   steps: int = 4) -> np.ndarray:
    """The blurred RGB uint8 image warped onto the sharp frame (cubic) and gain-corrected.

    Warped as uint16 codes x ``steps`` (OpenCV rounds to 1/steps code), then one table lookup per
    channel applies the gain in linear light and encodes: a single rounding to 8 bits.
    """
    src = blur.astype(np.uint16) * np.uint16(steps)
    warped = warp_image(src, warp)
    out = np.empty(blur.shape, np.uint8)
    for c in range(3):
        out[..., c] = np.take(gain_table(lut, float(gain[c]), steps), warped[..., c])
    return out


def correlation(ref: Reference, blur: np.ndarray, warp: np.ndarray) -> float:
    """ECC's criterion at a given warp: the correlation coefficient of the zero-mean sharp and
    warped blurred grey images (linear light) at the finest pyramid level, both smoothed as ECC
    smooths them, so it compares with ECC's own score."""
    k = ref.levels[-1]
    tmpl = ref.pyramid[k]
    g = _resize(grey(blur, ref.lut), k)
    w = rescale_warp(warp, np.eye(3), level_matrix(blur.shape[:2], tmpl.shape))
    moved = warp_image(g, w, cv2.INTER_LINEAR)
    smooth = [cv2.GaussianBlur(x, (5, 5), 0) for x in (tmpl, moved)]      # findTransformECC's gaussFiltSize=5
    return float(cv2.computeECC(*smooth))


def align_pair(sharp, blur: np.ndarray, motion: str = DEFAULT_MOTION, lut: np.ndarray | None = None,
               min_score: float = DEFAULT_MIN_SCORE, max_shift: float = DEFAULT_MAX_SHIFT,
               levels=DEFAULT_LEVELS, render: bool = True, centroid: np.ndarray | None = None,
               max_disagree: float = DEFAULT_MAX_DISAGREE) -> PairAlignment:
    """Align one blurred RGB uint8 image onto its sharp frame (an RGB array or a ``Reference``).

    ``lut``: inverse camera curve (linear value of each code; default gamma 2.2), ignored when a
    ``Reference`` is given (it carries its own). ``centroid``: the exposure's centroid warp (3x3,
    sharp px -> blur px, from the window's measured trajectory): when given it is the warp, its
    score is ECC's criterion evaluated there, and ECC's own optimum only cross-checks it (the
    pair is flagged when they are more than ``max_disagree`` px apart); its score passes when it is
    ``min_score`` or within SCORE_SLACK of ECC's own optimum (strong blur correlates poorly with
    any sharp image, however well aligned). Returns the warp, gain,
    score, margin and ok flag, plus the aligned uint8 image when ``render``. A pair whose ECC
    fails (without a centroid), scores below ``min_score`` or moves more than ``max_shift`` px is
    flagged (ok=False), never dropped: it still gets an output image.
    """
    ref = sharp if isinstance(sharp, Reference) else prepare_reference(sharp, levels, lut)
    h, w = blur.shape[:2]
    if ref.rgb.shape != blur.shape:
        raise ValueError(f"sharp {ref.rgb.shape} and blur {blur.shape} differ in size")
    reason = ""
    try:
        warp, score = estimate_warp(ref, blur, motion)
    except cv2.error:
        warp, a = initial_warp(ref, grey(blur, ref.lut))
        warp = rescale_warp(warp, a, np.eye(3))
        score, reason = 0.0, "ecc failed"
    ecc_px = math.nan
    floor = min_score
    if centroid is not None:
        if not reason:
            ecc_px = warp_error(warp, centroid, h, w)
            # strong blur correlates poorly with anything sharp: judge the centroid against the best
            # correlation ECC could find for this pair, not only the fixed floor
            floor = min(min_score, score - SCORE_SLACK)
        warp, reason = np.asarray(centroid, np.float64), ""
        try:
            score = correlation(ref, blur, warp)
        except cv2.error:
            score = 0.0
        if ecc_px > max_disagree:
            reason = "trajectory disagrees"
    shift = warp_shift(warp, h, w)
    if not math.isfinite(shift) or not np.all(np.isfinite(warp)):
        warp, shift, reason = np.eye(3), math.inf, reason or "ecc failed"
    margin = valid_margin(warp, h, w)
    if not reason and score < floor:
        reason = "low score"
    if not reason and (shift > max_shift or margin >= min(h, w) // 4):
        reason = "large shift"
    gain = estimate_gain(ref, blur, warp, margin)
    if not np.all(np.isfinite(gain)) or np.any(gain <= 0):
        gain = np.ones(3)
    aligned = None
    if render:
        aligned = render_aligned(blur, warp, gain, ref.lut)
    return PairAlignment(warp, gain, float(score), shift, int(margin), reason == "", reason, aligned,
                         float(ecc_px))


def path_extent(trajectory: np.ndarray, centroid: np.ndarray, h: int, w: int) -> float:
    """How far (px, median over the picture) the exposure's frames stray from its centroid: the
    farthest frame of ``trajectory`` ([F, 2, 3] warps). ECC's correlation peak lies on the blur,
    so a disagreement within this distance does not question the trajectory."""
    full = [np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]]) for m in trajectory]
    return max(warp_error(m, centroid, h, w, step=32) for m in full)


def warp_error(est: np.ndarray, truth: np.ndarray, h: int, w: int, step: int = 16,
               margin: int = 0) -> float:
    """Median distance (px) between where two warps send a grid of sharp-frame pixels."""
    ys, xs = np.mgrid[margin:h - margin:step, margin:w - margin:step]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    return float(np.median(np.hypot(*(_apply(est, pts) - _apply(truth, pts)).T)))
