"""Camera response curves: signal code <-> linear light.

A curve is represented by its inverse as a 256-entry table, ``lut[code] = linear value`` (the form
OpenCV's ``createCalibrateRobertson`` gives, and what shards store as ``camera_curve``), increasing,
with 0 = black and the largest code at 1 (log curves go slightly below 0 under their black level).
Named curves are analytic in both directions, so averaging then re-applying is exact to rounding,
and give 16-bit tables (``lut16``) for 10/12/16-bit input.

Named curves take the signal as decoded to full-range RGB (``E'`` in [0, 1], video-range
black/white mapped to 0/1):
- ``gamma2.2`` (GoPro's ``blur_gamma``), ``srgb`` (IEC 61966-2-1), ``linear`` (GoPro's ``blur``);
- ``hlg``: ITU-R BT.2100 / ARIB STD-B67 inverse OETF (scene light, 1 = the nominal peak);
- ``pq``: SMPTE ST 2084 EOTF (display light, 1 = 10,000 cd/m2);
- log profiles, each from its maker's published formula (scene reflectance, scaled so the
  brightest code is 1): ``slog3`` (Sony S-Log3), ``vlog`` (Panasonic V-Log), ``logc3`` (ARRI LogC3,
  EI 800). Their formulas are written for 10-bit code values of the video-range signal, which
  ``code = (64 + 876 E') / 1023`` gives.
``auto`` follows the stream's transfer tag (:func:`curve_for`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import BlurforgeError

try:  # the optional C kernel (setup.py): the table encode in one pass; numpy without it
    from ._linear import encode_table as _encode_table
    from ._linear import encode_thresholds as _encode_thresholds
except ImportError:  # pragma: no cover - depends on the build
    _encode_table = _encode_thresholds = None

NAMED = ("gamma2.2", "srgb", "linear", "hlg", "pq", "slog3", "vlog", "logc3")
HDR = {"arib-std-b67": "hlg", "smpte2084": "pq"}  # transfer tag -> the only right curve
_BY_TAG = {**HDR, "linear": "linear", "iec61966-2-1": "srgb"}
_FINE = 1 << 18
_TABLES: dict[str, np.ndarray] = {}


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


# ITU-R BT.2100 HLG (ARIB STD-B67), E in [0, 1]
_HLG_A, _HLG_B, _HLG_C = 0.17883277, 0.28466892, 0.55991073


def hlg_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0)
    with np.errstate(over="ignore"):
        return np.where(v <= 0.5, v * v / 3.0, (np.exp((v - _HLG_C) / _HLG_A) + _HLG_B) / 12.0)


def linear_to_hlg(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x <= 1 / 12, np.sqrt(3.0 * x), _HLG_A * np.log(np.maximum(12.0 * x - _HLG_B, 1e-12)) + _HLG_C)


# SMPTE ST 2084 (PQ), Y in [0, 1] = 0 .. 10,000 cd/m2
_M1, _M2 = 2610 / 16384, 2523 / 4096 * 128
_C1, _C2, _C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32


def pq_to_linear(v: np.ndarray) -> np.ndarray:
    p = np.power(np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0), 1 / _M2)
    return np.power(np.maximum(p - _C1, 0.0) / (_C2 - _C3 * p), 1 / _M1)


def linear_to_pq(x: np.ndarray) -> np.ndarray:
    y = np.power(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0), _M1)
    return np.power((_C1 + _C2 * y) / (1 + _C3 * y), _M2)


def _legal(v):
    """Full-range signal -> the normalised 10-bit video-range code value the log formulas use."""
    return (64.0 + 876.0 * np.asarray(v, dtype=np.float64)) / 1023.0


def _full(cv):
    return (np.asarray(cv, dtype=np.float64) * 1023.0 - 64.0) / 876.0


def slog3_to_reflectance(v):  # Sony S-Log3 technical summary
    y = _legal(v)
    return np.where(y >= 171.2102946929 / 1023, 10 ** ((y * 1023 - 420) / 261.5) * 0.19 - 0.01,
                    (y * 1023 - 95) * 0.01125 / (171.2102946929 - 95))


def reflectance_to_slog3(x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(x >= 0.01125, (420 + np.log10(np.maximum(x + 0.01, 1e-12) / 0.19) * 261.5) / 1023,
                     (x * (171.2102946929 - 95) / 0.01125 + 95) / 1023)
    return _full(y)


_VLOG = dict(cut1=0.01, cut2=0.181, b=0.00873, c=0.241514, d=0.598206)  # Panasonic V-Log/V-Gamut


def vlog_to_reflectance(v):
    y, k = _legal(v), _VLOG
    return np.where(y < k["cut2"], (y - 0.125) / 5.6, 10 ** ((y - k["d"]) / k["c"]) - k["b"])


def reflectance_to_vlog(x):
    x, k = np.asarray(x, dtype=np.float64), _VLOG
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(x < k["cut1"], 5.6 * x + 0.125, k["c"] * np.log10(np.maximum(x + k["b"], 1e-12)) + k["d"])
    return _full(y)


# ARRI LogC3 (v3, EI 800), linear scene exposure factor
_LOGC = dict(cut=0.010591, a=5.555556, b=0.052272, c=0.247190, d=0.385537, e=5.367655, f=0.092809)


def logc3_to_reflectance(v):
    t, k = _legal(v), _LOGC
    return np.where(t > k["e"] * k["cut"] + k["f"], (10 ** ((t - k["d"]) / k["c"]) - k["b"]) / k["a"],
                    (t - k["f"]) / k["e"])


def reflectance_to_logc3(x):
    x, k = np.asarray(x, dtype=np.float64), _LOGC
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(x > k["cut"], k["c"] * np.log10(np.maximum(k["a"] * x + k["b"], 1e-12)) + k["d"],
                     k["e"] * x + k["f"])
    return _full(t)


def _scaled(to_lin, from_lin):
    """A log profile scaled so that the brightest code is linear 1 (averaging does not care about
    scale, and the forward table then spans [black, 1] like every other curve)."""
    top = float(to_lin(1.0))
    return (lambda v: to_lin(v) / top), (lambda x: from_lin(np.asarray(x, dtype=np.float64) * top))


_ANALYTIC: dict[str, tuple[Callable, Callable]] = {
    "gamma2.2": (lambda v: np.power(np.clip(np.asarray(v, np.float64), 0, 1), 2.2),
                 lambda x: np.power(np.clip(np.asarray(x, np.float64), 0, 1), 1 / 2.2)),
    "srgb": (srgb_to_linear, linear_to_srgb),
    "linear": (lambda v: np.asarray(v, np.float64).copy(), lambda x: np.asarray(x, np.float64).copy()),
    "hlg": (hlg_to_linear, linear_to_hlg),
    "pq": (pq_to_linear, linear_to_pq),
    "slog3": _scaled(slog3_to_reflectance, reflectance_to_slog3),
    "vlog": _scaled(vlog_to_reflectance, reflectance_to_vlog),
    "logc3": _scaled(logc3_to_reflectance, reflectance_to_logc3),
}


@dataclass(frozen=True)
class CameraCurve:
    name: str
    lut: np.ndarray  # float64[256], linear value of each code, increasing
    bits: int = 8  # depth of the codes ``encode`` gives: 8 (uint8) or 16 (uint16, extract --bits 16)

    def linearize(self, codes: np.ndarray) -> np.ndarray:
        return self.lut[codes]

    @property
    def lut16(self) -> np.ndarray:
        """float32[65536]: the linear value of each 16-bit code (``code / 65535`` on the curve;
        a curve file is interpolated between its 256 codes). For 10/12/16-bit input."""
        key = "16:" + self.name
        table = _TABLES.get(key)
        if table is None:
            v = np.arange(65536) / 65535.0
            fn = _ANALYTIC.get(self.name)
            lin = fn[0](v) if fn else np.interp(v * 255.0, np.arange(256.0), self.lut)
            table = _TABLES[key] = np.asarray(lin, np.float32)
        return table

    def encode(self, linear: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Linear light (float) -> rounded uint8 codes through the forward camera curve (uint16
        codes, 0..65535, when ``bits`` is 16).

        gamma2.2 rounds exactly through its 255 code thresholds in the C kernel where it is built
        (``_gamma_thresholds``: 10.7 -> 6.8 ms a 1080p frame), else OpenCV's vectorised pow and
        saturating round, as linear does; other curves a 2^18-entry table of the forward curve over
        [lut[0], 1] (in one pass in the C kernel where it is built), or at 16 bits the forward
        formula itself (a curve file: interpolated between its 256 codes, as ``lut16`` is).
        ``inplace``: a float32 ``linear`` may be overwritten (saves two frame-sized temporaries).
        """
        lo = min(0.0, float(self.lut[0]))
        x = np.asarray(linear, dtype=np.float32)
        if self.bits == 8 and self.name == "gamma2.2" and _encode_thresholds is not None and x.flags.c_contiguous:
            out = np.empty(x.shape, np.uint8)
            _encode_thresholds(x, *_gamma_thresholds(), out)
            return out
        table = self.bits == 8 and self.name not in ("gamma2.2", "linear", "pq")
        if table and _encode_table is not None and x.flags.c_contiguous:
            out = np.empty(x.shape, np.uint8)   # the C kernel: the numpy steps below in one pass, clip included
            _encode_table(x, self._forward_table(lo), out, lo, np.float32((_FINE - 1) / (1.0 - lo)))
            return out
        if inplace and x is linear:
            np.clip(x, lo, 1.0, out=x)
        else:
            x = np.clip(x, lo, 1.0)
        if self.bits == 16:
            return self._encode16(x)
        if self.name == "gamma2.2":
            return cv2.convertScaleAbs(cv2.pow(x, 1 / 2.2, dst=x), alpha=255.0)
        if self.name == "linear":
            return cv2.convertScaleAbs(x, alpha=255.0)
        if self.name == "pq":  # too steep at black for a table: the lowest 17 codes would merge
            return np.rint(linear_to_pq(x) * 255.0).astype(np.uint8)
        scale = np.float32((_FINE - 1) / (1.0 - lo))
        idx = ((x - np.float32(lo)) * scale + np.float32(0.5)).astype(np.int32)
        return np.take(self._forward_table(lo), idx)

    def _encode16(self, x: np.ndarray) -> np.ndarray:
        """Clipped linear float32 -> uint16 codes ``round(65535 E')``."""
        if self.name == "gamma2.2":
            v = cv2.pow(x, 1 / 2.2, dst=x)
        elif self.name == "linear":
            v = x
        else:
            fn = _ANALYTIC.get(self.name)
            v = fn[1](x) if fn else np.interp(x, self.lut, np.arange(256.0)) / 255.0
        return np.rint(np.clip(np.asarray(v, np.float64) * 65535.0, 0, 65535)).astype(np.uint16)

    def _forward_table(self, lo: float = 0.0) -> np.ndarray:
        table = _TABLES.get(self.name)
        if table is None:
            grid = lo + (1.0 - lo) * np.arange(_FINE) / (_FINE - 1)
            fn = _ANALYTIC.get(self.name)
            v = fn[1](grid) * 255.0 if fn else np.interp(grid, self.lut, np.arange(256.0))
            table = _TABLES[self.name] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
        return table


