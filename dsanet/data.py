"""Datasets over blurforge shards (format: ``data/README.md``) for training and validating DSANet.

Training (:class:`CropDataset`): each item is a random ``crop x crop`` window cut at the same place
from a blurred image and its sharp target, then flipped / rotated by a random element of the 8
symmetries of the square. With ``focus`` > 0 that fraction of the crops is placed where the blur
is: the best of 8 random windows by mean ``|blur - sharp|`` (a 1/16-scale map per pair). Which
blur (``blur/36``, ``blur/73``, ``blur/gopro`` ...) an item uses is drawn with configurable
per-label weights. Which image serves a label, which pairs are usable and their invalid borders are
the format's rules, read through :func:`blurforge.shards.label_source` (``aligned/<W>`` over
``blur/<W>``, pairs flagged ``align/<W>/ok = False`` skipped, crops clear of ``align/<W>/margin``);
pixels are read with :class:`blurforge.shards.TileReader`. This module samples and augments.

Determinism: item ``g`` (any non-negative integer) belongs to epoch ``g // len(ds)`` and draws all
its randomness from ``numpy.random.default_rng([seed, rank, epoch, g % len(ds)])``. The trainer
asks for items ``step * batch ... step * batch + batch - 1``, so the crops a run sees depend only on
(seed, rank, step), never on the number of loader workers, and a resumed run sees exactly the crops
the uninterrupted one would have seen.

Files: only paths travel with a dataset; each process (main or DataLoader worker, forked or spawned)
opens the shards it needs on first use and keeps at most ``MAX_OPEN`` of them open.

Items are ``(blur, sharp, label_index)`` with uint8 ``[H, W, 3]`` tensors (RGB, the shard's own
layout). :func:`to_model_input` turns a batch into float ``[B, 3, H, W]`` in [0, 1] on the device;
because the permute of an NHWC tensor is channels_last, no copy is made for that memory format.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from blurforge.errors import BlurforgeError
from blurforge.shards import ShardError, TileReader, file_map, label_source, open_shard, read_header

MAX_OPEN = 64
FOCUS_CANDIDATES = 8      # focused crops: best of this many random windows
FOCUS_SCALE = 16          # ... scored on a 1/16-resolution map of |blur - sharp|


class DataError(BlurforgeError):
    """Training/evaluation data that cannot be used as asked (one-line message)."""


# ----------------------------------------------------------------------------------------------
# Label weights
# ----------------------------------------------------------------------------------------------

def parse_windows(spec: str | None) -> dict[str, float] | None:
    """``"36,73"`` -> equal weights, ``"36:1,73:2"`` -> weights; ``None``/``""``/``"all"`` -> None (all labels)."""
    if spec is None:
        return None
    spec = str(spec).strip()
    if spec in ("", "all", "*"):
        return None
    out: dict[str, float] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        label, _, w = part.partition(":")
        label = label.strip()
        try:
            weight = float(w) if w.strip() else 1.0
        except ValueError:
            raise DataError(f"--windows: bad weight in {part!r} (use LABEL or LABEL:WEIGHT)") from None
        if not label or weight < 0 or not np.isfinite(weight):
            raise DataError(f"--windows: bad entry {part!r} (use LABEL or LABEL:WEIGHT, weight >= 0)")
        out[label] = weight
    if not out or sum(out.values()) <= 0:
        raise DataError(f"--windows {spec!r}: no label with a positive weight")
    return out


# ----------------------------------------------------------------------------------------------
# Index: what can be read from which shard
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ShardInfo:
    path: str
    height: int
    width: int
    num_pairs: int
    labels: list[str]
    source: dict[str, str]          # label -> dataset name ("aligned/73" or "blur/73")
    fingerprint: str                # name, size, pairs, windows, sharp checksum


@dataclasses.dataclass
class LabelPairs:
    shard: np.ndarray               # int32 [K] index into ShardIndex.shards
    pair: np.ndarray                # int32 [K] pair index inside the shard
    margin: np.ndarray              # int32 [K] invalid border from alignment (0 if none)


class ShardIndex:
    """Scans shards once (in the main process) and records every usable (shard, pair, label).

    ``labels``: restrict to these labels (each must exist in at least one shard), or None for all.
    ``min_size``: pairs whose valid area (image minus alignment margin) is smaller than this are
    left out. Raises :class:`DataError` with one line for anything unusable.
    """

    def __init__(self, paths, labels=None, min_size: int = 0):
        paths = [str(p) for p in paths]
        if not paths:
            raise DataError("no shards given")
        seen = set()
        self.shards: list[ShardInfo] = []
        per_label: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        self.skipped_flagged = 0
        self.skipped_small = 0
        for p in paths:
            key = os.path.realpath(p)
            if key in seen:
                continue
            seen.add(key)
            info, entries = self._scan(p, min_size)
            self.shards.append(info)
            for lab, (pairs, margins) in entries.items():
                per_label.setdefault(lab, []).append((len(self.shards) - 1, pairs, margins))
        available = sorted(per_label)
        if labels is not None:
            missing = [lab for lab in labels if lab not in per_label]
            if missing:
                have = ", ".join(sorted({lab for s in self.shards for lab in s.labels})) or "none"
                raise DataError(f"window label(s) {', '.join(missing)} not in any shard "
                                f"(labels present: {have})")
            available = [lab for lab in labels]
        self.labels: list[str] = available
        self.pairs: dict[str, LabelPairs] = {}
        for lab in self.labels:
            parts = per_label.get(lab, [])
            shard = np.concatenate([np.full(len(p), i, np.int32) for i, p, _ in parts]) if parts else \
                np.zeros(0, np.int32)
            pair = np.concatenate([p for _, p, _ in parts]).astype(np.int32) if parts else np.zeros(0, np.int32)
            margin = np.concatenate([m for _, _, m in parts]).astype(np.int32) if parts else \
                np.zeros(0, np.int32)
            self.pairs[lab] = LabelPairs(shard, pair, margin)
        empty = [lab for lab in self.labels if len(self.pairs[lab].pair) == 0]
        if len(empty) == len(self.labels):
            why = []
            if self.skipped_flagged:
                why.append(f"{self.skipped_flagged} flagged align/<W>/ok = False")
            if self.skipped_small:
                sizes = ", ".join(sorted({f"{s.width}x{s.height}" for s in self.shards})[:3])
                why.append(f"{self.skipped_small} with images ({sizes}) smaller than the {min_size}px crop "
                           "after any alignment margin; use a smaller --crop")
            raise DataError("no usable pairs in the shards" + (f" ({'; '.join(why)})" if why else ""))

    def _scan(self, path: str, min_size: int):
        try:
            f = open_shard(path)
        except ShardError as e:
            raise DataError(str(e)) from None
        try:
            head = read_header(f)
            if not head.complete:
                raise DataError(f"{path}: shard is incomplete (writer did not finish)")
            h, w, n = head.height, head.width, head.num_pairs
            source, entries = {}, {}
            for lab in head.labels:
                src = label_source(f, lab, n)
                source[lab] = src.dataset
                keep = src.ok.copy()
                margins = src.margin
                flagged = int((~keep).sum())
                small = keep & ((h - 2 * margins < min_size) | (w - 2 * margins < min_size))
                keep &= ~small
                self.skipped_flagged += flagged
                self.skipped_small += int(small.sum())
                pairs = np.nonzero(keep)[0].astype(np.int32)
                entries[lab] = (pairs, margins[pairs])
            st = os.stat(path)
            fp = f"{Path(path).name}|{st.st_size}|{n}|{','.join(head.labels)}|{head.sharp_sha256}"
            return ShardInfo(str(path), h, w, n, head.labels, source, fp), entries
        except ShardError as e:
            raise DataError(str(e)) from None
        finally:
            f.close()

    def fingerprint(self) -> str:
        """sha256 over each shard's name, size, pair count, labels and sharp-image checksum (sorted)."""
        h = hashlib.sha256()
        for fp in sorted(s.fingerprint for s in self.shards):
            h.update(fp.encode() + b"\n")
        return h.hexdigest()[:16]

    def num_pairs(self) -> int:
        """Distinct sharp pairs with at least one usable window (the size of one epoch)."""
        used = set()
        for lp in self.pairs.values():
            used.update(zip(lp.shard.tolist(), lp.pair.tolist()))
        return len(used)

    def counts(self) -> dict[str, int]:
        return {lab: int(len(self.pairs[lab].pair)) for lab in self.labels}


