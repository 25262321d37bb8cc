"""Camera response curves: 8-bit code <-> linear light.

A curve is represented by its inverse as a 256-entry table, ``lut[code] = linear value in [0, 1]``
(the form OpenCV's ``createCalibrateRobertson`` gives, and what shards store as ``camera_curve``).
Named curves also encode analytically, so averaging then re-applying is exact to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import BlurforgeError

NAMED = ("gamma2.2", "srgb", "linear")
_FINE = 1 << 18
_TABLES: dict[str, np.ndarray] = {}


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


@dataclass(frozen=True)
class CameraCurve:
    name: str
    lut: np.ndarray  # float64[256], linear value of each code, increasing

    def linearize(self, codes: np.ndarray) -> np.ndarray:
        return self.lut[codes]

    def encode(self, linear: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Linear light (float) -> rounded uint8 codes through the forward camera curve.

        gamma2.2 and linear use OpenCV's vectorised pow and saturating round (the slow part of a
        1080p window otherwise); other curves a 2^18-entry table of the forward curve.
        ``inplace``: a float32 ``linear`` may be overwritten (saves two frame-sized temporaries).
        """
        x = np.asarray(linear, dtype=np.float32)
        if inplace and x is linear:
            np.clip(x, 0.0, 1.0, out=x)
        else:
            x = np.clip(x, 0.0, 1.0)
        if self.name == "gamma2.2":
            return cv2.convertScaleAbs(cv2.pow(x, 1 / 2.2, dst=x), alpha=255.0)
        if self.name == "linear":
            return cv2.convertScaleAbs(x, alpha=255.0)
        idx = (x * np.float32(_FINE - 1) + np.float32(0.5)).astype(np.int32)
        return np.take(self._forward_table(), idx)

    def _forward_table(self) -> np.ndarray:
        table = _TABLES.get(self.name)
        if table is None:
            grid = np.arange(_FINE) / (_FINE - 1)
            if self.name == "srgb":
                v = linear_to_srgb(grid) * 255.0
            else:
                v = np.interp(grid, self.lut, np.arange(256.0))
            table = _TABLES[self.name] = np.rint(v).astype(np.uint8)
        return table


def load_curve(spec: str) -> CameraCurve:
    """``gamma2.2`` | ``srgb`` | ``linear`` | path to a 256-entry curve (.npy, or text with 256 numbers,
    one per code, or 256x3 from createCalibrateRobertson: averaged over channels)."""
    codes = np.arange(256) / 255.0
    if spec == "gamma2.2":
        return CameraCurve(spec, codes ** 2.2)
    if spec == "srgb":
        return CameraCurve(spec, srgb_to_linear(codes))
    if spec == "linear":
        return CameraCurve(spec, codes.copy())
    path = Path(spec)
    if not path.is_file():
        raise BlurforgeError(f"--crf {spec!r}: not one of {', '.join(NAMED)} and no such curve file")
    try:
        arr = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=None)
    except Exception as e:
        raise BlurforgeError(f"{path}: cannot read camera curve ({e})") from None
    arr = np.asarray(arr, dtype=np.float64).reshape(256, -1).mean(axis=1) if np.size(arr) in (256, 768) else None
    if arr is None:
        raise BlurforgeError(f"{path}: a camera curve needs 256 values (or 256x3), one per code")
    if not np.all(np.isfinite(arr)) or np.any(np.diff(arr) <= 0):
        raise BlurforgeError(f"{path}: camera curve must be finite and strictly increasing")
    arr = (arr - arr[0]) / (arr[-1] - arr[0])
    return CameraCurve(f"file:{path.name}", arr)
