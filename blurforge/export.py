"""``blurforge export``: shards as PNG folders that other trainers read (GoPro layout, BasicSR pairs).

* ``gopro``: ``OUT/<split>/<clip>_<W>/blur/NNNNNN.png`` and ``sharp/NNNNNN.png``, GoPro_Large's
  layout, one folder per shard and window label. ``<split>`` is the split list that names the
  shard (``train.txt``, ``val.txt``, ``test.txt`` of ``blurforge split``, looked for in the shard's
  folder, then its parents: the nearest list that names it decides), else the shard's
  ``split`` attribute (GoPro imports), else ``train``. ``NNNNNN`` is the sharp frame's number
  (``center``) where those are distinct, else the pair index.
* ``pairs``: BasicSR's paired folders, ``OUT/blur/<clip>_<W>_NNNNNN.png`` and
  ``OUT/sharp/<clip>_<W>_NNNNNN.png`` (the same name on both sides; the sharp image repeats for
  each window). Export each split list on its own: ``--out export/train @data/train.txt``.

``<clip>`` is the video's file stem, the GoPro sequence, or the shard's stem (folder-pair imports).
Images are lossless PNG, RGB as stored, encoded on a thread pool (OpenCV releases the GIL) and each
written atomically. ``aligned``: the reading rule of the format (``aligned/<W>`` where ``blurforge
align`` made it, pairs flagged ``ok = False`` skipped) with one crop per clip and window, the largest
``margin`` of its exported pairs, taken from blur and sharp alike, so every image of a folder has one
size. ``blurforge import gopro`` / ``import pairs`` of an export give back the exported pixels.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_write
from .errors import BlurforgeError
from .shards import attr_str, label_source, open_shard, read_header

FORMATS = ("gopro", "pairs")
LIST_SPLITS = ("train", "val", "test")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"


def write_png(path: Path, rgb: np.ndarray):
    """Lossless PNG of an RGB uint8 image, written atomically (encode first, then one write)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise BlurforgeError(f"{path}: PNG encoding failed")
    atomic_write(path, lambda fh: fh.write(buf.tobytes()))


class SplitLists:
    """Which split list (train/val/test.txt) names a shard: the nearest one, in its folder or above."""

    def __init__(self):
        self._folders: dict[Path, dict[Path, str] | None] = {}

    def _load(self, folder: Path) -> dict[Path, str] | None:
        if folder not in self._folders:
            from .cliutil import read_list

            found = [sp for sp in LIST_SPLITS if (folder / f"{sp}.txt").is_file()]
            member: dict[Path, str] | None = None
            if found:
                member = {}
                for sp in found:
                    for entry in read_list(folder / f"{sp}.txt", allow_empty=True):
                        key = Path(entry).resolve()
                        if member.get(key, sp) != sp:
                            raise BlurforgeError(f"{entry} is in both {member[key]}.txt and {sp}.txt of {folder}")
                        member[key] = sp
            self._folders[folder] = member
        return self._folders[folder]

    def split_of(self, shard: Path) -> str | None:
        key = shard.resolve()
        for folder in key.parents:
            member = self._load(folder)
            if member and key in member:
                return member[key]
        return None


def shard_split(path: Path, f, lists: SplitLists, default: str = "train") -> str:
    """The split of a shard: the split list naming it, else its ``split`` attribute, else ``default``."""
    return lists.split_of(Path(path)) or attr_str(f, "split") or default


@dataclasses.dataclass
class Job:
    """One shard's share of the export: which windows, under which clip name and split."""
    path: Path
    clip: str
    split: str
    labels: list[str]
    pairs: int


