"""``dsanet-deblur``: restore images, folders of images and videos with a trained DSANet.

* Weights: a training checkpoint (``runs/NAME/last.pt`` / ``best.pt``) or an exported
  ``model.safetensors`` with its ``config.json`` beside it (or the folder holding both).
* Images (png, jpg, bmp, tif, webp, ...; 8- or 16-bit, grey or colour) come out as images with
  the same bit depth (``--ext`` picks the format, png by default); folders are walked
  recursively and their layout is kept under ``--out``; videos (mp4, mov, mkv, avi, webm, ...)
  are decoded, restored and re-encoded frame by frame (H.264, ``--crf``) without holding the
  clip in memory. Audio is not copied.
* Any size: the network pads internally. ``--tile N`` restores overlapping N x N tiles
  (``--overlap`` pixels shared, blended with linear ramps) for images too large for the device;
  by default the whole image is tried first and tiles of 1024, 512 then 256 px are used if the
  device runs out of memory.
* Every output is written under a temporary name and renamed into place, so a crash never leaves
  a truncated file under the final name. A file that cannot be read or restored is reported and
  skipped; the others are still processed and the exit status is 1 at the end.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click
import numpy as np
import torch

from blurforge.errors import BlurforgeError

from .checkpoint import atomic_write, build_model, friendly
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
    """-> (float32 HxWx3 RGB in [0, 1], max code 255 or 65535). InputError if unreadable."""
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


def restore_video(net, src: Path, dst: Path, device, tile, overlap, half, crf: int, progress: bool):
    import imageio_ffmpeg
    from tqdm import tqdm

    try:
        reader = imageio_ffmpeg.read_frames(str(src))
        meta = next(reader)
    except Exception as e:
        raise InputError(f"{src}: not a readable video ({str(e).strip().splitlines()[0][:120] if str(e) else e})") \
            from None
    w, h = meta["size"]
    fps = meta.get("fps") or 30.0
    nframes = meta.get("nframes")
    total = int(nframes) if isinstance(nframes, (int, float)) and np.isfinite(nframes) else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.tmp-{os.getpid()}{dst.suffix}")
    writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", quality=None,
                                         pix_fmt_out="yuv420p", output_params=["-crf", str(crf)],
                                         macro_block_size=2, ffmpeg_log_level="error")
    n = 0
    try:
        writer.send(None)
        bar = tqdm(total=total, unit="frame", desc=src.name, disable=not progress, file=sys.stderr,
                   leave=False)
        try:
            for raw in reader:
                frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3).astype(np.float32) / 255.0
                out = restore_array(net, frame, device, tile, overlap, half)
                writer.send(np.ascontiguousarray(to_codes(out)))
                n += 1
                bar.update(1)
        finally:
            bar.close()
        writer.close()
        if n == 0:
            raise InputError(f"{src}: no frames decoded")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except InputError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise InputError(f"{src}: video failed after {n} frame(s) ({msg[0][:120] if msg else type(e).__name__})") \
            from None
    finally:
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(Exception):
            reader.close()
        tmp.unlink(missing_ok=True)
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

@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
@click.option("--crf", type=int, default=16, show_default=True, help="H.264 quality of restored videos.")
@click.option("--skip-existing", is_flag=True, help="Leave inputs whose output already exists.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@friendly
def main(inputs, checkpoint, out, tile, overlap, device, half, ext, jpeg_quality, crf, skip_existing, progress):
    """Deblur images, folders and videos with a trained DSANet.

    \b
    Examples:
      dsanet-deblur --checkpoint runs/base/model.safetensors photo.jpg --out restored/
      dsanet-deblur -c runs/base/best.pt shots/ clip.mp4 -o restored/ --tile 512 --half
    """
    from tqdm import tqdm

    if tile < 0 or overlap < 0:
        raise BlurforgeError("--tile and --overlap must be >= 0")
    if tile and tile <= 2 * overlap:
        raise BlurforgeError(f"--tile {tile} must be larger than twice --overlap {overlap}")
    ext = "." + ext.lower().lstrip(".")
    if ext not in IMAGE_EXTS:
        raise BlurforgeError(f"--ext {ext[1:]}: use one of png, tif, jpg, webp, bmp")
    dev = pick_device(device)
    net, cfg, info = build_model(checkpoint, dev)
    if dev.type != "cpu":
        net = net.to(memory_format=torch.channels_last)
    out = Path(out)
    items = collect_inputs(inputs)
    if not items:
        raise BlurforgeError("no images or videos found in the inputs")

    def log(msg):
        tqdm.write(msg, file=sys.stderr)

    failures, done = [], 0
    bar = tqdm(items, unit="file", disable=not progress or len(items) < 2, file=sys.stderr)
    for src, rel in bar:
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
    bar.close()
    click.echo(f"restored {done} of {len(items)} input(s) -> {out}", err=True)
    if failures:
        raise click.ClickException(f"{len(failures)} input(s) failed: " + "; ".join(failures[:3]) +
                                   (" ..." if len(failures) > 3 else ""))


if __name__ == "__main__":
    main()
