"""The `blurforge` command: a thin click layer over the stage modules.

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import functools
import sys

import click

from . import __version__
from .errors import BlurforgeError


def friendly(fn):
    """Turn BlurforgeError (and a few environment errors) into one-line messages with exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BlurforgeError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            raise click.ClickException(f"{e.strerror or e}{where}") from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def _progress(total: int | None, desc: str, quiet: bool, unit: str = "frame"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=True if quiet else None, leave=False,
                dynamic_ncols=True)


def _warn(msg: str):
    click.echo(f"warning: {msg}", err=True)


@main.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--fps", default=960.0, show_default=True, help="Frame rate of the clip.")
@click.option("--frames", default=480, show_default=True, help="Number of frames.")
@click.option("--size", default="640x360", show_default=True, help="WIDTHxHEIGHT (even).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random camera shake.")
@click.option("--photo", default="astronaut", show_default=True,
              help="scikit-image sample photo to film (astronaut, coffee, chelsea, rocket, ...).")
@click.option("--flicker", default=0.0, show_default=True,
              help="Mains flicker amplitude, relative (0.04 = 4%).")
@click.option("--mains", type=click.Choice(["100", "120"]), default="120", show_default=True,
              help="Flicker frequency in Hz (twice the mains frequency).")
@click.option("--drift", default=0.02, show_default=True, help="Exposure drift over the whole clip, relative.")
@click.option("--static", is_flag=True, help="No camera motion and no moving object (flicker-only clip).")
@click.option("--cut", default=-1, show_default=True, help="Cut to another photo at this frame (-1: none).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly
def synth(out, fps, frames, size, seed, photo, flicker, mains, drift, static, cut, quiet):
    """Synthesise a test clip OUT (.mp4) with known motion, flicker and exposure drift.

    A scikit-image sample photo is filmed in linear light by a shaking camera (translation, small
    rotation, zoom) with a textured disc crossing the frame, multiplied by mains flicker and a slow
    exposure drift, encoded through a gamma-2.2 camera curve with H.264. The per-frame truth
    (camera transform, gain, object position) is written to OUT with the suffix .json.
    """
    from .synth import SynthConfig, synthesize, truth_path

    w, h = _size(size)
    cfg = SynthConfig(fps=fps, frames=frames, width=w, height=h, seed=seed, photo=photo, flicker=flicker,
                      mains=float(mains), drift=drift, motion=not static, cut=cut)
    with _progress(frames, "synth", quiet) as bar:
        synthesize(out, cfg, progress=bar.update)
    click.echo(f"wrote {out} ({frames} frames, {w}x{h} @ {fps:g} fps) and {truth_path(out)}")


@main.command()
@click.argument("clips", nargs=-1, required=True, type=click.Path())
@click.option("--windows", default="36,73", show_default=True, help="Window sizes to report on.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def probe(clips, windows, as_json):
    """Show fps, frame count, size, duration, codec and pixel format of each clip, and for each
    window the exposure it implies (N / fps) and whether the clip is long enough."""
    import json

    from .averaging import half_span
    from .extract import parse_windows
    from .video import MIN_FPS
    from .video import probe as probe_clip

    ws = parse_windows(windows)
    reports = []
    for clip in clips:
        info = probe_clip(clip)
        d = info.as_dict()
        d["windows"] = {str(w): {"exposure_ms": round(1000 * w / info.fps, 3),
                                 "frames_needed": 2 * half_span(w) + 1,
                                 "long_enough": info.frames >= 2 * half_span(w) + 1} for w in ws}
        d["warnings"] = []
        if info.fps < MIN_FPS:
            d["warnings"].append(f"{info.fps:g} fps is below {MIN_FPS:g}: frames are too far apart to "
                                 "average into a smooth blur (extract refuses without --force)")
        if info.variable_frame_rate:
            d["warnings"].append("variable frame rate")
        reports.append(d)
        if not as_json:
            click.echo(f"{clip}: {info.width}x{info.height}, {info.fps:g} fps, ~{info.frames} frames, "
                       f"{info.duration:.3f} s, {info.codec}, {info.pix_fmt}")
            for w, r in d["windows"].items():
                ok = "ok" if r["long_enough"] else f"clip too short (needs {r['frames_needed']} frames)"
                click.echo(f"  window {w:>4}: exposure {r['exposure_ms']:.1f} ms  {ok}")
            for wmsg in d["warnings"]:
                _warn(f"{clip}: {wmsg}")
    if as_json:
        click.echo(json.dumps(reports, indent=2))


def _extract_job(args):
    """Worker-process entry: extract one clip, return (summary, warnings, error)."""
    clip, opts = args
    warnings: list[str] = []
    try:
        from .extract import extract_clip

        return extract_clip(clip, opts, warn=warnings.append), warnings, None
    except BlurforgeError as e:
        return None, warnings, str(e)


@main.command()
@click.argument("clips", nargs=-1, required=True, type=click.Path())
@click.option("--windows", default="36,73", show_default=True,
              help="Blur windows in frames; each is an exposure of exactly N frame intervals centred on "
                   "the sharp frame (odd N: N frames; even N: N+1 frames, half weight on the ends).")
@click.option("--out", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; one shard CLIP_STEM.h5 per clip.")
@click.option("--stride", type=int, default=None,
              help="Minimum distance between sharp centres in frames [default: the largest window].")
@click.option("--crf", default="gamma2.2", show_default=True,
              help="Camera curve to invert before averaging: gamma2.2 (GoPro's blur_gamma), srgb, linear "
                   "(GoPro's plain blur), or a file with 256 values (e.g. from createCalibrateRobertson).")
@click.option("--flicker", type=click.Choice(["auto", "100", "120", "off"]), default="auto",
              show_default=True, help="Flicker frequency to correct (Hz, twice the mains frequency).")
@click.option("--align", "do_align", is_flag=True, help="Run `blurforge align` on each new shard.")
@click.option("--force", is_flag=True, help="Extract even below 240 fps or with a variable frame rate.")
@click.option("--overwrite", is_flag=True, help="Redo clips whose shards are already complete.")
@click.option("--jobs", default=1, show_default=True, help="Clips processed in parallel (processes).")
@click.option("--shard-index", default=0, show_default=True,
              help="With --num-shards K: process only clips i with i % K == this (sorted clip list).")
@click.option("--num-shards", default=1, show_default=True, help="Split the clip list over K machines.")
@click.option("--max-pairs", type=int, default=None, help="Stop each clip after this many pairs.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary table.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@friendly
def extract(clips, windows, out, stride, crf, flicker, do_align, force, overwrite, jobs, shard_index,
            num_shards, max_pairs, quiet, as_json):
    """Average windows of a high-speed CLIP (in linear light, flicker removed) around sharp frames
    into blur/sharp pairs, written as HDF5 shards (format: data/README.md).

    The clip is decoded as a stream (memory is bounded by the largest window). Sharp centres are
    local sharpness maxima at least --stride frames apart whose windows lie inside the clip and
    cross no scene cut. Re-running skips clips whose shards are complete.
    """
    import json
    from pathlib import Path

    from .extract import ExtractOptions, parse_windows

    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise BlurforgeError("--shard-index must be in [0, --num-shards)")
    stems: dict[str, str] = {}
    for c in clips:
        other = stems.setdefault(Path(c).stem, c)
        if other != c:
            raise BlurforgeError(f"{other} and {c} would both write {Path(c).stem}.h5: rename one")
    mine = sorted(clips)[shard_index::num_shards]
    opts = ExtractOptions(windows=parse_windows(windows), out=Path(out), stride=stride, crf=crf,
                          flicker=flicker, force=force, overwrite=overwrite, max_pairs=max_pairs)
    results, failures = [], []
    if jobs > 1 and len(mine) > 1:
        import concurrent.futures as cf
        import multiprocessing

        # spawn, not fork: a forked child inherits OpenCV's thread pool in an unusable state
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            outcomes = pool.map(_extract_job, [(c, opts) for c in mine])
            with _progress(len(mine), "clips", quiet, unit="clip") as bar:
                for clip, (summary, warns, err) in zip(mine, outcomes):
                    bar.update(1)
                    for w in warns:
                        _warn(w)
                    results.append(summary) if summary else failures.append(f"{clip}: {err}")
    else:
        from .extract import extract_clip

        for clip in mine:
            with _progress(None, Path(clip).name, quiet) as bar:
                def tick(n, pairs, bar=bar):
                    bar.n = n
                    bar.set_postfix(pairs=pairs, refresh=False)
                    bar.refresh() if n % 32 == 0 else None
                try:
                    results.append(extract_clip(clip, opts, progress=tick, warn=_warn))
                except BlurforgeError as e:
                    if len(mine) == 1:
                        raise
                    failures.append(str(e))
    if do_align:
        from .align import align_shard

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
                          f"{r['size'][0]}x{r['size'][1]}, {r['flicker_hz']:g} Hz flicker "
                          f"({100 * r['flicker_amplitude']:.1f}%) corrected"
                          if r["pairs"] else ""))
    if failures:
        for msg in failures[:-1]:
            click.echo(f"Error: {msg}", err=True)
        raise BlurforgeError(failures[-1])


# --- registered commands (each stage module's CLI is added here) ---
from .cli_tools import align_cmd, import_group, inspect_cmd, verify_cmd  # noqa: E402

main.add_command(align_cmd)
main.add_command(inspect_cmd)
main.add_command(verify_cmd)
main.add_command(import_group)


if __name__ == "__main__":
    main()
