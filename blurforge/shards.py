"""HDF5 shard format: its one home. Writing (atomic), the reading rules every tool relies on, constants.

The format is documented exactly in ``data/README.md``; keep the two in step. Readers (trainer,
``inspect``, ``verify``, ``align``) ask this module which image serves a window label
(:func:`label_source`: ``aligned/<W>`` over ``blur/<W>``), which pairs are usable (``align/<W>/ok``)
and how wide the invalid border is (``align/<W>/margin``), rather than reading those datasets
themselves.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import hashlib
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .atomic import Writeback, atomic_path, tmp_path_for
from .errors import BlurforgeError

FORMAT_NAME = "blurforge-shard"
FORMAT_VERSION = 1
TILE = 256
META_ROWS = 16  # per-pair rows (center, meta) held and appended to their datasets this many at a time
IMAGE_GROUPS = ("blur", "aligned")
# align/<W>/<name>: dtype and per-pair shape, as `blurforge align` writes them
ALIGN_FIELDS = {"warp": (np.float64, (3, 3)), "gain": (np.float32, (3,)), "score": (np.float32, ()),
                "ok": (np.bool_, ()), "margin": (np.int32, ())}
# written by align since the trajectory (shards aligned before it lack them; readers must not need them)
ALIGN_OPTIONAL = {"ecc_px": (np.float32, ())}
ALIGN_DATASETS = tuple(ALIGN_FIELDS) + tuple(ALIGN_OPTIONAL)


class ShardError(BlurforgeError):
    """A shard that cannot be written or read as the format says."""


def image_chunks(height: int, width: int) -> tuple[int, int, int, int]:
    """One pair per chunk, 256x256 tiles: a random 256x256 crop touches at most 4 chunks."""
    return (1, min(TILE, height), min(TILE, width), 3)


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


RESERVE_BYTES = 8 << 20  # kept free for HDF5's metadata, the checksums and the closing flush


def ensure_room(path: str | os.PathLike, need: int = 0):
    """Raise ``OSError(ENOSPC)`` unless the file system holding ``path`` has ``need`` bytes plus
    :data:`RESERVE_BYTES` free. HDF5 crashes the process (segmentation fault) when it cannot flush
    its metadata, so shard writers check before each write instead of letting HDF5 find out."""
    if shutil.disk_usage(path).free < int(need) + RESERVE_BYTES:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def drop_unfinished(f: h5py.File | None, tmp: str | os.PathLike):
    """Close a half-written HDF5 file and delete it. The file is truncated first so that HDF5 has
    room to flush what it holds even on a full disk (it crashes otherwise); it is deleted anyway."""
    try:
        os.truncate(tmp, 0)
    except OSError:
        pass
    if f is not None:
        try:
            f.close()
        except Exception:  # noqa: BLE001 - closing a half-written file may fail in any way
            pass
    Path(tmp).unlink(missing_ok=True)


def no_space(e: BaseException) -> bool:
    """True for an error that says the disk is full (errno, or HDF5's message)."""
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e)