# ----------------------------------------------------------------------------------------------
# Per-process lazy file handles
# ----------------------------------------------------------------------------------------------

class _Handles:
    """Open shards on demand in the current process; forgets handles inherited through fork."""

    def __init__(self):
        self.pid = None
        self.files: OrderedDict[str, tuple] = OrderedDict()

    def reader(self, path: str, name: str) -> TileReader:
        if self.pid != os.getpid():      # new process (fork): never reuse the parent's HDF5 handles
            self.files = OrderedDict()
            self.pid = os.getpid()
        entry = self.files.get(path)
        if entry is None:
            try:
                f = open_shard(path)
            except ShardError as e:
                raise DataError(str(e)) from None
            entry = (f, {}, file_map(path))
            self.files[path] = entry
            while len(self.files) > MAX_OPEN:
                _, (old, _, _) = self.files.popitem(last=False)
                try:
                    old.close()
                except Exception:
                    pass
        else:
            self.files.move_to_end(path)
        f, cache, mm = entry
        rd = cache.get(name)
        if rd is None:
            try:
                ds = f[name]
            except KeyError:
                raise DataError(f"{path}: {name} is missing") from None
            rd = cache[name] = TileReader(ds, mm)
        return rd

    def close(self):
        if self.pid == os.getpid():
            for f, _, _ in self.files.values():
                try:
                    f.close()
                except Exception:
                    pass
        self.files = OrderedDict()


