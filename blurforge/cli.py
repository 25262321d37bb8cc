"""The `blurforge` command: a thin click layer over the stage modules.

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
The helpers every command line shares (errors, progress bars, shard discovery, the process pool)
are in :mod:`blurforge.cliutil`; stage modules are imported inside the commands, so ``--help`` is fast.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import __version__
from .cliutil import CONTEXT, find_clips, find_shards, friendly, progress, report_failures, say, warn
from .errors import BlurforgeError


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="blurforge")
def main():
    """Turn high-speed (960 fps) video into paired sharp/blurred training data for deblurring.

    \b
    Typical use:
      blurforge synth clip.mp4                 # a test clip with known motion (no camera needed)
      blurforge probe clip.mp4 --windows 36,73
      blurforge extract clip.mp4 --windows 36,73   # -> data/clip.h5
      blurforge align                          # aligns every shard under data/
      blurforge inspect data/*.h5 --sheet sheet.png
      dsanet-train --shards data/*.h5
    """


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    return w, h


@main.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--fps", default=960.0, show_default=True, help="Frame rate of the clip.")
@click.option("--frames", default=480, show_default=True, help="Number of frames.")
@click.option("--size", default="640x360", show_default=True, help="WIDTHxHEIGHT (even).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random camera shake.")
@click.option("--photo", default="astronaut", show_default=True,
              help="Scene to film: a photo that scikit-image ships (astronaut, coffee, chelsea, rocket, "
                   "hubble_deep_field, immunohistochemistry, colorwheel, retina, motorcycle; grey: camera, "
                   "brick, grass, gravel, moon, coins, page, text, clock, cell) or deadleaves (synthetic "
                   "occluding discs, a new scene per --seed).")
@click.option("--object/--no-object", "moving_object", default=True, show_default=True,
              help="A textured disc crossing the picture (fast local motion) besides the camera shake.")
@click.option("--object-photo", default="coffee", show_default=True,
              help="Photo the moving disc's texture is cut from; 'same' cuts it from --photo (a clip that "
                   "shows one photo only, e.g. for a held-out test scene).")
@click.option("--object-speed", default=0.0, show_default=True,
              help="Speed of the disc in px/frame at 640 px width; it leaves on the right and enters again "
                   "on the left (0: one slow crossing over the whole clip).")
@click.option("--shake", default=12.0, show_default=True,
              help="Amplitude of the camera shake in pixels at 640 px width (blur grows with it).")
@click.option("--shake-freq", default=1.0, show_default=True,
              help="Multiplies the shake's frequencies (1.3, 2.9, 4.7 Hz): 4 gives a shake that accelerates "
                   "within a window, whose blur is not centred where the sharp frame is.")
@click.option("--pan", default=0.0, show_default=True,
              help="Camera pan speed in px/s at 640 px width, on top of the shake; each seed draws a "
                   "direction and 50-100% of this speed (a long, straight blur).")
@click.option("--flicker", default=0.0, show_default=True,
              help="Mains flicker amplitude, relative (0.04 = 4%).")
@click.option("--mains", type=click.Choice(["100", "120"]), default="120", show_default=True,
              help="Flicker frequency in Hz (twice the mains frequency).")
@click.option("--drift", default=0.02, show_default=True, help="Exposure drift over the whole clip, relative.")
@click.option("--static", is_flag=True, help="No camera motion and no moving object (flicker-only clip).")
@click.option("--cut", default=-1, show_default=True, help="Cut to another photo at this frame (-1: none).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly
def synth(out, fps, frames, size, seed, photo, moving_object, object_photo, object_speed, shake, shake_freq, pan,
          flicker, mains, drift, static, cut, quiet):
    """Synthesise a test clip OUT (.mp4) with known motion, flicker and exposure drift.

    A scikit-image sample photo is filmed in linear light by a shaking camera (translation, small
    rotation, zoom) with a textured disc crossing the frame, multiplied by mains flicker and a slow
    exposure drift, encoded through a gamma-2.2 camera curve with H.264. The per-frame truth
    (camera transform, gain, object position) is written to OUT with the suffix .json.
    """
    from .synth import SynthConfig, synthesize, truth_path

    w, h = _size(size)
    cfg = SynthConfig(fps=fps, frames=frames, width=w, height=h, seed=seed, photo=photo,
                      moving_object=moving_object, object_photo="" if object_photo == "same" else object_photo,
                      object_speed=object_speed, shake_px=shake, shake_freq=shake_freq, pan_px_s=pan,
                      flicker=flicker, mains=float(mains), drift=drift, motion=not static, cut=cut)
    with progress(frames, "synth", quiet, unit="frame") as bar:
        synthesize(out, cfg, progress=bar.update)
    click.echo(f"wrote {out} ({frames} frames, {w}x{h} @ {fps:g} fps) and {truth_path(out)}")


_CAPTURE_FPS = click.option(
    "--capture-fps", type=float, default=None, metavar="F",
    help="The rate the camera filmed at, for files stored at a playback rate without a "
         "com.android.capture.fps tag (Sony HFR, most slow-motion exports) and for folders of frames "
         "[default: the tag, else the container's rate].")


def _probe_line(clip, info) -> str:
    """One line with everything extract will rely on: rates, size and rotation, depth, transfer, timing."""
    size = f"{info.width}x{info.height}"
    if info.rotation in (90, 270):
        size += f" stored, shown {info.height}x{info.width} (rotated {info.rotation} deg)"
    elif info.rotation:
        size += f" (rotated {info.rotation} deg)"
    if info.fps_source == "container" or info.kind == "frames":
        rate = f"{info.fps:g} fps" if info.fps else "no frame rate (give --capture-fps)"
    else:
        rate = f"{info.fps:g} fps captured ({info.fps_source}), {info.container_fps:g} fps container"
    sp = info.pts_spread.get("interval_ms")
    timing = ("variable frame rate" if info.variable_frame_rate else "constant frame rate") if info.vfr is not None \
        else "frame timing unknown"
    if sp:
        timing += f" (frame intervals {sp[0]:g}/{sp[1]:g}/{sp[2]:g} ms min/median/max)"
    kind = "frame folder, " if info.kind == "frames" else ""
    return (f"{clip}: {kind}{size}, {rate}, ~{info.frames} frames, {info.duration:.3f} s, {info.codec}, "
            f"{info.pix_fmt}, {info.bit_depth}-bit, transfer {info.transfer or 'untagged'}, {timing}")


@main.command()
@click.argument("clips", nargs=-1, required=True, type=click.Path())
@click.option("--windows", default="36,73", show_default=True, help="Window sizes to report on.")
@_CAPTURE_FPS
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def probe(clips, windows, capture_fps, as_json):
    """Show what extract will rely on for each CLIP (video file, folder of frames, or a folder searched
    recursively for both): capture and container frame rate, frame count, size and display
    rotation, duration, codec, pixel format and bit depth, transfer tag (and the camera curve
    --crf auto picks from it), variable frame rate from the frames' timestamps (with the spread),
    and for each window the exposure it implies (N / capture fps) and whether the clip is long enough."""
    from .averaging import half_span
    from .curves import curve_for
    from .extract import parse_windows
    from .video import MIN_FPS
    from .video import probe as probe_clip

    ws = parse_windows(windows)
    reports = []
    for clip in find_clips(clips):
        info = probe_clip(clip, capture_fps=capture_fps)
        d = info.as_dict()
        d["clip"] = str(clip)
        d["crf_auto"] = curve_for("auto", info.transfer)[0].name
        d["windows"] = {str(w): {"exposure_ms": round(1000 * w / info.fps, 3) if info.fps else None,
                                 "frames_needed": 2 * half_span(w) + 1,
                                 "long_enough": info.frames >= 2 * half_span(w) + 1} for w in ws}
        d["warnings"] = list(info.warnings)
        if info.fps and info.fps < MIN_FPS:
            d["warnings"].append(f"{info.fps:g} fps is below {MIN_FPS:g}: frames are too far apart to "
                                 "average into a smooth blur (extract refuses without --force); if the camera "
                                 "filmed faster than the file plays, give --capture-fps")
        if info.variable_frame_rate:
            d["warnings"].append("variable frame rate")
        reports.append(d)
        if not as_json:
            click.echo(_probe_line(clip, info) + f"; --crf auto: {d['crf_auto']}")
            for w, r in d["windows"].items():
                if r["exposure_ms"] is None:
                    continue
                ok = "ok" if r["long_enough"] else f"clip too short (needs {r['frames_needed']} frames)"
                click.echo(f"  window {w:>4}: exposure {r['exposure_ms']:.1f} ms  {ok}")
            for wmsg in d["warnings"]:
                warn(f"{clip}: {wmsg}")
    if as_json:
        click.echo(json.dumps(reports, indent=2))


def _extract_job(args):
    """Worker entry (blurforge.engine): extract one clip, return (summary, warnings); errors raise."""
    clip, opts = args
    warnings: list[str] = []
    from .extract import extract_clip

    return extract_clip(clip, opts, warn=warnings.append), warnings


_EXECUTOR_OPTS = [
    click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                 help="What runs the work in parallel: local processes (--jobs), or dask.distributed (a "
                      "LocalCluster of --jobs workers, or the cluster at --scheduler; needs "
                      "pip install 'blurforge[dask]'). A failed item is retried twice, then reported."),
    click.option("--scheduler", default=None, metavar="ADDRESS",
                 help="Address of a running dask scheduler (tcp://host:8786) for --executor dask; its "
                      "workers must see the same paths (a shared file system)."),
]


def _executor_options(fn):
    for opt in reversed(_EXECUTOR_OPTS):
        fn = opt(fn)
    return fn


def _flicker_note(r: dict) -> str:
    """What the summary line says about exposure: whether flicker was found and corrected."""
    if r.get("flicker_off"):
        return "flicker correction off"
    drift = f", exposure drift corrected in {r['drift_pairs']} pair(s)" if r.get("drift_pairs") else ""
    if not r["flicker_found"]:
        return (f"no flicker (best fit {100 * r['flicker_amplitude']:.2f}%, F = {r['flicker_significance']:.1f}: "
                f"no correction){drift}")
    return (f"{r['flicker_hz']:g} Hz flicker ({100 * r['flicker_amplitude']:.1f}%, F = "
            f"{r['flicker_significance']:.0f}) corrected in {r['flicker_pairs']}/{r['pairs']} pairs{drift}")


@main.command()
@click.argument("clips", nargs=-1, required=True, type=click.Path())
@click.option("--windows", default="36,73", show_default=True,
              help="Blur windows in frames; each is an exposure of exactly N frame intervals centred on "
                   "the sharp frame (odd N: N frames; even N: N+1 frames, half weight on the ends).")
@click.option("--out", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; one shard CLIP_STEM.h5 per clip.")
@click.option("--stride", type=int, default=None,
              help="Minimum distance between sharp centres in frames [default: the largest window].")
@click.option("--crf", default="auto", show_default=True,
              help="Camera curve to invert before averaging: auto (from the stream's transfer tag: HLG -> hlg, "
                   "PQ -> pq, otherwise gamma2.2), gamma2.2 (GoPro's blur_gamma), srgb, linear (GoPro's plain "
                   "blur), hlg, pq, a log profile (slog3, vlog, logc3), or a file with 256 values (e.g. from "
                   "createCalibrateRobertson).")
@_CAPTURE_FPS
@click.option("--start", default=None, metavar="T",
              help="Windows start at or after T: seconds of capture time (2.5) or a frame number (1200f). "
                   "For speed-ramped clips, to keep only the slow-motion part.")
@click.option("--end", default=None, metavar="T",
              help="Windows end before T (seconds of capture time or 1200f); decoding stops there.")
@click.option("--flicker", type=click.Choice(["auto", "100", "120", "off"]), default="auto",
              show_default=True, help="Flicker frequency to correct (Hz, twice the mains frequency).")
@click.option("--bits", type=click.Choice(["8", "16"]), default="8", show_default=True,
              help="Stored depth of blur and sharp: 16 keeps 10/12/16-bit sources as uint16 (0..65535; "
                   "8-bit sources stay 8). 16-bit shards are read by verify and inspect, not yet by align, "
                   "export, card, split or dsanet.")
@click.option("--interpolate", default="auto", show_default=True, metavar="auto|off|K",
              help="Sub-frames between consecutive frames where something moves more than a pixel per frame "
                   "(flow-based, only in the box around what moves, plain averaging where flow cannot be "
                   "trusted), so the blur is a smooth streak instead of stepped copies: auto picks enough "
                   "sub-frames that no sub-step moves more than a pixel; K uses K sub-steps; off averages the "
                   "frames only (GoPro's way).")
@click.option("--align", "do_align", is_flag=True, help="Run `blurforge align` on each new shard.")
@click.option("--force", is_flag=True, help="Extract even below 240 fps or with a variable frame rate.")
@click.option("--overwrite", is_flag=True, help="Redo clips whose shards are already complete.")
@click.option("--jobs", default=1, show_default=True,
              help="Clips processed at once: local processes, or LocalCluster workers with --executor dask.")
@_executor_options
@click.option("--shard-index", default=0, show_default=True,
              help="With --num-shards K: process only clips i with i % K == this (sorted clip list).")
@click.option("--num-shards", default=1, show_default=True, help="Split the clip list over K machines.")
@click.option("--max-pairs", type=int, default=None, help="Stop each clip after this many pairs.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary table.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@friendly
def extract(clips, windows, out, stride, crf, capture_fps, start, end, flicker, bits, interpolate, do_align, force,
            overwrite, jobs, executor, scheduler, shard_index, num_shards, max_pairs, quiet, as_json):
    """Average windows of a high-speed CLIP (in linear light, flicker removed) around sharp frames
    into blur/sharp pairs, written as HDF5 shards (format: data/README.md).

    The clip is decoded as a stream (memory is bounded by the largest window). Sharp centres are
    local sharpness maxima at least --stride frames apart whose windows lie inside the clip and
    cross no scene cut. Re-running skips clips whose shards are complete.

    A CLIP is a video file, a folder of numbered PNG/TIFF frames (8 or 16 bit) or DNG raw frames
    (linear; pip install 'blurforge[raw]') with --capture-fps, or a folder searched recursively for
    both. The capture rate comes from --capture-fps, else
    the com.android.capture.fps tag, else the container; display rotation is applied; 10/12-bit
    video and 16-bit frames are averaged from 16-bit RGB.
    """
    from .extract import ExtractOptions, extract_clip, parse_interpolate, parse_windows

    clips = find_clips(clips)
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise BlurforgeError("--shard-index must be in [0, --num-shards)")
    if scheduler and executor != "dask":
        raise BlurforgeError("--scheduler needs --executor dask")
    if bits == "16" and do_align:
        raise BlurforgeError("align does not read 16-bit shards yet: drop --align or --bits 16")
    stems: dict[str, str] = {}
    for c in clips:
        other = stems.setdefault(Path(c).stem, c)
        if other != c:
            raise BlurforgeError(f"{other} and {c} would both write {Path(c).stem}.h5: rename one")
    mine = sorted(clips)[shard_index::num_shards]
    opts = ExtractOptions(windows=parse_windows(windows), out=Path(out), stride=stride, crf=crf,
                          flicker=flicker, force=force, overwrite=overwrite, max_pairs=max_pairs,
                          capture_fps=capture_fps, start=start, end=end, bits=int(bits),
                          interpolate=parse_interpolate(interpolate))
    results, failures = [], []
    if executor == "dask" or (jobs > 1 and len(mine) > 1):
        from .engine import run_tasks

        if scheduler:  # the cluster's workers run elsewhere: paths that mean the same there
            mine = [str(Path(c).resolve()) for c in mine]
            opts.out = opts.out.resolve()
            opts.crf = str(Path(crf).resolve()) if Path(crf).is_file() else crf
        done, failed = [], []
        for (clip, _), res, err in run_tasks(_extract_job, [(c, opts) for c in mine], executor, jobs, scheduler,
                                             "clips", quiet, "clip"):
            if err is not None:
                failed.append((mine.index(clip), err if err.startswith(str(clip)) else f"{clip}: {err}"))
                continue
            for w in res[1]:
                warn(w)
            done.append((mine.index(clip), res[0]))
        results = [r for _, r in sorted(done, key=lambda t: t[0])]  # in clip order, as the local run
        failures = [m for _, m in sorted(failed)]
    else:
        for clip in mine:
            with progress(None, Path(clip).name, quiet, unit="frame") as bar:
                def start(frames, bar=bar):
                    bar.reset(total=frames or None)

                def tick(n, pairs, bar=bar):
                    if bar.total is not None and n > bar.total:
                        bar.total = n
                    bar.n = n
                    bar.set_postfix(pairs=pairs, refresh=False)
                    bar.refresh() if n % 32 == 0 else None
                try:
                    results.append(extract_clip(clip, opts, progress=tick, warn=warn, start=start))
                except BlurforgeError as e:
                    if len(mine) == 1:
                        raise
                    failures.append(str(e))
    if do_align:
        from .align_shards import align_shard

        for r in results:
            if r["status"] != "skipped (complete)" or overwrite:
                r["align"] = align_shard(r["shard"])
    for r in results:
        if r.get("error"):
            failures.append(f"{r['clip']}: {r['error']}")
    if as_json:
        click.echo(json.dumps({"clips": results, "failures": failures}, indent=2, default=str))
    elif not quiet:
        for r in results:
            pairs = "-" if r["pairs"] is None else r["pairs"]
            click.echo(f"{r['clip']} -> {r['shard']}: {r['status']}, {pairs} pairs"
                       + (f", windows {','.join(map(str, r['windows']))}, "
                          f"{r['size'][0]}x{r['size'][1]}, "
                          + _flicker_note(r)
                          + (f", {r['interpolated_windows']} window(s) interpolated" if r.get("interpolated_windows")
                             else "")
                          if r["pairs"] else ""))
    report_failures(failures)


# ---- align -----------------------------------------------------------------------------------

def _align_job(args):
    """Worker-process entry: align one shard (one OpenCV thread: the processes are the parallelism)."""
    path, kw = args
    import cv2

    cv2.setNumThreads(1)
    from .align_shards import align_shard

    return align_shard(path, **kw)


def _align_line(s: dict) -> str:
    parts = []
    for lab, d in s["windows"].items():
        why = ", ".join(f"{v} {k}" for k, v in d.get("reasons", {}).items())
        parts.append(f"window {lab}: {d['ok']} ok, {d['rejected']} rejected" + (f" ({why})" if why else "")
                     + (f", median score {d['median_score']:.3f}" if d.get("median_score") is not None else ""))
    return f"{s['shard']}: {s['status']} ({s['motion']}, {s['pairs']} pairs) - " + "; ".join(parts)


@click.command("align")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--motion", type=click.Choice(["translation", "euclidean", "affine", "homography"]),
              default="euclidean", show_default=True,
              help="Geometric model of the warp from the sharp frame to the blurred image.")
@click.option("--min-score", default=None, type=float,
              help="Reject pairs whose ECC correlation is below this [default: 0.75].")
@click.option("--max-shift", default=None, type=float,
              help="Reject pairs whose warp moves any corner more than this many pixels [default: 16].")
@click.option("--windows", default=None, help="Only these blur labels, comma separated [default: all].")
@click.option("--overwrite", is_flag=True, help="Redo windows already aligned with the same settings.")
@click.option("--jobs", default=1, show_default=True,
              help="Parallel workers: shards in processes (or LocalCluster workers with --executor dask), "
                   "or pairs in threads for a single shard.")
@_executor_options
@click.option("--quiet", is_flag=True, help="No progress bar and no per-shard lines.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@friendly
def align_cmd(paths, motion, min_score, max_shift, windows, overwrite, jobs, executor, scheduler, quiet, as_json):
    """Align each blurred image of the shards PATHS (files or folders; default: data/) onto its
    sharp frame, without touching what is there.

    \b
    Per pair and window: ECC (coarse to fine, 1/4 then 1/2 size, initialised by phase correlation)
    estimates the warp; a robust per-channel gain in linear light (the shard's camera curve, else
    gamma 2.2) corrects brightness. The sharp frame is never resampled. Writes aligned/<W> beside
    blur/<W>, and align/<W>/{warp,gain,score,ok,margin}. Pairs failing --min-score/--max-shift are
    flagged ok = False and counted, never dropped. The shard is rewritten through a temporary copy,
    so an interrupted run leaves it as it was; re-running skips shards already aligned.
    """
    from . import align as al
    from .align_shards import align_shard

    kw = {"motion": motion, "min_score": al.DEFAULT_MIN_SCORE if min_score is None else min_score,
          "max_shift": al.DEFAULT_MAX_SHIFT if max_shift is None else max_shift,
          "windows": [w.strip() for w in windows.split(",") if w.strip()] if windows else None,
          "overwrite": overwrite}
    if jobs < 1:
        raise BlurforgeError("--jobs must be at least 1")
    if scheduler and executor != "dask":
        raise BlurforgeError("--scheduler needs --executor dask")
    shards = find_shards(paths)
    results, failures = [], []
    if executor == "dask" or (jobs > 1 and len(shards) > 1):
        from .engine import run_tasks

        if scheduler:  # the cluster's workers run elsewhere: paths that mean the same there
            shards = [p.resolve() for p in shards]
        for (p, _), s, err in run_tasks(_align_job, [(p, kw) for p in shards], executor, jobs, scheduler,
                                        "align", quiet, "shard"):
            if err is None:
                results.append(s)
                if not (quiet or as_json):
                    say(_align_line(s))
            else:
                failures.append(err if err.startswith(str(p)) else f"{p}: {err}")
    else:
        for p in shards:
            with progress(None, Path(p).name, quiet, unit="pair") as bar:
                def tick(done, total, bar=bar):
                    bar.total = total
                    bar.update(done - bar.n)
                try:
                    s = align_shard(p, jobs=jobs, progress=tick, **kw)
                except BlurforgeError as e:
                    if len(shards) == 1:
                        raise
                    failures.append(str(e))
                    continue
            results.append(s)
            if not (quiet or as_json):
                say(_align_line(s))
    rejected = sum(d["rejected"] for s in results for d in s["windows"].values())
    checked = sum(d["ok"] + d["rejected"] for s in results for d in s["windows"].values())
    if as_json:
        click.echo(json.dumps({"shards": results, "failures": failures, "pairs_checked": checked,
                               "rejected": rejected, **{k: v for k, v in kw.items() if k != "overwrite"}},
                              indent=2, default=str))
    elif not quiet:
        aligned = sum(1 for s in results if s["status"] == "aligned")
        click.echo(f"{aligned} shard(s) aligned, {len(results) - aligned} skipped, {len(failures)} failed; "
                   f"{rejected} of {checked} pair-windows rejected")
    report_failures(failures)


# ---- inspect ---------------------------------------------------------------------------------

@click.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="Also write a contact sheet PNG: rows of sharp | each blur | difference heat maps.")
@click.option("--rows", default=3, show_default=True, help="Pairs per shard on the sheet.")
@click.option("--tile", default=256, show_default=True, help="Width of each picture on the sheet, px.")
@click.option("--max-rows", default=24, show_default=True, help="Most rows on the sheet in all.")
@click.option("--sample", default=16, show_default=True,
              help="Pairs per shard read for the PSNR figures (evenly spaced).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def inspect_cmd(paths, sheet, rows, tile, max_rows, sample, as_json):
    """Summarise shards: pairs, windows, size, blur strength (PSNR of blur vs sharp), motion per
    frame, ghosting warnings and alignment results (scores, rejects, PSNR after alignment)."""
    from .inspect import contact_sheet, format_table, summarize, write_png

    shards = find_shards(paths)
    summaries = [summarize(p, sample=sample) for p in shards]
    if sheet:
        if tile < 64:
            raise BlurforgeError("--tile must be at least 64 px")
        write_png(sheet, contact_sheet(shards, rows_per_shard=rows, tile=tile, max_rows=max_rows))
    if as_json:
        click.echo(json.dumps({"shards": summaries, "sheet": sheet}, indent=2))
    else:
        for s in summaries:
            click.echo(format_table(s))
        if sheet:
            click.echo(f"wrote {sheet}")


# ---- verify ----------------------------------------------------------------------------------

@click.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--no-checksums", is_flag=True, help="Check schema only (fast): skip reading every image.")
@click.option("--quiet", is_flag=True, help="Print only bad shards.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def verify_cmd(paths, no_checksums, quiet, as_json):
    """Check shards: schema and format version, dataset shapes and dtypes, that every image reads,
    and the content checksums (sha256) stored when each dataset was written. Exits non-zero naming
    every bad shard and what is wrong with it."""
    from .verify import verify_shard

    shards = find_shards(paths, default=None, missing_ok=True)  # a damaged file is named, not refused
    reports = []
    with progress(len(shards), "verify", quiet or as_json, "shard") as bar:
        for p in shards:
            r = verify_shard(p, checksums=not no_checksums)
            reports.append(r)
            bar.update(1)
            if not as_json and (not r["ok"] or not quiet):
                if r["ok"]:
                    say(f"{p}: ok ({r['pairs']} pairs, {len(r['datasets'])} image datasets)")
                else:
                    say(f"{p}: BAD")
                    for msg in r["problems"]:
                        say(f"  {msg}")
    bad = [r for r in reports if not r["ok"]]
    if as_json:
        click.echo(json.dumps({"shards": reports, "bad": len(bad)}, indent=2))
    if bad:
        names = ", ".join(Path(r["shard"]).name for r in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise BlurforgeError(f"{len(bad)} of {len(reports)} shard(s) failed verification: {names}")
    if not (quiet or as_json):
        click.echo(f"all {len(reports)} shard(s) ok")


# ---- import ----------------------------------------------------------------------------------

@click.group("import")
def import_group():
    """Import existing deblurring datasets (GoPro, or any blurred/sharp folder pair) as shards."""


@import_group.command("gopro")
@click.argument("root", type=click.Path())
@click.option("--out", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; one shard gopro-<split>-<SEQ>.h5 per sequence.")
@click.option("--split", type=click.Choice(["all", "train", "test"]), default="all", show_default=True)
@click.option("--overwrite", is_flag=True, help="Redo sequences whose shards are already complete.")
@click.option("--jobs", default=4, show_default=True, help="Threads decoding PNGs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@friendly
def import_gopro_cmd(root, out, split, overwrite, jobs, quiet, as_json):
    """Import GoPro (GOPRO_Large/{train,test}/<SEQ>/{blur,blur_gamma,sharp}/NNNNNN.png): windows
    `gopro` (blur/: plain mean of codes) and `gopro_gamma` (blur_gamma/), file names in meta/name,
    split and sequence as attributes."""
    from .importers import import_gopro

    with progress(None, "gopro", quiet or as_json, "pair") as bar:
        def start(name, n):
            bar.reset(total=n)
            bar.set_description(name)
        results = import_gopro(root, out, split=split, overwrite=overwrite, jobs=jobs,
                               progress=bar.update, start=start)
    _report_import(results, as_json, {"shards": results})


@import_group.command("pairs")
@click.argument("blur_dir", type=click.Path())
@click.argument("sharp_dir", type=click.Path())
@click.option("--out", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Output folder.")
@click.option("--label", default=None,
              help="Window label (blur/<LABEL>) and shard name [default: BLUR_DIR's folder name].")
@click.option("--split", default=None, help="Split to record (train/test), if known.")
@click.option("--pairs-per-shard", default=1000, show_default=True,
              help="Split large datasets over numbered shards (0: one shard per image size).")
@click.option("--overwrite", is_flag=True, help="Redo shards that are already complete.")
@click.option("--jobs", default=4, show_default=True, help="Threads decoding images.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@friendly
def import_pairs_cmd(blur_dir, sharp_dir, out, label, split, pairs_per_shard, overwrite, jobs, quiet,
                     as_json):
    """Import blurred images BLUR_DIR and their sharp targets SHARP_DIR (REDS, RealBlur, HIDE, ...),
    matched by relative path, else by file name (extension and a leading blur_/gt_/sharp_ ignored).
    Unmatched blurred images and size mismatches are errors; one shard per image size."""
    from .importers import import_pairs

    with progress(None, "pairs", quiet or as_json, "pair") as bar:
        def start(name, n):
            bar.reset(total=n)
            bar.set_description(name)
        res = import_pairs(blur_dir, sharp_dir, out, label=label, split=split,
                           pairs_per_shard=pairs_per_shard, overwrite=overwrite, jobs=jobs,
                           progress=bar.update, start=start)
    for note in res["notes"]:
        say(f"note: {note}", err=True)
    _report_import(res["shards"], as_json, res)


def _report_import(shards: list[dict], as_json: bool, payload: dict):
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    for s in shards:
        pairs = "" if s["pairs"] is None else f", {s['pairs']} pairs"
        click.echo(f"{s['shard']}: {s['status']}{pairs}")
    done = sum(1 for s in shards if s["status"] == "imported")
    click.echo(f"{done} shard(s) written, {len(shards) - done} skipped")


# ---- datasets: split, export, card -------------------------------------------------------------

@click.command("split")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--val", default=0.1, show_default=True, help="Fraction of the pairs for validation.")
@click.option("--test", default=0.1, show_default=True, help="Fraction of the pairs for testing.")
@click.option("--seed", default=0, show_default=True, help="Seed of the draw (same seed, same lists).")
@click.option("--group-by", default=None, metavar="REGEX",
              help="Also keep together shards whose source names give the same match of REGEX (its first "
                   "group if it has one), e.g. '^(scene\\d+)_' for scene07_take1.mp4, scene07_take2.mp4.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def split_cmd(data_dir, val, test, seed, group_by, as_json):
    """Split the shards under DATA_DIR into DATA_DIR/train.txt, val.txt and test.txt (one shard path a
    line, relative to DATA_DIR), so that no source lands in two splits.

    \b
    Shards of one source (the same video, by its sha256; imports: the same GoPro sequence or imported
    folder), and with --group-by the same scene, form a group; whole groups are drawn (shuffled by
    --seed) into test, then val, until each holds the fraction of *pairs* asked as closely as whole
    groups allow (at least one group each, when possible); the rest is train. Every command that takes
    shards reads the lists: dsanet-train --shards @data/train.txt --val-shards @data/val.txt
    """
    from .split import split_dataset

    s = split_dataset(data_dir, val, test, seed=seed, group_by=group_by)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    for d in s["splits"].values():
        click.echo(f"{d['list']}: {d['shards']} shard(s), {d['groups']} group(s), {d['pairs']} pairs "
                   f"({100 * d['fraction']:.1f}%)")
    if group_by and s["group_by_unmatched"]:
        warn(f"--group-by matched no source name of {s['group_by_unmatched']} shard(s); they are grouped by source")


@click.command("export")
@click.argument("shards", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["gopro", "pairs"]), required=True,
              help="gopro: <split>/<clip>_<W>/{blur,sharp}/NNNNNN.png; pairs: blur/ and sharp/ with matching "
                   "names <clip>_<W>_NNNNNN.png (BasicSR's paired folders).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--windows", default=None, help="Only these window labels, comma separated [default: all].")
@click.option("--aligned", is_flag=True,
              help="Export aligned/<W> where `blurforge align` made it, skip pairs it rejected, and crop the "
                   "invalid margin (the largest of each clip and window) from blur and sharp.")
@click.option("--jobs", default=4, show_default=True, help="Threads encoding PNGs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@friendly
def export_cmd(shards, fmt, out, windows, aligned, jobs, quiet, as_json):
    """Export SHARDS (files, folders, @LIST.txt) as lossless PNG folders that other trainers read.

    \b
    gopro: OUT/<split>/<clip>_<W>/blur/NNNNNN.png and sharp/NNNNNN.png (GoPro_Large's layout; any GoPro
      loader reads it). <split> is the split list naming the shard (train.txt/val.txt/test.txt of
      `blurforge split`, in the shard's folder or the nearest folder above it), else the
      shard's split attribute (GoPro imports), else train. NNNNNN is the sharp frame's number.
    pairs: OUT/blur/<clip>_<W>_NNNNNN.png and OUT/sharp/<same name> (BasicSR's paired folders);
      export each split on its own:  blurforge export @data/train.txt --format pairs --out export/train
    `blurforge import gopro` / `import pairs` of an export give back the same pixels.
    """
    from .cliutil import expand_globs
    from .export import export_shards

    if jobs < 1:
        raise BlurforgeError("--jobs must be at least 1")
    paths = find_shards(expand_globs(shards), default=None)
    wins = [w.strip() for w in windows.split(",") if w.strip()] if windows else None
    with progress(None, "export", quiet or as_json, "image") as bar:
        s = export_shards(paths, out, fmt, windows=wins, aligned=aligned, jobs=jobs, progress=bar.update, warn=warn)
    if as_json:
        click.echo(json.dumps(s, indent=2))
    elif not quiet:
        click.echo(f"wrote {s['images']} PNGs ({s['pairs']} pairs) from {len(s['shards'])} shard(s) to {out}"
                   + (f"; {s['skipped_rejected']} pair(s) rejected by align skipped" if s["skipped_rejected"] else ""))


@click.command("card")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for README.md, plots, sheet.")
@click.option("--name", default=None, help="Dataset name in the card [default: DATA_DIR's folder name].")
@click.option("--license", "license_", default="other", show_default=True,
              help="License identifier for the front matter (e.g. cc-by-4.0).")
@click.option("--sample", default=0, show_default=True,
              help="Pairs per shard read for the PSNR figures, evenly spaced (0: every pair).")
@click.option("--sheet-rows", default=6, show_default=True, help="Rows of the contact sheet (0: none).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly
def card_cmd(data_dir, out, name, license_, sample, sheet_rows, quiet):
    """Write a dataset card for the shards under DATA_DIR: OUT/README.md in the Hugging Face style
    (front matter; summary; splits, sources, resolutions, frame rates, camera curves; blur strength
    as PSNR(blur, sharp), motion px/frame and exposure; flicker correction, ghosting and alignment
    rejections; the commands and tool versions that made it), with PNG plots, a contact sheet and
    stats.json. Every number is computed from the shards. Needs matplotlib (blurforge[card])."""
    from .card import need_matplotlib, write_card

    need_matplotlib()
    with progress(None, "card", quiet, "shard") as bar:
        st = write_card(data_dir, out, name=name, license_=license_, sample=sample, sheet_rows=sheet_rows,
                        progress=bar.update)
    click.echo(f"wrote {Path(out) / 'README.md'} ({st['shards']} shards, {st['pairs']} pairs; "
               f"{', '.join(st['files'][1:])})")


main.add_command(align_cmd)
main.add_command(inspect_cmd)
main.add_command(verify_cmd)
main.add_command(import_group)
main.add_command(split_cmd)
main.add_command(export_cmd)
main.add_command(card_cmd)


if __name__ == "__main__":
    main()