class ShardWriter:
    """Appends pairs to a new shard under a temporary name; ``close()`` renames it into place.

    ``add(sharp, blurs, center, meta)``: ``sharp`` uint8 HxWx3 RGB, ``blurs`` {label: uint8 HxWx3},
    ``meta`` {"path/inside/file": scalar or array} appended row-wise as per-pair metadata.
    ``bits=16``: the images are uint16 (0..65535) instead (``extract --bits 16``).
    Image datasets get a ``sha256`` attribute (content checksum) at close. Nothing is visible under
    the final name until every pair is written and flushed; ``abort()`` (or an exception inside a
    ``with`` block) removes the temporary file. Disk full: the free space is checked before the
    file is made and before each pair (:func:`ensure_room`), so the writer stops with a one-line
    ShardError ("No space left on device") while the file can still be closed and removed.
    """

    def __init__(self, path: str | os.PathLike, height: int, width: int, labels: list[str],
                 attrs: dict | None = None, datasets: dict | None = None, bits: int = 8):
        if bits not in (8, 16):
            raise ShardError(f"images are stored with 8 or 16 bits, not {bits}")
        self.dtype = np.dtype(np.uint16 if bits == 16 else np.uint8)
        self.path = Path(path)
        self.tmp = tmp_path_for(self.path)
        self.height, self.width = int(height), int(width)
        self.labels = [str(lab) for lab in labels]
        self.n = 0
        self._hashes: dict[str, hashlib._Hash] = {}
        self._rows: dict[str, list] = {}   # (pair, row) not yet in the file, by dataset
        self._kinds: dict[str, tuple] = {}  # each per-pair dataset's row dtype and shape
        self.f, self._writeback = None, None
        try:
            ensure_room(self.tmp.parent)
            self.f = h5py.File(self.tmp, "w")
        except OSError as e:
            self._fail(e)
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
            f.create_dataset(name, shape=shape, maxshape=maxshape, dtype=self.dtype, chunks=chunks)
            self._hashes[name] = hashlib.sha256()
        f.create_dataset("center", shape=(0,), maxshape=(None,), dtype=np.int64)
        self._writeback = Writeback(self.tmp)

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

    def _flush_rows(self):
        """Append the held per-pair rows to their datasets, one resize and one write each (a small
        HDF5 append costs about as much as a hundred rows). A dataset is as long as the last pair
        that had its row; pairs without one read 0."""
        for name, rows in self._rows.items():
            if not rows:
                continue
            first, last = rows[0][0], rows[-1][0]
            block = np.stack([v for _, v in rows])
            if name not in self.f:
                self.f.create_dataset(name, shape=(0,) + block.shape[1:], maxshape=(None,) + block.shape[1:],
                                      dtype=block.dtype)
            ds = self.f[name]
            ds.resize(last + 1, axis=0)
            if last - first + 1 == len(rows):
                ds[first:last + 1] = block
            else:
                for (i, _), row in zip(rows, block):
                    ds[i] = row
            rows.clear()

    def _fail(self, e: OSError):
        """Drop the temporary file and raise the one-line ShardError for a write that failed."""
        self._stop_writeback()
        drop_unfinished(self.f, self.tmp)
        why = "No space left on device" if no_space(e) else (e.strerror or str(e))
        raise ShardError(" ".join(f"cannot write {self.path}: {why}".split())) from None

    def add(self, sharp: np.ndarray, blurs: dict, center: int = -1, meta: dict | None = None):
        images = {"sharp": sharp, **{f"blur/{lab}": blurs[lab] for lab in self.labels}}
        rows = {"center": np.asarray(center, np.int64), **{k: np.asarray(v) for k, v in (meta or {}).items()}}
        for name, value in rows.items():
            kind = self._kinds.setdefault(name, (value.dtype, value.shape))
            if kind != (value.dtype, value.shape):
                raise ShardError(f"{name}: expected {kind[0]} {kind[1]} per pair, got {value.dtype} {value.shape}")
        try:  # twice the pixels: room for the chunks and their index, besides the reserve
            ensure_room(self.tmp.parent, 2 * sum(np.asarray(img).nbytes for img in images.values()))
        except OSError as e:
            self._fail(e)
        for name, img in images.items():
            if img.shape != (self.height, self.width, 3) or img.dtype != self.dtype:
                raise ShardError(f"{name}: expected {self.dtype} {(self.height, self.width, 3)}, "
                                 f"got {img.dtype} {img.shape}")
            img = np.ascontiguousarray(img)
            self._append(name, img)
            self._hashes[name].update(memoryview(img).cast("B"))     # the array's bytes, not a copy
        for name, value in rows.items():
            self._rows.setdefault(name, []).append((self.n, value))
        self.n += 1
        try:
            if self.n % META_ROWS == 0 or self.n == 1:   # the first pair makes the datasets, beside the work
                self._flush_rows()
        except OSError as e:
            self._fail(e)
        self._writeback.poke()

    def _stop_writeback(self):
        if self._writeback is not None:
            self._writeback.stop()

    def close(self) -> Path:
        """Finish the file (pair count, checksums, ``complete``) and move it into place atomically."""
        try:
            self._flush_rows()
        except OSError as e:
            self._fail(e)
        self._stop_writeback()
        with atomic_path(self.path, self.tmp):
            f = self.f
            f.attrs["num_pairs"] = self.n
            for name, h in self._hashes.items():
                f[name].attrs["sha256"] = h.hexdigest()
            f.attrs["complete"] = True
            f.close()
        return self.path

    def abort(self):
        """Drop the unfinished file; nothing appears under the final name."""
        self._stop_writeback()
        drop_unfinished(self.f, self.tmp)


def is_complete(path: str | os.PathLike) -> bool:
    """True for a readable shard whose writer finished (resume skips these)."""
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete", False)) and f.attrs.get("format") == FORMAT_NAME
    except (OSError, KeyError):
        return False


