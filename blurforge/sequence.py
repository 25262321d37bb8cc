"""Image sequences: a folder of numbered frames (PNG or TIFF, 8 or 16 bit, or DNG raw) read as one clip.

High-speed cameras (Phantom, Photron, Chronos) export frame folders. Frames are ordered by the last
number in their file names (``shot_000123.tif``), not alphabetically; a folder has no frame rate, so
``--capture-fps`` gives it. Frames are read one at a time (memory is the extractor's ring, as for
video) and offer what a decoded video frame offers (:class:`blurforge.video.Frame`).

DNG raw frames (the ``raw`` extra: rawpy, LibRaw) are linear sensor data: LibRaw subtracts the black
level, scales the white level to 65535, applies the camera's white balance and colour matrix and
demosaics to 16-bit RGB with no tone curve (``gamma=(1, 1)``, no auto-brightening), so the folder's
transfer is ``linear`` and ``--crf auto`` averages the codes as they are.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np

from .errors import BlurforgeError

SUFFIXES = (".png", ".tif", ".tiff", ".dng")
RAW_SUFFIXES = (".dng",)


def frame_files(folder: str | Path) -> list[Path]:
    """The folder's image files in frame order (the last number in each name); hidden files are
    left out. A name without a number, or two files with one number, is an error."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise BlurforgeError(f"{folder}: a folder with no frames ({', '.join(SUFFIXES)}) and not a video")
    keyed = {}
    for p in files:
        nums = re.findall(r"\d+", p.stem)
        if not nums:
            raise BlurforgeError(f"{p}: frame file names need a frame number (e.g. frame_000123.png)")
        other = keyed.setdefault(int(nums[-1]), p)
        if other != p:
            raise BlurforgeError(f"{other.name} and {p.name} have the same frame number")
    return [keyed[k] for k in sorted(keyed)]


def is_sequence(folder: str | Path) -> bool:
    """Whether a folder holds image frames directly (not only in sub-folders)."""
    folder = Path(folder)
    return folder.is_dir() and any(p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
                                   for p in folder.iterdir())


def read_raw(path: Path) -> np.ndarray:
    """A DNG raw frame as linear uint16 RGB HxWx3 (module docstring: LibRaw through rawpy)."""
    try:
        import rawpy
    except ImportError:
        raise BlurforgeError(f"{path}: DNG frames need rawpy: pip install 'blurforge[raw]'") from None
    try:
        with rawpy.imread(str(path)) as raw:
            return raw.postprocess(gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True)
    except (rawpy.LibRawError, OSError) as e:
        why = e.args[0] if e.args else ""
        why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
        raise BlurforgeError(f"{path}: not a readable DNG raw frame ({type(e).__name__}: {why})") from None


def _read(path: Path) -> np.ndarray:
    """A frame as stored (OpenCV's channel order), or a DNG as linear RGB."""
    if path.suffix.lower() in RAW_SUFFIXES:
        return read_raw(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype not in (np.uint8, np.uint16):
        raise BlurforgeError(f"{path}: not a readable 8- or 16-bit PNG/TIFF")
    return img


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB (uint8 or uint16) HxWx3; grey images are repeated into 3 channels."""
    img = _read(path)
    if path.suffix.lower() in RAW_SUFFIXES:
        return img
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def probe_sequence(folder: Path, capture_fps: float | None = None) -> dict:
    """The fields of a ``video.VideoInfo`` for a frame folder (size, bit depth and format from its
    first frame); ``video.probe`` makes the VideoInfo, so imports run one way (video -> sequence)."""
    files = frame_files(folder)
    kinds = {p.suffix.lower() in RAW_SUFFIXES for p in files}
    if len(kinds) > 1:
        raise BlurforgeError(f"{folder}: DNG raw frames mixed with PNG/TIFF frames; keep one kind per folder")
    raw = kinds == {True}
    first = _read(files[0])
    if capture_fps is not None and not capture_fps > 0:
        raise BlurforgeError(f"--capture-fps {capture_fps:g}: must be a positive frame rate")
    fps = float(capture_fps or 0.0)
    deep = first.dtype == np.uint16
    grey = first.ndim == 2
    pix_fmt = ("gray16le" if deep else "gray") if grey else ("rgb48le" if deep else "rgb24")
    codec = "dng" if raw else "tiff" if files[0].suffix.lower() in (".tif", ".tiff") else "png"
    n = len(files)
    return dict(path=str(folder), width=int(first.shape[1]), height=int(first.shape[0]), fps=fps, tbr=fps,
                duration=n / fps if fps else 0.0, frames=n, codec=codec, pix_fmt=pix_fmt,
                fps_source="--capture-fps" if fps else "none", vfr=False, kind="frames",
                transfer="linear" if raw else "")


class ImageFrame:
    """One frame of a sequence, with :class:`blurforge.video.Frame`'s interface (full-range RGB)."""

    __slots__ = ("img",)
    video_range = False

    def __init__(self, img: np.ndarray):
        self.img = img

    def rgb(self) -> np.ndarray:
        """uint8 RGB: a 16-bit frame rounded to 8 bits (v / 257, rounded)."""
        if self.img.dtype == np.uint8:
            return self.img
        return cv2.convertScaleAbs(self.img, alpha=1 / 257)

    def rgb16(self) -> np.ndarray:
        if self.img.dtype == np.uint16:
            return self.img
        return self.img.astype(np.uint16) * np.uint16(257)

    def grey_half(self, full_range: bool = True) -> np.ndarray:
        y = cv2.cvtColor(self.rgb(), cv2.COLOR_RGB2GRAY)
        return cv2.resize(y, (max(8, y.shape[1] // 2), max(8, y.shape[0] // 2)), interpolation=cv2.INTER_AREA)


def iter_sequence(info, width: int, height: int):
    """The frames of ``info.path`` in order, cropped to ``width`` x ``height``; every frame must
    have the first frame's size and depth."""
    depth = None
    for p in frame_files(info.path):
        img = read_rgb(p)
        if img.shape[:2] != (info.height, info.width) or (depth is not None and img.dtype != depth):
            raise BlurforgeError(f"{p}: {img.shape[1]}x{img.shape[0]} {img.dtype}, unlike the first frame "
                                 f"({info.width}x{info.height})")
        depth = img.dtype
        yield ImageFrame(np.ascontiguousarray(img[:height, :width]))


def sequence_sha256(folder: str | Path) -> str:
    """sha256 over the frame files' bytes, in frame order (the folder's ``source_sha256``)."""
    h = hashlib.sha256()
    for p in frame_files(folder):
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()