def plan(shards: list[Path], fmt: str, windows: list[str] | None) -> list[Job]:
    """Clip name, split and windows of every shard; refuses two shards that would write one folder."""
    if fmt not in FORMATS:
        raise BlurforgeError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    lists = SplitLists()
    jobs, seen_labels = [], set()
    for p in shards:
        with open_shard(p) as f:
            head = read_header(f)
            kind, name, seq = attr_str(f, "kind"), attr_str(f, "source_name"), attr_str(f, "sequence")
            clip = seq if seq else Path(name).stem if kind == "video" and name else Path(p).stem
            split = shard_split(Path(p), f, lists)
        labels = [lab for lab in head.labels if windows is None or lab in windows]
        seen_labels.update(labels)
        jobs.append(Job(Path(p), _safe(clip), split, labels, head.num_pairs))
    if windows:
        missing = [w for w in windows if w not in seen_labels]
        if missing:
            raise BlurforgeError(f"--windows: no shard has window(s) {', '.join(missing)}")
    owner: dict[tuple, Path] = {}
    for j in jobs:
        for lab in j.labels:
            key = (j.split if fmt == "gopro" else "", j.clip, lab)
            if key in owner:
                raise BlurforgeError(f"{owner[key]} and {j.path} would both export {j.clip}_{lab}"
                                     + (f" in {j.split}/" if fmt == "gopro" else "") + "; export them separately")
            owner[key] = j.path
    return jobs


def frame_names(center: np.ndarray) -> list[str]:
    """``NNNNNN`` per pair: the sharp frame's number when those are distinct and >= 0, else the index."""
    c = np.asarray(center, np.int64)
    use = c.size and c.min() >= 0 and len(np.unique(c)) == c.size
    return [f"{int(v):06d}" for v in (c if use else np.arange(c.size))]


def export_shards(shards, out, fmt: str = "gopro", windows: list[str] | None = None, aligned: bool = False,
                  jobs: int = 4, progress=None, warn=None) -> dict:
    """Write the PNG export of ``shards`` into ``out``; returns a JSON-ready summary.

    ``progress(k)`` after every k images written; ``warn(msg)`` for windows ``--aligned`` finds
    without alignment (exported as blur/<W>).
    """
    out = Path(out)
    todo = plan([Path(p) for p in shards], fmt, windows)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"out": str(out), "format": fmt, "aligned": aligned, "shards": [], "images": 0,
                     "pairs": 0, "skipped_rejected": 0}
    pending: collections.deque = collections.deque()
    with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        def submit(path: Path, img: np.ndarray):
            while len(pending) >= 4 * max(1, jobs):      # bound the images held in memory
                pending.popleft().result()
                if progress:
                    progress(1)
            pending.append(pool.submit(write_png, path, img))
            summary["images"] += 1

        try:
            for j in todo:
                rec = {"shard": str(j.path), "clip": j.clip, "split": j.split, "windows": {}}
                with open_shard(j.path) as f:
                    names = frame_names(f["center"][()])
                    for lab in j.labels:
                        src = label_source(f, lab, j.pairs)
                        if aligned and not src.aligned and warn:
                            warn(f"{j.path}: window {lab} is not aligned; exported from blur/{lab}")
                        dataset = src.dataset if aligned else f"blur/{lab}"
                        idx = src.usable() if aligned else np.arange(j.pairs)
                        crop = int(src.margin[idx].max()) if aligned and len(idx) else 0
                        h, w = int(f["sharp"].shape[1]), int(f["sharp"].shape[2])
                        if 2 * crop >= min(h, w):
                            raise BlurforgeError(f"{j.path}: window {lab}: margin {crop} px leaves no image")
                        ys, xs = slice(crop, h - crop), slice(crop, w - crop)
                        if fmt == "gopro":
                            folder = out / j.split / f"{j.clip}_{lab}"
                            paths = [(folder / "blur" / f"{names[i]}.png", folder / "sharp" / f"{names[i]}.png")
                                     for i in idx]
                        else:
                            paths = [(out / "blur" / f"{j.clip}_{lab}_{names[i]}.png",
                                      out / "sharp" / f"{j.clip}_{lab}_{names[i]}.png") for i in idx]
                        for i, (pb, ps) in zip(idx, paths):
                            submit(pb, np.ascontiguousarray(f[dataset][int(i), ys, xs]))
                            submit(ps, np.ascontiguousarray(f["sharp"][int(i), ys, xs]))
                        rec["windows"][lab] = {"source": dataset, "pairs": len(idx),
                                               "skipped_rejected": j.pairs - len(idx), "crop_px": crop,
                                               "folder": str(paths[0][0].parent.parent if fmt == "gopro"
                                                             else out) if paths else None}
                        summary["pairs"] += len(idx)
                        summary["skipped_rejected"] += j.pairs - len(idx)
                summary["shards"].append(rec)
            while pending:
                pending.popleft().result()
                if progress:
                    progress(1)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return summary
