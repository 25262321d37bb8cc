"""HDF5 shard format: writing (atomic), reading and the constants every tool relies on.

The format is documented exactly in ``data/README.md``; keep the two in step.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import BlurforgeError

FORMAT_NAME = "blurforge-shard"
FORMAT_VERSION = 1
TILE = 256
IMAGE_GROUPS = ("blur", "aligned")


class ShardError(BlurforgeError):
    """A shard that cannot be written or read as the format says."""


def image_chunks(height: int, width: int) -> tuple[int, int, int, int]:
    """One pair per chunk, 256x256 tiles: a random 256x256 crop touches at most 4 chunks."""
    return (1, min(TILE, height), min(TILE, width), 3)


def tmp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def file_sha256(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def dataset_sha256(ds: h5py.Dataset, rows: int = 8) -> str:
    """sha256 of a dataset's C-order bytes, read a few rows at a time (the checksum verify recomputes)."""
    h = hashlib.sha256()
    for i in range(0, ds.shape[0], rows):
        h.update(np.ascontiguousarray(ds[i:i + rows]).tobytes())
    return h.hexdigest()


class ShardWriter:
    """Appends pairs to a new shard under a temporary name; ``close()`` renames it into place.

    ``add(sharp, blurs, center, meta)``: ``sharp`` uint8 HxWx3 RGB, ``blurs`` {label: uint8 HxWx3},
    ``meta`` {"path/inside/file": scalar or array} appended row-wise as per-pair metadata.
    Image datasets get a ``sha256`` attribute (content checksum) at close. Nothing is visible under
    the final name until every pair is written and flushed; ``abort()`` (or an exception inside a
    ``with`` block) removes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, height: int, width: int, labels: list[str],
                 attrs: dict | None = None, datasets: dict | None = None):
        self.path = Path(path)
        self.tmp = tmp_path_for(self.path)
        self.height, self.width = int(height), int(width)
        self.labels = [str(lab) for lab in labels]
        self.n = 0
        self._hashes: dict[str, hashlib._Hash] = {}
        try:
            self.f = h5py.File(self.tmp, "w")
        except OSError as e:
            raise ShardError(f"cannot write {self.tmp.parent}: {e.strerror or e}") from None
        f = self.f
        f.attrs.update({
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool_version": __version__,
            "created": utc_now(), "color_order": "RGB", "height": self.height, "width": self.width,
            "windows": np.array(self.labels, dtype=h5py.string_dtype()),
        })
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        for k, v in (datasets or {}).items():
            f.create_dataset(k, data=v)
        chunks = image_chunks(self.height, self.width)
        shape = (0, self.height, self.width, 3)
        maxshape = (None, self.height, self.width, 3)
        for name in ["sharp"] + [f"blur/{lab}" for lab in self.labels]:
            f.create_dataset(name, shape=shape, maxshape=maxshape, dtype=np.uint8, chunks=chunks)
            self._hashes[name] = hashlib.sha256()
        f.create_dataset("center", shape=(0,), maxshape=(None,), dtype=np.int64)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def _append(self, name: str, value, dtype=None):
        value = np.asarray(value, dtype=dtype)
        if name not in self.f:
            self.f.create_dataset(name, shape=(0,) + value.shape, maxshape=(None,) + value.shape,
                                  dtype=value.dtype)
        ds = self.f[name]
        ds.resize(self.n + 1, axis=0)
        ds[self.n] = value

    def add(self, sharp: np.ndarray, blurs: dict, center: int = -1, meta: dict | None = None):
        images = {"sharp": sharp, **{f"blur/{lab}": blurs[lab] for lab in self.labels}}
        for name, img in images.items():
            if img.shape != (self.height, self.width, 3) or img.dtype != np.uint8:
                raise ShardError(f"{name}: expected uint8 {(self.height, self.width, 3)}, "
                                 f"got {img.dtype} {img.shape}")
            img = np.ascontiguousarray(img)
            self._append(name, img)
            self._hashes[name].update(img.tobytes())
        self._append("center", center, np.int64)
        for name, value in (meta or {}).items():
            self._append(name, value)
        self.n += 1

    def close(self) -> Path:
        f = self.f
        f.attrs["num_pairs"] = self.n
        for name, h in self._hashes.items():
            f[name].attrs["sha256"] = h.hexdigest()
        f.attrs["complete"] = True
        f.flush()
        f.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self):
        try:
            self.f.close()
        except Exception:
            pass
        self.tmp.unlink(missing_ok=True)


def is_complete(path: str | os.PathLike) -> bool:
    """True for a readable shard whose writer finished (resume skips these)."""
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete", False)) and f.attrs.get("format") == FORMAT_NAME
    except (OSError, KeyError):
        return False


def open_shard(path: str | os.PathLike) -> h5py.File:
    """Open a shard read-only, with a one-line ShardError for anything that is not one."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise ShardError(f"{path}: no such file") from None
    except OSError as e:
        raise ShardError(f"{path}: not a readable HDF5 file ({e})") from None
    if f.attrs.get("format") != FORMAT_NAME:
        f.close()
        raise ShardError(f"{path}: not a {FORMAT_NAME} file")
    version = int(f.attrs.get("format_version", -1))
    if version > FORMAT_VERSION:
        f.close()
        raise ShardError(f"{path}: format version {version} is newer than this tool ({FORMAT_VERSION})")
    return f


def window_labels(f: h5py.File) -> list[str]:
    """The blur labels of a shard in their recorded order ("36", "73", "gopro", ...)."""
    return [w.decode() if isinstance(w, bytes) else str(w) for w in f.attrs["windows"]]
