"""Synthesise a high-speed test clip with known motion, flicker and exposure drift.

A photo that scikit-image ships (no network) is rendered in linear light through a smooth random
camera shake (translation, small rotation, zoom), with a textured disc crossing the frame, times a
per-frame gain (mains flicker x slow exposure drift), then through a gamma-2.2 camera curve to
8-bit and encoded by imageio-ffmpeg's ffmpeg. The per-frame truth goes to a JSON file beside it.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_path, atomic_write_text
from .errors import BlurforgeError
from .video import ffmpeg_exe

# scikit-image's sample photos that ship inside its wheel (no download; grey ones are filmed as grey),
# and "deadleaves", a synthetic scene drawn anew for every seed.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "colorwheel", "retina", "motorcycle", "camera", "brick", "grass", "gravel", "moon", "coins", "page",
          "text", "clock", "cell", "deadleaves")
GAMMA = 2.2


@dataclass
class SynthConfig:
    fps: float = 960.0
    frames: int = 480
    width: int = 640
    height: int = 360
    seed: int = 0
    photo: str = "astronaut"
    flicker: float = 0.0  # relative amplitude of the mains flicker, e.g. 0.04
    mains: float = 120.0  # flicker frequency in Hz (twice the mains frequency: 100 or 120)
    drift: float = 0.02  # relative exposure change from start to end of the clip
    shake_px: float = 12.0  # amplitude of the camera translation, pixels (at 640 px width)
    pan_px_s: float = 0.0  # camera pan speed, px/s at 640 px width (direction and 50-100% of it per seed)
    rotation_deg: float = 0.4
    zoom: float = 0.01
    motion: bool = True  # False: a static camera and no object (flicker-only clips)
    cut: int = -1  # frame index at which the scene cuts to another photo (-1: none)
    crf: int = 10  # x264 quality of the encode; < 0: lossless RGB (libx264rgb -qp 0), the frames exactly
    level: float = 0.8  # linear exposure of the scene
    moving_object: bool = True  # the textured disc crossing the picture (False: camera shake only)
    object_photo: str = "coffee"  # photo the moving disc's texture is cut from ("" : the scene's own)
    object_speed: float = 0.0  # px/frame at 640 px width; the disc re-enters on the left (0: one slow crossing)
    shake_freq: float = 1.0  # multiplies the shake's frequencies (1.3, 2.9, 4.7 Hz): >1 accelerates within a window


def dead_leaves(width: int, height: int, seed: int, rmin: float = 2.0, rmax: float | None = None,
                discs: int = 20000) -> np.ndarray:
    """A dead-leaves image (linear-light float32 RGB): opaque discs of random colour whose radii
    follow p(r) ~ r^-3, drawn back to front. Like natural photos it is scale invariant, full of
    occluding edges at every orientation and contrast, and every seed is a new scene: the
    classic synthetic training content for restoration networks that must not learn one photo."""
    rng = np.random.default_rng(seed)
    rmax = rmax or 0.25 * min(width, height)
    up = 2                                  # drawn at twice the size, then area-averaged: anti-aliased edges
    img = np.empty((height * up, width * up, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    a, b = rmin ** -2, rmax ** -2
    radii = (a - rng.random(discs) * (a - b)) ** -0.5
    xs, ys = rng.random(discs) * width, rng.random(discs) * height
    colours = rng.integers(0, 256, (discs, 3)).astype(np.float64)
    grey = colours.mean(1, keepdims=True)
    colours = np.rint(grey + rng.random((discs, 1)) * (colours - grey))   # saturation as varied as in photos
    for r, x, y, c in zip(radii, xs, ys, colours):
        cv2.circle(img, (int(x * up * 16), int(y * up * 16)), int(r * up * 16), tuple(int(v) for v in c),
                   -1, cv2.LINE_8, 4)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return (img.astype(np.float32) / 255.0) ** GAMMA


def load_photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as linear-light float32 RGB."""
    import skimage.data

    if name not in PHOTOS:
        raise BlurforgeError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if img.dtype != np.uint8:
        raise BlurforgeError(f"photo {name!r} is not an 8-bit image")
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return (img[..., :3].astype(np.float32) / 255.0) ** GAMMA


def _smooth_path(rng: np.random.Generator, t: np.ndarray, amp: float, freqs=(1.3, 2.9, 4.7)) -> np.ndarray:
    """Sum of sinusoids with random phases and frequencies near ``freqs``: a smooth hand-shake path."""
    out = np.zeros_like(t)
    for k, f in enumerate(freqs):
        f = f * rng.uniform(0.8, 1.25)
        out += amp / (k + 1) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out


