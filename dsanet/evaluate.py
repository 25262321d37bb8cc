"""``dsanet-eval``: PSNR / SSIM of a trained DSANet on shards or on folders of image pairs.

Conventions (those of the GoPro tables; state them when you quote numbers):

* PSNR on RGB uint8 images (the restored image is clamped to [0, 1] and rounded to 8 bits), data
  range 255, MSE over all pixels and channels, **no border crop**, averaged over images
  (= ``skimage.metrics.peak_signal_noise_ratio``; identical images are capped at 100 dB).
* SSIM as **scikit-image** computes it: ``structural_similarity(sharp, restored,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
  channel_axis=-1)`` - 11x11 Gaussian window, per channel, averaged. Most published deblurring
  tables used MATLAB's ``ssim`` instead, which gives slightly different values: compare SSIM
  only with numbers computed the same way.
* Every score is given per window label (``36``, ``73``, ``gopro`` ...) with the blurred input's
  score beside it (the baseline) and the gain.
* ``--align ecc`` (RealBlur-style evaluation): before scoring, the restored image (and, for the
  baseline, the blurred one) is aligned to the sharp image: one least-squares scalar gain
  (``sum(sharp * x) / sum(x * x)``), an ECC homography estimated on grey images
  (``cv2.findTransformECC``, ``MOTION_HOMOGRAPHY``, 100 iterations, ``gaussFiltSize=5``), a cubic
  ``warpPerspective``; PSNR and SSIM then count only the pixels the warp fills (invalid pixels are
  zeroed in both images before SSIM and the SSIM map is averaged over valid positions). Scores
  are computed on the aligned float image (not re-quantised).

Inputs: ``--shards`` (every usable pair of every selected label; aligned images where
``blurforge align`` wrote them, pairs flagged not-ok skipped) or ``--pairs BLUR_DIR SHARP_DIR``
(files matched by relative path, extension ignored; label = the blur folder's name). Without
``--checkpoint`` the blurred images themselves are scored (dataset baseline, or pass a folder of
another method's outputs as BLUR_DIR).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
import torch

from blurforge.atomic import atomic_write_text
from blurforge.cliutil import CONTEXT, expand_globs, find_shards, greedy_command
from blurforge.errors import BlurforgeError
from blurforge.metrics import psnr as psnr_np

from .checkpoint import build_model, friendly
from .data import DataError, PairDataset, ShardIndex, parse_windows
from .infer import IMAGE_EXTS, InputError, read_image, restore_array, to_codes, write_image
from .metrics import MAX_DB, psnr, ssim, ssim_map
from .runtime import pick_device

ECC_ITERATIONS = 100
ECC_GAUSS = 5


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------

def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(torch.float64)


def score(x_u8: np.ndarray, sharp_u8: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of two RGB uint8 HxWx3 images, scikit-image conventions (module docstring)."""
    a, b = _t(sharp_u8), _t(x_u8)
    return float(psnr(b, a)[0]), float(ssim(b, a)[0])


