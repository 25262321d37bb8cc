"""Import existing deblurring datasets into shards, so they train beside blurforge's own.

* GoPro (``GOPRO_Large/{train,test}/<SEQ>/{blur,blur_gamma,sharp}/NNNNNN.png``): one shard per
  sequence, ``gopro-<split>-<SEQ>.h5``, windows ``gopro`` (plain mean of codes) and ``gopro_gamma``.
* Folder pairs (REDS, RealBlur, HIDE, ...): images in BLUR_DIR and SHARP_DIR matched by relative
  path, else by file name, ignoring the extension and a leading ``blur``/``gt``/``sharp`` token.

Pixels are stored exactly as decoded (8-bit, RGB). Shards are written atomically by ShardWriter;
an existing complete shard is skipped unless ``overwrite``.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import re
from pathlib import Path

import cv2
import h5py
import numpy as np

from .errors import BlurforgeError
from .shards import ShardWriter, is_complete

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
GOPRO_WINDOWS = {"gopro": ("blur", "linear"), "gopro_gamma": ("blur_gamma", "gamma2.2")}
_PREFIX = re.compile(r"^(blur|blurred|gt|sharp)[_-]", re.IGNORECASE)


class ImportFailed(BlurforgeError):
    """A dataset folder that cannot be imported as asked."""


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit image file as uint8 HxWx3 RGB (grey is repeated, alpha dropped)."""
    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if img is None:
        raise ImportFailed(f"{path}: not a readable image")
    if img.dtype != np.uint8:
        raise ImportFailed(f"{path}: {img.dtype} pixels; shards hold 8-bit images (convert it first)")
    if img.ndim == 2:
        return np.ascontiguousarray(np.stack([img] * 3, axis=-1))
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise ImportFailed(f"{path}: {img.shape[2]} channels, expected 1, 3 or 4")


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted; hidden files and folders left out."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not any(s.startswith(".") for s in rel.parts):
            out.append(p)
    return sorted(out, key=lambda p: _natural(str(p.relative_to(folder))))


