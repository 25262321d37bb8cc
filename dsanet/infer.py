"""``dsanet-deblur``: restore images, folders of images and videos with a trained DSANet.

* Weights: a training checkpoint (``runs/NAME/last.pt`` / ``best.pt``) or an exported
  ``model.safetensors`` with its ``config.json`` beside it (or the folder holding both).
* Images (png, jpg, bmp, tif, webp, ...; 8- or 16-bit, grey or colour) come out as images with
  the same bit depth (``--ext`` picks the format, png by default); folders are walked
  recursively and their layout is kept under ``--out``. An EXIF orientation is applied to the
  pixels (output upright, no tag).
* Videos (mp4, mov, mkv, avi, webm, ...) become MP4: frames are decoded, restored and encoded to
  H.264 (``--crf``) in process (PyAV), one at a time; every frame keeps its timestamp (variable
  frame rate survives), audio streams are copied packet for packet (AAC when MP4 cannot hold
  their codec), a display rotation is applied to the pixels like an EXIF orientation, and the
  colour tags are kept. See :func:`restore_video`.
* Any size: the network pads internally. ``--tile N`` restores overlapping N x N tiles
  (``--overlap`` pixels shared, blended with linear ramps) for images too large for the device;
  by default the whole image is tried first and tiles of 1024, 512 then 256 px are used if the
  device runs out of memory.
* Every output is written under a temporary name and renamed into place, so a crash never leaves
  a truncated file under the final name. A file that cannot be read or restored is reported and
  skipped; the others are still processed and the exit status is 1 at the end.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import click
import numpy as np
import torch

from blurforge.atomic import atomic_path, atomic_write
from blurforge.cliutil import CONTEXT, say
from blurforge.cliutil import progress as progress_bar
from blurforge.errors import BlurforgeError
from blurforge.video import reuse_freed_memory

from .checkpoint import build_model, friendly
from .runtime import autocast_for, pick_device

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".jp2"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
AUTO_TILES = (1024, 512, 256)


class InputError(BlurforgeError):
    """One input that cannot be processed (the run goes on with the others)."""


# ----------------------------------------------------------------------------------------------
# Device and precision
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# Restoration (whole or tiled)
# ----------------------------------------------------------------------------------------------

def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(n: int, at_start: bool, at_end: bool, overlap: int) -> torch.Tensor:
    """Blend weight along one tile axis. Near an inner tile edge the weight is 0 for the first
    overlap/4 px (where the tile lacks context), then rises linearly to 1 at 3/4 of the overlap;
    neighbours overlapping by ``overlap`` px therefore sum to exactly 1 there."""
    d = torch.arange(n, dtype=torch.float32) + 0.5
    w = torch.ones(n)
    if overlap > 0:
        m = overlap / 4.0
        span = overlap - 2 * m

        def rise(dist):
            return ((dist - m) / span).clamp(0, 1)
        if not at_start:
            w = torch.minimum(w, rise(d))
        if not at_end:
            w = torch.minimum(w, rise(n - d))
    return w


def _grid(net) -> int:
    cfg = getattr(net, "cfg", None)
    return int(getattr(cfg, "size_multiple", 1) or 1)


@torch.no_grad()
def restore_tensor(net, x: torch.Tensor, tile: int = 0, overlap: int = 32, half: bool = False) -> torch.Tensor:
    """``x`` float ``[1, 3, H, W]`` in [0, 1] on the model's device -> restored, same shape, float32
    (not clamped). ``tile`` = 0: whole image at once.

    Tiling follows the network's own grid: the image is replicate-padded to a multiple of the
    network's size multiple (as the network itself does), tile size, overlap and every tile
    origin are multiples of it, so each tile sees the same down-sampling phases as the whole
    image; tiles are blended with :func:`_ramp` weights (a partition of unity).
    """
    device = x.device
    H, W = x.shape[-2:]
    if tile <= 0 or (H <= tile and W <= tile):
        with autocast_for(device, half):
            return net(x)[-1].float()
    g = _grid(net)
    tile = max(g, tile // g * g)
    overlap = max(0, min(overlap, tile // 2))
    if overlap and g > 1:
        overlap = min(max(g, -(-overlap // g) * g), tile // 2 // g * g)
    if overlap < 4:
        overlap = 0             # too small to blend: overlapping pixels are averaged
    ph, pw = (-H) % g, (-W) % g
    xp = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
    Hp, Wp = H + ph, W + pw
    out = torch.zeros((1, 3, Hp, Wp), dtype=torch.float32, device=device)
    wsum = torch.zeros((1, 1, Hp, Wp), dtype=torch.float32, device=device)
    ys, xs = _starts(Hp, tile, overlap), _starts(Wp, tile, overlap)
    th, tw = min(tile, Hp), min(tile, Wp)
    for y in ys:
        wy = _ramp(th, y == 0, y + th >= Hp, overlap)
        for x0 in xs:
            wx = _ramp(tw, x0 == 0, x0 + tw >= Wp, overlap)
            with autocast_for(device, half):
                r = net(xp[..., y:y + th, x0:x0 + tw])[-1].float()
            w = (wy[:, None] * wx[None, :]).to(device)[None, None]
            out[..., y:y + th, x0:x0 + tw] += r * w
            wsum[..., y:y + th, x0:x0 + tw] += w
    return (out / wsum)[..., :H, :W]


def restore_array(net, img: np.ndarray, device, tile: int = 0, overlap: int = 32, half: bool = False,
                  log=None) -> np.ndarray:
    """``img`` float32 HxWx3 in [0, 1] -> restored float32 HxWx3 clamped to [0, 1].

    With ``tile`` = 0 an out-of-memory error retries with tiles of 1024, 512, then 256 px.
    """
    x = torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1)[None]
    if device.type != "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    tiles = [tile] if tile > 0 else [0, *AUTO_TILES]
    last_err = None
    for t in tiles:
        try:
            y = restore_tensor(net, x, tile=t, overlap=overlap, half=half)
            return y.clamp_(0, 1)[0].permute(1, 2, 0).cpu().numpy()
        except torch.OutOfMemoryError as e:
            last_err = e
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if log and t != tiles[-1]:
                nxt = tiles[tiles.index(t) + 1]
                log(f"note: out of memory at {'whole image' if t == 0 else f'tile {t}'}; trying tile {nxt}")
    raise InputError(f"out of memory even with {tiles[-1]} px tiles ({str(last_err).splitlines()[0][:80]})")


# ----------------------------------------------------------------------------------------------
# Image and video I/O
# ----------------------------------------------------------------------------------------------

def read_image(path) -> tuple[np.ndarray, int]:
    """-> (float32 HxWx3 RGB in [0, 1], max code 255 or 65535), turned upright by its EXIF
    orientation (OpenCV's default, as videos follow their display rotation). InputError if unreadable."""
    import cv2
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None or img.size == 0:
        raise InputError(f"{path}: not a readable image")
    if img.dtype == np.uint8:
        peak = 255
    elif img.dtype == np.uint16:
        peak = 65535
    else:
        raise InputError(f"{path}: unsupported pixel type {img.dtype} (use 8- or 16-bit images)")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img.astype(np.float32) / peak, peak


def to_codes(img: np.ndarray, peak: int = 255) -> np.ndarray:
    dtype = np.uint8 if peak == 255 else np.uint16
    return np.clip(np.rint(img * peak), 0, peak).astype(dtype)


def write_image(path, rgb: np.ndarray, jpeg_quality: int = 95):
    """Write an RGB uint8/uint16 image atomically (format from the extension)."""
    import cv2
    path = Path(path)
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg", ".webp", ".bmp") and rgb.dtype != np.uint8:
        rgb = (rgb.astype(np.float32) / 257.0).round().astype(np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise InputError(f"{path}: cannot encode as {ext}")
    atomic_write(path, lambda fh: fh.write(buf.tobytes()))


# ----------------------------------------------------------------------------------------------
# Video: frames decoded and re-encoded in process (PyAV), audio copied, timing and tags kept
AUDIO_FALLBACK = "aac"
_CONTAINER_TAGS_DROPPED = {"major_brand", "minor_version", "compatible_brands", "encoder"}


def display_orientation(matrix) -> tuple[bool, bool, bool]:
    """A display matrix (FFmpeg's 3x3 int32, row-major, 16.16 fixed point) -> (transpose, flip
    rows, flip columns) that turn coded frames upright, in that order. A display matrix maps a
    coded pixel (x, y) to (a*x + c*y, b*x + d*y); rotations other than multiples of 90 degrees
    snap to the nearest one."""
    if matrix is None:
        return False, False, False
    a, b, c, d = (float(v) for v in np.asarray(matrix, dtype=np.float64).ravel()[[0, 1, 3, 4]])
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return False, d < 0, a < 0
    return True, b < 0, c < 0


def upright(img: np.ndarray, orientation: tuple[bool, bool, bool]) -> np.ndarray:
    """Apply :func:`display_orientation`'s result to an HxWxC image (a view when possible)."""
    transpose, flip_rows, flip_cols = orientation
    if transpose:
        img = img.transpose(1, 0, 2)
    if flip_rows:
        img = img[::-1]
    if flip_cols:
        img = img[:, ::-1]
    return img


def frame_display_matrix(frame) -> np.ndarray | None:
    """The display matrix a decoded PyAV frame carries (rotation / flip tag), or None."""
    for sd in frame.side_data:
        if "DISPLAYMATRIX" in str(sd.type):
            m = np.frombuffer(bytes(sd), "<i4")
            return m.reshape(3, 3) if m.size == 9 else None
    return None


def _av_error(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).strip().splitlines()[0][:120]


class _VideoOut:
    """The H.264 side: restored RGB frames in, encoded packets muxed with the source's timing."""

    def __init__(self, out, vin, first, crf: int):
        self.orientation = display_orientation(frame_display_matrix(first))
        self.deep = first.format.components[0].bits > 8
        self.rgb_format = "rgb48le" if self.deep else "rgb24"
        self.peak = 65535 if self.deep else 255
        h, w = (first.width, first.height) if self.orientation[0] else (first.height, first.width)
        self.height, self.width = h - h % 2, w - w % 2
        self.cropped = (h, w) != (self.height, self.width)
        self.color_range = 2 if (int(first.color_range) == 2 or first.format.name.startswith("yuvj")) else 1
        cs = int(first.colorspace)
        self.colorspace = cs if cs not in (0, 2) else None
        tb = vin.time_base or Fraction(1, 90000)
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        self.stream = out.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        cc = self.stream.codec_context
        cc.width, cc.height = self.width, self.height
        cc.pix_fmt = "yuv420p10le" if self.deep else "yuv420p"
        cc.thread_type = "AUTO"                       # x264's frame threads, as the ffmpeg CLI uses
        cc.time_base = tb
        self.stream.time_base = tb
        cc.color_range = self.color_range
        cc.color_primaries = int(first.color_primaries)
        cc.color_trc = int(first.color_trc)
        if self.colorspace is not None:
            cc.colorspace = self.colorspace
        sar = vin.sample_aspect_ratio
        if sar:
            cc.sample_aspect_ratio = Fraction(sar.denominator, sar.numerator) if self.orientation[0] else sar
        self.tb, self.step, self.last_pts = tb, max(1, round(1 / (rate * tb))), None

    def rgb(self, frame) -> np.ndarray:
        """Decoded frame -> float32 RGB in [0, 1], coded orientation, honouring its colour tags: the
        swscale conversion blurforge.video (the training data) and ``ffmpeg -pix_fmt rgb24`` apply."""
        rgb = frame.reformat(format=self.rgb_format, dst_color_range=2).to_ndarray()
        return np.multiply(rgb, np.float32(1 / self.peak), dtype=np.float32)

    def encode(self, restored: np.ndarray, frame) -> list:
        img = upright(to_codes(restored, self.peak), self.orientation)[:self.height, :self.width]
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=self.rgb_format)
        yuv = rgb.reformat(format=self.stream.codec_context.pix_fmt, dst_colorspace=self.colorspace,
                           dst_color_range=self.color_range, interpolation="AREA")  # 2x2 chroma means
        pts = frame.pts if frame.pts is not None else (0 if self.last_pts is None else self.last_pts + self.step)
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        yuv.pts, yuv.time_base = pts, self.tb
        if frame.duration:
            yuv.duration = frame.duration
        yuv.color_primaries, yuv.color_trc = int(frame.color_primaries), int(frame.color_trc)
        return self.stream.encode(yuv)

    def flush(self) -> list:
        return self.stream.encode(None)


class _AudioOut:
    """One source audio stream: packets copied when MP4 takes the codec, else re-encoded to AAC."""

    def __init__(self, out, ain):
        self.ain = ain
        try:
            self.stream = out.add_stream_from_template(ain)
            self.copy = True
        except ValueError:
            self.copy = False
            self.stream = out.add_stream(AUDIO_FALLBACK, rate=ain.rate, layout=ain.layout.name)
            self.resampler = av.AudioResampler(format="fltp", layout=ain.layout.name, rate=ain.rate,
                                               frame_size=self.stream.codec_context.frame_size or 1024)
        for k in ("language", "title", "handler_name"):
            if k in ain.metadata:
                self.stream.metadata[k] = ain.metadata[k]

    def packets(self, pkt) -> list:
        if self.copy:
            if pkt.dts is None or pkt.size == 0:
                return []
            pkt.stream = self.stream
            return [pkt]
        return self._encode(self.ain.decode(pkt))

    def _encode(self, frames, final: bool = False) -> list:
        out = []
        for fr in frames:
            for r in self.resampler.resample(fr):
                out += self.stream.encode(r)
        if final:
            for r in self.resampler.resample(None):
                out += self.stream.encode(r)
            out += self.stream.encode(None)
        return out

    def flush(self) -> list:
        return [] if self.copy else self._encode([], final=True)


def restore_video(net, src, dst, device, tile: int = 0, overlap: int = 32, half: bool = False, crf: int = 16,
                  progress: bool = False) -> int:
    """Restore every frame of ``src`` into the MP4 ``dst`` (written atomically); -> frames written.

    Frames are decoded, restored as RGB and encoded to H.264 in process with the source's time base
    and each frame's own timestamp, so variable frame rate survives. Audio streams are copied
    packet for packet (re-encoded to AAC only when MP4 cannot hold their codec). A display rotation
    is applied to the pixels (frames come out upright, the tag is dropped), as for EXIF-rotated
    photos. Colour tags (primaries, transfer, matrix, range) are kept and the YUV<->RGB conversions
    use them. Odd sizes lose their last row/column (4:2:0). Subtitle and data streams are dropped.
    Raises InputError for an unreadable or damaged video; nothing is left under ``dst`` then.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"{src}: no such file")
    try:
        inp = av.open(str(src))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"{src}: not a readable video ({_av_error(e)})") from None
    n = 0
    try:
        if not inp.streams.video:
            raise InputError(f"{src}: no video stream")
        vin = inp.streams.video[0]
        vin.codec_context.options = {"err_detect": "crccheck+bitstream+buffer+explode"}
        vin.thread_type = "AUTO"
        ains = list(inp.streams.audio)
        with atomic_path(dst) as tmp, progress_bar(vin.frames or None, src.name, quiet=not progress,
                                                   unit="frame") as bar:
            out = av.open(str(tmp), "w", format="mp4")
            try:
                for k, v in inp.metadata.items():
                    if k not in _CONTAINER_TAGS_DROPPED:
                        out.metadata[k] = v
                video, audio, held = None, {}, []
                for pkt in inp.demux(vin, *ains):
                    if pkt.is_corrupt:
                        raise InputError(f"{src}: video damaged or truncated after {n} frame(s) "
                                         f"(corrupt {pkt.stream.type} packet)")
                    if pkt.stream.type == "video":
                        for fr in vin.decode(pkt):
                            if fr.is_corrupt:
                                raise InputError(f"{src}: frame {n} decoded corrupt")
                            if video is None:
                                video = _VideoOut(out, vin, fr, crf)
                                audio = {a.index: _AudioOut(out, a) for a in ains}
                                if video.cropped:
                                    say(f"note: {src.name}: odd frame size, last row/column dropped (H.264 4:2:0)",
                                        err=True)
                            restored = restore_array(net, video.rgb(fr), device, tile, overlap, half)
                            out.mux(video.encode(restored, fr))
                            n += 1
                            bar.update(1)
                            for p in held:
                                out.mux(audio[p.stream.index].packets(p))
                            held = []
                    elif video is None:
                        held.append(pkt)
                    else:
                        out.mux(audio[pkt.stream.index].packets(pkt))
                if video is None:
                    raise InputError(f"{src}: no frames decoded")
                out.mux(video.flush())
                for a in audio.values():
                    out.mux(a.flush())
            finally:
                out.close()
    except InputError:
        raise
    except av.FFmpegError as e:
        raise InputError(f"{src}: video damaged or unreadable after {n} frame(s) ({_av_error(e)})") from None
    finally:
        inp.close()
    return n


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def collect_inputs(inputs) -> list[tuple[Path, Path]]:
    """-> [(file, output-relative path without extension)]; folders recursively, explicit files as is."""
    out, used = [], set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS
                           and not f.name.startswith("."))
            for f in files:
                rel = f.relative_to(p).with_suffix("")
                out.append((f, Path(p.name) / rel if len(inputs) > 1 else rel))
        else:
            out.append((p, Path(p.stem)))
    # de-duplicate output names (same stem from different places)
    result = []
    for f, rel in out:
        r, k = rel, 1
        while str(r) in used:
            r = rel.with_name(f"{rel.name}_{k}")
            k += 1
        used.add(str(r))
        result.append((f, r))
    return result


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--checkpoint", "-c", required=True, metavar="CKPT",
              help="Training checkpoint (.pt) or model.safetensors with config.json beside it (or its folder).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--tile", type=int, default=0, show_default=True,
              help="Restore in tiles of this size (px); 0 = whole image, tiles only when out of memory. "
                   "Small tiles cut the coarse scales' context: under ~512 px, large blur is restored less.")
@click.option("--overlap", type=int, default=32, show_default=True,
              help="Pixels shared by neighbouring tiles (blended with linear ramps).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--half", is_flag=True, help="Half precision: fp16 autocast on CUDA, bf16 on CPU.")
@click.option("--ext", default="png", show_default=True,
              help="Image output format (png, tif, jpg, webp, bmp); videos are always .mp4.")
@click.option("--jpeg-quality", type=int, default=95, show_default=True)
@click.option("--crf", type=int, default=16, show_default=True,
              help="H.264 quality of restored videos (libx264 CRF: lower is better and larger).")
@click.option("--skip-existing", is_flag=True, help="Leave inputs whose output already exists.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@friendly
def main(inputs, checkpoint, out, tile, overlap, device, half, ext, jpeg_quality, crf, skip_existing, progress):
    """Deblur images, folders and videos with a trained DSANet.

    INPUT is an image, a video or a folder (searched recursively, layout kept under --out).
    Images keep their bit depth; an EXIF orientation is applied to the pixels (output upright,
    no tag).

    Videos become OUT/NAME.mp4 (H.264, --crf, 8-bit 4:2:0; 10-bit for deeper sources): each frame
    is restored in RGB and keeps its own timestamp (variable frame rate survives); audio streams
    are copied packet for packet (re-encoded to AAC only when MP4 cannot hold the codec);
    a display rotation (phone video) is applied to the pixels and the tag dropped, as for photos;
    colour primaries, transfer, matrix and range are kept. Subtitle and data streams are dropped;
    an odd width or height loses its last column or row.

    Outputs are written under a temporary name and renamed when complete. An input that cannot be
    read (or a damaged video) is reported on one line and skipped; the exit status is then 1.

    \b
    Examples:
      dsanet-deblur --checkpoint runs/base/model.safetensors photo.jpg --out restored/
      dsanet-deblur -c runs/base/best.pt shots/ clip.mp4 -o restored/ --tile 512 --half
    """
    if tile < 0 or overlap < 0:
        raise BlurforgeError("--tile and --overlap must be >= 0")
    if tile and tile <= 2 * overlap:
        raise BlurforgeError(f"--tile {tile} must be larger than twice --overlap {overlap}")
    if not 0 <= crf <= 51:
        raise BlurforgeError(f"--crf {crf}: use 0..51")
    ext = "." + ext.lower().lstrip(".")
    if ext not in IMAGE_EXTS:
        raise BlurforgeError(f"--ext {ext[1:]}: use one of png, tif, jpg, webp, bmp")
    dev = pick_device(device)
    reuse_freed_memory()              # frame-sized buffers are reused, not page-faulted in anew each frame
    net, cfg, info = build_model(checkpoint, dev)
    if dev.type != "cpu":
        net = net.to(memory_format=torch.channels_last)
    out = Path(out)
    items = collect_inputs(inputs)
    if not items:
        raise BlurforgeError("no images or videos found in the inputs")

    def log(msg):
        say(msg, err=True)

    failures, done = [], 0
    with progress_bar(len(items), "inputs", quiet=not progress or len(items) < 2, unit="file") as bar:
        for src, rel in items:
            try:
                is_video = src.suffix.lower() in VIDEO_EXTS
                dst = out / (str(rel) + (".mp4" if is_video else ext))
                if skip_existing and dst.exists():
                    continue
                if is_video:
                    n = restore_video(net, src, dst, dev, tile, overlap, half, crf, progress)
                    log(f"{src} -> {dst} ({n} frames)")
                else:
                    img, peak = read_image(src)
                    res = restore_array(net, img, dev, tile, overlap, half, log=log)
                    write_image(dst, to_codes(res, peak), jpeg_quality)
                done += 1
            except InputError as e:
                failures.append(str(e))
                log(f"error: {e}")
            except torch.OutOfMemoryError:
                failures.append(f"{src}: out of memory (use --tile)")
                log(f"error: {src}: out of memory (use --tile)")
            finally:
                bar.update(1)
    click.echo(f"restored {done} of {len(items)} input(s) -> {out}", err=True)
    if failures:
        raise click.ClickException(f"{len(failures)} input(s) failed: " + "; ".join(failures[:3]) +
                                   (" ..." if len(failures) > 3 else ""))


if __name__ == "__main__":
    main()
