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
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import sharpness as sh
from .averaging import average_windows, half_span, window_weights
from .curves import load_curve
from .errors import BlurforgeError
from .photometric import flicker_found, frame_brightness, window_gains
from .shards import ShardError, ShardWriter, file_sha256, is_complete
from .video import MIN_FPS, FrameReader, VideoInfo, probe, reuse_freed_memory

CUT_THRESHOLD = 30.0  # percent mean change between consecutive frames (see sharpness.cut_score)
GHOST_PX = 1.0


@dataclass
class ExtractOptions:
    windows: list[int] = field(default_factory=lambda: [36, 73])
    out: Path = Path("data")
    stride: int | None = None  # default: the largest window
    crf: str = "gamma2.2"
    flicker: str = "auto"  # auto | 100 | 120 | off
    cut_threshold: float = CUT_THRESHOLD
    ghost_px: float = GHOST_PX
    force: bool = False
    overwrite: bool = False
    max_pairs: int | None = None

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


def check_clip(info: VideoInfo, opts: ExtractOptions) -> list[str]:
    """Refuse what cannot give correct pairs; return warnings for what we convert."""
    warnings = []
    largest = max(opts.windows)
    if info.fps < MIN_FPS and not opts.force:
        raise BlurforgeError(
            f"{info.path}: {info.fps:g} fps is below {MIN_FPS:g}: a {largest}-frame window would be a "
            f"{1000 * largest / info.fps:.0f} ms exposure of {largest} widely spaced frames (ghosting); "
            "pass --force to extract anyway")
    if info.variable_frame_rate and not opts.force:
        raise BlurforgeError(
            f"{info.path}: variable frame rate ({info.fps:g} fps average, {info.tbr:g} tbr): window "
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
        warnings.append(f"{info.bit_depth}-bit input ({info.pix_fmt}): converted to 8-bit RGB")
    return warnings


def shard_path(clip: str | os.PathLike, out: Path) -> Path:
    return Path(out) / (Path(clip).stem + ".h5")


def _flicker_hz(opts: ExtractOptions) -> float | None:
    return {"auto": None, "off": 0.0, "100": 100.0, "120": 120.0}[str(opts.flicker)]


class _RgbWindow(collections.abc.Sequence):
    """A window's decoded frames, each converted to RGB only when the averaging reaches it and let
    go of once read (the centre, read twice, is kept): a window in progress holds few frames."""

    def __init__(self, frames, centre: int):
        self.frames, self.centre, self._centre_rgb = list(frames), centre, None

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        if i == self.centre:
            if self._centre_rgb is None:
                self._centre_rgb = self.frames[i].rgb()
            return self._centre_rgb
        frame, self.frames[i] = self.frames[i], None
        return frame.rgb()


class _Background:
    """Runs pair jobs (motion, averaging, shard row) one at a time beside decoding and analysis.

    libav, OpenCV and HDF5 do their work outside the GIL, so averaging a window no longer stalls
    the decoder while it waits. ``submit`` waits while a job runs, so at most one window's frames
    are held beyond the ring and memory does not depend on the clip; a job's exception is raised
    again in the caller at the next ``submit`` or at ``close``.
    """

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.idle = threading.Semaphore(1)
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
        self.digest = file_sha256(self.path)


def extract_clip(clip: str | os.PathLike, opts: ExtractOptions, progress=None, warn=None,
                 start=None) -> dict:
    """Extract one clip into ``opts.out/<stem>.h5``; returns a summary dict.

    ``start(frames)`` is called once before decoding with the frame count the header announces
    (0 if unknown); ``progress(frames_decoded, pairs_written)`` as work advances; ``warn(msg)`` for
    conversions and ghosting. Raises BlurforgeError on bad input (no shard is left behind).
    Summary ``flicker_found``: whether the median flicker amplitude is large enough to matter
    (``photometric.flicker_found``); the gains are divided out either way.
    """
    warn = warn or (lambda m: None)
    clip = Path(clip)
    out_path = shard_path(clip, opts.out)
    if out_path.exists() and not opts.overwrite and is_complete(out_path):
        return {"clip": str(clip), "shard": str(out_path), "status": "skipped (complete)", "pairs": None}
    info = probe(clip)
    for w in check_clip(info, opts):
        warn(f"{clip.name}: {w}")
    if start:
        start(max(0, int(info.frames)))
    curve = load_curve(opts.crf)
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BlurforgeError(f"cannot create output folder {opts.out}: {e.strerror}") from None
    if not os.access(opts.out, os.W_OK):
        raise BlurforgeError(f"output folder {opts.out} is not writable")

    reuse_freed_memory()
    H = opts.max_half
    picker = sh.CentrePicker(H, opts.min_distance)
    ring_len = H + picker.lookahead + 1
    reader = FrameReader(info)
    windows = opts.windows
    hasher = _Hasher(clip)
    hasher.start()
    attrs = {"kind": "video", "source_name": clip.name, "fps": info.fps, "camera_curve": curve.name,
             "codec": info.codec, "pix_fmt": info.pix_fmt, "window_frames": np.array(windows, np.int64)}
    writer = ShardWriter(out_path, reader.height, reader.width, [str(w) for w in windows], attrs=attrs,
                         datasets={"camera_curve": curve.lut})
    for w in windows:
        ds = writer.f[f"blur/{w}"]
        wts = window_weights(w)
        ds.attrs.update(exposure_frames=w, frames=len(wts), weights=wts, exposure_s=w / info.fps)

    # ring[i] = (decoded frame, motion-size grey); one frame more than a window needs before it,
    # for the motion step into the window's first frame
    ring: collections.deque = collections.deque(maxlen=ring_len + 1)
    bright: list[float] = []
    ghosted = 0
    flicker_hz = _flicker_hz(opts)
    chosen_hz: list[float] = []
    swings: list[float] = []
    buffers: dict = {}  # float frames reused by every window's averaging
    steps_px: dict[int, float] = {}  # motion from frame t-1 to t, measured only inside windows
    prev_small = None
    scale = None
    emitted = 0

    def make_pair(c: int, lo: int, entries: list, bright_win: np.ndarray, score: float):
        """Motion, gains, window averages and the shard row of centre c (runs in the background)."""
        nonlocal ghosted
        for k in [k for k in steps_px if k < lo]:
            del steps_px[k]
        for i in range(1, len(entries)):
            if lo + i not in steps_px:
                steps_px[lo + i] = sh.shift_px(entries[i - 1][1], entries[i][1], scale)
        end = lo + len(entries)
        frames = _RgbWindow([e[0] for e in entries[c - H - lo:c + H + 1 - lo]], H)
        entries.clear()
        gains, hz = window_gains(bright_win, info.fps, flicker_hz)
        chosen_hz.append(hz)
        swings.append(float(np.ptp(gains)) / 2)
        blurs = average_windows(frames, gains, windows, curve, buffers)
        meta = {"meta/sharpness": np.float32(score)}
        for w in windows:
            h = half_span(w)
            steps = np.asarray([steps_px.get(t, 0.0) for t in range(c - h, min(c + h + 2, end))])
            mpx = float(np.max(np.median(np.stack([steps[:-2], steps[1:-1], steps[2:]]), axis=0)))
            ghost = mpx > opts.ghost_px
            ghosted += ghost
            meta.update({f"meta/{w}/first": np.int64(c - h), f"meta/{w}/last": np.int64(c + h),
                         f"meta/{w}/gains": gains[H - h:H + h + 1].astype(np.float32),
                         f"meta/{w}/motion_px": np.float32(mpx), f"meta/{w}/ghosting": bool(ghost)})
        writer.add(frames[H], {str(w): blurs[w] for w in windows}, center=c, meta=meta)

    def emit(c: int):
        nonlocal emitted
        first = n - len(ring)
        lo = max(first, c - H - 1)
        entries = [ring[t - first] for t in range(lo, min(n, c + H + 2))]
        worker.submit(make_pair, c, lo, entries, np.asarray(bright[c - H:c + H + 1]), picker.scores[c])
        emitted += 1

    n = 0
    worker = _Background()
    try:
        for frame in reader:
            # video-range luma as decoded: sharpness and motion do not depend on the range's scale;
            # the small copy (brightness through the camera curve, cuts) is mapped to 0..255
            half, quarter, small = sh.grey_pyramid(frame.grey_half(full_range=False))
            black = 16.0 if frame.video_range else 0.0
            if black:
                small = (small - np.float32(black)) * np.float32(255 / 219)
            scale = scale or reader.width / quarter.shape[1]
            bright.append(frame_brightness(small, curve.lut))
            cut = prev_small is not None and sh.cut_score(prev_small, small) > opts.cut_threshold
            prev_small = small
            ring.append((frame, quarter))
            n += 1
            for c in picker.push(sh.tenengrad(half, black), cut):
                emit(c)
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
        missing = info.frames - n  # the header's duration is rounded: allow 10 ms and 2% of slack
        if not reader.error and not opts.max_pairs and missing > max(0.02 * info.frames, 0.01 * info.fps) + 2:
            reader.error = f"the stream ended at frame {n} of the {info.frames} its header announces"
        hasher.join()
        flicker_mode = max(set(chosen_hz), key=chosen_hz.count)
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
        raise BlurforgeError(f"cannot write {out_path}: {e.strerror or e}") from None
    except BaseException:
        worker.cancel()
        writer.abort()
        raise
    if ghosted:
        warn(f"{clip.name}: {ghosted} window(s) move more than {opts.ghost_px:g} px/frame: "
             "their blur may show ghost steps (see meta/<W>/ghosting)")
    summary = {"clip": str(clip), "shard": str(out_path), "status": "ok", "pairs": writer.n,
               "frames_decoded": n, "windows": windows, "size": [reader.width, reader.height],
               "fps": info.fps, "ghosting_windows": ghosted,
               "flicker_hz": flicker_mode, "flicker_amplitude": float(np.median(swings)),
               "flicker_found": bool(flicker_mode) and flicker_found(float(np.median(swings)))}
    if reader.error:
        summary.update(status="truncated", error=f"stream damaged after frame {n}: {reader.error}; "
                                                 f"kept {writer.n} pairs decoded before it")
    return summary