def open_shard(path: str | os.PathLike, uint16: bool = False) -> h5py.File:
    """Open a shard read-only, with a one-line ShardError for anything that is not one.

    Shards of 16-bit images (``extract --bits 16``) are refused unless the caller says it reads
    them (``uint16=True``, scaling with :func:`image_max`): a reader written for uint8 would
    otherwise misread them silently."""
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
    if not uint16 and "sharp" in f and f["sharp"].dtype == np.uint16:
        f.close()
        raise ShardError(f"{path}: 16-bit images (extract --bits 16), which this command does not read; "
                         "extract 8-bit shards for it")
    return f


def image_max(dtype) -> int:
    """The code of full white for an image dtype: 255 (uint8) or 65535 (uint16); ``img / image_max``
    is the same [0, 1] scale for both."""
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ShardError(f"images are uint8 or uint16, not {dtype}")
    return int(np.iinfo(dtype).max)


def to_unit(img: np.ndarray) -> np.ndarray:
    """An 8- or 16-bit image as float32 in [0, 1]."""
    return np.asarray(img, np.float32) / np.float32(image_max(np.asarray(img).dtype))


# ---- reading ----------------------------------------------------------------------------------

def decode_attr(v):
    """An HDF5 attribute as plain Python: bytes -> str, numpy scalars -> int/float/bool/str,
    arrays -> lists (strings decoded), so it prints and serialises as JSON."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [decode_attr(x) for x in v.tolist()] if v.ndim else decode_attr(v[()])
    if isinstance(v, np.generic):
        return decode_attr(v.item())
    if isinstance(v, list):
        return [decode_attr(x) for x in v]
    return v


def attr_str(obj, name: str, default: str = "") -> str:
    """A string attribute of a file, group or dataset (``default`` when absent)."""
    return str(decode_attr(obj.attrs[name])) if name in obj.attrs else default


def window_labels(f: h5py.File) -> list[str]:
    """The blur labels of a shard in their recorded order ("36", "73", "gopro", ...)."""
    return [str(w) for w in decode_attr(f.attrs["windows"])]


@dataclasses.dataclass(frozen=True)
class ShardHeader:
    """What the root attributes say about a shard's contents."""
    height: int
    width: int
    num_pairs: int
    labels: list[str]
    complete: bool
    sharp_sha256: str


def read_header(f: h5py.File) -> ShardHeader:
    """Size, pair count (``num_pairs``, else the rows of ``sharp``), labels, completeness and the
    sharp checksum; a ShardError naming the missing field for a file that lacks one."""
    missing = [k for k in ("height", "width", "windows") if k not in f.attrs] + \
        [k for k in ("sharp",) if k not in f]
    if missing:
        raise ShardError(f"{f.filename}: missing {', '.join(missing)}; not a complete shard")
    n = int(f.attrs["num_pairs"]) if "num_pairs" in f.attrs else int(f["sharp"].shape[0])
    return ShardHeader(int(f.attrs["height"]), int(f.attrs["width"]), n, window_labels(f),
                       bool(f.attrs.get("complete", False)), attr_str(f["sharp"], "sha256"))


@dataclasses.dataclass(frozen=True)
class LabelSource:
    """Where the blurred images of one window label come from, pair by pair.

    ``dataset``: ``aligned/<W>`` where ``blurforge align`` wrote it, else ``blur/<W>``.
    ``ok``: bool [N], False for pairs that ``align/<W>/ok`` rejects (readers skip them).
    ``margin``: int32 [N], the border of ``dataset`` that is invalid (0 unless aligned).
    """
    label: str
    dataset: str
    ok: np.ndarray
    margin: np.ndarray

    @property
    def aligned(self) -> bool:
        return self.dataset.startswith("aligned/")

    def usable(self) -> np.ndarray:
        """Indices of the pairs a reader may use."""
        return np.flatnonzero(self.ok)


def label_source(f: h5py.File, label: str, n: int | None = None) -> LabelSource:
    """The format's reading rule for window ``label``: aligned beats blur, ok flags, margins."""
    n = int(f["sharp"].shape[0]) if n is None else int(n)
    name = f"aligned/{label}" if f"aligned/{label}" in f else f"blur/{label}"
    if name not in f:
        raise ShardError(f"{f.filename}: window {label} listed but {name} is missing")
    ok = np.ones(n, bool)
    if f"align/{label}/ok" in f:
        ok &= np.asarray(f[f"align/{label}/ok"][:n], bool)
    margin = np.zeros(n, np.int32)
    if name.startswith("aligned/") and f"align/{label}/margin" in f:
        margin = np.asarray(f[f"align/{label}/margin"][:n], np.int32)
    return LabelSource(label, name, ok, margin)


