"""Video probing (the ffmpeg that imageio-ffmpeg ships) and streaming decode (PyAV, in process).

Frames are decoded in process by PyAV (libavcodec with frame threads) in a reader thread and kept
as decoded YUV: analysis reads the luma plane directly and RGB is made only for the frames that a
window needs, by the same swscale conversion, honouring the stream's colour tags, that
``ffmpeg -pix_fmt rgb24`` applies. ``bench/decode.py`` measured this against an ffmpeg RGB pipe,
imageio-ffmpeg and cv2.VideoCapture; the pipe alone cost more CPU than decoding the 1080p clip.
Memory never depends on the clip length.
"""
from __future__ import annotations

import collections
import ctypes
import glob
import os
import queue
import re
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np

from .errors import BlurforgeError

MIN_FPS = 240.0


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    tbr: float
    duration: float
    frames: int  # expected count, from duration x fps
    codec: str
    pix_fmt: str
    warnings: list[str] = field(default_factory=list)
    container_fps: float = 0.0  # the rate the file plays at; ``fps`` is the capture rate
    fps_source: str = "container"  # container | com.android.capture.fps | --capture-fps | none
    rotation: int = 0  # display rotation (display matrix), degrees counter-clockwise: 0/90/180/270
    transfer: str = ""  # transfer characteristic tag (ffmpeg's name), "" when untagged
    vfr: bool | None = None  # from the spacing of the packets' timestamps; None: not measured
    pts_spread: dict = field(default_factory=dict)  # interval_ms [min, median, max], max_offset_frames
    kind: str = "video"  # video | frames (a folder of numbered images, blurforge.sequence)

    @property
    def variable_frame_rate(self) -> bool:
        if self.vfr is not None:
            return self.vfr
        return self.tbr > 0 and abs(self.fps - self.tbr) > 0.01 * self.tbr

    @property
    def grayscale(self) -> bool:
        return self.pix_fmt.startswith(("gray", "y8", "ya"))

    @property
    def bit_depth(self) -> int:
        if re.match(r"(rgb|bgr)(48|64)|rgba64|bgra64", self.pix_fmt):
            return 16
        m = re.search(r"p(9|10|12|14|16)(le|be)?$|(10|12|16)(le|be)$", self.pix_fmt)
        return int(next(g for g in m.groups() if g and g.isdigit())) if m else 8

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(variable_frame_rate=self.variable_frame_rate, bit_depth=self.bit_depth,
                 grayscale=self.grayscale)
        return d


def _fps(text: str, unit: str) -> float:
    m = re.search(r"([\d.]+)(k?) " + unit, text)
    if not m:
        return 0.0
    return float(m.group(1)) * (1000 if m.group(2) else 1)


# AVColorTransferCharacteristic -> ffmpeg's name
_TRC = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear", 9: "log100",
        10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
        16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}
CAPTURE_FPS_TAG = "com.android.capture.fps"


def pts_regularity(pts, time_base: float) -> tuple[bool | None, dict]:
    """Whether frames are evenly spaced, from their presentation timestamps (ticks of ``time_base``).

    A straight line is fitted to the sorted timestamps; the clip is variable-rate when some frame
    lies more than half an interval (and more than 1.5 ticks: coarse time bases round) off it.
    Returns ``(vfr, spread)``, spread = ``interval_ms`` [min, median, max] and ``max_offset_frames``.
    """
    t = np.unique(np.asarray(list(pts), dtype=np.float64))
    if len(t) < 3:
        return None, {}
    i = np.arange(len(t))
    slope, icpt = np.polyfit(i, t, 1)
    if slope <= 0:
        return None, {}
    off = float(np.abs(t - (icpt + slope * i)).max() / slope)
    d = np.diff(t) * time_base * 1000
    spread = {"interval_ms": [round(float(d.min()), 4), round(float(np.median(d)), 4), round(float(d.max()), 4)],
              "max_offset_frames": round(off, 3)}
    return bool(off > max(0.5, 1.5 / slope)), spread