def align_ecc(x: np.ndarray, sharp: np.ndarray):
    """RealBlur-style alignment of ``x`` onto ``sharp`` (both RGB uint8).

    Returns ``(aligned float64 HxWx3 on the 0..255 scale, valid bool HxW, ok)``; ``ok`` is False
    when ECC did not converge (then only the gain is applied and every pixel counts).
    """
    import cv2
    xf = x.astype(np.float32) / 255.0
    sf = sharp.astype(np.float32) / 255.0
    denom = float(np.sum(xf.astype(np.float64) ** 2))
    gain = float(np.sum(sf.astype(np.float64) * xf) / denom) if denom > 0 else 1.0
    xg = xf * np.float32(gain)
    grey_s = cv2.cvtColor(sf, cv2.COLOR_RGB2GRAY)
    grey_x = cv2.cvtColor(xg, cv2.COLOR_RGB2GRAY)
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ECC_ITERATIONS, 0)
    h, w = sharp.shape[:2]
    try:
        _, warp = cv2.findTransformECC(grey_s, grey_x, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, ECC_GAUSS)
    except cv2.error:
        return xg.astype(np.float64) * 255.0, np.ones((h, w), bool), False
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    aligned = cv2.warpPerspective(xg, warp, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT)
    valid = cv2.warpPerspective(np.ones((h, w), np.float32), warp, (w, h),
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
    return aligned.astype(np.float64) * 255.0, valid, True


def score_aligned(x_u8: np.ndarray, sharp_u8: np.ndarray) -> tuple[float, float, bool]:
    """(PSNR, SSIM, ecc_ok) after :func:`align_ecc`, over valid pixels only."""
    aligned, valid, ok = align_ecc(x_u8, sharp_u8)
    s = sharp_u8.astype(np.float64)
    m3 = valid[..., None]
    p = psnr_np(aligned, s, mask=valid, max_db=MAX_DB)
    smap = ssim_map(_t(aligned * m3), _t(s * m3))[0].mean(0).numpy()      # [H-10, W-10]
    r = (valid.shape[0] - smap.shape[0]) // 2
    vm = valid[r:r + smap.shape[0], r:r + smap.shape[1]]
    q = float(smap[vm].mean()) if vm.any() else float("nan")
    return p, q, ok


# ----------------------------------------------------------------------------------------------
# Sources of pairs
# ----------------------------------------------------------------------------------------------

def shard_pairs(paths, windows, max_per_label):
    """Yields (label, name, blur uint8, sharp uint8) for every usable pair; and the count first."""
    labels = list(parse_windows(windows) or {}) or None
    index = ShardIndex(paths, labels=labels)
    ds = PairDataset(index, crop=None, max_per_label=max_per_label or None)
    if len(ds) == 0:
        raise DataError("the shards hold no usable pairs")
    yield len(ds)
    for i in range(len(ds)):
        blur, sharp, li, _ = ds[i]
        yield index.labels[li], ds.describe(i), blur.numpy(), sharp.numpy()


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTS and not f.name.startswith("."):
            out.setdefault(str(f.relative_to(root).with_suffix("")), f)
    return out


def folder_pairs(blur_dir, sharp_dir, max_pairs, warn):
    blur_dir, sharp_dir = Path(blur_dir), Path(sharp_dir)
    for d in (blur_dir, sharp_dir):
        if not d.is_dir():
            raise DataError(f"--pairs: {d} is not a folder")
    bf, sf = _files(blur_dir), _files(sharp_dir)
    keys = [k for k in bf if k in sf]
    missing = len(bf) - len(keys)
    if missing:
        warn(f"note: {missing} image(s) in {blur_dir} have no match in {sharp_dir}")
    if not keys:
        raise DataError(f"--pairs: no image in {blur_dir} has a same-named image in {sharp_dir}")
    if max_pairs and len(keys) > max_pairs:
        keys = [keys[int(i)] for i in np.unique(np.linspace(0, len(keys) - 1, max_pairs).round())]
    label = blur_dir.name or "pairs"
    yield len(keys)
    for k in keys:
        try:
            b, pb = read_image(bf[k])
            s, ps = read_image(sf[k])
        except InputError as e:
            yield label, k, e, None
            continue
        if b.shape != s.shape:
            yield label, k, InputError(f"{k}: sizes differ ({b.shape[1]}x{b.shape[0]} vs "
                                       f"{s.shape[1]}x{s.shape[0]})"), None
            continue
        yield label, k, to_codes(b), to_codes(s)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

def evaluate(pairs, net=None, device=None, align: str = "none", tile: int = 0, overlap: int = 32,
             half: bool = False, save_dir=None, progress: bool = True, warn=print) -> dict:
    """Score every pair; returns {"labels": {label: means}, "all": means, "images": [...], ...}."""
    from tqdm import tqdm

    total = next(pairs)
    per_label: dict[str, list] = {}
    images, failed = [], []
    bar = tqdm(total=total, unit="img", disable=not progress, file=sys.stderr, leave=False)
    for label, name, blur, sharp in pairs:
        bar.update(1)
        if isinstance(blur, Exception):
            failed.append(str(blur))
            warn(f"error: {blur}")
            continue
        rec = {"label": label, "name": name}
        if align == "ecc":
            p_b, s_b, ok_b = score_aligned(blur, sharp)
        else:
            p_b, s_b = score(blur, sharp)
        rec.update(psnr_blur=p_b, ssim_blur=s_b)
        if net is not None:
            restored = to_codes(restore_array(net, blur.astype(np.float32) / 255.0, device, tile, overlap, half))
            if align == "ecc":
                p, s, ok = score_aligned(restored, sharp)
                rec["ecc_ok"] = bool(ok and ok_b)
            else:
                p, s = score(restored, sharp)
            rec.update(psnr=p, ssim=s)
            if save_dir is not None:
                write_image(Path(save_dir) / label / (name.replace("/", "_").replace("#", "_") + ".png"), restored)
        images.append(rec)
        per_label.setdefault(label, []).append(rec)
    bar.close()
    if not images:
        raise DataError("no pair could be evaluated" + (f" ({failed[0]})" if failed else ""))

    keys = ["psnr", "ssim", "psnr_blur", "ssim_blur"] if net is not None else ["psnr_blur", "ssim_blur"]

    def means(recs):
        m = {"count": len(recs)}
        for k in keys:
            m[k] = float(np.mean([r[k] for r in recs]))
        if net is not None:
            m["gain_db"] = m["psnr"] - m["psnr_blur"]
        return m

    return {"labels": {lab: means(r) for lab, r in per_label.items()}, "all": means(images),
            "images": images, "failed": failed}


def format_table(res: dict, with_model: bool) -> str:
    rows = [(lab, m) for lab, m in res["labels"].items()]
    if len(rows) > 1:
        rows.append(("all", res["all"]))
    if with_model:
        head = f"{'label':<14}{'pairs':>6}  {'PSNR':>7} {'blurred':>8} {'gain':>7}   {'SSIM':>7} {'blurred':>8}"
        lines = [head, "-" * len(head)]
        for lab, m in rows:
            lines.append(f"{lab:<14}{m['count']:>6}  {m['psnr']:>7.2f} {m['psnr_blur']:>8.2f} "
                         f"{m['gain_db']:>+7.2f}   {m['ssim']:>7.4f} {m['ssim_blur']:>8.4f}")
    else:
        head = f"{'label':<14}{'pairs':>6}  {'PSNR':>7}   {'SSIM':>7}"
        lines = [head, "-" * len(head)]
        for lab, m in rows:
            lines.append(f"{lab:<14}{m['count']:>6}  {m['psnr_blur']:>7.2f}   {m['ssim_blur']:>7.4f}")
    return "\n".join(lines)


@click.command(cls=greedy_command(("--shards",)), context_settings=CONTEXT)
@click.option("--checkpoint", "-c", metavar="CKPT",
              help="Training checkpoint (.pt) or model.safetensors (config.json beside it). Without "
                   "it the blurred images themselves are scored.")
@click.option("--shards", multiple=True, metavar="SHARD", help="Shards to evaluate (files, folders, globs, @LIST.txt).")
@click.option("--pairs", nargs=2, type=click.Path(file_okay=False), metavar="BLUR_DIR SHARP_DIR",
              help="Folders of blurred and sharp images matched by relative path (extension ignored).")
@click.option("--windows", default="all", show_default=True, help="Shard labels to evaluate, e.g. '73,gopro'.")
@click.option("--align", type=click.Choice(["none", "ecc"]), default="none", show_default=True,
              help="ecc: RealBlur-style alignment (gain + ECC homography) before scoring, valid pixels only.")
@click.option("--max-pairs", type=int, default=0, show_default=True,
              help="Evaluate at most N pairs per label, evenly spaced (0 = all).")
@click.option("--tile", type=int, default=0, show_default=True, help="Tiled inference (see dsanet-deblur).")
@click.option("--overlap", type=int, default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--half", is_flag=True, help="fp16 (CUDA) / bf16 (CPU) autocast for the network.")
@click.option("--save-dir", type=click.Path(file_okay=False), help="Also write the restored images here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write all numbers (per image too).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@friendly
def main(checkpoint, shards, pairs, windows, align, max_pairs, tile, overlap, device, half, save_dir, json_path,
         progress):
    """Evaluate PSNR / SSIM per window label, with the blurred input as baseline.

    \b
    PSNR and SSIM on RGB uint8, no border crop, averaged over images (the GoPro convention);
    SSIM as scikit-image computes it (Gaussian window, sigma 1.5, 11x11, use_sample_covariance
    False, data_range 255, per channel); most published tables used MATLAB's ssim, whose values
    differ slightly. --align ecc follows RealBlur's evaluation: gain, ECC homography on grey
    (findTransformECC, MOTION_HOMOGRAPHY, 100 iterations, gaussFiltSize 5), cubic warp, valid
    pixels only.

    \b
    Examples:
      dsanet-eval --checkpoint runs/base/model.safetensors --shards test/*.h5
      dsanet-eval -c runs/base/best.pt --pairs RealBlur_J/test/blur RealBlur_J/test/gt --align ecc
      dsanet-eval --pairs results/ GOPRO/test_sharp/ --json scores.json   # score saved outputs
    """
    def warn(msg):
        click.echo(msg, err=True)

    if bool(shards) == bool(pairs):
        raise BlurforgeError("give either --shards or --pairs BLUR_DIR SHARP_DIR")
    net, dev = None, None
    if checkpoint:
        dev = pick_device(device)
        net, _, _ = build_model(checkpoint, dev)
        if dev.type != "cpu":
            net = net.to(memory_format=torch.channels_last)
    if shards:
        src = shard_pairs(find_shards(expand_globs(shards), default=None), windows, max_pairs)
    else:
        src = folder_pairs(pairs[0], pairs[1], max_pairs, warn)
    res = evaluate(src, net, dev, align, tile, overlap, half, save_dir, progress, warn)
    res["checkpoint"] = checkpoint
    res["align"] = align
    res["convention"] = ("PSNR/SSIM on RGB uint8, no border crop, mean over images; SSIM = scikit-image "
                         "structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, "
                         "data_range=255, channel_axis=-1)" + ("; RealBlur ECC alignment, valid pixels only"
                                                               if align == "ecc" else ""))
    click.echo(format_table(res, net is not None))
    if json_path:
        atomic_write_text(json_path, json.dumps(res, indent=2) + "\n")
    if res["failed"]:
        raise click.ClickException(f"{len(res['failed'])} pair(s) could not be evaluated: {res['failed'][0]}")


if __name__ == "__main__":
    main()