# ----------------------------------------------------------------------------------------------
# Training crops
# ----------------------------------------------------------------------------------------------

def _augment(a: np.ndarray, code: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Apply one of the 8 symmetries of the square to an HWC uint8 array: code bit 2 = transpose,
    bit 1 = flip rows (upside down), bit 0 = flip columns (mirror). Writes into ``dst`` if given."""
    if code & 4:
        a = cv2.transpose(a) if a.shape[2] in (1, 3, 4) else np.ascontiguousarray(a.transpose(1, 0, 2))
    flip = code & 3
    if flip:
        fc = {1: 1, 2: 0, 3: -1}[flip]
        if dst is None:
            return cv2.flip(a, fc)
        r = cv2.flip(a, fc, dst=dst)
        if not np.shares_memory(r, dst):  # pragma: no cover - OpenCV reallocated
            np.copyto(dst, r)
        return dst
    if dst is not None:
        np.copyto(dst, a)
        return dst
    return a


def _shared_uint8(shape) -> torch.Tensor:
    """uint8 tensor; inside a DataLoader worker it lives in shared memory (no copy when sent)."""
    if torch.utils.data.get_worker_info() is not None:
        n = int(np.prod(shape))
        try:
            storage = torch.UntypedStorage._new_shared(n)
            return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)
        except Exception:  # pragma: no cover - private API changed
            pass
    return torch.empty(shape, dtype=torch.uint8)


def collate(batch):
    """DataLoader collate_fn for :class:`CropDataset` (which returns whole batches itself)."""
    if isinstance(batch, _Slot) or (isinstance(batch, tuple) and len(batch) == 3 and
                                    isinstance(batch[0], torch.Tensor) and batch[0].dim() == 4):
        return batch
    return torch.utils.data.default_collate(batch)


class CropDataset(Dataset):
    """Random aligned crop pairs; see the module docstring for the determinism contract.

    ``weights``: {label: weight} (labels must be in the index), or None for equal weights over the
    index's labels. ``epoch_len``: nominal epoch size (default: the number of distinct sharp pairs).
    """

    def __init__(self, index: ShardIndex, crop: int = 256, weights: dict[str, float] | None = None,
                 seed: int = 0, rank: int = 0, augment: bool = True, epoch_len: int | None = None,
                 focus: float = 0.0):
        self.index = index
        self.focus = float(focus)
        if not 0.0 <= self.focus <= 1.0:
            raise DataError(f"focus {focus} must be between 0 and 1")
        self._err_cache: OrderedDict = OrderedDict()
        self.crop = int(crop)
        if self.crop < 8:
            raise DataError(f"crop {crop} is too small")
        labels = [lab for lab in index.labels if len(index.pairs[lab].pair) > 0]
        if weights is None:
            weights = {lab: 1.0 for lab in labels}
        unknown = [lab for lab in weights if lab not in index.labels]
        if unknown:
            raise DataError(f"window label(s) {', '.join(unknown)} not in any shard "
                            f"(labels present: {', '.join(index.labels)})")
        self.labels = [lab for lab in labels if weights.get(lab, 0) > 0]
        if not self.labels:
            raise DataError("no usable pairs for the selected window labels")
        w = np.array([weights[lab] for lab in self.labels], np.float64)
        self.probs = w / w.sum()
        self._cum = np.cumsum(self.probs)
        self._label_index = {lab: index.labels.index(lab) for lab in index.labels}
        self.label_ids = [index.labels.index(lab) for lab in self.labels]
        self.seed, self.rank = int(seed), int(rank)
        self.augment = bool(augment)
        self.epoch_len = int(epoch_len or max(1, index.num_pairs()))
        for lab in self.labels:
            lp = index.pairs[lab]
            for s in np.unique(lp.shard):
                info = index.shards[int(s)]
                m = int(lp.margin[lp.shard == s].min())
                if min(info.height, info.width) - 2 * m < self.crop:
                    raise DataError(f"{info.path}: image {info.width}x{info.height} is smaller than the "
                                    f"{self.crop}px crop; use a smaller --crop")
        self._h = _Handles()

    def __len__(self):
        return self.epoch_len

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_h"] = _Handles()
        d["_err_cache"] = OrderedDict()
        return d

    def sample(self, g: int):
        """The (label, shard, pair, y, x, symmetry) that item ``g`` reads: a function of g (and, for
        focused crops, of the shard's pixels) only."""
        epoch, i = divmod(int(g), self.epoch_len)
        u = np.random.default_rng([self.seed, self.rank, epoch, i]).random(6 + 2 * FOCUS_CANDIDATES)
        li = min(int(np.searchsorted(self._cum, u[0], side="right")), len(self.labels) - 1)
        lab = self.labels[li]
        lp = self.index.pairs[lab]
        k = min(int(u[1] * len(lp.pair)), len(lp.pair) - 1)
        s, p, m = int(lp.shard[k]), int(lp.pair[k]), int(lp.margin[k])
        info = self.index.shards[s]
        c = self.crop
        ny, nx = info.height - 2 * m - c + 1, info.width - 2 * m - c + 1
        y = m + min(int(u[2] * ny), ny - 1)
        x = m + min(int(u[3] * nx), nx - 1)
        code = min(int(u[4] * 8), 7) if self.augment else 0
        if self.focus > 0 and u[5] < self.focus and (ny > 1 or nx > 1):
            # best of FOCUS_CANDIDATES random windows by mean |blur - sharp| (coarse map, O(1) each)
            integ, f = self._error_map(lab, s, p)
            ys = m + np.minimum((u[6::2] * ny).astype(int), ny - 1)
            xs = m + np.minimum((u[7::2] * nx).astype(int), nx - 1)
            y0, x0 = ys // f, xs // f
            y1 = np.maximum(y0 + 1, (ys + c) // f)
            x1 = np.maximum(x0 + 1, (xs + c) // f)
            score = integ[y1, x1] - integ[y0, x1] - integ[y1, x0] + integ[y0, x0]
            j = int(np.argmax(score))
            y, x = int(ys[j]), int(xs[j])
        return lab, s, p, y, x, code

    def _error_map(self, lab, s, p):
        """Integral image of mean |blur - sharp| at 1/FOCUS_SCALE resolution (cached per process)."""
        key = (lab, s, p)
        hit = self._err_cache.get(key)
        if hit is not None:
            self._err_cache.move_to_end(key)
            return hit
        info = self.index.shards[s]
        h, w = info.height, info.width
        b = self._h.reader(info.path, info.source[lab]).read(p, 0, 0, h, w)
        sh = self._h.reader(info.path, "sharp").read(p, 0, 0, h, w)
        diff = cv2.absdiff(b, sh).astype(np.float32).mean(axis=2)
        f = FOCUS_SCALE
        small = cv2.resize(diff, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        integ = cv2.integral(small, sdepth=cv2.CV_64F)
        # coordinates beyond the coarse map (image size not a multiple of f) clamp to its edge
        integ = np.pad(integ, ((0, h // f + 2 - integ.shape[0] + 1), (0, w // f + 2 - integ.shape[1] + 1)),
                       mode="edge")
        self._err_cache[key] = (integ, f)
        while len(self._err_cache) > 4096:
            self._err_cache.popitem(last=False)
        return integ, f

    def _read(self, g, blur_dst=None, sharp_dst=None):
        lab, s, p, y, x, code = self.sample(g)
        info = self.index.shards[s]
        c = self.crop
        direct = code == 0
        blur = self._h.reader(info.path, info.source[lab]).read(p, y, x, c, c, blur_dst if direct else None)
        sharp = self._h.reader(info.path, "sharp").read(p, y, x, c, c, sharp_dst if direct else None)
        if not direct:
            blur = _augment(blur, code, blur_dst)
            sharp = _augment(sharp, code, sharp_dst)
        return blur, sharp, self._label_index[lab]

    def __getitem__(self, g):
        blur, sharp, li = self._read(g)
        return torch.from_numpy(np.ascontiguousarray(blur)), torch.from_numpy(np.ascontiguousarray(sharp)), li

    def __getitems__(self, gs):
        """A whole batch at once, written straight into batch buffers: in a DataLoader worker a
        reusable shared-memory slot of the loader's :class:`SlotPool` when one is free (only the
        slot number then travels), else fresh shared memory."""
        n, c = len(gs), self.crop
        pool, slot = getattr(self, "_pool", None), None
        info = torch.utils.data.get_worker_info()
        if pool is not None and info is not None and n <= pool.batch and c == pool.crop:
            slot = pool.acquire(info.id)
        if slot is not None:
            blur, sharp = pool.blur[slot, :n], pool.sharp[slot, :n]
        else:
            blur, sharp = _shared_uint8((n, c, c, 3)), _shared_uint8((n, c, c, 3))
        bn, sn = blur.numpy(), sharp.numpy()
        labels = torch.empty(n, dtype=torch.int64)
        for k, g in enumerate(gs):
            _, _, labels[k] = self._read(g, bn[k], sn[k])
        if slot is not None:
            return _Slot(slot, n, labels)
        return blur, sharp, labels


class _Slot:
    """What a worker sends instead of pixels when the batch sits in a pool slot."""

    def __init__(self, slot, n, labels):
        self.slot, self.n, self.labels = slot, n, labels


class SlotPool:
    """Shared-memory batch buffers reused between DataLoader workers and the main process.

    Fresh shared memory costs a page fault per 4 KiB in the worker (here ~4 ms per 3 MB batch,
    more than reading the crops); reusing a few slots per worker avoids it. A worker takes a free
    slot (flag 0 -> 1), fills it and sends only its number; the main process copies the batch out
    (into pinned memory when asked) and frees the slot at once, so nothing handed to the caller
    ever aliases a slot. With no free slot the worker falls back to fresh memory.
    """

    def __init__(self, workers: int, per_worker: int, batch: int, crop: int):
        self.per_worker, self.batch, self.crop = per_worker, batch, crop
        n = workers * per_worker
        self.blur = torch.empty((n, batch, crop, crop, 3), dtype=torch.uint8).share_memory_()
        self.sharp = torch.empty((n, batch, crop, crop, 3), dtype=torch.uint8).share_memory_()
        self.flags = torch.zeros(n, dtype=torch.int32).share_memory_()

    def acquire(self, worker: int):
        base = worker * self.per_worker
        for s in range(base, base + self.per_worker):
            if int(self.flags[s]) == 0:
                self.flags[s] = 1
                return s
        return None

    def take(self, msg: _Slot, pin: bool):
        n = msg.n
        if pin:
            blur = torch.empty((n,) + tuple(self.blur.shape[2:]), dtype=torch.uint8, pin_memory=True)
            sharp = torch.empty_like(blur, pin_memory=True)
            blur.copy_(self.blur[msg.slot, :n])
            sharp.copy_(self.sharp[msg.slot, :n])
        else:
            blur, sharp = self.blur[msg.slot, :n].clone(), self.sharp[msg.slot, :n].clone()
        self.flags[msg.slot] = 0
        return blur, sharp, msg.labels


class CropLoader:
    """Iterable over ``(blur, sharp, labels)`` batches (see :func:`make_loader`)."""

    def __init__(self, loader, pool, pin):
        self.loader, self.pool, self.pin = loader, pool, pin

    def __iter__(self):
        for item in self.loader:
            if isinstance(item, _Slot):
                yield self.pool.take(item, self.pin)
            elif self.pin:
                yield tuple(t.pin_memory() for t in item)
            else:
                yield item


def _pool_slots(workers: int, want: int, batch: int, crop: int) -> int:
    """Slots per worker that fit in half of the free shared memory (Docker's /dev/shm is often
    64 MB); 0 = no pool (plain per-batch shared memory, as PyTorch does)."""
    per_slot = 2 * batch * crop * crop * 3
    try:
        st = os.statvfs("/dev/shm")
        free = st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        return want
    fit = int(free // 2 // max(1, per_slot * workers))
    return min(want, fit) if fit >= 2 else 0


def make_loader(ds: "CropDataset", batch: int, start_step: int = 0, workers: int = 0,
                stop_step: int | None = None, pin_memory: bool = False, prefetch: int = 4) -> CropLoader:
    """Batches ``(blur, sharp, labels)`` of uint8 ``[B, crop, crop, 3]`` tensors for steps
    start_step, start_step + 1, ... (endless unless ``stop_step``). Same batches for any
    ``workers``; with workers the pixels come through a reusable shared-memory :class:`SlotPool`."""
    pool = None
    if workers > 0:
        per_worker = _pool_slots(workers, prefetch + 2, batch, ds.crop)
        if per_worker:
            ds = copy.copy(ds)
            ds._pool = pool = SlotPool(workers, per_worker, batch, ds.crop)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=StepBatchSampler(batch, start_step, stop_step), num_workers=workers,
        collate_fn=collate, pin_memory=False, prefetch_factor=prefetch if workers > 0 else None)
    return CropLoader(loader, pool, pin_memory)


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields the item indices of step ``s`` (``s*batch .. s*batch+batch-1``) for s = start, start+1, ...

    Endless unless ``stop`` is given; a resumed run starts at its saved step.
    """

    def __init__(self, batch: int, start_step: int = 0, stop_step: int | None = None):
        self.batch, self.start, self.stop = int(batch), int(start_step), stop_step

    def __iter__(self):
        s = self.start
        while self.stop is None or s < self.stop:
            yield list(range(s * self.batch, (s + 1) * self.batch))
            s += 1

    def __len__(self):
        if self.stop is None:
            raise TypeError("endless sampler")
        return max(0, self.stop - self.start)


# ----------------------------------------------------------------------------------------------
# Validation / evaluation
# ----------------------------------------------------------------------------------------------

class PairDataset(Dataset):
    """Every usable (label, shard, pair) in a fixed order: a centre ``crop`` (or the whole image
    minus the alignment margin when ``crop`` is None/0). ``max_per_label`` keeps an evenly spaced
    subset. :meth:`part` gives the items of one rank (``items[rank::world]``).

    Items: ``(blur, sharp, label_index, item_index)``.
    """

    def __init__(self, index: ShardIndex, crop: int | None = None, max_per_label: int | None = None,
                 labels: list[str] | None = None):
        self.index = index
        self.crop = int(crop) if crop else 0
        self.items: list[tuple[int, int, int, int]] = []   # label idx, shard, pair, margin
        for li, lab in enumerate(index.labels):
            if labels is not None and lab not in labels:
                continue
            lp = index.pairs[lab]
            ks = np.arange(len(lp.pair))
            if max_per_label and len(ks) > max_per_label:
                ks = np.unique(np.linspace(0, len(ks) - 1, max_per_label).round().astype(int))
            for k in ks:
                self.items.append((li, int(lp.shard[k]), int(lp.pair[k]), int(lp.margin[k])))
        self._h = _Handles()

    def part(self, rank: int, world: int) -> "PairDataset":
        sub = PairDataset.__new__(PairDataset)
        sub.index, sub.crop = self.index, self.crop
        sub.items = self.items[rank::world]
        sub._h = _Handles()
        return sub

    def __len__(self):
        return len(self.items)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_h"] = _Handles()
        return d

    def region(self, i: int):
        li, s, p, m = self.items[i]
        info = self.index.shards[s]
        h, w = info.height - 2 * m, info.width - 2 * m
        if self.crop:
            ch, cw = min(self.crop, h), min(self.crop, w)
            y0, x0 = m + (h - ch) // 2, m + (w - cw) // 2
            return y0, x0, ch, cw
        return m, m, h, w

    def __getitem__(self, i):
        li, s, p, _ = self.items[i]
        info = self.index.shards[s]
        lab = self.index.labels[li]
        y0, x0, h, w = self.region(i)
        blur = self._h.reader(info.path, info.source[lab]).read(p, y0, x0, h, w)
        sharp = self._h.reader(info.path, "sharp").read(p, y0, x0, h, w)
        return torch.from_numpy(blur), torch.from_numpy(sharp), li, i

    def describe(self, i: int) -> str:
        li, s, p, _ = self.items[i]
        return f"{Path(self.index.shards[s].path).name}#{p}/{self.index.labels[li]}"


def to_model_input(x: torch.Tensor, device=None, channels_last: bool = True) -> torch.Tensor:
    """uint8 ``[B,H,W,3]`` (or ``[H,W,3]``) -> float ``[B,3,H,W]`` in [0, 1] on ``device``."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    if not channels_last:
        x = x.contiguous()
    return x
