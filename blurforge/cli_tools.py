"""CLI commands over existing shards: ``align``, ``inspect``, ``verify`` and ``import gopro|pairs``.

Registered on ``blurforge.cli.main`` at the bottom of cli.py. Every user error is one line.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import BlurforgeError

DEFAULT_DATA = Path("data")


def friendly(fn):
    """cli.friendly (one-line errors), looked up when the command runs: cli.py imports this module
    at its end, and under ``python -m blurforge.cli`` it is not yet importable by name here."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .cli import friendly as _friendly

        return _friendly(fn)(*args, **kwargs)
    return wrapper


def _bar(total, desc: str, quiet: bool, unit: str = "pair"):
    from tqdm import tqdm

    # disable=None: tqdm switches itself off when stderr is not a terminal
    return tqdm(total=total, desc=desc, unit=unit, disable=True if quiet else None, leave=False,
                dynamic_ncols=True)


def find_shards(paths, default: Path = DEFAULT_DATA) -> list[Path]:
    """Shard files from files and folders (folders: every ``*.h5`` below, hidden temporaries left out).

    No paths: every shard under ``data/``.
    """
    if not paths:
        if not default.is_dir():
            raise BlurforgeError(f"no shards given and no {default}/ folder here")
        paths = [default]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.h5")
                           if not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not found:
                raise BlurforgeError(f"{p}: no shards (*.h5) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise BlurforgeError(f"{p}: no such file or folder")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


# ---- align -----------------------------------------------------------------------------------

def _align_job(args):
    """Worker-process entry: align one shard, return (summary, error)."""
    path, kw = args
    import cv2

    cv2.setNumThreads(1)
    from .align import align_shard

    try:
        return align_shard(path, **kw), None
    except BlurforgeError as e:
        return None, str(e)


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
              help="Parallel workers: shards in processes, or pairs in threads for a single shard.")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-shard lines.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@friendly
def align_cmd(paths, motion, min_score, max_shift, windows, overwrite, jobs, quiet, as_json):
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

    kw = {"motion": motion, "min_score": al.DEFAULT_MIN_SCORE if min_score is None else min_score,
          "max_shift": al.DEFAULT_MAX_SHIFT if max_shift is None else max_shift,
          "windows": [w.strip() for w in windows.split(",") if w.strip()] if windows else None,
          "overwrite": overwrite}
    if jobs < 1:
        raise BlurforgeError("--jobs must be at least 1")
    shards = find_shards(paths)
    results, failures = [], []
    if jobs > 1 and len(shards) > 1:
        import concurrent.futures as cf
        import multiprocessing

        # spawn, not fork: a forked child inherits OpenCV's thread pool from a parent that has
        # already used it and can hang in its first parallel call
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(jobs, len(shards)), mp_context=ctx) as pool, \
                _bar(len(shards), "align", quiet, "shard") as bar:
            for _p, (s, err) in zip(shards, pool.map(_align_job, [(p, kw) for p in shards])):
                bar.update(1)
                if s:
                    results.append(s)
                    if not (quiet or as_json):
                        bar.write(_align_line(s))
                else:
                    failures.append(err)
    else:
        for p in shards:
            with _bar(None, Path(p).name, quiet) as bar:
                def tick(done, total, bar=bar):
                    bar.total = total
                    bar.update(done - bar.n)
                try:
                    s = al.align_shard(p, jobs=jobs, progress=tick, **kw)
                except BlurforgeError as e:
                    if len(shards) == 1:
                        raise
                    failures.append(str(e))
                    continue
            results.append(s)
            if not (quiet or as_json):
                click.echo(_align_line(s))
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
    if failures:
        for msg in failures[:-1]:
            click.echo(f"Error: {msg}", err=True)
        raise BlurforgeError(failures[-1])


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

    shards = []
    for p in paths:                     # a damaged file must be named, not refused up front
        q = Path(p)
        shards += find_shards([q]) if q.is_dir() else [q]
    reports = []
    with _bar(len(shards), "verify", quiet or as_json, "shard") as bar:
        for p in shards:
            r = verify_shard(p, checksums=not no_checksums)
            reports.append(r)
            bar.update(1)
            if not as_json and (not r["ok"] or not quiet):
                if r["ok"]:
                    bar.write(f"{p}: ok ({r['pairs']} pairs, {len(r['datasets'])} image datasets)")
                else:
                    bar.write(f"{p}: BAD", file=sys.stdout)
                    for msg in r["problems"]:
                        bar.write(f"  {msg}", file=sys.stdout)
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

    with _bar(None, "gopro", quiet or as_json) as bar:
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

    with _bar(None, "pairs", quiet or as_json) as bar:
        def start(name, n):
            bar.reset(total=n)
            bar.set_description(name)
        res = import_pairs(blur_dir, sharp_dir, out, label=label, split=split,
                           pairs_per_shard=pairs_per_shard, overwrite=overwrite, jobs=jobs,
                           progress=bar.update, start=start)
    for note in res["notes"]:
        click.echo(f"note: {note}", err=True)
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
