"""`blurforge extract`: one streaming pass from a high-speed clip to a shard of blur/sharp pairs.

Per decoded frame we keep only small statistics (sharpness, brightness, cut and motion scores) and
a ring of the last frames, just long enough to hold the largest window plus the look-ahead that
centre choice needs; memory is bounded by the largest window, never by the clip length. When a
frame is known to be a sharp centre (a local sharpness maximum whose window is inside the clip and
crosses no cut), its windows are averaged in linear light with the flicker gains divided out and
the pair is appended to the shard, which is renamed into place only when complete.
"""
from __future__ import annotations

import collections
import collections.abc
import dataclasses
import errno
import os
import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import sharpness as sh
from .averaging import GROUP, average_windows, half_span, window_weights
from .curves import curve_for
from .errors import BlurforgeError
from .interpolate import MAX_FACTOR, grow_box, interval_fix, merge_boxes
from .motion import FlowMeter, centroid, flow_gap, to_full, track_window, window_motion
from .photometric import fit_gains, linear_small, measure_ratios
from .shards import ShardError, ShardWriter, file_sha256, is_complete
from .video import MIN_FPS, FrameReader, SwsBands, VideoInfo, probe, reuse_freed_memory, thread_share

CUT_THRESHOLD = 30.0  # percent mean change between consecutive frames (see sharpness.cut_score)
GHOST_PX = 1.0
PREFETCH_BYTES = 96 << 20
JOBS_AHEAD = 1     # pairs handed to the background beyond the one it works on: decoding goes on meanwhile
SUBFRAME_WORKERS: int | None = None    # threads making sub-frames beside the averaging (None: video.thread_share)


@dataclass
class ExtractOptions:
    windows: list[int] = field(default_factory=lambda: [36, 73])
    out: Path = Path("data")
    stride: int | None = None  # default: the largest window
    crf: str = "auto"  # auto: follows the stream's transfer tag (curves.curve_for)
    flicker: str = "auto"  # auto | 100 | 120 | off
    cut_threshold: float = CUT_THRESHOLD
    ghost_px: float = GHOST_PX
    force: bool = False
    overwrite: bool = False
    max_pairs: int | None = None
    interpolate: str = "auto"  # auto | off | K: sub-frames where content moves more than a pixel per frame
    capture_fps: float | None = None  # overrides the tag / container rate (required for frame folders)
    start: str | None = None  # windows lie in [start, end): seconds of capture time, or "1200f"
    end: str | None = None
    bits: int = 8  # 16: blur and sharp stored as uint16 for 10/12/16-bit sources (8-bit sources stay 8)

    @property
    def max_half(self) -> int:
        return max(half_span(w) for w in self.windows)

    @property
    def min_distance(self) -> int:
        return self.stride if self.stride else max(self.windows)


def parse_windows(text: str) -> list[int]:
    try:
        ws = sorted({int(w) for w in str(text).split(",") if w.strip()})
    except ValueError:
        raise BlurforgeError(f"--windows {text!r}: expected comma-separated frame counts, e.g. 36,73") from None
    if not ws or ws[0] < 2:
        raise BlurforgeError(f"--windows {text!r}: each window must be at least 2 frames")
    return ws


def parse_interpolate(text: str) -> str:
    """``--interpolate``: auto, off, or a number of sub-steps per frame interval (2..32)."""
    t = str(text).strip().lower()
    if t in ("auto", "off"):
        return t
    if t.isdigit() and 2 <= int(t) <= MAX_FACTOR:
        return t
    if t in ("0", "1"):
        return "off"
    raise BlurforgeError(f"--interpolate {text!r}: expected auto, off, or a number of sub-steps from 2 to {MAX_FACTOR}")