def truth_table(cfg: SynthConfig, index=None) -> list[dict]:
    """Per-frame truth: camera transform, gain (flicker x drift), object position.

    ``index``: frame positions to evaluate, fractional ones included (default: every frame); the
    motion is continuous in time, so ``render_exposure`` can sample it between frames.
    """
    rng = np.random.default_rng(cfg.seed)
    n = cfg.frames
    idx = np.arange(n, dtype=np.float64) if index is None else np.asarray(index, np.float64)
    t = idx / cfg.fps
    t_mid = (n - 1) / 2.0 / cfg.fps
    k = cfg.width / 640.0
    on = 1.0 if cfg.motion else 0.0
    f = cfg.shake_freq
    dx = on * _smooth_path(rng, t, cfg.shake_px * k, freqs=(1.3 * f, 2.9 * f, 4.7 * f))
    dy = on * _smooth_path(rng, t, cfg.shake_px * k * 0.7, freqs=(1.3 * f, 2.9 * f, 4.7 * f))
    ang = on * _smooth_path(rng, t, cfg.rotation_deg, freqs=(1.1 * f, 2.3 * f))
    scale = 1.0 + on * _smooth_path(rng, t, cfg.zoom, freqs=(0.9 * f, 1.9 * f))
    phase = rng.uniform(0, 2 * np.pi)
    flick = 1.0 + cfg.flicker * np.sin(2 * np.pi * cfg.mains * t + phase)
    drift = 1.0 + cfg.drift * (idx / max(1, n - 1) - 0.5)
    r = 0.12 * cfg.height
    y0 = cfg.height * rng.uniform(0.35, 0.65)
    x_start, x_end = 0.1 * cfg.width, 0.9 * cfg.width
    ox = x_start + (x_end - x_start) * idx / max(1, n - 1)
    if cfg.object_speed:                    # enters and leaves the picture, again and again
        lap = cfg.width + 4 * r
        ox = (x_start + cfg.object_speed * k * idx) % lap - 2 * r
    if cfg.pan_px_s:                        # drawn last: clips without a pan keep their truth
        heading, speed = rng.uniform(0, 2 * np.pi), on * cfg.pan_px_s * k * rng.uniform(0.5, 1.0)
        dx = dx + speed * np.cos(heading) * (t - t_mid)
        dy = dy + speed * np.sin(heading) * (t - t_mid)
    has_object = cfg.motion and cfg.moving_object
    rows = []
    for i in range(len(idx)):
        rows.append(dict(index=int(idx[i]) if index is None else float(idx[i]), time=float(t[i]),
                         dx=float(dx[i]), dy=float(dy[i]),
                         angle_deg=float(ang[i]), scale=float(scale[i]), gain=float(flick[i] * drift[i]),
                         flicker=float(flick[i]), drift=float(drift[i]),
                         object_x=float(ox[i]) if has_object else None,
                         object_y=float(y0) if has_object else None, object_radius=float(r)))
    return rows


def camera_matrix(row: dict, canvas_wh: tuple[int, int], frame_wh: tuple[int, int]) -> np.ndarray:
    """2x3 affine mapping canvas pixel coordinates to frame pixel coordinates for one frame."""
    cw, ch = canvas_wh
    fw, fh = frame_wh
    m = cv2.getRotationMatrix2D((cw / 2.0, ch / 2.0), row["angle_deg"], row["scale"])
    m[0, 2] += fw / 2.0 - cw / 2.0 + row["dx"]
    m[1, 2] += fh / 2.0 - ch / 2.0 + row["dy"]
    return m


def canvas_size(cfg: SynthConfig) -> tuple[int, int]:
    """(width, height) of the scene canvas that ``render_frames`` films (the camera matrices refer to it)."""
    if cfg.photo == "deadleaves":
        need_w, need_h = _canvas_need(cfg)
        return int(np.ceil(need_w)), int(np.ceil(need_h))
    c = _canvas(load_photo(cfg.photo), cfg)
    return c.shape[1], c.shape[0]


