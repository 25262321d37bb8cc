"""How physically right ``blurforge extract`` is, on synth clips whose truth is known (issues 11 and 13).

Prints one JSON object; every figure names the synth settings of its clip (``SynthConfig`` fields
that differ from the defaults) and the extract options it ran with.

Issue 11, exposure fidelity (extract with ``interpolate="off"``, so that the *frame-based* ideal
is the truth: the linear-light weighted mean of the decoded frames with the true gains divided
out and the centre frame's put back; x264 crf 0 clips, 640x360):

* ``gains``: a flicker-free, drift-free clip with a disc crossing at 12 px/frame: the largest
  ``|gain - 1|`` stored over all pairs and windows, and PSNR(blur, plain linear-light mean) (the
  two must be equal: no correction where there is nothing to correct).
* ``flicker``: the same with 4% flicker at 120 Hz: per window the worst PSNR against the ideal of
  the blur, of the plain mean and (``--baseline REV``, default 1e28007: ``blurforge`` as it was
  before issue 11, run in a child process from a ``git archive`` export) of the old extract; the
  blur/sharp mean linear brightness over the static background (pixels the disc never covers
  during the window); the stored gains against the true ones.
* ``motion``: ``meta/<W>/motion_px`` against the disc's true speed in windows where it crosses
  the picture, ``ghosting`` there, and on a slow clip (no disc, default shake).
* ``centroid``: an accelerating shake (12 px, 4x the shake frequencies, disc at 12 px/frame,
  crf 10, 300 frames): distance (median px over a grid, ``align.warp_error``) from the true
  exposure centroid (``synth.camera_warps`` weighted by ``averaging.window_weights``) of the stored
  ``meta/<W>/centroid``, of ECC alone between blur and sharp (``align.align_pair`` without the
  centroid: what ``align`` did before), and of doing nothing (identity); median and max over pairs.

Issue 13, ghost-free blur (lossless RGB clips, crf -1, 640x360): PSNR against the continuous
exposure (``synth.render_exposure``, 16 sub-renders per frame interval) of ``--interpolate off``
and ``auto``, in the region the disc sweeps during the window and outside it, per pair and
window, with ``meta/<W>/interp_factor``, ``interp_intervals``, ``interp_confidence`` and the
wall time of both extracts. Clips: disc at 12 and 24 px/frame at 960 fps (windows 36, 73), 24
px/frame at 240 fps (windows 9, 18: the same exposures), a slow disc (2 px/frame) and a camera pan
(no disc, no shake; whole picture and the interior 24 px from the border, where the pan brings in
new content).

    python bench/fidelity.py [--keep DIR] [--quick] [--only 11,13] [--baseline 1e28007|none]

``--keep DIR`` keeps the clips (and their truth) there and reuses those whose settings match;
``--quick`` uses shorter clips, one pair each, the smaller windows, 8 sub-renders per frame
interval and no baseline (a smoke run of a minute or two; figures are indicative only). The full
run takes ~10 minutes on 2 busy cores, mostly synth rendering the continuous exposures.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blurforge.align import align_pair, warp_error  # noqa: E402
from blurforge.averaging import half_span, window_weights  # noqa: E402
from blurforge.errors import BlurforgeError  # noqa: E402
from blurforge.extract import ExtractOptions, extract_clip  # noqa: E402
from blurforge.synth import GAMMA, SynthConfig, camera_warps, render_exposure, swept_mask, synthesize  # noqa: E402
from blurforge.video import iter_frames  # noqa: E402

LUT = (np.arange(256) / 255.0) ** GAMMA
DEFAULTS = dataclasses.asdict(SynthConfig())


# --------------------------------------------------------------------------- helpers

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of uint8 codes (scikit-image's, independent of blurforge.metrics); inf when equal."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = np.asarray(a), np.asarray(b)
    return float("inf") if np.array_equal(a, b) else float(peak_signal_noise_ratio(b, a, data_range=255))


def db(x: float) -> float | str:
    """A dB figure for JSON (which has no infinity)."""
    return "inf" if x == float("inf") else round(float(x), 2)


def worst(xs: list[float]) -> float | str | None:
    return db(min(xs)) if xs else None


def encode(lin: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(255.0 * np.clip(lin, 0, 1) ** (1 / GAMMA)), 0, 255).astype(np.uint8)


class Clips:
    """Synth clips in one folder, reused when their truth says they were made with the same settings."""

    def __init__(self, folder: Path, suffix: str = ""):
        self.dir = folder
        self.suffix = suffix  # --quick clips are shorter: kept beside the full ones, not over them
        self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, **kw) -> tuple[Path, SynthConfig, dict]:
        cfg = SynthConfig(**kw)
        path = self.dir / f"{name}{self.suffix}.mp4"
        tpath = path.with_suffix(".json")
        if not (path.exists() and tpath.exists()
                and json.loads(tpath.read_text()).get("config") == dataclasses.asdict(cfg)):
            synthesize(path, cfg)
        return path, cfg, json.loads(tpath.read_text())

    def extract(self, clip: Path, windows: list[int], stride: int, interpolate: str, max_pairs: int | None,
                tag: str = "") -> tuple[str, float, dict]:
        """(shard, wall seconds, summary) of an in-process extract into DIR/out/<clip>-<mode><tag>."""
        out = self.dir / "out" / f"{clip.stem}-{interpolate}{tag}"
        t = time.perf_counter()
        s = extract_clip(clip, ExtractOptions(windows=windows, out=out, stride=stride, overwrite=True,
                                              interpolate=interpolate, max_pairs=max_pairs))
        return s["shard"], time.perf_counter() - t, s


def settings(cfg: SynthConfig) -> dict:
    """The synth settings of a clip: the SynthConfig fields that differ from the defaults."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if v != DEFAULTS[k] or k in ("width", "height")}