def parse_time(text: str | None, fps: float, what: str) -> int | None:
    """``--start/--end`` as a frame index: ``1200f`` is frame 1200, ``1.5`` or ``1.5s`` is 1.5 s of
    capture time (frame ``round(1.5 * capture fps)``)."""
    if text is None or str(text).strip() == "":
        return None
    t = str(text).strip().lower()
    m = re.fullmatch(r"(\d+)f", t) or re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)s?", t)
    if not m:
        raise BlurforgeError(f"--{what} {text!r}: expected seconds of capture time (1.5) or a frame number (1200f)")
    return int(m.group(1)) if t.endswith("f") else int(round(float(m.group(1)) * fps))


def frame_range(info: VideoInfo, opts: ExtractOptions) -> tuple[int, int | None]:
    """The frames windows may use, ``[lo, hi)`` (``hi`` None: to the end), from ``--start/--end``."""
    lo = parse_time(opts.start, info.fps, "start") or 0
    hi = parse_time(opts.end, info.fps, "end")
    if hi is not None and hi <= lo:
        raise BlurforgeError(f"--end {opts.end} is not after --start {opts.start or 0} (frames {lo} and {hi})")
    if 0 < info.frames <= lo:
        raise BlurforgeError(f"{info.path}: --start {opts.start} (frame {lo}) is past the clip's {info.frames} frames")
    return lo, hi


def check_clip(info: VideoInfo, opts: ExtractOptions) -> list[str]:
    """Refuse what cannot give correct pairs; return warnings for what we convert."""
    warnings = []
    largest = max(opts.windows)
    if info.kind == "frames" and not info.fps:
        raise BlurforgeError(f"{info.path}: a folder of frames has no frame rate: pass --capture-fps (e.g. 960)")
    if info.fps < MIN_FPS and not opts.force:
        hint = ("; if the camera filmed faster than the file plays (slow motion stored at a playback rate), "
                "give the capture rate with --capture-fps") if info.fps_source == "container" else ""
        raise BlurforgeError(
            f"{info.path}: {info.fps:g} fps is below {MIN_FPS:g}: frames {1000 / info.fps:.1f} ms apart leave "
            f"gaps that hand-held motion crosses in tens of pixels, too far for sub-frame interpolation to "
            f"bridge reliably, so a {largest}-frame window ({1000 * largest / info.fps:.0f} ms) would show "
            f"ghost copies; pass --force to extract anyway{hint}")
    if info.variable_frame_rate and not opts.force:
        sp = info.pts_spread
        spread = (f"frame intervals {sp['interval_ms'][0]:g}-{sp['interval_ms'][2]:g} ms, median "
                  f"{sp['interval_ms'][1]:g}; a frame {sp['max_offset_frames']:g} intervals off an even spacing"
                  if sp else f"{info.container_fps or info.fps:g} fps average, {info.tbr:g} tbr")
        raise BlurforgeError(
            f"{info.path}: variable frame rate ({spread}): window "
            "averaging needs evenly spaced frames; re-encode at a constant rate or pass --force")
    need = 2 * opts.max_half + 1
    if 0 < info.frames < need - 1:
        raise BlurforgeError(f"{info.path}: {info.frames} frames is shorter than the largest window "
                             f"({largest} frames needs {need})")
    if info.width % 2 or info.height % 2:
        warnings.append(f"odd frame size {info.width}x{info.height}: cropped to "
                        f"{info.width // 2 * 2}x{info.height // 2 * 2}")
    if info.grayscale:
        warnings.append(f"grayscale input ({info.pix_fmt}): converted to RGB (R = G = B)")
    if info.bit_depth > 8:
        warnings.append(f"{info.bit_depth}-bit input ({info.pix_fmt}): averaged from 16-bit RGB, "
                        + ("stored as 16-bit (--bits 16)" if opts.bits == 16 else
                           "stored as 8-bit (the sharp frame rounded to 8 bits; --bits 16 keeps 16)"))
    return warnings


def shard_path(clip: str | os.PathLike, out: Path) -> Path:
    return Path(out) / (Path(clip).stem + ".h5")


def _flicker_hz(opts: ExtractOptions) -> float | None:
    return {"auto": None, "off": 0.0, "100": 100.0, "120": 120.0}[str(opts.flicker)]