def _stream_details(info: VideoInfo, header: str, capture_fps: float | None) -> VideoInfo:
    """Capture rate, rotation, transfer tag and timestamp spacing (PyAV: demuxing only, no decoding)."""
    rot = re.search(r"rotation of (-?[\d.]+) degrees", header)
    info.rotation = int(round(float(rot.group(1)) / 90)) * 90 % 360 if rot else 0
    tag = None
    try:
        with av.open(info.path) as c:
            s = c.streams.video[0]
            tag = {**dict(c.metadata), **dict(s.metadata)}.get(CAPTURE_FPS_TAG)
            info.transfer = _TRC.get(int(s.codec_context.color_trc or 2), "")
            tb = float(s.time_base) if s.time_base else 0.0
            pts = (p.pts for p in c.demux(s) if p.pts is not None)
            info.vfr, info.pts_spread = pts_regularity(pts, tb) if tb else (None, {})
    except (av.FFmpegError, IndexError, OSError, ValueError) as e:
        info.warnings.append(f"timestamps not read ({e})")
    info.container_fps = info.fps
    if capture_fps is not None:
        if not capture_fps > 0:
            raise BlurforgeError(f"--capture-fps {capture_fps:g}: must be a positive frame rate")
        info.fps, info.fps_source = float(capture_fps), "--capture-fps"
    elif tag is not None:
        try:
            rate = float(tag)
        except ValueError:
            rate = 0.0
        if rate > 0:
            info.fps, info.fps_source = rate, CAPTURE_FPS_TAG
        else:
            info.warnings.append(f"{CAPTURE_FPS_TAG} tag {tag!r} is not a frame rate: ignored")
    return info


def probe(path: str | Path, capture_fps: float | None = None) -> VideoInfo:
    """Read the container header with ``ffmpeg -i`` (no decoding) and the packet timestamps.

    ``fps`` is the capture rate: ``capture_fps`` if given, else the ``com.android.capture.fps``
    tag, else the container's rate (``container_fps`` is always the container's). A folder is an
    image sequence (:mod:`blurforge.sequence`).
    """
    path = Path(path)
    if path.is_dir():
        from .sequence import probe_sequence

        return VideoInfo(**probe_sequence(path, capture_fps))
    if not path.exists():
        raise BlurforgeError(f"{path}: no such file")
    if not path.is_file():
        raise BlurforgeError(f"{path}: not a file")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, errors="replace")
    err = proc.stderr
    stream = next((ln for ln in err.splitlines() if re.search(r"Stream #\S+.*: Video:", ln)), None)
    if stream is None:
        raise BlurforgeError(f"{path}: not a video (ffmpeg found no video stream)")
    desc = stream.split("Video:", 1)[1]
    codec = desc.strip().split()[0].rstrip(",")
    size = re.search(r"(\d{2,5})x(\d{2,5})", desc)
    if not size:
        raise BlurforgeError(f"{path}: ffmpeg reports no frame size")
    parts = [p.strip() for p in re.split(r",(?![^(]*\))", desc)]
    pix_fmt = parts[1].split("(")[0].strip() if len(parts) > 1 else "unknown"
    fps, tbr = _fps(desc, "fps"), _fps(desc, "tbr")
    fps = fps or tbr
    dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", err)
    duration = (int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))) if dur else 0.0
    if fps <= 0:
        raise BlurforgeError(f"{path}: ffmpeg reports no frame rate")
    info = VideoInfo(str(path), int(size.group(1)), int(size.group(2)), fps, tbr, duration,
                     int(round(duration * fps)), codec, pix_fmt)
    return _stream_details(info, err, capture_fps)


def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed frame-sized blocks for reuse instead of unmapping them.

    By default every block over glibc's mmap threshold (a few MB: one RGB frame, one float frame)
    is a fresh mapping that the kernel zero-fills page by page on first touch; converting a 1080p
    frame then cost ~1000 page faults, more system time than the conversion itself. Raising the
    mmap and trim thresholds lets such blocks be reused. Peak memory does not change. Returns
    whether it applied (glibc only; elsewhere this does nothing).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


class DecodeError(BlurforgeError):
    pass


_DECODE_THREADS: int | None = None