def _natural(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _frame_number(path: Path, default: int) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else default


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "pairs"


def _write(out_path: Path, items: list[dict], labels: list[str], attrs: dict, blur_attrs: dict,
           jobs: int, progress, names: dict) -> int:
    """Decode ``items`` ({"sharp": path, "blur": {label: path}, "center": int}) into one shard."""
    def load(item):
        sharp = read_rgb(item["sharp"])
        blurs = {lab: read_rgb(p) for lab, p in item["blur"].items()}
        for lab, b in blurs.items():
            if b.shape != sharp.shape:
                raise ImportFailed(f"{item['blur'][lab]} is {b.shape[1]}x{b.shape[0]} but its sharp "
                                   f"image {item['sharp']} is {sharp.shape[1]}x{sharp.shape[0]}")
        return sharp, blurs

    first = load(items[0])
    h, w = first[0].shape[:2]
    writer = ShardWriter(out_path, h, w, labels, attrs=attrs)
    try:
        for lab, a in blur_attrs.items():
            writer.f[f"blur/{lab}"].attrs.update(a)
        results = ordered_map(load, items[1:], jobs)
        for k, item in enumerate(items):
            sharp, blurs = first if k == 0 else next(results)
            if sharp.shape[:2] != (h, w):
                raise ImportFailed(f"{item['sharp']} is {sharp.shape[1]}x{sharp.shape[0]}, the "
                                   f"others in {out_path.name} are {w}x{h}")
            writer.add(sharp, blurs, center=item["center"])
            if progress:
                progress(1)
        for ds_name, values in names.items():
            writer.f.create_dataset(ds_name, data=np.array(values, dtype=object),
                                    dtype=h5py.string_dtype())
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return len(items)


# ---- GoPro -----------------------------------------------------------------------------------

def find_gopro(root: Path, split: str = "all") -> list[tuple[str, Path]]:
    """(split, sequence folder) pairs under a GOPRO_Large root (or a train/test folder itself)."""
    root = Path(root)
    if not root.is_dir():
        raise ImportFailed(f"{root}: no such folder")
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    if splits:
        bases = [(s, root / s) for s in splits if split in ("all", s)]
    elif root.name in ("train", "test"):
        bases = [(root.name, root)] if split in ("all", root.name) else []
    else:
        bases = []
    seqs = [(s, d) for s, base in bases for d in sorted(base.iterdir())
            if d.is_dir() and (d / "sharp").is_dir()]
    if not seqs:
        raise ImportFailed(f"{root}: no GoPro layout found (expected train|test/<SEQ>/{{blur,blur_gamma,"
                           f"sharp}}/NNNNNN.png{'' if split == 'all' else f' for split {split}'})")
    return seqs


def gopro_items(seq: Path) -> tuple[list[dict], list[str]]:
    """Pairs of one GoPro sequence, matched by file name across blur, blur_gamma and sharp."""
    sharp = {p.name: p for p in list_images(seq / "sharp")}
    labels = [lab for lab, (folder, _) in GOPRO_WINDOWS.items() if (seq / folder).is_dir()]
    if not labels:
        raise ImportFailed(f"{seq}: neither blur/ nor blur_gamma/ found")
    blurs = {lab: {p.name: p for p in list_images(seq / GOPRO_WINDOWS[lab][0])} for lab in labels}
    for lab in labels:
        folder = GOPRO_WINDOWS[lab][0]
        missing = sorted(set(sharp) - set(blurs[lab]), key=_natural)
        extra = sorted(set(blurs[lab]) - set(sharp), key=_natural)
        if missing or extra:
            what = []
            if missing:
                what.append(f"{len(missing)} sharp image(s) without {folder}/ partner "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
            if extra:
                what.append(f"{len(extra)} {folder}/ image(s) without sharp partner "
                            f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
            raise ImportFailed(f"{seq}: {'; '.join(what)}")
    if not sharp:
        raise ImportFailed(f"{seq}/sharp: no images")
    items = [{"sharp": p, "blur": {lab: blurs[lab][name] for lab in labels}, "center": _frame_number(p, i)}
             for i, (name, p) in enumerate(sorted(sharp.items(), key=lambda kv: _natural(kv[0])))]
    return items, labels


def import_gopro(root, out, split: str = "all", overwrite: bool = False, jobs: int = 4,
                 progress=None, start=None) -> list[dict]:
    """Import a GoPro dataset: one shard per sequence into ``out``; returns one summary per shard.

    ``start(name, pairs)`` is called before each sequence, ``progress(1)`` after each pair.
    """
    root, out = Path(root), Path(out)
    seqs = find_gopro(root, split)
    plan = []
    for sp, seq in seqs:                 # match and size-check everything before writing anything
        shard = out / f"gopro-{sp}-{_safe(seq.name)}.h5"
        if shard.exists() and is_complete(shard) and not overwrite:
            plan.append((sp, seq, shard, None, None))
            continue
        items, labels = gopro_items(seq)
        check_sizes(items)
        plan.append((sp, seq, shard, items, labels))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for sp, seq, shard, items, labels in plan:
        if items is None:
            results.append({"shard": str(shard), "status": "skipped (complete)", "pairs": None})
            continue
        if start:
            start(shard.name, len(items))
        attrs = {"kind": "gopro", "source_name": root.resolve().name, "split": sp, "sequence": seq.name}
        blur_attrs = {lab: {"averaging_curve": GOPRO_WINDOWS[lab][1], "source_folder": GOPRO_WINDOWS[lab][0]}
                      for lab in labels}
        n = _write(shard, items, labels, attrs, blur_attrs, jobs, progress,
                   {"meta/name": [it["sharp"].name for it in items]})
        results.append({"shard": str(shard), "status": "imported", "pairs": n, "split": sp,
                        "sequence": seq.name, "windows": labels})
    return results


# ---- folder pairs ----------------------------------------------------------------------------

def _key(rel: Path, by_name: bool) -> str:
    stem = _PREFIX.sub("", rel.stem)
    return stem if by_name else str(rel.with_name(stem))


def match_pairs(blur_dir: Path, sharp_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Match images of two folders: by relative path, else by file name (unique on both sides).

    Returns ([(blur, sharp)], notes); raises ImportFailed naming unmatched blurred images.
    """
    blur_dir, sharp_dir = Path(blur_dir), Path(sharp_dir)
    for d in (blur_dir, sharp_dir):
        if not d.is_dir():
            raise ImportFailed(f"{d}: no such folder")
    blurs, sharps = list_images(blur_dir), list_images(sharp_dir)
    if not blurs:
        raise ImportFailed(f"{blur_dir}: no images ({', '.join(sorted(IMAGE_EXTS))})")
    if not sharps:
        raise ImportFailed(f"{sharp_dir}: no images")
    notes = []
    for by_name in (False, True):
        bk = [_key(p.relative_to(blur_dir), by_name) for p in blurs]
        sk = [_key(p.relative_to(sharp_dir), by_name) for p in sharps]
        if len(set(bk)) != len(bk) or len(set(sk)) != len(sk):
            continue                    # names repeat (e.g. REDS frame numbers): need the paths
        smap = dict(zip(sk, sharps))
        matched = [(b, smap[k]) for b, k in zip(blurs, bk) if k in smap]
        if len(matched) == len(blurs):
            unused = len(sharps) - len(matched)
            if unused:
                notes.append(f"{unused} image(s) in {sharp_dir} have no blurred partner (ignored)")
            return matched, notes
    # report against the more forgiving key
    sk = {_key(p.relative_to(sharp_dir), True) for p in sharps}
    lost = [str(p.relative_to(blur_dir)) for p in blurs if _key(p.relative_to(blur_dir), True) not in sk]
    if not lost:
        raise ImportFailed(f"{blur_dir} and {sharp_dir}: file names repeat in different subfolders and the "
                           "subfolders do not match; give folders with the same layout")
    raise ImportFailed(f"{len(lost)} of {len(blurs)} blurred image(s) in {blur_dir} have no sharp image of "
                       f"the same name in {sharp_dir}: {', '.join(lost[:5])}{', ...' if len(lost) > 5 else ''}")


def import_pairs(blur_dir, sharp_dir, out, label: str | None = None, split: str | None = None,
                 pairs_per_shard: int = 1000, overwrite: bool = False, jobs: int = 4,
                 progress=None, start=None) -> dict:
    """Import a blurred/sharp folder pair into shards ``<label>[-WxH][-NNNN].h5`` in ``out``.

    Images of different sizes go to different shards (a shard has one size); more than
    ``pairs_per_shard`` pairs are split over numbered shards. ``label`` (default: BLUR_DIR's name)
    is the window label (``blur/<label>``) and the shard name stem.
    """
    blur_dir, sharp_dir, out = Path(blur_dir), Path(sharp_dir), Path(out)
    label = _safe(label or blur_dir.resolve().name)
    pairs, notes = match_pairs(blur_dir, sharp_dir)
    check_sizes([{"sharp": sp, "blur": {"": bp}} for bp, sp in pairs])
    sizes: dict[tuple[int, int], list[tuple[Path, Path]]] = {}
    for b, s in pairs:
        sizes.setdefault(_image_size(s), []).append((b, s))
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for (w, h), group in sorted(sizes.items()):
        size_tag = f"-{w}x{h}" if len(sizes) > 1 else ""
        parts = [group[i:i + pairs_per_shard] for i in range(0, len(group), pairs_per_shard)] \
            if pairs_per_shard > 0 else [group]
        for j, part in enumerate(parts):
            name = f"{label}{size_tag}{f'-{j:04d}' if len(parts) > 1 else ''}.h5"
            shard = out / name
            if shard.exists() and is_complete(shard) and not overwrite:
                shards.append({"shard": str(shard), "status": "skipped (complete)", "pairs": None})
                continue
            if start:
                start(name, len(part))
            items = [{"sharp": s, "blur": {label: b}, "center": _frame_number(s, k)}
                     for k, (b, s) in enumerate(part)]
            attrs = {"kind": "pairs", "source_name": blur_dir.resolve().name,
                     "blur_dir": str(blur_dir.resolve()), "sharp_dir": str(sharp_dir.resolve())}
            if split:
                attrs["split"] = split
            n = _write(shard, items, [label], attrs, {}, jobs, progress,
                       {"meta/name": [str(b.relative_to(blur_dir)) for b, _ in part],
                        "meta/sharp_name": [str(s.relative_to(sharp_dir)) for _, s in part]})
            shards.append({"shard": str(shard), "status": "imported", "pairs": n, "size": [w, h]})
    return {"label": label, "pairs": len(pairs), "shards": shards, "notes": notes}


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR header; None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return None


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image: from the header of a PNG, else by decoding it."""
    size = _png_size(path)
    if size is None:
        img = read_rgb(path)
        size = (img.shape[1], img.shape[0])
    return size


def check_sizes(items: list[dict]):
    """Fail before writing anything when a blurred PNG differs in size from its sharp PNG."""
    for item in items:
        ss = _png_size(item["sharp"])
        for b in item["blur"].values():
            bs = _png_size(b)
            if ss and bs and ss != bs:
                raise ImportFailed(f"{b} is {bs[0]}x{bs[1]} but its sharp image {item['sharp']} is "
                                   f"{ss[0]}x{ss[1]}")


def ordered_map(fn, items, jobs: int):
    """``map(fn, items)`` on a thread pool, in order, with at most 2 * jobs results in memory."""
    if jobs <= 1:
        yield from map(fn, items)
        return
    pending: collections.deque = collections.deque()
    it = iter(items)
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while True:
                while len(pending) < 2 * jobs:
                    x = next(it, _END)
                    if x is _END:
                        break
                    pending.append(pool.submit(fn, x))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


_END = object()