def swept(cfg: SynthConfig, c: int, w: int, pad: float) -> np.ndarray:
    """Pixels the disc covers (plus ``pad``) at some time during the exposure of window w around c."""
    return swept_mask(cfg, c - w / 2, c + w / 2, pad)


def averages(frames: list[np.ndarray], gains: np.ndarray, c: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain linear-light mean of the decoded frames of window w around c, and the physical ideal
    (the true gains divided out, the centre's put back)."""
    h = half_span(w)
    idx = range(c - h, c + h + 1)
    wts = window_weights(w)
    plain = sum(wt * LUT[frames[t]] for wt, t in zip(wts, idx))
    ideal = sum(wt * LUT[frames[t]] / gains[t] for wt, t in zip(wts, idx)) * gains[c]
    return encode(plain), encode(ideal)


def load_bench_extract():
    """bench/extract.py as a module (its ``export_revision`` and ``run_extract`` run a baseline)."""
    spec = importlib.util.spec_from_file_location("bench_extract", ROOT / "bench" / "extract.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- issue 11

def gains_figures(clips: Clips, n: int, max_pairs: int | None) -> dict:
    """Flicker-free clip with a fast disc: gains must stay 1 and the blur equal the plain mean."""
    path, cfg, truth = clips.get("fast", width=640, height=360, frames=n, crf=0, object_speed=12, shake_px=3,
                                 flicker=0.0, drift=0.0, seed=11)
    shard, _, summ = clips.extract(path, [36, 73], 80, "off", max_pairs)
    frames = [f.copy() for f in iter_frames(path)]
    g = np.array([r["gain"] for r in truth["frames"]])
    out = {"synth": settings(cfg), "extract": {"windows": [36, 73], "stride": 80, "interpolate": "off"},
           "flicker_found": summ["flicker_found"], "windows": {}}
    with h5py.File(shard) as f:
        out["pairs"] = int(f.attrs["num_pairs"])
        out["flicker_hz"] = sorted({float(x) for x in f["meta/flicker_hz"][()]})
        for w in (36, 73):
            dev, vs_plain = [], []
            for i, c in enumerate(f["center"][()]):
                dev.append(float(np.abs(f[f"meta/{w}/gains"][i] - 1).max()))
                plain, _ = averages(frames, g, int(c), w)
                vs_plain.append(psnr(f[f"blur/{w}"][i], plain))
            out["windows"][str(w)] = {"max_abs_gain_minus_1": round(max(dev), 6),
                                      "worst_psnr_blur_vs_plain_db": worst(vs_plain)}
    return out, (path, cfg, truth, shard, frames)


def flicker_figures(clips: Clips, n: int, max_pairs: int | None, base_root: Path | None, bx) -> tuple[dict, tuple]:
    """4% flicker and a fast disc: blur, plain mean and the old extract against the frame-based ideal."""
    path, cfg, truth = clips.get("fastflicker", width=640, height=360, frames=n, crf=0, object_speed=12,
                                 shake_px=3, flicker=0.04, seed=12)
    shard, _, summ = clips.extract(path, [36, 73], 80, "off", max_pairs)
    old = None
    if base_root is not None:
        opts = {"windows": [36, 73], "stride": 80, **({"max_pairs": max_pairs} if max_pairs else {})}
        old = bx.run_extract(path, clips.dir / "out" / "fastflicker-baseline", root=base_root, opts=opts)["shard"]
    frames = [f.copy() for f in iter_frames(path)]
    g = np.array([r["gain"] for r in truth["frames"]])
    cache = {}

    def avg(c, w):
        if (c, w) not in cache:
            cache[c, w] = averages(frames, g, c, w)
        return cache[c, w]

    def bg_ratio_dev(blur, sharp, c, w):
        bg = ~swept(cfg, c, w, pad=6.0)
        return abs(float(LUT[blur][bg].mean() / LUT[sharp][bg].mean()) - 1)

    out = {"synth": settings(cfg), "extract": {"windows": [36, 73], "stride": 80, "interpolate": "off"},
           "flicker_found": summ["flicker_found"], "summary_flicker_hz": summ["flicker_hz"],
           "flicker_amplitude": round(summ["flicker_amplitude"], 4),
           "flicker_significance": round(summ["flicker_significance"], 1), "windows": {}}
    with h5py.File(shard) as f:
        out["pairs"] = int(f.attrs["num_pairs"])
        for w in (36, 73):
            blur_db, plain_db, bg, bg_plain, gerr = [], [], [], [], []
            for i, c in enumerate(f["center"][()]):
                c = int(c)
                plain, ideal = avg(c, w)
                blur, sharp = f[f"blur/{w}"][i], f["sharp"][i]
                blur_db.append(psnr(blur, ideal))
                plain_db.append(psnr(plain, ideal))
                bg.append(bg_ratio_dev(blur, sharp, c, w))
                bg_plain.append(bg_ratio_dev(plain, sharp, c, w))
                h = half_span(w)
                gerr.append(float(np.abs(f[f"meta/{w}/gains"][i] - g[c - h:c + h + 1] / g[c]).max()))
            out["windows"][str(w)] = {
                "worst_psnr_vs_ideal_db": {"blur": worst(blur_db), "plain_mean": worst(plain_db)},
                "max_background_brightness_dev_pct": {"blur": round(100 * max(bg), 3),
                                                      "plain_mean": round(100 * max(bg_plain), 3)},
                "max_gain_error_vs_truth": round(max(gerr), 5),
            }
    if old is not None:
        out["baseline_pairs"] = 0
        with h5py.File(old) as f:
            out["baseline_pairs"] = int(f.attrs["num_pairs"])
            for w in (36, 73):
                old_db, old_bg = [], []
                for i, c in enumerate(f["center"][()]):
                    c = int(c)
                    blur = f[f"blur/{w}"][i]
                    old_db.append(psnr(blur, avg(c, w)[1]))
                    old_bg.append(bg_ratio_dev(blur, f["sharp"][i], c, w))
                win = out["windows"][str(w)]
                win["worst_psnr_vs_ideal_db"]["baseline"] = worst(old_db)
                win["max_background_brightness_dev_pct"]["baseline"] = round(100 * max(old_bg), 3)
    return out, (path, cfg, truth, old)


def motion_figures(fast: tuple, flick: tuple, clips: Clips, n: int, max_pairs: int | None) -> dict:
    """motion_px against the disc's true speed where it crosses the picture; a slow clip."""
    path, cfg, truth, shard, _ = fast
    speed = cfg.object_speed * cfg.width / 640.0
    rows = []

    def crossing(f, i, w):
        first, last = int(f[f"meta/{w}/first"][i]), int(f[f"meta/{w}/last"][i])
        return sum(1 for r in truth["frames"][first:last + 1]
                   if r["object_x"] is not None and r["object_radius"] < r["object_x"] < cfg.width - r["object_radius"])

    with h5py.File(shard) as f:
        for i, c in enumerate(f["center"][()]):
            for w in (36, 73):
                rows.append({"center": int(c), "window": w, "frames_disc_inside": crossing(f, i, w),
                             "motion_px": round(float(f[f"meta/{w}/motion_px"][i]), 2),
                             "ratio_to_true_speed": round(float(f[f"meta/{w}/motion_px"][i]) / speed, 3),
                             "moving_fraction": round(float(f[f"meta/{w}/moving_fraction"][i]), 4),
                             "ghosting": bool(f[f"meta/{w}/ghosting"][i])})
    out = {"clip": "fast (see gains)", "true_speed_px_per_frame": speed, "windows": rows}
    crossing_rows = [r for r in rows if r["frames_disc_inside"] >= 6]
    if crossing_rows:
        out["crossing_windows"] = len(crossing_rows)
        out["max_abs_ratio_minus_1_where_crossing"] = round(max(abs(r["ratio_to_true_speed"] - 1)
                                                               for r in crossing_rows), 3)
        out["ghosting_where_crossing"] = all(r["ghosting"] for r in crossing_rows)
    old = flick[3]
    if old is not None:                  # the old extract on the flicker clip (disc at the same speed)
        with h5py.File(old) as f:
            out["baseline_on_fastflicker_motion_px"] = {
                str(w): [round(float(x), 2) for x in f[f"meta/{w}/motion_px"][()]] for w in (36, 73)}
            out["baseline_on_fastflicker_ghosting"] = {
                str(w): [bool(x) for x in f[f"meta/{w}/ghosting"][()]] for w in (36, 73)}
    # 260 frames even with --quick: a slow shake has few sharpness maxima with a whole window around them
    spath, scfg, _ = clips.get("slow", width=640, height=360, frames=max(n, 260), crf=0, moving_object=False,
                               flicker=0.0, drift=0.0, seed=13)
    sshard, _, summ = clips.extract(spath, [36, 73], 80, "off", max_pairs)
    with h5py.File(sshard) as f:
        out["slow"] = {"synth": settings(scfg), "pairs": int(f.attrs["num_pairs"]),
                       "flicker_found": summ["flicker_found"],
                       "gains_all_one": bool(all(np.all(f[f"meta/{w}/gains"][()] == 1.0) for w in (36, 73))),
                       "max_motion_px": {str(w): round(float(f[f"meta/{w}/motion_px"][()].max()), 3)
                                         for w in (36, 73)},
                       "any_ghosting": bool(any(f[f"meta/{w}/ghosting"][()].any() for w in (36, 73)))}
    return out


def centroid_figures(clips: Clips, n: int, max_pairs: int | None) -> dict:
    """Accelerating shake: stored centroid, ECC alone and identity against the true centroid."""
    path, cfg, truth = clips.get("shake", width=640, height=360, frames=n, crf=10, moving_object=True,
                                 object_speed=12, shake_px=12, shake_freq=4.0, seed=14)
    shard, _, _ = clips.extract(path, [36, 73], 40, "off", max_pairs)
    hw = (cfg.height, cfg.width)
    out = {"synth": settings(cfg), "extract": {"windows": [36, 73], "stride": 40, "interpolate": "off"},
           "metric": "align.warp_error: median px over a 16 px grid, then median/max over pairs", "windows": {}}
    with h5py.File(shard) as f:
        out["pairs"] = int(f.attrs["num_pairs"])
        for w in (36, 73):
            errs = {"ours": [], "ecc_only": [], "identity": []}
            h = half_span(w)
            for i, c in enumerate(f["center"][()]):
                c = int(c)
                true = np.tensordot(window_weights(w), camera_warps(cfg, truth["frames"], c, range(c - h, c + h + 1)),
                                    axes=1)
                ecc = align_pair(f["sharp"][i], f[f"blur/{w}"][i], render=False)
                errs["ours"].append(warp_error(f[f"meta/{w}/centroid"][i], true, *hw))
                errs["ecc_only"].append(warp_error(ecc.warp, true, *hw))
                errs["identity"].append(warp_error(np.eye(3), true, *hw))
            out["windows"][str(w)] = {k: {"median_px": round(float(np.median(v)), 4), "max_px": round(max(v), 4)}
                                      for k, v in errs.items()}
    return out


def issue11(clips: Clips, quick: bool, base_root: Path | None, bx) -> dict:
    n, n_shake = (180, 180) if quick else (260, 300)
    mp = 1 if quick else None
    gains, fast = gains_figures(clips, n, mp)
    flick, fl = flicker_figures(clips, n, mp, base_root, bx)
    return {"gains": gains, "flicker": flick, "motion": motion_figures(fast, fl, clips, n, mp),
            "centroid": centroid_figures(clips, n_shake, 2 if quick else None)}


# --------------------------------------------------------------------------- issue 13

def issue13_cases(quick: bool) -> list[dict]:
    """Clip settings, windows, stride and pairs of each issue-13 case (seeds as tests/test_interpolate.py)."""
    base = {"width": 640, "height": 360, "crf": -1, "drift": 0.0, "shake_px": 3.0}
    w960, f960, s960, p = ([36], 120, 40, 1) if quick else ([36, 73], 240, 80, 2)
    return [
        {"name": "fast12", "synth": {**base, "frames": f960, "object_speed": 12, "seed": 52},
         "windows": w960, "stride": s960, "pairs": p},
        {"name": "fast24", "synth": {**base, "frames": f960, "object_speed": 24, "seed": 64},
         "windows": w960, "stride": s960, "pairs": p},
        {"name": "fast24_240fps", "synth": {**base, "fps": 240.0, "frames": 90, "object_speed": 24, "seed": 44},
         "windows": [9, 18], "stride": 18, "pairs": 1 if quick else 3},
        {"name": "slow2", "synth": {**base, "frames": f960, "object_speed": 2, "seed": 45},
         "windows": w960, "stride": s960, "pairs": p},
        {"name": "pan", "synth": {**base, "frames": 100, "moving_object": False, "pan_px_s": 3000,
                                  "shake_px": 0.0, "seed": 46},
         "windows": [18] if quick else [18, 36], "stride": 30, "pairs": p},
    ]


def issue13_case(clips: Clips, case: dict, sub: int) -> dict:
    path, cfg, truth = clips.get(case["name"], **case["synth"])
    wins = case["windows"]
    shard = {}
    secs = {}
    for mode in ("off", "auto"):
        shard[mode], secs[mode], _ = clips.extract(path, wins, case["stride"], mode, case["pairs"])
    out = {"synth": settings(cfg), "extract": {"windows": wins, "stride": case["stride"], "max_pairs": case["pairs"]},
           "extract_wall_s": {m: round(s, 1) for m, s in secs.items()}, "rows": []}
    if cfg.moving_object:
        out["true_speed_px_per_frame"] = cfg.object_speed * cfg.width / 640.0
    else:
        # how far the frame centre moves from frame t to t+1 (camera_warps: exact, zoom and roll included)
        ctr = np.array([cfg.width / 2, cfg.height / 2, 1.0])
        step = [np.hypot(*((camera_warps(cfg, truth["frames"], t, [t + 1])[0] @ ctr)[:2] - ctr[:2]))
                for t in range(0, cfg.frames - 1, 10)]
        out["true_pan_px_per_frame"] = round(float(np.median(step)), 2)
    crop = np.s_[24:-24, 24:-24]
    with h5py.File(shard["off"]) as fo, h5py.File(shard["auto"]) as fa:
        out["same_centres_and_sharp"] = bool(np.array_equal(fo["center"][()], fa["center"][()])
                                             and np.array_equal(fo["sharp"][()], fa["sharp"][()]))
        for i, c in enumerate(fa["center"][()]):
            c = int(c)
            for w in wins:
                ref = render_exposure(cfg, c, w, sub=sub)
                off, auto = fo[f"blur/{w}"][i], fa[f"blur/{w}"][i]
                row = {"center": c, "window": w,
                       "interp_factor": int(fa[f"meta/{w}/interp_factor"][i]),
                       "interp_intervals": int(fa[f"meta/{w}/interp_intervals"][i]),
                       "interp_confidence": round(float(fa[f"meta/{w}/interp_confidence"][i]), 3),
                       "motion_px": round(float(fa[f"meta/{w}/motion_px"][i]), 2),
                       "all": {"off": db(psnr(off, ref)), "auto": db(psnr(auto, ref))}}
                sw = swept(cfg, c, w, pad=3.0)
                if sw.any():
                    row["swept_share"] = round(float(sw.mean()), 3)
                    row["swept"] = {"off": db(psnr(off[sw], ref[sw])), "auto": db(psnr(auto[sw], ref[sw]))}
                    row["outside"] = {"off": db(psnr(off[~sw], ref[~sw])), "auto": db(psnr(auto[~sw], ref[~sw]))}
                if not cfg.moving_object:
                    row["interior"] = {"off": db(psnr(off[crop], ref[crop])), "auto": db(psnr(auto[crop], ref[crop]))}
                for part in ("all", "swept", "outside", "interior"):
                    if part in row and "inf" not in row[part].values():
                        row[part]["gain"] = round(row[part]["auto"] - row[part]["off"], 2)
                out["rows"].append(row)
    for part in ("swept", "outside", "interior", "all"):
        gains = [r[part]["gain"] for r in out["rows"] if "gain" in r.get(part, {})]
        if gains:
            out[f"min_gain_{part}_db"] = min(gains)
    return out


def issue13(clips: Clips, quick: bool) -> dict:
    sub = 8 if quick else 16
    res = {"truth": f"synth.render_exposure(sub={sub}): trapezoid rule on {sub} sub-renders per frame interval",
           "swept": "pixels within radius + 3 px of the disc at some time of the exposure; outside: the rest",
           "gain": "PSNR(auto) - PSNR(off), dB", "cases": {}}
    for case in issue13_cases(quick):
        try:
            res["cases"][case["name"]] = issue13_case(clips, case, sub)
        except BlurforgeError as e:        # e.g. no sharp centre with a whole window: say so, go on
            res["cases"][case["name"]] = {"synth": case["synth"], "error": str(e)}
    return res


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="keep clips and shards in DIR and reuse clips whose settings match")
    ap.add_argument("--quick", action="store_true", help="short clips, one pair, smaller windows, no baseline")
    ap.add_argument("--only", default="11,13", help="which issues' figures: 11, 13 or 11,13")
    ap.add_argument("--baseline", default="1e28007", metavar="REV",
                    help="git revision of the extract before issue 11 for the flicker figure ('none': skip)")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",")}
    if not only <= {"11", "13"}:
        sys.exit(f"--only {args.only!r}: expected 11, 13 or 11,13")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bf-fidelity-") as tmp:
        clips = Clips(args.keep or Path(tmp), "-quick" if args.quick else "")
        report = {"bench": "fidelity", "quick": args.quick,
                  "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()}}
        if "11" in only:
            base_root, bx = None, None
            if not args.quick and args.baseline.lower() != "none":
                bx = load_bench_extract()
                base_root = bx.export_revision(args.baseline, Path(tmp) / "baseline")
                report["baseline"] = args.baseline
            report["issue11"] = issue11(clips, args.quick, base_root, bx)
        if "13" in only:
            report["issue13"] = issue13(clips, args.quick)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