class _RgbWindow(collections.abc.Sequence):
    """A window's decoded frames, each converted to RGB only when the averaging reaches it and let
    go of once read (the centre, read twice, is kept): a window in progress holds few frames.

    ``depth16`` (10/12/16-bit sources): the averaging reads ``frame16(i)`` (uint16 RGB) instead,
    and the centre as an item (the sharp frame) is that same 16-bit frame rounded to 8 bits, so
    blur and sharp come from one conversion. ``seen(i, rgb)`` is called with each frame the
    averaging reads, once, in order (the sub-frames are made from them; None for a frame that
    ``yuv`` handed on decoded).

    ``bands`` (``video.SwsBands``): ``yuv(i)`` hands frame i on still decoded, for the averaging
    to convert band by band (``average_windows``), unless it is the centre, ``needs_rgb(i)`` or
    stored otherwise than the frame the conversion was checked on.
    """

    def __init__(self, frames, centre: int, depth16: bool = False, seen=None, bands=None, needs_rgb=None):
        self.frames, self.centre, self._centre_rgb = list(frames), centre, None
        self.depth16, self._centre16 = depth16, None
        self.seen = seen or (lambda i, rgb: None)
        self.bands, self.needs_rgb = bands, needs_rgb or (lambda i: False)

    def yuv(self, i):
        if self.bands is None or i == self.centre or self.needs_rgb(i) or not self.bands.fits(self.frames[i]):
            return None
        frame, self.frames[i] = self.frames[i], None
        self.seen(i, None)
        return frame

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        if i == self.centre:
            if self._centre_rgb is None:
                if self.depth16:
                    self._centre_rgb = cv2.convertScaleAbs(self.frame16(i), alpha=1 / 257)
                else:
                    self._centre_rgb = self.frames[i].rgb()
                    self.seen(i, self._centre_rgb)
            return self._centre_rgb
        frame, self.frames[i] = self.frames[i], None
        rgb = frame.rgb()
        self.seen(i, rgb)
        return rgb

    def frame16(self, i):
        if i == self.centre:
            if self._centre16 is None:
                self._centre16 = self.frames[i].rgb16()
                self.seen(i, self._centre16)
            return self._centre16
        frame, self.frames[i] = self.frames[i], None
        rgb = frame.rgb16()
        self.seen(i, rgb)
        return rgb


class _Background:
    """Runs pair jobs (averaging, shard row) one at a time beside decoding, analysis and motion.

    libav, OpenCV and HDF5 do their work outside the GIL, so averaging a window no longer stalls
    the decoder while it waits. ``submit`` waits while ``depth`` jobs are running or queued, so at
    most that many windows' frames are held beyond the ring and memory does not depend on the clip;
    a job's exception is raised again in the caller at the next ``submit`` or at ``close``.
    """

    def __init__(self, depth: int = 1):
        self.q: queue.Queue = queue.Queue()
        self.idle = threading.Semaphore(depth)
        self.error: BaseException | None = None
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is None and not self.cancelled:
                try:
                    job[0](*job[1:])
                except BaseException as e:  # noqa: B036 - handed to the caller
                    self.error = e
            del job
            self.idle.release()

    def _raise(self):
        if self.error is not None:
            raise self.error

    def submit(self, fn, *args):
        self.idle.acquire()
        self._raise()
        self.q.put((fn, *args))

    def close(self):
        """Wait for every job; raise the first error one of them hit."""
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join()
        self._raise()

    def cancel(self):
        """Drop jobs not started and wait for the running one (before the shard is discarded)."""
        self.cancelled = True
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join()