@functools.cache
def _gamma_thresholds() -> tuple[np.ndarray, np.ndarray]:
    """gamma 2.2's encode as ``_linear.encode_thresholds`` reads it: ``thr[k]``, the least float32
    that rounds to code k or more (255 x^(1/2.2) >= k - 1/2, in float64), and the code of the
    lowest value of each bin of a float's top 17 bits below 1."""
    t = ((np.arange(1, 256) - 0.5) / 255.0) ** 2.2
    t32 = t.astype(np.float32)
    t32 = np.where(t32 < t, np.nextafter(t32, np.float32(np.inf)), t32)
    thr = np.concatenate([[-np.inf], t32, [np.inf]]).astype(np.float32)
    lows = (np.arange(127 << 8, dtype=np.uint32) << np.uint32(15)).view(np.float32)
    return np.searchsorted(t32, lows, side="right").astype(np.uint8), thr


def load_curve(spec: str) -> CameraCurve:
    """A named curve (``NAMED``) or a path to a 256-entry curve (.npy, or text with 256 numbers,
    one per code, or 256x3 from createCalibrateRobertson: averaged over channels)."""
    spec = str(spec)
    if spec in _ANALYTIC:
        return CameraCurve(spec, np.asarray(_ANALYTIC[spec][0](np.arange(256) / 255.0), np.float64))
    path = Path(spec)
    if not path.is_file():
        raise BlurforgeError(f"--crf {spec!r}: not one of auto, {', '.join(NAMED)} and no such curve file")
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


def curve_for(spec: str, transfer: str = "") -> tuple[CameraCurve, str | None]:
    """The curve to average with, and a warning if it contradicts the stream's transfer tag.

    ``auto`` follows the tag: HLG (``arib-std-b67``) and PQ (``smpte2084``) get their BT.2100
    curves, ``linear`` and sRGB (``iec61966-2-1``) theirs, anything else (BT.709, BT.601,
    untagged) gamma 2.2, as before. A named curve is used as asked, but an HDR or linear (raw)
    source averaged through a curve that is not its own is said (never silently gamma 2.2 for HDR).
    """
    spec, transfer = str(spec), str(transfer or "")
    if spec == "auto":
        return load_curve(_BY_TAG.get(transfer, "gamma2.2")), None
    curve = load_curve(spec)
    own = {**HDR, "linear": "linear"}.get(transfer)  # linear: DNG raw frames (blurforge.sequence)
    if own and curve.name != own:
        return curve, (f"the stream is tagged {transfer} ({own.upper()}) but --crf {spec} was asked for: "
                       f"averaging through {spec} (--crf auto or {own} follows the tag)")
    return curve, None