@dataclasses.dataclass(frozen=True)
class Alignment:
    """``align/<W>`` of an aligned window: its settings and per-pair results (see data/README.md)."""
    source: LabelSource
    motion: str
    score: np.ndarray       # float32 [N]
    gain: np.ndarray        # float32 [N, 3]
    warp: np.ndarray        # float64 [N, 3, 3]
    attrs: dict

    @property
    def ok(self) -> np.ndarray:
        return self.source.ok

    @property
    def margin(self) -> np.ndarray:
        return self.source.margin


def alignment(f: h5py.File, label: str) -> Alignment | None:
    """The alignment of window ``label``, or None where ``blurforge align`` has not run on it."""
    if f"aligned/{label}" not in f or f"align/{label}" not in f:
        return None
    src = label_source(f, label)
    g = f[f"align/{label}"]
    n = len(src.ok)

    def field(name):
        dtype, tail = ALIGN_FIELDS[name]
        return np.asarray(g[name][()], dtype) if name in g else np.zeros((n,) + tail, dtype)
    return Alignment(src, attr_str(g, "motion"), field("score"), field("gain"), field("warp"),
                     {k: decode_attr(v) for k, v in g.attrs.items()})


def valid_mask(shape: tuple[int, int], margin: int) -> np.ndarray:
    """bool [H, W]: the pixels of an aligned image outside its invalid ``margin`` border."""
    m = np.zeros(shape, bool)
    h, w = shape
    if 2 * margin < min(h, w):
        m[margin:h - margin, margin:w - margin] = True
    return m


def file_map(path: str | os.PathLike) -> np.memmap | None:
    """A read-only byte map of a shard for :class:`TileReader` (None where it cannot be mapped)."""
    try:
        return np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError):
        return None


class TileReader:
    """Reads windows of one image dataset (``[N, H, W, 3]`` uint8).

    For the format's layout (uncompressed, no filters, one pair per chunk, tile chunks) the chunks
    are read straight from a read-only memory map of the file (``file_map``): a 256x256 crop is at
    most four memcpy's, several times faster than going through HDF5. Anything else (compressed,
    contiguous, unallocated chunks, no map) falls back to h5py slicing.
    """

    def __init__(self, ds: h5py.Dataset, mm: np.memmap | None = None):
        self.ds = ds
        self.mm = None
        self.offsets: dict[tuple[int, int, int], int] = {}
        try:
            fast = (mm is not None and ds.chunks is not None and ds.dtype == np.uint8 and ds.ndim == 4
                    and ds.chunks[0] == 1 and ds.chunks[3] == ds.shape[3]
                    and ds.id.get_create_plist().get_nfilters() == 0)
        except Exception:  # noqa: BLE001  # pragma: no cover - exotic HDF5 builds
            fast = False
        if fast:
            self.mm = mm
            self.th, self.tw, self.c = ds.chunks[1], ds.chunks[2], ds.chunks[3]
            self.csize = self.th * self.tw * self.c

    def _tile(self, n, cy, cx):
        key = (n, cy, cx)
        off = self.offsets.get(key)
        if off is None:
            info = self.ds.id.get_chunk_info_by_coord((n, cy * self.th, cx * self.tw, 0))
            if info.byte_offset is None or info.size != self.csize:
                return None
            off = self.offsets[key] = int(info.byte_offset)
        return self.mm[off:off + self.csize].reshape(self.th, self.tw, self.c)

    def read(self, n: int, y: int, x: int, h: int, w: int, out: np.ndarray | None = None) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]`` of pair ``n`` (into ``out`` when given)."""
        if self.mm is not None:
            dst = out if out is not None else np.empty((h, w, self.c), np.uint8)
            ok = True
            for cy in range(y // self.th, (y + h - 1) // self.th + 1):
                y0, y1 = max(y, cy * self.th), min(y + h, (cy + 1) * self.th)
                for cx in range(x // self.tw, (x + w - 1) // self.tw + 1):
                    x0, x1 = max(x, cx * self.tw), min(x + w, (cx + 1) * self.tw)
                    tile = self._tile(n, cy, cx)
                    if tile is None:
                        ok = False
                        break
                    dst[y0 - y:y1 - y, x0 - x:x1 - x] = tile[y0 - cy * self.th:y1 - cy * self.th,
                                                             x0 - cx * self.tw:x1 - cx * self.tw]
                if not ok:
                    break
            if ok:
                return dst
        a = self.ds[n, y:y + h, x:x + w]
        if out is not None:
            np.copyto(out, a)
            return out
        return a