class _Hasher(threading.Thread):
    """sha256 of the source file, computed beside the decode (it is I/O, not CPU, bound)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.digest = path, ""

    def run(self):
        if Path(self.path).is_dir():
            from .sequence import sequence_sha256

            self.digest = sequence_sha256(self.path)
        else:
            self.digest = file_sha256(self.path)


CROP = 128  # side of the plain-average crop kept for inspection (meta/<W>/plain_crop)


def _crop_box(step, scale: float, full_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """A CROP x CROP box (x0, y0, x1, y1) centred on what moves fastest in ``step`` (else the centre)."""
    h, w = full_hw
    side = min(CROP, h, w)
    if step.box is None:
        cx, cy = w / 2, h / 2
    else:
        x, y, bw, bh = step.box
        cx, cy = (x + bw / 2) * scale, (y + bh / 2) * scale
    x0 = int(min(max(0, round(cx - side / 2)), w - side))
    y0 = int(min(max(0, round(cy - side / 2)), h - side))
    return x0, y0, x0 + side, y0 + side


def _linear_crop(rgb: np.ndarray, gain: float, curve, box) -> np.ndarray:
    """A decoded RGB frame's box (uint8, or uint16 for deep sources) in linear light (float32), its
    gain divided out."""
    x0, y0, x1, y1 = box
    if rgb.dtype == np.uint16:
        return np.take((curve.lut16 / gain).astype(np.float32), rgb[y0:y1, x0:x1])
    return cv2.LUT(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (curve.lut / gain).astype(np.float32))


class _SubFrames:
    """Sub-frame corrections (``interpolate.interval_fix``) of the intervals t-1 -> t of the window
    c-H .. c+H whose local motion needs them, made from the frames as the averaging converts them
    (``frame``), so each frame is converted to RGB once, on a pool of threads beside the averaging.

    ``mode``: auto or a fixed factor. Corrections are summed per window in interval order (the
    result does not depend on which thread finished first) as soon as a few are done, so memory
    stays one frame-sized sum per window plus the crops in flight. ``finish`` waits for the rest
    and returns what ``average_windows`` adds; ``stats(w)`` is then (largest factor, intervals
    corrected, mean confidence).
    """

    def __init__(self, pool, in_flight: int, c: int, H: int, steps: dict, gains: np.ndarray, curve, scale: float,
                 full_hw: tuple[int, int], mode: str, windows: list[int], ghost_px: float = GHOST_PX):
        self.pool, self.in_flight, self.c, self.H, self.gains, self.curve = pool, in_flight, c, H, gains, curve
        self.mode, self.windows, self.full_hw = mode, windows, full_hw
        self.sums: dict = {}
        self.found: dict = {w: {} for w in windows}      # w: {t: [(factor, confidence) of each box]}
        self.pending: collections.deque = collections.deque()
        self.prev, self.crops = None, {}
        self.first = {c - half_span(w) + 1 for w in windows if w % 2}   # odd windows' end half intervals
        self.last = {c + half_span(w) for w in windows if w % 2}
        self.boxes = {}
        for t in range(c - H + 1, c + H + 1):
            st = steps[t]
            # auto: only the parts that need sub-frames (SUBSTEP_PX), each with its own factor
            parts = st.sub_boxes if mode == "auto" else (st.box,) if st.box is not None else ()
            if parts and st.speed > ghost_px:
                grown = [grow_box(p, scale, st.speed + 8, full_hw[1], full_hw[0]) for p in parts]
                self.boxes[t] = (merge_boxes(grown), st.speed)

    def needs_rgb(self, i: int) -> bool:
        """Whether frame c-H+i starts or ends an interval that gets sub-frames."""
        t = self.c - self.H + i
        return t in self.boxes or t + 1 in self.boxes

    def frame(self, i: int, rgb: np.ndarray | None) -> None:
        """Frame c-H+i, decoded to RGB (uint8, or uint16 for deep sources; None: not made RGB, as
        no interval ``needs_rgb`` it): start the interval that ends at it."""
        prev, self.prev = self.prev, rgb
        t = self.c - self.H + i
        if t not in self.boxes or prev is None or rgb is None:
            return
        boxes, speed = self.boxes[t]
        kept = self.crops.get(i - 1, {})
        crops = {}
        for box in boxes:
            # frame b of one interval is frame a of the next: its crop is kept while the box stays
            a = kept[box] if box in kept else _linear_crop(prev, self.gains[i - 1], self.curve, box)
            b = crops[box] = _linear_crop(rgb, self.gains[i], self.curve, box)
            job = self.pool.submit(interval_fix, a, b, box, None if self.mode == "auto" else int(self.mode),
                                   before=t in self.first, after=t in self.last, reach=speed,
                                   picture_height=self.full_hw[0])
            self.pending.append((t, box, job))
            while len(self.pending) > self.in_flight:
                self._add(*self.pending.popleft())
        self.crops = {i: crops}

    def _add(self, t: int, box, job) -> None:
        fix = job.result()
        if fix.factor <= 1:
            return
        for w in self.windows:
            h = half_span(w)
            if self.c - h + 1 <= t <= self.c + h:
                self._sum(w, box, fix.delta)
                self.found[w].setdefault(t, []).append((fix.factor, fix.confidence))
                if w % 2 and t == self.c - h + 1:
                    self._sum(w, box, fix.before)
                if w % 2 and t == self.c + h:
                    self._sum(w, box, fix.after)

    def _sum(self, w: int, box, delta: np.ndarray) -> None:
        if w not in self.sums:
            self.sums[w] = [np.zeros((self.full_hw[0], self.full_hw[1], 3), np.float32), box]
        acc, seen = self.sums[w]
        acc[box[1]:box[3], box[0]:box[2]] += delta
        self.sums[w][1] = (min(seen[0], box[0]), min(seen[1], box[1]), max(seen[2], box[2]), max(seen[3], box[3]))

    def finish(self) -> dict:
        """Wait for the intervals still in flight; the corrections to add to each window's sum (the
        box around every interval's, not the whole picture)."""
        while self.pending:
            self._add(*self.pending.popleft())
        self.prev, self.crops = None, {}
        return {w: [(x0, y0, x1, y1, acc[y0:y1, x0:x1])] for w, (acc, (x0, y0, x1, y1)) in self.sums.items()}

    def cancel(self) -> None:
        for *_, job in self.pending:
            job.cancel()
        self.pending.clear()

    def stats(self, w: int) -> tuple[int, int, float]:
        found = self.found[w]
        if not found:
            return 1, 0, 1.0
        return (max(k for boxes in found.values() for k, _ in boxes), len(found),
                float(np.mean([np.mean([q for _, q in boxes]) for boxes in found.values()])))


