"""Align every pair of a shard: ``aligned/<W>`` and ``align/<W>/*`` added to a copy of the shard.

The maths is :mod:`blurforge.align`; this module reads pairs, writes the results and keeps the
rewrite crash-safe: the shard is copied (minus any alignment being redone) to a temporary file
beside it, the new datasets are added there, and :func:`blurforge.atomic.atomic_path` renames the
copy over the original only when it is complete. An interrupted run leaves the shard as it was.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .align import (
    DEFAULT_LEVELS,
    DEFAULT_MAX_DISAGREE,
    DEFAULT_MAX_SHIFT,
    DEFAULT_MIN_SCORE,
    DEFAULT_MOTION,
    MIN_TRACK_INLIERS,
    MOTIONS,
    align_pair,
    check_lut,
    gamma_lut,
    path_extent,
    prepare_reference,
)
from .atomic import atomic_path
from .curves import load_curve
from .shards import (
    ALIGN_DATASETS,
    ShardError,
    drop_unfinished,
    ensure_room,
    image_chunks,
    is_complete,
    no_space,
    open_shard,
    utc_now,
    window_labels,
)

NAMED_CURVES = ("linear", "gamma2.2", "srgb")


def settings(motion: str, min_score: float, max_shift: float, levels) -> dict:
    """The alignment settings recorded on ``align/<W>``; equal settings mean the work is done."""
    return {"motion": motion, "min_score": float(min_score), "max_shift": float(max_shift),
            "levels": np.asarray(levels, np.int64)}


def _same_settings(group, wanted: dict) -> bool:
    try:
        return (str(group.attrs["motion"]) == wanted["motion"]
                and float(group.attrs["min_score"]) == wanted["min_score"]
                and float(group.attrs["max_shift"]) == wanted["max_shift"]
                and np.array_equal(np.asarray(group.attrs["levels"]), wanted["levels"]))
    except KeyError:
        return False


def window_curve(f, label: str) -> tuple[str, np.ndarray]:
    """The inverse camera curve in which ``blur/<label>`` was averaged: (name, lut).

    ``blur/<W>`` attribute ``averaging_curve`` (import shards: GoPro's plain ``blur`` was averaged
    in codes, ``blur_gamma`` in gamma 2.2) wins, then the shard's ``camera_curve`` dataset, then
    gamma 2.2.
    """
    name = f[f"blur/{label}"].attrs.get("averaging_curve")
    if isinstance(name, bytes):
        name = name.decode()
    if name in NAMED_CURVES:
        return str(name), load_curve(str(name)).lut
    if "camera_curve" in f:
        lut = np.asarray(f["camera_curve"][()], np.float64)
        cname = f.attrs.get("camera_curve", "camera_curve")
        return (cname.decode() if isinstance(cname, bytes) else str(cname)), check_lut(lut)
    return "gamma2.2", gamma_lut()


def _copy_attrs(src, dst):
    for k in src.attrs:
        dst.attrs.create(k, src.attrs[k], dtype=src.attrs.get_id(k).dtype)


def _copy_except(src, dst, skip: set[str]):
    """Copy every object of ``src`` into ``dst`` (raw chunks, attributes kept) except paths in skip."""
    for name, obj in src.items():
        full = obj.name.lstrip("/")
        if full in skip:
            continue
        if isinstance(obj, h5py.Group) and any(s.startswith(full + "/") for s in skip):
            sub = dst.require_group(name)
            _copy_attrs(obj, sub)
            _copy_except(obj, sub, skip)
        else:
            src.copy(obj, dst, name=name)


def _stats(ok, score, shift, gain, reasons) -> dict:
    ok = np.asarray(ok, bool)
    score = np.asarray(score, np.float64)
    out = {"ok": int(ok.sum()), "rejected": int((~ok).sum())}
    if reasons is not None:
        out["reasons"] = {r: int(sum(1 for x in reasons if x == r)) for r in sorted(set(reasons)) if r}
    if len(score):
        out.update(median_score=round(float(np.median(score)), 4), min_score=round(float(score.min()), 4))
    if shift is not None and len(shift):
        fin = np.asarray(shift, np.float64)
        fin = fin[np.isfinite(fin)]
        out["median_shift_px"] = round(float(np.median(fin)), 3) if len(fin) else None
    if len(gain):
        out["median_gain"] = [round(float(g), 4) for g in np.median(np.asarray(gain), axis=0)]
    return out


def _plan(path: Path, wanted: dict, windows, overwrite: bool) -> tuple[dict, list[str]]:
    """Summary of what is already aligned, and the labels still to do (the shard is closed again)."""
    with open_shard(path) as src:
        if not is_complete(path):
            raise ShardError(f"{path}: incomplete shard (its writer did not finish)")
        labels = window_labels(src)
        if windows:
            unknown = [w for w in windows if w not in labels]
            if unknown:
                raise ShardError(f"{path}: no blur window {', '.join(unknown)} (has {', '.join(labels)})")
            labels = [w for w in labels if w in windows]
        done = [w for w in labels if not overwrite and f"align/{w}" in src and f"aligned/{w}" in src
                and _same_settings(src[f"align/{w}"], wanted)]
        summary = {"shard": str(path), "pairs": int(src["sharp"].shape[0]), "motion": wanted["motion"],
                   "windows": {}}
        for w in done:
            g = src[f"align/{w}"]
            summary["windows"][w] = _stats(g["ok"][()], g["score"][()], None, g["gain"][()], None)
    return summary, [w for w in labels if w not in done]


def align_shard(path, motion: str = DEFAULT_MOTION, min_score: float = DEFAULT_MIN_SCORE,
                max_shift: float = DEFAULT_MAX_SHIFT, windows=None, overwrite: bool = False,
                jobs: int = 1, levels=DEFAULT_LEVELS, progress=None) -> dict:
    """Align every pair of a shard; write ``aligned/<W>`` and ``align/<W>/*``; return a summary dict.

    Crash-safe (see the module docstring). Windows already aligned with the same settings are
    skipped unless ``overwrite``. ``windows``: labels to align (default all); ``jobs``: threads for
    the per-pair work; ``progress(done, total)`` is called once with done = 0 before the first pair,
    then after each pair and window.
    Summary: {"shard", "status" ("aligned" | "skipped (aligned)"), "pairs", "motion",
    "windows": {label: {"ok", "rejected", "reasons", "median_score", ...}}, "seconds"}.
    """
    if motion not in MOTIONS:
        raise ShardError(f"--motion {motion!r}: choose one of {', '.join(MOTIONS)}")
    t0 = time.perf_counter()
    path = Path(path)
    wanted = settings(motion, min_score, max_shift, levels)
    summary, todo = _plan(path, wanted, windows, overwrite)
    if not todo:
        summary.update(status="skipped (aligned)", seconds=round(time.perf_counter() - t0, 2))
        return summary
    skip = {f"aligned/{w}" for w in todo} | {f"align/{w}" for w in todo}
    with atomic_path(path) as tmp, open_shard(path) as src:
        curves = {w: window_curve(src, w) for w in todo}
        dst = None
        try:  # disk full: checked before the copy and before each pair (HDF5 crashes on a full disk)
            ensure_room(tmp.parent, _copy_bytes(path, src, skip, todo))
            dst = h5py.File(tmp, "w")
            _copy_attrs(src, dst)
            _copy_except(src, dst, skip)
            _align_into(src, dst, todo, curves, wanted, jobs, progress, summary)
            dst.close()
        except BaseException as e:
            drop_unfinished(dst, tmp)
            if isinstance(e, OSError) or no_space(e):  # HDF5 may say it as a RuntimeError
                why = "No space left on device" if no_space(e) else (e.strerror or str(e))
                raise ShardError(" ".join(f"cannot align {path}: {why} (the shard is unchanged)".split())) from None
            raise
    summary.update(status="aligned", seconds=round(time.perf_counter() - t0, 2))
    return summary


def _copy_bytes(path: Path, src, skip: set[str], todo) -> int:
    """Bytes the aligned copy needs: the shard minus the alignment being redone, plus the new images."""
    dropped = 0
    for name in skip:
        if name in src:
            obj = src[name]
            items = [obj] if isinstance(obj, h5py.Dataset) else [v for v in obj.values() if isinstance(v, h5py.Dataset)]
            dropped += sum(d.id.get_storage_size() for d in items)
    n, h, w = (int(v) for v in src["sharp"].shape[:3])
    return max(0, path.stat().st_size - dropped) + n * h * w * 3 * len(todo)


def _align_into(src, dst, todo, curves, wanted, jobs, progress, summary):
    """Compute and write the alignment of windows ``todo`` for every pair (threads when jobs > 1;
    OpenCV releases the GIL, h5py reads are serialised by a lock)."""
    n, h, w = (int(v) for v in src["sharp"].shape[:3])
    chunks, created = image_chunks(h, w), utc_now()
    centroids = {lab: src[f"meta/{lab}/centroid"][()] if f"meta/{lab}/centroid" in src else None for lab in todo}
    inliers = {lab: src[f"meta/{lab}/track_inliers"][()] if f"meta/{lab}/track_inliers" in src else np.ones(n)
               for lab in todo}
    out = {}
    for lab in todo:
        g = dst.create_group(f"align/{lab}")
        g.attrs.update(motion=wanted["motion"], min_score=wanted["min_score"],
                       max_shift=wanted["max_shift"], levels=wanted["levels"],
                       curve=curves[lab][0], tool_version=__version__, created=created)
        ds = dst.create_dataset(f"aligned/{lab}", shape=(n, h, w, 3), dtype=np.uint8, chunks=chunks)
        for k, v in src[f"blur/{lab}"].attrs.items():
            if k != "sha256":
                ds.attrs[k] = v
        out[lab] = {
            "img": ds, "hash": hashlib.sha256(),
            "warp": np.zeros((n, 3, 3), np.float64), "gain": np.ones((n, 3), np.float32),
            "score": np.zeros(n, np.float32), "ok": np.zeros(n, bool),
            "margin": np.zeros(n, np.int32), "shift": np.zeros(n), "reasons": [""] * n,
            "ecc_px": np.full(n, np.nan, np.float32),
        }
        g.attrs["geometry"] = "trajectory" if centroids.get(lab) is not None else "ecc"
    lock = threading.Lock()

    def work(i):
        with lock:
            sharp = src["sharp"][i]
            blurs = {lab: src[f"blur/{lab}"][i] for lab in todo}
            cents = {lab: centroids[lab][i] if centroids.get(lab) is not None and inliers[lab][i] >= MIN_TRACK_INLIERS
                     else None for lab in todo}
            reach = {lab: path_extent(src[f"meta/{lab}/trajectory"][i], cents[lab], h, w)
                     if cents[lab] is not None else 0.0 for lab in todo}
        refs = {}
        res = {}
        for lab in todo:
            cname, lut = curves[lab]
            if cname not in refs:
                refs[cname] = prepare_reference(sharp, wanted["levels"], lut)
            res[lab] = align_pair(refs[cname], blurs[lab], wanted["motion"], min_score=wanted["min_score"],
                                  max_shift=wanted["max_shift"], centroid=cents[lab],
                                  max_disagree=max(DEFAULT_MAX_DISAGREE, reach[lab]))
        return res

    total, done = n * len(todo), 0
    if progress:
        progress(0, total)
    pending: collections.deque = collections.deque()
    pool = cf.ThreadPoolExecutor(max_workers=jobs) if jobs > 1 else None
    try:
        it = iter(range(n))
        for i in range(n):
            if pool is None:
                res = work(i)
            else:
                while len(pending) < 2 * jobs:
                    j = next(it, None)
                    if j is None:
                        break
                    pending.append(pool.submit(work, j))
                res = pending.popleft().result()
            ensure_room(Path(dst.filename).parent, 2 * sum(r.aligned.nbytes for r in res.values()))
            for lab, r in res.items():
                o = out[lab]
                img = np.ascontiguousarray(r.aligned)
                o["img"][i] = img
                o["hash"].update(img.tobytes())
                o["warp"][i], o["gain"][i], o["score"][i] = r.warp, r.gain, r.score
                o["ok"][i], o["margin"][i], o["shift"][i], o["reasons"][i] = r.ok, r.margin, r.shift, r.reason
                o["ecc_px"][i] = r.ecc_px
                done += 1
                if progress:
                    progress(done, total)
    finally:
        if pool is not None:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True)
    for lab, o in out.items():
        o["img"].attrs["sha256"] = o["hash"].hexdigest()
        g = dst[f"align/{lab}"]
        for k in ALIGN_DATASETS:
            g.create_dataset(k, data=o[k])
        summary["windows"][lab] = _stats(o["ok"], o["score"], o["shift"], o["gain"], o["reasons"])