def set_decode_threads(n: int | None):
    """Decoding threads of every FrameReader opened after this in this process (None: one per core,
    at most 16). Parallel runners (blurforge.engine) give each of their W workers cores // W, so
    that workers x threads <= cores."""
    global _DECODE_THREADS
    _DECODE_THREADS = None if n is None else max(1, int(n))


def thread_share() -> int:
    """Threads one clip's work may keep busy: ``set_decode_threads``' n, else one per core."""
    if _DECODE_THREADS:
        return _DECODE_THREADS
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_LUMA_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}


_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored picture as players show it: ``rotation`` degrees counter-clockwise (the display
    matrix's angle, as ffmpeg reports it; ffmpeg's autorotate does the same)."""
    return cv2.rotate(img, _ROTATE[rotation]) if rotation in _ROTATE else img


class Frame:
    """One decoded frame: luma for analysis straight from the decoder, RGB made on demand.

    ``grey_half()`` is a half-size, full-range grey image (the luma plane for YUV input);
    ``rgb()`` a new packed RGB uint8 HxWx3 array (converted on each call: a ring of decoded frames
    costs half the memory of RGB ones, and most frames are never needed in RGB); ``rgb16()`` the
    same at 16 bits (rgb48, for 10/12-bit sources). ``width``/``height`` are the stored picture's
    (even-cropped); every image returned is turned upright by ``rotation``.
    """

    __slots__ = ("_frame", "width", "height", "rotation")

    def __init__(self, frame: av.VideoFrame, width: int, height: int, rotation: int = 0):
        self._frame, self.width, self.height, self.rotation = frame, width, height, rotation

    def _luma(self) -> np.ndarray | None:
        """The decoder's own luma plane (a view), for 8-bit planar YUV and grey frames."""
        if self._frame.format.name not in _LUMA_FORMATS:
            return None
        plane = self._frame.planes[0]
        return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:self.height, :self.width]

    @property
    def video_range(self) -> bool:
        """Whether ``grey_half(full_range=False)`` is video-range luma (black 16, white 235)."""
        name = self._frame.format.name
        return (name in _LUMA_FORMATS and not name.startswith("yuvj") and name != "gray"
                and int(self._frame.color_range) != 2)

    def grey_half(self, full_range: bool = True) -> np.ndarray:
        """Half-size grey uint8; ``full_range=False`` skips mapping video-range luma to 0..255
        (see ``video_range``) for callers that only need relative measures."""
        y, turn = self._luma(), self.rotation
        if y is None:
            y, turn = cv2.cvtColor(self.rgb(), cv2.COLOR_RGB2GRAY), 0  # rgb() is upright already
        half = upright(cv2.resize(y, (max(8, y.shape[1] // 2), max(8, y.shape[0] // 2)),
                                  interpolation=cv2.INTER_AREA), turn)
        if full_range and self.video_range:
            half = cv2.convertScaleAbs(half, alpha=255 / 219, beta=-16 * 255 / 219)
        return half

    def _packed(self, fmt: str, dtype) -> np.ndarray:
        fr = self._frame
        out = fr.reformat(format=fmt, src_color_range=int(fr.color_range) or None, dst_color_range=2, threads=1)
        plane = out.planes[0]
        size = np.dtype(dtype).itemsize
        img = np.frombuffer(plane, dtype).reshape(-1, plane.line_size // size)[:self.height, :self.width * 3]
        if plane.line_size != self.width * 3 * size:
            img = np.ascontiguousarray(img)
        img = img.reshape(self.height, self.width, 3)  # a view keeps the swscale output alive
        return upright(img, self.rotation)

    def rgb(self) -> np.ndarray:
        return self._packed("rgb24", np.uint8)

    def rgb16(self) -> np.ndarray:
        """RGB uint16 HxWx3, full range 0..65535 (swscale's rgb48 from the decoded 10/12-bit picture)."""
        return self._packed("rgb48le", np.uint16)


_SWS_LIB = None


def _swscale():
    """PyAV's own libswscale and libavutil (already loaded by ``av``) through ctypes, or None."""
    global _SWS_LIB
    if _SWS_LIB is None:
        _SWS_LIB = False
        try:
            libs = Path(av.__file__).resolve().parent.parent / "av.libs"
            sws, util = (ctypes.CDLL(glob.glob(str(libs / f"lib{n}-*.so*"))[0]) for n in ("swscale", "avutil"))
            sws.sws_getContext.restype = ctypes.c_void_p
            sws.sws_getContext.argtypes = [ctypes.c_int] * 7 + [ctypes.c_void_p] * 3
            sws.sws_getCoefficients.restype = ctypes.c_void_p
            sws.sws_setColorspaceDetails.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                                     ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
            sws.sws_freeContext.argtypes = [ctypes.c_void_p]
            util.av_get_pix_fmt.argtypes = [ctypes.c_char_p]
            _SWS_LIB = (sws, util, ctypes.cast(sws.sws_scale, ctypes.c_void_p).value)
        except (OSError, IndexError, AttributeError):
            pass
    return _SWS_LIB or None


class SwsBands:
    """Converts a clip's 8-bit YUV 4:2:0 frames to RGB a band of rows at a time with the swscale
    that ``Frame.rgb`` uses (PyAV's), set up as PyAV sets it up (bilinear, the frame's colour matrix
    and range, full-range RGB out), for ``_linear.accumulate_yuv``: the RGB frame never leaves the
    cache. ``for_clip`` checks the banded conversion against ``Frame.rgb`` on the clip's first frame
    and gives None where they differ or where it does not apply (other formats, rotation, cropping,
    no kernel), and the caller keeps converting whole frames.
    """

    BAND = 8

    def __init__(self, frame: Frame, slots: int):
        sws, util, self.scale = _swscale()
        fr = frame._frame
        self.height, self.width = frame.height, frame.width
        self.kind = self._kind(fr)
        self.chroma_shift = 1
        fmt = util.av_get_pix_fmt(fr.format.name.encode())
        rgb24 = util.av_get_pix_fmt(b"rgb24")
        full = int(fr.color_range) == 2 or fr.format.name.startswith("yuvj")
        coeffs = sws.sws_getCoefficients(int(fr.colorspace))
        self._free, self.contexts = sws.sws_freeContext, []
        for _ in range(slots):
            bilinear = 2
            ctx = sws.sws_getContext(fr.width, fr.height, fmt, fr.width, fr.height, rgb24, bilinear, None, None, None)
            if not ctx:
                self.close()
                raise MemoryError("swscale context")
            self.contexts.append(ctx)
            sws.sws_setColorspaceDetails(ctx, coeffs, int(full), coeffs, 1, 0, 1 << 16, 1 << 16)

    @classmethod
    def for_clip(cls, frame: Frame, slots: int) -> SwsBands | None:
        if not isinstance(frame, Frame):   # an image sequence's frame (blurforge.sequence)
            return None
        fr = frame._frame
        if (_swscale() is None or fr.format.name not in ("yuv420p", "yuvj420p") or frame.rotation
                or (fr.width, fr.height) != (frame.width, frame.height) or frame.height % 2):
            return None
        try:
            from ._linear import convert_yuv
        except ImportError:
            return None
        bands = cls(frame, slots)
        out = np.empty((frame.height, frame.width, 3), np.uint8)
        try:
            convert_yuv(out, bands.source(frame, 0), bands.scale, bands.height, bands.width, cls.BAND)
        except (RuntimeError, ValueError):
            bands.close()
            return None
        if not np.array_equal(out, frame.rgb()):
            bands.close()
            return None
        return bands

    @staticmethod
    def _kind(fr) -> tuple:
        return fr.format.name, fr.width, fr.height, int(fr.colorspace), int(fr.color_range)

    def fits(self, frame: Frame) -> bool:
        """Whether ``frame`` is stored as the clip's first (format, size, colour matrix and range)."""
        return self._kind(frame._frame) == self.kind

    def source(self, frame: Frame, slot: int) -> tuple:
        """What the kernel reads of ``frame`` (the frame must stay alive while it does)."""
        p = frame._frame.planes
        return (self.contexts[slot], p[0].buffer_ptr, p[1].buffer_ptr, p[2].buffer_ptr,
                p[0].line_size, p[1].line_size, p[2].line_size, self.chroma_shift)

    def close(self):
        for ctx in self.contexts:
            self._free(ctx)
        self.contexts = []

    def __del__(self):
        self.close()


class FrameReader:
    """Iterate decoded frames (``Frame``) of a clip, in order, with bounded memory.

    ``crop_even`` drops a last odd row/column. After iteration, ``frames_read`` is the number of
    frames delivered and ``error`` says where and why decoding stopped if the stream was damaged:
    decoding stops at the first packet the decoder rejects or the first frame it flags corrupt
    (like ``ffmpeg -xerror``), and the few frames decoded just before a rejected packet are
    dropped too, so no concealed, half-grey frame is ever delivered. A reader thread
    keeps at most ``prefetch`` frames in flight.
    """

    def __init__(self, info: VideoInfo, crop_even: bool = True, prefetch: int = 4, stop_after: int | None = None):
        self.info = info
        self.stored_width = info.width - (info.width % 2 if crop_even else 0)
        self.stored_height = info.height - (info.height % 2 if crop_even else 0)
        self.rotation = info.rotation
        # what frames come out as: upright, as players show them
        turned = self.rotation in (90, 270)
        self.width = self.stored_height if turned else self.stored_width
        self.height = self.stored_width if turned else self.stored_height
        self.prefetch = prefetch
        self.stop_after = stop_after  # deliver at most this many frames (trimming: nothing after --end)
        self.frames_read = 0
        self.error: str | None = None

    def __iter__(self):
        if self.info.kind == "frames":
            from .sequence import iter_sequence

            for frame in iter_sequence(self.info, self.stored_width, self.stored_height):
                if self.stop_after is not None and self.frames_read >= self.stop_after:
                    return
                self.frames_read += 1
                yield frame
            return
        yield from self._decode()

    def _decode(self):
        try:
            container = av.open(self.info.path)
            stream = container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as e:
            raise DecodeError(f"{self.info.path}: cannot decode: {e}") from None
        stream.thread_type = "AUTO"
        # one decoding thread per core (libav's default adds one more): beside our own threads the
        # extra one only adds switching and a few more frames in flight (bench/extract.py)
        stream.codec_context.thread_count = min(16, thread_share())
        stream.codec_context.options = {"err_detect": "crccheck+bitstream+buffer+explode"}
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        END = object()

        # With frame threads a damaged packet is reported a few packets later, after its frame
        # may have come out: frames are handed on only once that many more have decoded cleanly,
        # and the unconfirmed ones are dropped when an error comes.
        delay = stream.codec_context.thread_count + 1

        def pump():
            n, pending = 0, collections.deque()
            try:
                for fr in container.decode(stream):
                    if stop.is_set():
                        return
                    if fr.is_corrupt:
                        q.put((END, f"frame {n + len(pending)} decoded corrupt"))
                        return
                    pending.append(fr)
                    if len(pending) > delay:
                        q.put((pending.popleft(), None))
                        n += 1
                while pending:
                    q.put((pending.popleft(), None))
                q.put((END, None))
            except av.FFmpegError as e:
                q.put((END, f"decoder error near frame {n + len(pending)}: {e.strerror or e}"))
            except Exception as e:  # pragma: no cover - torn down mid-read
                q.put((END, f"{type(e).__name__}: {e}"))

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        try:
            while True:
                fr, err = q.get()
                if fr is END:
                    self.error = err
                    break
                if self.stop_after is not None and self.frames_read >= self.stop_after:
                    break
                self.frames_read += 1
                yield Frame(fr, self.stored_width, self.stored_height, self.rotation)
        finally:
            stop.set()
            while t.is_alive():
                try:
                    q.get(timeout=0.1)
                except queue.Empty:
                    pass
            container.close()


def iter_frames(path, **kw):
    """Convenience: every decoded frame of ``path`` as RGB uint8 HxWx3 (for tests and small tools)."""
    for frame in FrameReader(probe(path), **kw):
        yield frame.rgb()