def extract_clip(clip: str | os.PathLike, opts: ExtractOptions, progress=None, warn=None,
                 start=None) -> dict:
    """Extract one clip into ``opts.out/<stem>.h5``; returns a summary dict.

    ``start(frames)`` is called once before decoding with the frame count the header announces
    (0 if unknown); ``progress(frames_decoded, pairs_written)`` as work advances; ``warn(msg)`` for
    conversions and ghosting. Raises BlurforgeError on bad input (no shard is left behind).
    Summary ``flicker_found``: whether any pair's flicker was significant and corrected
    (``photometric.fit_gains``), with ``flicker_pairs``, the median ``flicker_amplitude`` and
    ``flicker_significance``; ``interpolated_windows`` counts windows with sub-frames.
    """
    warn = warn or (lambda m: None)
    clip = Path(clip)
    out_path = shard_path(clip, opts.out)
    if out_path.exists() and not opts.overwrite and is_complete(out_path):
        return {"clip": str(clip), "shard": str(out_path), "status": "skipped (complete)", "pairs": None}
    info = probe(clip, capture_fps=opts.capture_fps)
    for w in check_clip(info, opts):
        warn(f"{clip.name}: {w}")
    lo, hi = frame_range(info, opts)
    if start:
        start(max(0, min(int(info.frames), hi or int(info.frames))))
    curve, said = curve_for(opts.crf, info.transfer)
    if said:
        warn(f"{clip.name}: {said}")
    bits16 = opts.bits == 16 and info.bit_depth > 8
    if opts.bits == 16 and not bits16:
        warn(f"{clip.name}: {info.bit_depth}-bit source: stored as 8 bits (--bits 16 keeps 10/12/16-bit sources deep)")
    store = dataclasses.replace(curve, bits=16) if bits16 else curve  # the curve that encodes the blur
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BlurforgeError(f"cannot create output folder {opts.out}: {e.strerror}") from None
    if not os.access(opts.out, os.W_OK):
        raise BlurforgeError(f"output folder {opts.out} is not writable")

    reuse_freed_memory()
    H = opts.max_half
    picker = sh.CentrePicker(H, opts.min_distance, allowed=(lo, hi))
    ring_len = H + picker.lookahead + 1
    # decoded frames queued ahead: enough that decoding goes on while this thread measures a pair's
    # motion instead of waiting (1080p --interpolate off, 32 frames against 4: 6% and 0% faster in two A/B
    # runs, 0.2-0.6 s less CPU), about PREFETCH_BYTES of them
    frame_bytes = info.width * info.height * 1.5 * (2 if info.bit_depth > 8 else 1)
    reader = FrameReader(info, stop_after=hi, prefetch=int(min(32, max(4, PREFETCH_BYTES // frame_bytes))))
    depth16 = info.bit_depth > 8
    windows = opts.windows
    hasher = _Hasher(clip)
    hasher.start()
    attrs = {"kind": "video", "source_name": clip.name, "fps": info.fps, "camera_curve": curve.name,
             "codec": info.codec, "pix_fmt": info.pix_fmt, "window_frames": np.array(windows, np.int64),
             "source_type": info.kind, "container_fps": info.container_fps, "fps_source": info.fps_source,
             "rotation": info.rotation, "transfer": info.transfer, "bit_depth": info.bit_depth,
             "averaged_bits": 16 if depth16 else 8, "frame_range": np.array([lo, -1 if hi is None else hi], np.int64)}
    writer = ShardWriter(out_path, reader.height, reader.width, [str(w) for w in windows], attrs=attrs,
                         datasets={"camera_curve": curve.lut}, bits=16 if bits16 else 8)
    for w in windows:
        ds = writer.f[f"blur/{w}"]
        wts = window_weights(w)
        ds.attrs.update(exposure_frames=w, frames=len(wts), weights=wts, exposure_s=w / info.fps)

    # ring[i] = (decoded frame, motion-size grey, whether that grey is video-range luma)
    ring: collections.deque = collections.deque(maxlen=ring_len)
    ghosted = interpolated = 0
    flicker_hz = _flicker_hz(opts)
    fits: list = []
    buffers: dict = {}  # float frames reused by every window's averaging
    flow = FlowMeter()
    step_cache: dict = {}  # motion.Step of frame t-1 to t, measured inside windows (kept for overlapping windows)
    prev_small = None
    bands = None  # video.SwsBands of the clip (False: whole frames), set up by the first pair
    full_hw = (reader.height, reader.width)
    emitted = 0

    def motion_of(c: int, entries: list) -> tuple:
        """Trajectory, gains and local motion of centre c, from the small frames alone. Runs in the
        decoding thread before the pair is handed on, so it overlaps the background's averaging of
        the previous pair (which is what limits extract when windows are dense)."""
        greys = [e[1] for e in entries]
        small_hw = greys[0].shape
        scale = reader.width / small_hw[1]
        track = track_window(greys, H)
        lin = [linear_small(g, curve.lut, e[2]) for g, e in zip(greys, entries)]
        fit = fit_gains(measure_ratios(lin, H, track.warps, curve.lut), info.fps, flicker_hz)
        fits.append(fit)
        for k in [k for k in step_cache if k <= c - H]:
            del step_cache[k]
        gap = flow_gap(len(greys))
        for t in range(c - H + gap, c + H + 1, gap):
            span = range(t - gap + 1, t + 1)      # the intervals one step stands for
            if any(u not in step_cache for u in span):
                i = t - (c - H)
                step = flow.step(greys[i - gap], greys[i], track.step(i, gap), scale, gap)
                step_cache.update(dict.fromkeys(span, step))
        steps = {t: step_cache[t] for t in range(c - H + 1, c + H + 1)}
        return track, to_full(track.warps, small_hw, full_hw), fit, steps, scale

    def make_pair(c: int, entries: list, score: float, motion: tuple):
        """Window averages and the shard row of centre c (runs in the background). ``entries``: the
        ring entries of frames c-H .. c+H; ``motion``: their ``motion_of``."""
        nonlocal ghosted, interpolated, bands
        track, warps, fit, steps, scale = motion
        subs = None if pool is None else _SubFrames(pool, 2 * workers, c, H, steps, fit.gains, curve, scale,
                                                    full_hw, opts.interpolate, windows, opts.ghost_px)
        boxes = {w: _crop_box(steps[max(range(c - half_span(w) + 1, c + half_span(w) + 1),
                                        key=lambda t: steps[t].speed)], scale, full_hw) for w in windows}
        crops = dict(boxes)
        if bands is None:
            bands = (not depth16 and SwsBands.for_clip(entries[0][0], GROUP)) or False
        frames = _RgbWindow([e[0] for e in entries], H, depth16, subs and subs.frame, bands or None,
                            subs and subs.needs_rgb)
        entries.clear()
        try:
            blurs = average_windows(frames, fit.gains, windows, store, buffers, subs and subs.finish, crops)
        finally:
            if subs is not None:
                subs.cancel()
        fixed = {w: subs.stats(w) if subs else (1, 0, 1.0) for w in windows}
        meta = {"meta/sharpness": np.float32(score), "meta/flicker_hz": np.float32(fit.flicker_hz),
                "meta/flicker_amplitude": np.float32(fit.amplitude),
                "meta/flicker_significance": np.float32(fit.significance)}
        for w in windows:
            h = half_span(w)
            sl = slice(H - h, H + h + 1)
            ws = [steps[t] for t in range(c - h + 1, c + h + 1)]   # a flow_gap step once, not once per interval
            speed, share = window_motion([st for k, st in enumerate(ws) if k == 0 or st is not ws[k - 1]])
            ghost = speed > opts.ghost_px
            ghosted += ghost
            interpolated += fixed[w][1] > 0
            meta.update({f"meta/{w}/first": np.int64(c - h), f"meta/{w}/last": np.int64(c + h),
                         f"meta/{w}/gains": fit.gains[sl].astype(np.float32),
                         f"meta/{w}/motion_px": np.float32(speed), f"meta/{w}/moving_fraction": np.float32(share),
                         f"meta/{w}/ghosting": bool(ghost),
                         f"meta/{w}/trajectory": warps[sl, :2].astype(np.float32),
                         f"meta/{w}/centroid": centroid(warps[sl], window_weights(w)),
                         f"meta/{w}/track_inliers": np.float32(track.inliers[sl].min()),
                         f"meta/{w}/interp_factor": np.int32(fixed[w][0]),
                         f"meta/{w}/interp_intervals": np.int32(fixed[w][1]),
                         f"meta/{w}/interp_confidence": np.float32(fixed[w][2]),
                         f"meta/{w}/plain_crop": crops[w],
                         f"meta/{w}/crop_xy": np.array(boxes[w][:2], np.int32)})
        writer.add(frames.frame16(H) if bits16 else frames[H], {str(w): blurs[w] for w in windows}, center=c,
                   meta=meta)

    def emit(c: int):
        nonlocal emitted
        first = n - len(ring)
        entries = [ring[t - first] for t in range(c - H, c + H + 1)]
        worker.submit(make_pair, c, entries, picker.scores[c], motion_of(c, entries))
        emitted += 1

    n = trimmed = 0
    worker = _Background(1 + JOBS_AHEAD)
    workers = SUBFRAME_WORKERS or min(4, thread_share())
    pool = None if opts.interpolate == "off" else ThreadPoolExecutor(workers, thread_name_prefix="subframes")
    # the decoder's threads, this one, the background's and the sub-frame pool are the parallelism:
    # OpenCV's own threads on top of them only cost (A/B at 1080p: 5% less CPU with --interpolate off, 6% auto)
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for frame in reader:
            # video-range luma as decoded: sharpness, tracking and flow do not depend on the range's
            # scale; the small copy for cut detection is mapped to 0..255
            half, quarter, small = sh.grey_pyramid(frame.grey_half(full_range=False))
            black = 16.0 if frame.video_range else 0.0
            if black:
                small = (small - np.float32(black)) * np.float32(255 / 219)
            cut = prev_small is not None and sh.cut_score(prev_small, small) > opts.cut_threshold
            prev_small = small
            ring.append((frame, quarter, bool(black)))
            n += 1
            for c in picker.push(sh.tenengrad(half, black), cut):
                emit(c)
            # decoded frames no window still to come can use are let go of now, not when the ring
            # drops them (fewer frames held: the decoder's frame pool grows less)
            first, unused = n - len(ring), picker.earliest() - H
            while trimmed < min(unused, n):
                if trimmed >= first:
                    ring[trimmed - first] = (None,) + ring[trimmed - first][1:]
                trimmed += 1
            if progress:
                progress(n, writer.n)
            if opts.max_pairs and emitted >= opts.max_pairs:
                break
        else:
            for c in picker.finish():
                emit(c)
        worker.close()
        if progress:
            progress(n, writer.n)
        if n < 2 * H + 1 and not reader.error:
            raise BlurforgeError(f"{clip}: {n} frames decoded, shorter than the largest window "
                                 f"({max(windows)} frames needs {2 * H + 1})")
        if writer.n == 0:
            raise BlurforgeError(f"{clip}: no sharp centre with a complete window found in {n} frames"
                                 + (f" (stream damaged: {reader.error})" if reader.error else ""))
        # the header's duration is rounded: allow 10 ms and 2% of slack (frames up to --end only)
        missing = min(info.frames, hi or info.frames) - n
        if not reader.error and not opts.max_pairs and missing > max(0.02 * info.frames, 0.01 * info.fps) + 2:
            reader.error = f"the stream ended at frame {n} of the {info.frames} its header announces"
        hasher.join()
        found = [f.flicker_hz for f in fits if f.flicker_hz]
        flicker_mode = max(set(found), key=found.count) if found else 0.0
        writer.f.attrs.update(source_sha256=hasher.digest, frames_decoded=n,
                              truncated=bool(reader.error), mains_hz=flicker_mode / 2,
                              stopped_at=n if reader.error else -1)
        writer.close()
    except ShardError:
        worker.cancel()
        writer.abort()
        raise
    except OSError as e:
        worker.cancel()
        writer.abort()
        why = "No space left on device" if e.errno == errno.ENOSPC or "No space left" in str(e) else (e.strerror or e)
        raise BlurforgeError(" ".join(f"cannot write {out_path}: {why}".split())) from None
    except BaseException:
        worker.cancel()
        writer.abort()
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bands:
            bands.close()
        cv2.setNumThreads(cv_threads)
    if ghosted > interpolated:
        warn(f"{clip.name}: {ghosted} window(s) move more than {opts.ghost_px:g} px/frame, "
             f"{interpolated} of them interpolated: the others' blur may show ghost steps (see meta/<W>/ghosting"
             + (", --interpolate auto)" if opts.interpolate == "off" else ")"))
    summary = {"clip": str(clip), "shard": str(out_path), "status": "ok", "pairs": writer.n,
               "frames_decoded": n, "windows": windows, "size": [reader.width, reader.height],
               "fps": info.fps, "ghosting_windows": ghosted,
               "flicker_hz": flicker_mode, "flicker_found": bool(found), "flicker_pairs": len(found),
               "flicker_amplitude": float(np.median([f.amplitude for f in fits if f.flicker_hz or not found]
                                                    or [0.0])),
               "flicker_significance": float(np.median([f.significance for f in fits] or [0.0])),
               "drift_pairs": sum(f.drift for f in fits), "flicker_off": flicker_hz == 0.0,
               "interpolated_windows": interpolated, "interpolate": opts.interpolate}
    if reader.error:
        summary.update(status="truncated", error=f"stream damaged after frame {n}: {reader.error}; "
                                                 f"kept {writer.n} pairs decoded before it")
    return summary
