"""What is in a shard: per-window statistics, and a contact sheet people can look at.

``summarize`` reads a sample of pairs (evenly spaced) for image statistics and all per-pair metadata;
``contact_sheet`` renders rows of sharp | each blur | |aligned - sharp| heat maps with captions, and
where a blur was interpolated, its fastest-moving box magnified: plain average | interpolated.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .metrics import psnr
from .shards import ShardError, alignment, attr_str, decode_attr, open_shard, valid_mask, window_labels

HEAT_MAX = 48.0          # |difference| in codes that maps to the top of the heat-map colour scale
FONT = cv2.FONT_HERSHEY_SIMPLEX


def sample_indices(n: int, k: int) -> list[int]:
    """Up to k evenly spaced pair indices of n (first and last included)."""
    if n <= 0 or k <= 0:
        return []
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


def _codes(img: np.ndarray) -> np.ndarray:
    """An image on the 8-bit code scale: uint8 as it is, uint16 (``extract --bits 16``) as float
    ``v / 257``, so PSNR and heat maps read the same for 8- and 16-bit shards."""
    return img.astype(np.float32) / np.float32(257) if img.dtype == np.uint16 else img


def _show(img: np.ndarray) -> np.ndarray:
    """uint8 for display."""
    return img if img.dtype == np.uint8 else np.clip(np.rint(img), 0, 255).astype(np.uint8)


def summarize(path, sample: int = 16) -> dict:
    """Statistics of one shard as a JSON-ready dict (see ``blurforge inspect --json``)."""
    path = Path(path)
    with open_shard(path, uint16=True) as f:
        labels = window_labels(f)
        n = int(f["sharp"].shape[0])
        h, w = int(f["sharp"].shape[1]), int(f["sharp"].shape[2])
        out = {"shard": str(path), "kind": attr_str(f, "kind"), "pairs": n,
               "size": [w, h], "bits": 8 * f["sharp"].dtype.itemsize, "windows": labels,
               "bytes": os.path.getsize(path),
               "complete": bool(f.attrs.get("complete", False)),
               "source": attr_str(f, "source_name"), "per_window": {}}
        for k in ("fps", "split", "sequence", "camera_curve"):
            if k in f.attrs:
                out[k] = decode_attr(f.attrs[k])
        idx = sample_indices(n, sample)
        sharps = {i: _codes(f["sharp"][i]) for i in idx}
        for lab in labels:
            d: dict = {}
            d["psnr_blur_db"] = _mean_db([psnr(_codes(f[f"blur/{lab}"][i]), sharps[i]) for i in idx])
            d["psnr_pairs"] = len(idx)
            mp = f.get(f"meta/{lab}/motion_px")
            if mp is not None and mp.shape[0]:
                v = mp[()].astype(np.float64)
                d["motion_px_per_frame"] = {"median": round(float(np.median(v)), 3),
                                            "max": round(float(v.max()), 3)}
            gh = f.get(f"meta/{lab}/ghosting")
            if gh is not None:
                d["ghosting"] = int(np.count_nonzero(gh[()]))
                done = f.get(f"meta/{lab}/interp_intervals")
                if done is not None:
                    d["interpolated"] = int(np.count_nonzero(done[()] > 0))
                    d["ghosting_left"] = int(np.count_nonzero(gh[()] & (done[()] == 0)))
            a = alignment(f, lab)
            if a is not None:
                ok, score, margin = a.ok, a.score.astype(np.float64), a.margin
                vals = []
                for i in idx:
                    mask = valid_mask((h, w), int(margin[i]))
                    if mask.any():
                        vals.append(psnr(_codes(f[a.source.dataset][i]), sharps[i], mask=mask))
                d["align"] = {
                    "motion": a.motion, "ok": int(ok.sum()),
                    "rejected": int((~ok).sum()),
                    "rejected_pairs": np.flatnonzero(~ok).tolist()[:50],
                    "score_median": round(float(np.median(score)), 4) if n else None,
                    "score_min": round(float(score.min()), 4) if n else None,
                    "margin_max": int(margin.max()) if n else None,
                    "psnr_aligned_db": _mean_db(vals),
                    "gain_median": [round(float(x), 4) for x in np.median(a.gain, axis=0)] if n else None,
                }
            out["per_window"][lab] = d
    out["warnings"] = warnings_for(out)
    return out


def _mean_db(vals: list[float]) -> float | None:
    vals = [v for v in vals if np.isfinite(v)]
    return round(float(np.mean(vals)), 2) if vals else None


def warnings_for(summary: dict) -> list[str]:
    out = []
    if not summary["complete"]:
        out.append("incomplete shard")
    for lab, d in summary["per_window"].items():
        left = d.get("ghosting_left", d.get("ghosting"))
        if left:
            out.append(f"window {lab}: {left}/{summary['pairs']} pairs may show ghosting "
                       "(motion > 1 px/frame, not interpolated: steps instead of a smooth streak)")
        a = d.get("align")
        if a and a["rejected"]:
            out.append(f"window {lab}: {a['rejected']}/{summary['pairs']} pairs rejected by align "
                       f"(pairs {', '.join(map(str, a['rejected_pairs'][:10]))}"
                       f"{', ...' if a['rejected'] > 10 else ''})")
    return out


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def format_table(s: dict) -> str:
    """Human-readable table of one summary."""
    w, h = s["size"]
    head = (f"{s['shard']}: {s['kind'] or '?'}, {s['pairs']} pairs, {w}x{h}, "
            + ("16-bit, " if s.get("bits") == 16 else "") +
            f"{len(s['windows'])} window{'s' if len(s['windows']) != 1 else ''}, "
            f"{s['bytes'] / 2 ** 20:.1f} MiB" + ("" if s["complete"] else ", INCOMPLETE"))
    cols = ["window", "PSNR(blur,sharp)", "motion px/frame", "ghosting", "align", "score med/min",
            "ok/rejected", "PSNR(aligned)"]
    rows = []
    for lab, d in s["per_window"].items():
        mp = d.get("motion_px_per_frame")
        a = d.get("align")
        rows.append([
            lab, _fmt(d["psnr_blur_db"], ".2f") + " dB",
            f"{mp['median']:.2f} / {mp['max']:.2f} max" if mp else "-",
            f"{d['ghosting']}/{s['pairs']}" if "ghosting" in d else "-",
            a["motion"] if a else "not aligned",
            f"{_fmt(a['score_median'], '.3f')} / {_fmt(a['score_min'], '.3f')}" if a else "-",
            f"{a['ok']}/{a['rejected']}" if a else "-",
            (_fmt(a["psnr_aligned_db"], ".2f") + " dB") if a else "-",
        ])
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = [head, "  " + "  ".join(c.ljust(wd) for c, wd in zip(cols, widths))]
    lines += ["  " + "  ".join(v.ljust(wd) for v, wd in zip(r, widths)) for r in rows]
    lines += [f"  warning: {m}" for m in s["warnings"]]
    return "\n".join(lines)


# ---- contact sheet ----------------------------------------------------------------------------

def heat_map(diff: np.ndarray, valid: np.ndarray | None = None, vmax: float = HEAT_MAX) -> np.ndarray:
    """Mean |difference| over channels -> RGB uint8 (inferno scale 0..vmax codes; invalid = grey)."""
    d = np.abs(diff.astype(np.float32)).mean(axis=2) if diff.ndim == 3 else np.abs(diff)
    u8 = np.clip(d * (255.0 / vmax), 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    if valid is not None:
        rgb[~valid] = (90, 90, 90)
    return rgb


def _caption(tile: np.ndarray, text: str, color=(255, 255, 255), bar: int = 18) -> np.ndarray:
    """The tile with a dark caption strip above it (text shortened to fit)."""
    w = tile.shape[1]
    strip = np.full((bar, w, 3), 24, np.uint8)
    scale = 0.4
    while text and cv2.getTextSize(text, FONT, scale, 1)[0][0] > w - 6:
        text = text[:-2] + "~" if len(text) > 2 else ""
    cv2.putText(strip, text, (3, bar - 5), FONT, scale, color, 1, cv2.LINE_AA)
    return np.vstack([strip, tile])


def _thumb(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    nh = max(1, round(h * width / w))
    interp = cv2.INTER_AREA if width < w else cv2.INTER_NEAREST
    return cv2.resize(img, (width, nh), interpolation=interp)


def _legend(width: int, vmax: float) -> np.ndarray:
    bar = np.full((34, width, 3), 24, np.uint8)
    ramp = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (10, 1))
    ramp = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    ramp = cv2.resize(ramp, (min(256, width - 220), 10), interpolation=cv2.INTER_LINEAR)
    x0 = 10
    bar[20:30, x0:x0 + ramp.shape[1]] = ramp
    cv2.putText(bar, "0", (x0, 16), FONT, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(bar, f"{vmax:g}", (x0 + ramp.shape[1] - 14, 16), FONT, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(bar, "|aligned - sharp| (codes, mean of RGB); grey = invalid margin; red = rejected",
                (x0 + ramp.shape[1] + 12, 28), FONT, 0.4, (220, 220, 220), 1, cv2.LINE_AA)
    return bar


def contact_sheet(paths, rows_per_shard: int = 3, tile: int = 256, max_rows: int = 24,
                  vmax: float = HEAT_MAX) -> np.ndarray:
    """RGB uint8 sheet: per chosen pair a row sharp | blur W... | heat map of |aligned W - sharp|...

    Without alignment the heat map shows |blur - sharp| and says so. Rejected pairs get a red
    caption. Pairs are evenly spaced through each shard.
    """
    rows = []
    for p in paths:
        with open_shard(p, uint16=True) as f:
            labels = window_labels(f)
            n = int(f["sharp"].shape[0])
            for i in sample_indices(n, rows_per_shard):
                if len(rows) >= max_rows:
                    break
                rows.append(_sheet_row(f, Path(p).name, i, labels, tile, vmax))
    if not rows:
        raise ShardError("nothing to draw: the shards have no pairs")
    width = max(r.shape[1] for r in rows)
    width = max(width, 600)
    pad = 4
    parts = [_title(width, len(paths), vmax)]
    for r in rows:
        if r.shape[1] < width:
            r = np.hstack([r, np.full((r.shape[0], width - r.shape[1], 3), 12, np.uint8)])
        parts += [r, np.full((pad, width, 3), 12, np.uint8)]
    return np.vstack(parts)


def _title(width: int, shards: int, vmax: float) -> np.ndarray:
    bar = np.full((22, width, 3), 24, np.uint8)
    cv2.putText(bar, f"blurforge inspect: {shards} shard{'s' if shards != 1 else ''}  "
                     "(sharp | blur per window | difference heat map per window | plain vs interpolated crop)",
                (8, 15), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([bar, _legend(width, vmax)])


def _sheet_row(f, name: str, i: int, labels: list[str], tile: int, vmax: float) -> np.ndarray:
    sharp = _codes(f["sharp"][i])
    h, w = sharp.shape[:2]
    tiles = [_caption(_thumb(_show(sharp), tile), f"{name} #{i} sharp")]
    heats = []
    for lab in labels:
        blur = _codes(f[f"blur/{lab}"][i])
        tiles.append(_caption(_thumb(_show(blur), tile), f"blur {lab}: {psnr(blur, sharp):.1f} dB"))
        a = alignment(f, lab)
        if a is not None:
            aligned = _codes(f[a.source.dataset][i])
            ok, score, margin = bool(a.ok[i]), float(a.score[i]), int(a.margin[i])
            valid = valid_mask((h, w), margin)
            heat = heat_map(np.subtract(aligned, sharp, dtype=np.float32), valid, vmax)
            db = psnr(aligned, sharp, mask=valid) if valid.any() else float("nan")
            text = f"aligned {lab}: {db:.1f} dB, score {score:.3f}" + ("" if ok else " REJECTED")
            heats.append(_caption(_thumb(heat, tile), text, (255, 255, 255) if ok else (255, 70, 70)))
        else:
            heat = heat_map(np.subtract(blur, sharp, dtype=np.float32), None, vmax)
            heats.append(_caption(_thumb(heat, tile), f"blur {lab} - sharp (not aligned)", (200, 200, 200)))
    return _hstack(tiles + heats + _interp_crops(f, i, labels, tile))


def _interp_crops(f, i: int, labels: list[str], tile: int) -> list[np.ndarray]:
    """Plain average | interpolated blur, magnified, at the fastest-moving box of the largest window
    whose blur was interpolated (``meta/<W>/plain_crop``), so the ghost steps it removed show."""
    for lab in reversed(labels):
        if f"meta/{lab}/plain_crop" not in f or not int(f[f"meta/{lab}/interp_intervals"][i]):
            continue
        plain = _codes(f[f"meta/{lab}/plain_crop"][i])
        x, y = (int(v) for v in f[f"meta/{lab}/crop_xy"][i])
        side = plain.shape[0]
        interp = _codes(f[f"blur/{lab}"][i, y:y + side, x:x + side])
        big = (tile, tile)
        k = int(f[f"meta/{lab}/interp_factor"][i])
        return [_caption(cv2.resize(_show(plain), big, interpolation=cv2.INTER_NEAREST), f"{lab} plain, crop"),
                _caption(cv2.resize(_show(interp), big, interpolation=cv2.INTER_NEAREST),
                         f"{lab} interpolated x{k}")]
    return []


def _hstack(tiles: list[np.ndarray], gap: int = 4) -> np.ndarray:
    hmax = max(t.shape[0] for t in tiles)
    out = []
    for t in tiles:
        if t.shape[0] < hmax:
            t = np.vstack([t, np.full((hmax - t.shape[0], t.shape[1], 3), 12, np.uint8)])
        out += [t, np.full((hmax, gap, 3), 12, np.uint8)]
    return np.hstack(out[:-1])


def write_png(path, rgb: np.ndarray):
    """Write an RGB image as PNG (OpenCV wants BGR)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise ShardError(f"cannot write {path} (use a .png name in a writable folder)")
