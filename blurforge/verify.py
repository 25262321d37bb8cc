"""Check shards against the format (data/README.md): schema, shapes, dtypes, readability, checksums.

``verify_shard`` never raises on a damaged file: every problem becomes a line in its report, so one
bad shard among thousands is named rather than crashing the run.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np

from .shards import ALIGN_FIELDS, ALIGN_OPTIONAL, FORMAT_NAME, FORMAT_VERSION, decode_attr, window_labels

REQUIRED_ATTRS = ("format", "format_version", "tool_version", "created", "color_order", "height",
                  "width", "windows", "num_pairs", "complete")


def _str(v) -> str:
    return str(decode_attr(v))


def _check_array(f, name: str, dtype, shape: tuple, problems: list[str]) -> bool:
    """Existence, dtype and shape of one dataset; True when it is as expected."""
    if name not in f:
        problems.append(f"{name}: missing")
        return False
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        problems.append(f"{name}: not a dataset")
        return False
    if ds.dtype != np.dtype(dtype):
        problems.append(f"{name}: dtype {ds.dtype}, expected {np.dtype(dtype)}")
        return False
    if ds.shape != shape:
        problems.append(f"{name}: shape {ds.shape}, expected {shape}")
        return False
    return True


def _image_checksum(ds: h5py.Dataset, problems: list[str], name: str, rows: int = 4) -> str | None:
    """sha256 of the dataset's bytes, reading every pair (a failed read is a problem, not a crash)."""
    h = hashlib.sha256()
    for i in range(0, ds.shape[0], rows):
        try:
            block = ds[i:i + rows]
        except Exception as e:          # noqa: BLE001 - a damaged chunk can raise anything
            problems.append(f"{name}: pairs {i}-{min(i + rows, ds.shape[0]) - 1} unreadable "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            return None
        h.update(np.ascontiguousarray(block).tobytes())
    return h.hexdigest()


def verify_shard(path, checksums: bool = True) -> dict:
    """Verify one shard. Returns {"shard", "ok", "problems": [str], "pairs", "datasets": [checked]}."""
    path = Path(path)
    report = {"shard": str(path), "ok": False, "problems": [], "pairs": None, "datasets": []}
    problems = report["problems"]
    if not path.is_file():
        problems.append("no such file")
        return report
    try:
        f = h5py.File(path, "r")
    except Exception as e:              # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in msg:
            problems.append(f"truncated file ({msg})")
        else:
            problems.append(f"not a readable HDF5 file ({msg})")
        return report
    try:
        with f:
            _verify_open(f, path, report, checksums)
    except Exception as e:              # noqa: BLE001 - damaged metadata: report, do not crash
        problems.append(f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    report["ok"] = not problems
    return report


def _verify_open(f: h5py.File, path: Path, report: dict, checksums: bool):
    problems = report["problems"]
    missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
    if missing:
        problems.append(f"missing root attributes: {', '.join(missing)}")
    if _str(f.attrs.get("format", "")) != FORMAT_NAME:
        problems.append(f"not a {FORMAT_NAME} file (format = {_str(f.attrs.get('format', ''))!r})")
        return
    try:
        version = int(f.attrs.get("format_version", -1))
    except (TypeError, ValueError):
        version = -1
    if version != FORMAT_VERSION:
        problems.append(f"format_version {version}, this tool reads {FORMAT_VERSION}")
        if version > FORMAT_VERSION or version < 1:
            return
    if not bool(f.attrs.get("complete", False)):
        problems.append("complete is not True (its writer did not finish)")
    if "color_order" in f.attrs and _str(f.attrs["color_order"]) != "RGB":
        problems.append(f"color_order {_str(f.attrs['color_order'])!r}, expected 'RGB'")
    try:
        n, h, w = int(f.attrs["num_pairs"]), int(f.attrs["height"]), int(f.attrs["width"])
        labels = window_labels(f)
    except (KeyError, TypeError, ValueError):
        problems.append("cannot read num_pairs/height/width/windows")
        return
    report["pairs"] = n
    img = (n, h, w, 3)
    images = []
    # uint8, or uint16 in every image dataset of a shard written by extract --bits 16
    depth = np.uint16 if isinstance(f.get("sharp"), h5py.Dataset) and f["sharp"].dtype == np.uint16 else np.uint8
    if _check_array(f, "sharp", depth, img, problems):
        images.append("sharp")
    for lab in labels:
        if _check_array(f, f"blur/{lab}", depth, img, problems):
            images.append(f"blur/{lab}")
    extra = [k for k in f.get("blur", {}) if k not in labels]
    if extra:
        problems.append(f"blur/{', blur/'.join(extra)} not listed in the windows attribute")
    _check_array(f, "center", np.int64, (n,), problems)
    if "camera_curve" in f:
        if _check_array(f, "camera_curve", np.float64, (256,), problems):
            lut = f["camera_curve"][()]
            if not (np.all(np.isfinite(lut)) and np.all(np.diff(lut) > 0)):
                problems.append("camera_curve: not finite and strictly increasing")
    if "meta" in f:
        def check_meta(name, obj):
            if isinstance(obj, h5py.Dataset) and (obj.ndim == 0 or obj.shape[0] != n):
                problems.append(f"meta/{name}: {obj.shape[0] if obj.ndim else 'scalar'} rows, expected {n}")
        f["meta"].visititems(check_meta)
    for lab in f.get("aligned", {}):
        if lab not in labels:
            problems.append(f"aligned/{lab}: no blur/{lab} beside it")
        if _check_array(f, f"aligned/{lab}", depth, img, problems):
            images.append(f"aligned/{lab}")
        if f"align/{lab}" not in f:
            problems.append(f"aligned/{lab}: align/{lab} (warp, gain, score, ok, margin) missing")
            continue
        for k, (dt, tail) in ALIGN_FIELDS.items():
            _check_array(f, f"align/{lab}/{k}", dt, (n,) + tail, problems)
        for k, (dt, tail) in ALIGN_OPTIONAL.items():
            if k in f[f"align/{lab}"]:
                _check_array(f, f"align/{lab}/{k}", dt, (n,) + tail, problems)
    for name in images:
        ds = f[name]
        stored = ds.attrs.get("sha256")
        if stored is None:
            problems.append(f"{name}: no sha256 attribute")
        if checksums:
            digest = _image_checksum(ds, problems, name)
            if digest is not None and stored is not None and _str(stored) != digest:
                problems.append(f"{name}: checksum mismatch (content changed since it was written)")
        else:
            try:                         # still prove that every pair reads: first and last
                ds[0], ds[-1]
            except Exception as e:       # noqa: BLE001
                problems.append(f"{name}: unreadable ({type(e).__name__})")
        report["datasets"].append(name)