def camera_warps(cfg: SynthConfig, rows: list[dict], centre: int, frames) -> np.ndarray:
    """True camera warps [F, 3, 3] mapping centre-frame pixel coordinates to those of each of
    ``frames`` (where the camera shows, in frame t, the scene point seen at x in the centre)."""
    cwh = canvas_size(cfg)
    m = {i: np.vstack([camera_matrix(rows[i], cwh, (cfg.width, cfg.height)), [0.0, 0.0, 1.0]])
         for i in {centre, *frames}}
    inv = np.linalg.inv(m[centre])
    return np.stack([m[t] @ inv for t in frames])


def _canvas_need(cfg: SynthConfig) -> tuple[float, float]:
    """The least canvas that covers the frame with room for the shake, zoom and pan."""
    margin = 1.25 + cfg.zoom * 3
    room = 4 * cfg.shake_px + cfg.pan_px_s * cfg.width / 640.0 * cfg.frames / cfg.fps
    return cfg.width * margin + room, cfg.height * margin + room


def _canvas(photo: np.ndarray | str, cfg: SynthConfig) -> np.ndarray:
    """The scene the camera films: the photo scaled to cover the frame with room for the shake."""
    need_w, need_h = _canvas_need(cfg)
    if isinstance(photo, str):             # "deadleaves": drawn at the canvas size, one scene per seed
        return dead_leaves(int(np.ceil(need_w)), int(np.ceil(need_h)), cfg.seed)
    s = max(need_w / photo.shape[1], need_h / photo.shape[0])
    size = (int(np.ceil(photo.shape[1] * s)), int(np.ceil(photo.shape[0] * s)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)


def _object_sprite(radius: float, photo: str) -> tuple[np.ndarray, np.ndarray]:
    """A textured disc (a patch of a sample photo) and its anti-aliased alpha mask."""
    tex = dead_leaves(256, 256, 0) if photo == "deadleaves" else load_photo(photo)
    d = int(np.ceil(2 * radius)) + 3
    if photo == "coffee":
        tex = tex[60:340, 180:460]
    else:  # the central square, turned a quarter so a disc cut from the scene's photo stands out
        h, w = tex.shape[:2]
        k = min(h, w) // 2
        tex = np.rot90(tex[h // 2 - k // 2:h // 2 + k // 2, w // 2 - k // 2:w // 2 + k // 2]).copy()
    tex = cv2.resize(tex, (d, d), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:d, 0:d] + 0.5
    dist = np.hypot(xx - d / 2.0, yy - d / 2.0)
    alpha = np.clip(radius - dist + 0.5, 0.0, 1.0).astype(np.float32)
    return tex, alpha


def _composite(img: np.ndarray, sprite: np.ndarray, alpha: np.ndarray, cx: float, cy: float):
    """Alpha-blend the sprite centred at (cx, cy) with sub-pixel placement, in place, on its ROI only."""
    d = sprite.shape[0]
    x0, y0 = int(np.floor(cx - d / 2.0)) - 1, int(np.floor(cy - d / 2.0)) - 1
    size = d + 3
    fx, fy = cx - d / 2.0 - x0, cy - d / 2.0 - y0
    mo = np.float32([[1, 0, fx], [0, 1, fy]])
    spr = cv2.warpAffine(sprite, mo, (size, size), flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(alpha, mo, (size, size), flags=cv2.INTER_LINEAR)[..., None]
    h, w = img.shape[:2]
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x0 + size), min(h, y0 + size)
    if ix0 >= ix1 or iy0 >= iy1:
        return
    sl = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    roi = img[iy0:iy1, ix0:ix1]
    roi[...] = roi * (1 - a[sl]) + spr[sl] * a[sl]


def _render_linear(cfg: SynthConfig, rows: list[dict]):
    """Yield the linear-light float32 RGB picture (exposed, clipped at 1) of each row of truth."""
    canvases = [_canvas(cfg.photo if cfg.photo == "deadleaves" else load_photo(cfg.photo), cfg)]
    if cfg.cut >= 0:
        other = next(p for p in PHOTOS if p != cfg.photo)
        canvases.append(_canvas(load_photo(other), cfg))
    fw, fh = cfg.width, cfg.height
    sprite, alpha = (_object_sprite(rows[0]["object_radius"], cfg.object_photo or cfg.photo)
                     if cfg.motion and cfg.moving_object else (None, None))
    for row in rows:
        canvas = canvases[1 if 0 <= cfg.cut <= row["index"] else 0]
        m = camera_matrix(row, (canvas.shape[1], canvas.shape[0]), (fw, fh))
        img = cv2.warpAffine(canvas, m, (fw, fh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        if sprite is not None:
            _composite(img, sprite, alpha, row["object_x"], row["object_y"])
        yield np.clip(img * (cfg.level * row["gain"]), 0.0, 1.0)


def _encode_gamma(lin: np.ndarray) -> np.ndarray:
    return np.rint(255.0 * np.clip(lin, 0.0, 1.0) ** (1 / GAMMA)).astype(np.uint8)


def render_frames(cfg: SynthConfig, rows: list[dict]):
    """Yield uint8 RGB frames (camera-curve encoded), one at a time."""
    for lin in _render_linear(cfg, rows):
        yield _encode_gamma(lin)


def swept_mask(cfg: SynthConfig, start: float, end: float, pad: float = 3.0) -> np.ndarray:
    """bool [H, W]: the pixels the moving disc covers (plus ``pad``) at some time between frame
    positions ``start`` and ``end`` (fractional; sampled four times a frame)."""
    ys, xs = np.mgrid[0:cfg.height, 0:cfg.width]
    m = np.zeros(xs.shape, bool)
    for r in truth_table(cfg, np.linspace(start, end, int(4 * (end - start)) + 2)):
        if r["object_x"] is not None:
            m |= np.hypot(xs - r["object_x"], ys - r["object_y"]) <= r["object_radius"] + pad
    return m


def render_exposure(cfg: SynthConfig, centre: int, window: int, sub: int = 16) -> np.ndarray:
    """The physical blur of ``window`` frame intervals centred on frame ``centre``: the exposure
    integral of the continuously moving scene, by the trapezoid rule on ``sub`` renders per frame
    interval, with the gain (flicker, drift) divided out and the centre's put back, as extract
    does; uint8 RGB through the camera curve. Each sub-render saturates on its own, like a sensor.
    """
    n = window * sub
    times = centre - window / 2.0 + np.arange(n + 1) / sub
    weights = np.full(n + 1, 1.0 / n)
    weights[0] = weights[-1] = 0.5 / n
    rows = truth_table(cfg, times)
    g_c = truth_table(cfg, [centre])[0]["gain"]
    acc = None
    for wt, row, lin in zip(weights, rows, _render_linear(cfg, rows)):
        term = lin * (wt / row["gain"])
        acc = term if acc is None else acc + term
    return _encode_gamma(acc * g_c)


def synthesize(out: str | os.PathLike, cfg: SynthConfig, progress=None) -> dict:
    """Render and encode the clip to ``out`` (written atomically) and its truth to ``out``.json."""
    out = Path(out)
    if cfg.width % 2 or cfg.height % 2 or cfg.width < 32 or cfg.height < 32:
        raise BlurforgeError("--size must be even and at least 32x32 (H.264 4:2:0)")
    if cfg.frames < 2:
        raise BlurforgeError("--frames must be at least 2")
    if not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    for name in (cfg.photo, cfg.object_photo or cfg.photo):
        if name not in PHOTOS:
            raise BlurforgeError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    rows = truth_table(cfg)
    truth = {"config": asdict(cfg), "gamma": GAMMA, "camera_curve": "gamma2.2", "frames": rows}
    # the temporary keeps the suffix: ffmpeg picks the container from it
    with atomic_path(out, tmp=out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")) as tmp:
        _encode(cfg, rows, tmp, out, progress)
    atomic_write_text(truth_path(out), json.dumps(truth, indent=1))
    return truth


def _encode(cfg: SynthConfig, rows: list[dict], tmp: Path, out: Path, progress=None):
    """Render the frames into ffmpeg (H.264, yuv420p) writing ``tmp``."""
    codec = (["-c:v", "libx264rgb", "-preset", "veryfast", "-qp", "0", "-pix_fmt", "rgb24"] if cfg.crf < 0 else
             ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(cfg.crf), "-pix_fmt", "yuv420p"])
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-v", "error", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{cfg.width}x{cfg.height}", "-r", f"{cfg.fps:g}", "-i", "-",
           *codec, "-movflags", "+faststart", str(tmp)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for frame in render_frames(cfg, rows):
            proc.stdin.write(frame.tobytes())
            if progress:
                progress(1)
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise BlurforgeError(f"ffmpeg failed to encode {out}: {err.strip().splitlines()[-1:]}")
    except BaseException:
        proc.kill()
        raise


def truth_path(clip: str | os.PathLike) -> Path:
    """``clip.mp4`` -> ``clip.json``: where ``synthesize`` writes the per-frame truth."""
    return Path(clip).with_suffix(".json")
