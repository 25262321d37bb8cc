"""Video probing and streaming decode through the ffmpeg that imageio-ffmpeg ships.

Frames are decoded by an ffmpeg subprocess (its own threads, so decoding overlaps our processing)
to packed RGB24 and read one at a time from its pipe: memory never depends on the clip length.
"""
from __future__ import annotations

import queue
import re
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

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

    @property
    def variable_frame_rate(self) -> bool:
        return self.tbr > 0 and abs(self.fps - self.tbr) > 0.01 * self.tbr

    @property
    def grayscale(self) -> bool:
        return self.pix_fmt.startswith(("gray", "y8", "ya"))

    @property
    def bit_depth(self) -> int:
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


def probe(path: str | Path) -> VideoInfo:
    """Read the container header with ``ffmpeg -i`` (no decoding)."""
    path = Path(path)
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
    return VideoInfo(str(path), int(size.group(1)), int(size.group(2)), fps, tbr, duration,
                     int(round(duration * fps)), codec, pix_fmt)


class DecodeError(BlurforgeError):
    pass


class FrameReader:
    """Iterate decoded RGB frames (uint8 HxWx3) of a clip, in order, with bounded memory.

    ``crop_even`` drops a last odd row/column. After iteration, ``frames_read`` is the number of
    frames delivered and ``error`` holds ffmpeg's complaint if the stream was damaged.
    A reader thread keeps at most ``prefetch`` frames in flight.
    """

    def __init__(self, info: VideoInfo, crop_even: bool = True, prefetch: int = 4):
        self.info = info
        self.width = info.width - (info.width % 2 if crop_even else 0)
        self.height = info.height - (info.height % 2 if crop_even else 0)
        self.prefetch = prefetch
        self.frames_read = 0
        self.error: str | None = None

    def _command(self) -> list[str]:
        vf = []
        if (self.width, self.height) != (self.info.width, self.info.height):
            vf = ["-vf", f"crop={self.width}:{self.height}:0:0"]
        return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-xerror",
                "-i", self.info.path, "-map", "0:v:0", *vf, "-fps_mode", "passthrough",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]

    def __iter__(self):
        nbytes = self.width * self.height * 3
        proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, bufsize=0)
        try:  # a 1 MiB pipe (Linux F_SETPIPE_SZ) means fewer wake-ups per 6 MB frame
            import fcntl

            fcntl.fcntl(proc.stdout.fileno(), 1031, 1 << 20)
        except (ImportError, OSError):
            pass
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        stderr_chunks: list[bytes] = []
        t_err = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
        t_err.start()

        def pump():
            try:
                while not stop.is_set():
                    buf = np.empty(nbytes, np.uint8)
                    view, got = memoryview(buf), 0
                    while got < nbytes:
                        n = proc.stdout.readinto(view[got:])
                        if not n:
                            break
                        got += n
                    if got < nbytes:
                        q.put((None, got))
                        return
                    q.put((buf.reshape(self.height, self.width, 3), got))
            except Exception as e:  # pragma: no cover - pipe torn down
                q.put((None, e))

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        try:
            while True:
                frame, got = q.get()
                if frame is None:
                    partial = got if isinstance(got, int) else 0
                    break
                self.frames_read += 1
                yield frame
        finally:
            stop.set()
            if proc.poll() is None:
                # consumer stopped early (or was interrupted): drain so the pump thread ends
                proc.kill()
            while t.is_alive():
                try:
                    q.get(timeout=0.1)
                except queue.Empty:
                    pass
            proc.wait()
            t_err.join(timeout=5)
        text = b"".join(stderr_chunks).decode(errors="replace").strip()
        if proc.returncode != 0 or partial:
            last = text.splitlines()[-1] if text else f"ffmpeg exited with {proc.returncode}"
            self.error = last if not partial else f"{last} (partial frame)".strip()


def iter_frames(path, **kw):
    """Convenience: decode every frame of ``path`` (for tests and small tools)."""
    return iter(FrameReader(probe(path), **kw))
