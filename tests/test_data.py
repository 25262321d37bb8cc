"""dsanet.data: aligned crops, determinism, window choice, flagged pairs, lazy per-worker files.

The shard builders here (``make_shard``, ``coord_image``, ``smooth_images``) are imported by the
other dsanet test files.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from blurforge.shards import ShardWriter
from dsanet.data import CropDataset, DataError, PairDataset, ShardIndex, make_loader, parse_windows, to_model_input

# ----------------------------------------------------------------------------------------------
# helpers (shared with the other test files)
# ----------------------------------------------------------------------------------------------

def coord_image(h: int, w: int) -> np.ndarray:
    """RGB image whose pixels encode their own coordinates: R = y % 256, G = x % 256,
    B = 16 * (y // 256) + x // 256 (exact for images up to 4096 px)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y % 256, x % 256, 16 * (y // 256) + x // 256], -1).astype(np.uint8)


def decode_coords(img: np.ndarray):
    img = img.astype(np.int64)
    y = img[..., 0] + 256 * (img[..., 2] // 16)
    x = img[..., 1] + 256 * (img[..., 2] % 16)
    return y, x


def smooth_images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """Natural-ish test images: upsampled noise plus a few edges."""
    import cv2
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.random((h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(4):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            img[y0:y0 + h // 4, x0:x0 + w // 4] = rng.random(3)
        out.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return out


def box_blur(img: np.ndarray, k: int = 9) -> np.ndarray:
    import cv2
    kern = np.zeros((k, k), np.float32)
    kern[k // 2, :] = 1.0 / k                        # horizontal motion blur
    return cv2.filter2D(img, -1, kern, borderType=cv2.BORDER_REFLECT)


def make_shard(path, sharps, blurs: dict, aligned: dict | None = None, ok: dict | None = None,
               margin: dict | None = None):
    """Write a shard: ``blurs`` {label: [images]}; optional ``aligned`` {label: [images]} and
    ``ok`` / ``margin`` {label: [per-pair values]} as ``blurforge align`` would add them."""
    h, w = sharps[0].shape[:2]
    labels = list(blurs)
    with ShardWriter(path, h, w, labels, attrs={"kind": "pairs"}) as wr:
        for i, s in enumerate(sharps):
            wr.add(s, {lab: blurs[lab][i] for lab in labels}, center=i)
    if aligned or ok:
        with h5py.File(path, "a") as f:
            for lab, imgs in (aligned or {}).items():
                f.create_dataset(f"aligned/{lab}", data=np.stack(imgs), chunks=(1, min(256, h), min(256, w), 3))
            for lab, flags in (ok or {}).items():
                f.create_dataset(f"align/{lab}/ok", data=np.asarray(flags, bool))
            for lab, m in (margin or {}).items():
                f.create_dataset(f"align/{lab}/margin", data=np.asarray(m, np.int32))
    return path


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------

def test_identical_pairs_give_identical_crops(tmp_path):
    imgs = smooth_images(3, 96, 128)
    p = make_shard(tmp_path / "same.h5", imgs, {"36": imgs})
    ds = CropDataset(ShardIndex([p]), crop=48, seed=1)
    for g in range(40):
        b, s, lab = ds[g]
        assert b.shape == (48, 48, 3) and b.dtype == torch.uint8
        assert torch.equal(b, s)


def test_crops_pixel_aligned_with_known_offset(tmp_path):
    h, w, dy, dx = 300, 520, 3, -7
    sharp = coord_image(h, w)
    blur = np.roll(sharp, (-dy, -dx), axis=(0, 1))   # blur[y, x] = sharp[y + dy, x + dx]
    p = make_shard(tmp_path / "coords.h5", [sharp, sharp], {"73": [blur, blur]})
    ds = CropDataset(ShardIndex([p]), crop=64, seed=3)
    codes = set()
    for g in range(64):
        b, s, _ = ds[g]
        _, _, _, y0, x0, code = ds.sample(g)
        codes.add(code)
        sy, sx = decode_coords(s.numpy())
        by, bx = decode_coords(b.numpy())
        # the sharp crop is exactly the window (y0, x0, 64) under one symmetry of the square
        assert sorted(set(sy.ravel())) == list(range(y0, y0 + 64))
        assert sorted(set(sx.ravel())) == list(range(x0, x0 + 64))
        # and the blurred crop was cut at the same place and transformed the same way
        assert np.all((by - sy) % h == dy % h)
        assert np.all((bx - sx) % w == dx % w)
    assert len(codes) == 8      # every flip/rotation occurs


def test_deterministic_under_seed_rank_and_workers(tmp_path):
    imgs = smooth_images(4, 80, 80, seed=2)
    p = make_shard(tmp_path / "a.h5", imgs, {"36": imgs[::-1], "73": imgs})
    idx = ShardIndex([p])
    a = CropDataset(idx, crop=32, seed=5, rank=0)
    b = CropDataset(ShardIndex([p]), crop=32, seed=5, rank=0)
    c = CropDataset(idx, crop=32, seed=5, rank=1)
    d = CropDataset(idx, crop=32, seed=6, rank=0)
    same = [torch.equal(a[g][0], b[g][0]) and torch.equal(a[g][1], b[g][1]) for g in range(30)]
    assert all(same)
    assert [a.sample(g) for g in range(30)] != [c.sample(g) for g in range(30)]
    assert [a.sample(g) for g in range(30)] != [d.sample(g) for g in range(30)]
    # item g of epoch e+1 differs from item g of epoch e
    n = len(a)
    assert [a.sample(g) for g in range(n)] != [a.sample(g + n) for g in range(n)]
    # same batches with 0 or 2 worker processes, and from a sampler started mid-way
    l0 = make_loader(a, 4, 0, workers=0, stop_step=6)
    l2 = make_loader(a, 4, 0, workers=2, stop_step=6)
    r0, r2 = [x[0] for x in l0], [x[0] for x in l2]
    assert all(torch.equal(u, v) for u, v in zip(r0, r2)) and len(r0) == 6
    assert r0[0].shape == (4, 32, 32, 3)
    assert all(torch.equal(r0[1][j], a[4 + j][0]) for j in range(4))        # batch = items 4..7
    l3 = make_loader(a, 4, 3, workers=0, stop_step=6)
    assert all(torch.equal(u[0], v) for u, v in zip(l3, r0[3:]))


def test_flagged_pairs_skipped_and_aligned_used(tmp_path):
    n = 6
    sharps = [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(n)]
    blurs = [np.full((64, 64, 3), 200, np.uint8) for _ in range(n)]          # never used: aligned exists
    aligned = [np.full((64, 64, 3), 10 * i + 1, np.uint8) for i in range(n)]
    ok = [True, False, True, False, False, True]
    p = make_shard(tmp_path / "al.h5", sharps, {"73": blurs}, aligned={"73": aligned}, ok={"73": ok},
                   margin={"73": [2] * n})
    idx = ShardIndex([p])
    assert idx.skipped_flagged == 3 and idx.counts() == {"73": 3}
    ds = CropDataset(idx, crop=32, seed=0)
    seen = set()
    for g in range(60):
        b, s, _ = ds[g]
        _, _, pair, y, x, _ = ds.sample(g)
        assert ok[pair]
        assert 2 <= y <= 64 - 2 - 32 and 2 <= x <= 64 - 2 - 32          # clear of the margin
        assert int(b[0, 0, 0]) == int(s[0, 0, 0]) + 1                    # aligned/73, not blur/73
        seen.add(pair)
    assert seen == {0, 2, 5}
    v = PairDataset(idx)
    assert len(v) == 3 and v[0][0].shape == (60, 60, 3)                 # whole image minus margin


def test_window_weights_and_labels(tmp_path):
    imgs = smooth_images(2, 64, 64)
    p1 = make_shard(tmp_path / "v.h5", imgs, {"36": imgs, "73": imgs})
    p2 = make_shard(tmp_path / "g.h5", imgs, {"gopro": imgs})
    idx = ShardIndex([p1, p2], labels=["36", "gopro"])
    assert idx.labels == ["36", "gopro"]
    ds = CropDataset(idx, crop=32, weights={"36": 3, "gopro": 1}, seed=0)
    labs = [ds.sample(g)[0] for g in range(2000)]
    frac = labs.count("36") / len(labs)
    assert 0.70 < frac < 0.80
    assert parse_windows("36:1,73:2") == {"36": 1.0, "73": 2.0}
    assert parse_windows("all") is None
    with pytest.raises(DataError, match="not in any shard"):
        ShardIndex([p1], labels=["gopro"])
    with pytest.raises(DataError):
        parse_windows("36:x")


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no shards"):
        ShardIndex([])
    with pytest.raises(DataError, match="no such file"):
        ShardIndex([tmp_path / "missing.h5"])
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="not a readable HDF5"):
        ShardIndex([junk])
    imgs = smooth_images(1, 40, 40)
    p = make_shard(tmp_path / "small.h5", imgs, {"36": imgs})
    with pytest.raises(DataError, match="smaller"):
        CropDataset(ShardIndex([p]), crop=64)
    with h5py.File(p, "a") as f:
        del f["blur/36"]
    with pytest.raises(DataError, match=r"small\.h5: window 36 listed but blur/36 is missing"):
        ShardIndex([p])
    with h5py.File(p, "a") as f:
        del f.attrs["width"]
    with pytest.raises(DataError, match=r"small\.h5: missing width; not a complete shard"):
        ShardIndex([p])


def test_validation_centre_crops_and_parts(tmp_path):
    sharp = coord_image(100, 140)
    p = make_shard(tmp_path / "c.h5", [sharp] * 5, {"36": [sharp] * 5, "73": [sharp] * 5})
    v = PairDataset(ShardIndex([p]), crop=40)
    assert len(v) == 10
    b, s, li, i = v[0]
    y, x = decode_coords(s.numpy())
    assert y[0, 0] == 30 and x[0, 0] == 50 and s.shape == (40, 40, 3)
    parts = [v.part(r, 3) for r in range(3)]
    assert sorted(sum((p_.items for p_ in parts), [])) == sorted(v.items)
    assert len(PairDataset(ShardIndex([p]), max_per_label=2)) == 4
    t = to_model_input(torch.stack([b, b]))
    assert t.shape == (2, 3, 40, 40) and t.is_contiguous(memory_format=torch.channels_last)
    assert float(t.max()) <= 1.0


def test_focus_places_crops_where_the_blur_is(tmp_path):
    imgs = smooth_images(3, 128, 192, seed=4)
    blurs = []
    for im in imgs:
        b = im.copy()
        b[32:96, 120:184] = box_blur(im, 15)[32:96, 120:184]     # blur only in one region
        blurs.append(b)
    p = make_shard(tmp_path / "f.h5", imgs, {"15": blurs})
    idx = ShardIndex([p])

    def mean_err(ds):
        return np.mean([np.abs(ds[g][0].numpy().astype(int) - ds[g][1].numpy()).mean() for g in range(60)])
    uniform = CropDataset(idx, crop=48, seed=0)
    focused = CropDataset(idx, crop=48, seed=0, focus=1.0)
    assert mean_err(focused) > 2 * mean_err(uniform)
    assert [focused.sample(g) for g in range(20)] == [CropDataset(idx, crop=48, seed=0, focus=1.0).sample(g)
                                                       for g in range(20)]
