"""Window averaging in linear light, exactly centred on the sharp frame.

A window label W is an exposure of exactly W frame intervals centred on frame c:
odd W averages the W frames c-(W-1)/2 .. c+(W-1)/2 with equal weights; even W averages the W+1
frames c-W/2 .. c+W/2 with half weight on the two end frames. Either way the weights sum to 1 and
their centre of mass is c.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

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


try:  # the optional C kernel (setup.py); OpenCV does the same, about 2x slower, without it
    from ._linear import accumulate_many as _accumulate_many
    from ._linear import accumulate_yuv as _accumulate_yuv
except ImportError:  # pragma: no cover - depends on the build
    _accumulate_many = _accumulate_yuv = None

STRIP_ROWS = 64
GROUP = 4   # frames added in one pass over the accumulator (the C kernel's most)


def add_linear(acc: np.ndarray, frames: Sequence[np.ndarray], luts: Sequence[np.ndarray], tmp: np.ndarray,
               start: bool = False, fused: bool = True) -> None:
    """``acc += lut[0][frames[0]] + ...`` in place, or ``acc = ...`` when ``start`` (float32
    ``acc``, up to GROUP uint8 frames, a 256-entry float32 ``lut`` each).

    With the C kernel: one pass over ``acc`` for all the frames, which at 1080p is what costs
    (the float accumulator is 4x a frame's bytes, read and written per pass); the frames are summed
    first, then added. Without it (or ``fused=False``): OpenCV, a frame at a time and a band of
    rows at a time, so the float band stays in cache (1.8x faster at 1080p than whole frames).
    """
    if (fused and _accumulate_many is not None and len(frames) <= GROUP and acc.flags.c_contiguous
            and all(f.flags.c_contiguous for f in frames)):
        _accumulate_many(acc, list(frames), [np.ascontiguousarray(lut, np.float32) for lut in luts], start)
        return
    rows = tmp.shape[0]
    for i, (frame, lut) in enumerate(zip(frames, luts)):
        if start and i == 0:
            cv2.LUT(frame, lut, dst=acc)
            continue
        for y in range(0, frame.shape[0], rows):
            a = acc[y:y + rows]
            t = tmp[:a.shape[0]]
            cv2.LUT(frame[y:y + rows], lut, dst=t)
            cv2.add(a, t, dst=a)


def add_linear16(acc: np.ndarray, frame: np.ndarray, lut: np.ndarray, tmp: np.ndarray, start: bool) -> None:
    """``acc += lut[frame]`` (or ``acc = lut[frame]`` when ``start``) for a uint16 frame and a
    65536-entry float32 table, a band of rows at a time (the band of floats stays in cache)."""
    rows = tmp.shape[0]
    for y in range(0, frame.shape[0], rows):
        a = acc[y:y + rows]
        if start:
            np.take(lut, frame[y:y + rows], out=a, mode="clip")
            continue
        t = tmp[:a.shape[0]]
        np.take(lut, frame[y:y + rows], out=t, mode="clip")
        cv2.add(a, t, dst=a)


def average_windows(frames: Sequence[np.ndarray], gains: np.ndarray, windows: list[int],
                    curve: CameraCurve, buffers: dict | None = None, corrections: dict | None = None,
                    plain_crops: dict | None = None) -> dict[int, np.ndarray]:
    """Blurred images for several windows sharing one centre, in one pass over the frames.

    ``frames``: the 2H+1 uint8 RGB frames c-H .. c+H (H = the largest half span), read once each
    in time order (a lazy sequence may convert them on access and let go of them after);
    ``gains``: their gains relative to the centre (divided out before averaging);
    ``buffers``: a dict kept by the caller to reuse the float frames between calls.
    Each frame is added to the band of centre distances it falls in; with S(d) the sum over
    |t-c| <= d (a sum of bands), odd W is S(h)/W and even W is (S(h-1) + S(h)) / 2W, so all
    windows cost one linearisation per frame.

    ``corrections[w]``: (x0, y0, x1, y1, delta) boxes of linear light to add to window w's *sum*
    (sub-frame interpolation: ``blurforge.interpolate``), or a function returning that dict, called
    once every frame has been read (corrections made from the frames as they are read);
    ``plain_crops[w] = (x0, y0, x1, y1)`` is replaced by window w's encoded average in that box
    before the corrections (for a side-by-side look).

    16-bit input: when ``frames`` has a method ``frame16(t)`` (and ``frames.depth16``), the frames
    it returns (uint16 RGB, 0..65535) are averaged instead, through the curve's 65536-entry table
    (``curve.lut16``); the result is still rounded to 8 bits once, at the end.

    Decoded input: where ``frames.yuv(t)`` gives a decoded frame instead of None, it is made RGB a
    band of rows at a time by ``frames.bands`` (``video.SwsBands``, the same conversion) inside the
    C kernel, which adds each band while it is in cache.
    """
    H = (len(frames) - 1) // 2
    c = H
    deep = getattr(frames, "depth16", False)
    lut32 = (curve.lut16 if deep else curve.lut).astype(np.float32)
    edges = set()
    for w in windows:
        h = half_span(w)
        if h > H:
            raise ValueError(f"window {w} needs {2 * h + 1} frames, got {len(frames)}")
        edges.update((h, h - 1) if w % 2 == 0 else (h,))
    edges = sorted(edges)  # band k holds the frames with edges[k-1] < |t-c| <= edges[k]
    buffers = {} if buffers is None else buffers
    started = [False] * len(edges)
    group: list = []    # (band, decoded?, frame, lut): consecutive 8-bit frames of one band, added in one pass
    yuv = getattr(frames, "yuv", None) if not deep and _accumulate_yuv is not None else None

    def strip(frame):
        """The float band of rows the OpenCV and 16-bit paths work in, kept in ``buffers``."""
        tmp = buffers.get("strip")
        if tmp is None or tmp.shape[1:] != frame.shape[1:]:
            tmp = buffers["strip"] = np.empty((STRIP_ROWS,) + frame.shape[1:], np.float32)
        return tmp

    def add_group():
        k, decoded = group[0][:2]
        luts = [np.ascontiguousarray(lut, np.float32) for *_, lut in group]
        if decoded:
            bands = frames.bands
            _accumulate_yuv(buffers[k], [bands.source(f, j) for j, (_, _, f, _) in enumerate(group)], luts,
                            not started[k], bands.scale, bands.height, bands.width, bands.BAND)
        else:
            add_linear(buffers[k], [f for _, _, f, _ in group], luts, strip(group[0][2]), start=not started[k])
        started[k] = True
        group.clear()

    for t in range(c - edges[-1], c + edges[-1] + 1):
        k = bisect.bisect_left(edges, abs(t - c))
        decoded = yuv(t) if yuv else None
        frame = decoded if decoded is not None else frames.frame16(t) if deep else frames[t]
        shape = (frames.bands.height, frames.bands.width, 3) if decoded is not None else frame.shape
        acc = buffers.get(k)
        if acc is None or acc.shape != shape:
            acc = buffers[k] = np.empty(shape, np.float32)
        lut = lut32 / np.float32(gains[t])
        if deep:
            add_linear16(acc, frame, lut, strip(frame), start=not started[k])
            started[k] = True
        else:
            if group and (group[0][0] != k or len(group) == GROUP or group[0][1] != (decoded is not None)):
                add_group()
            group.append((k, decoded is not None, frame, lut))
    if group:
        add_group()
    if callable(corrections):
        corrections = corrections()
    sums = {edges[0]: buffers[0]}
    for k in range(1, len(edges)):  # S(edges[k]) accumulates into band k's buffer
        cv2.add(buffers[k], sums[edges[k - 1]], dst=buffers[k])
        sums[edges[k]] = buffers[k]
    mean = buffers.get("mean")
    if mean is None or mean.shape != sums[edges[0]].shape:
        mean = buffers["mean"] = np.empty_like(sums[edges[0]])
    out = {}
    for w in windows:
        h = half_span(w)
        if w % 2:
            cv2.addWeighted(sums[h], 1.0 / w, sums[h], 0.0, 0.0, dst=mean)
        else:
            cv2.addWeighted(sums[h - 1], 0.5 / w, sums[h], 0.5 / w, 0.0, dst=mean)
        if plain_crops and w in plain_crops:
            x0, y0, x1, y1 = plain_crops[w]
            plain_crops[w] = curve.encode(mean[y0:y1, x0:x1].copy(), inplace=True)
        for x0, y0, x1, y1, delta in (corrections or {}).get(w, ()):
            mean[y0:y1, x0:x1] += delta * np.float32(1.0 / w)
        out[w] = curve.encode(mean, inplace=True)
    return out
