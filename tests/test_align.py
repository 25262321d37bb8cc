"""`blurforge align`: warp and gain recovery on pairs with a known truth, shard writing, crash safety.

Pairs are rendered here (not by extract): a scikit-image photo in linear light, 4x supersampled;
the blurred image is the photo under a known warp, smeared by a symmetric streak (its centroid stays
on the warp), times a known per-channel gain, encoded with gamma 2.2.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from blurforge import align as al
from blurforge.align_shards import align_shard
from blurforge.cli import main
from blurforge.shards import ShardWriter, dataset_sha256, file_sha256

SS = 4
_scenes: dict = {}


def scene(name: str = "astronaut") -> np.ndarray:
    """A sample photo as linear-light float32, SS x upsampled (cached)."""
    if name not in _scenes:
        import skimage.data

        img = getattr(skimage.data, name)()
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        lin = (img.astype(np.float32) / 255.0) ** 2.2
        _scenes[name] = cv2.resize(lin, (img.shape[1] * SS, img.shape[0] * SS),
                                   interpolation=cv2.INTER_CUBIC).clip(0, 1)
    return _scenes[name]


def render(sc, inv_map, off, h, w):
    """out(y) = photo(inv_map y + off) in photo pixels, rendered SS x and area-averaged."""
    t = np.array([[1, 0, off[0]], [0, 1, off[1]], [0, 0, 1.0]])
    a = al.level_matrix((h * SS, w * SS), (h, w))
    m = np.linalg.inv(a) @ t @ inv_map @ a
    hi = cv2.warpPerspective(sc, m, (w * SS, h * SS), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(hi, (w, h), interpolation=cv2.INTER_AREA)


def streak(length, angle):
    """Symmetric linear motion-blur kernel (centroid at its centre)."""
    n = int(np.ceil(length)) | 1
    k = np.zeros((n + 2, n + 2), np.float32)
    c = (n + 1) / 2
    for t in np.linspace(-length / 2, length / 2, 4 * n):
        x, y = c + t * np.cos(angle), c + t * np.sin(angle)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        k[y0:y0 + 2, x0:x0 + 2] += np.array([[(1 - fx) * (1 - fy), fx * (1 - fy)],
                                             [(1 - fx) * fy, fx * fy]], np.float32)
    return k / k.sum()


def encode(lin):
    return np.clip(np.rint(np.clip(lin, 0, 1) ** (1 / 2.2) * 255), 0, 255).astype(np.uint8)


def euclid(tx, ty, deg, cx=0.0, cy=0.0):
    """Rotation by deg about (cx, cy), then translation: sharp px -> blur px."""
    t = np.deg2rad(deg)
    c = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    r = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]]) @ c @ r @ np.linalg.inv(c)


def make_pair(warp=np.eye(3), size=(192, 192), off=(150, 120), blur_len=0.0, angle=0.4,
              gain=(1.0, 1.0, 1.0), photo="astronaut"):
    """(sharp, blur) uint8 RGB with blur(warp x) = sharp(x), streaked and scaled by ``gain``."""
    h, w = size
    sc = scene(photo)
    sharp = render(sc, np.eye(3), off, h, w)
    p = int(np.ceil(blur_len)) + 2
    pad = np.array([[1, 0, -p], [0, 1, -p], [0, 0, 1.0]])
    b = render(sc, np.linalg.inv(warp) @ pad, off, h + 2 * p, w + 2 * p)
    if blur_len > 0:
        b = cv2.filter2D(b, -1, streak(blur_len, angle))
    b = b[p:p + h, p:p + w] * np.asarray(gain, np.float32)
    return encode(sharp), encode(b)


def write_shard(path, pairs, labels=("9",), attrs=None, datasets=None, meta=None):
    """A shard from [(sharp, {label: blur})] with ShardWriter (no extract code involved)."""
    h, w = pairs[0][0].shape[:2]
    with ShardWriter(path, h, w, list(labels), attrs={"kind": "video", **(attrs or {})},
                     datasets=datasets) as wr:
        for i, (sharp, blurs) in enumerate(pairs):
            wr.add(sharp, blurs, center=10 * i, meta=(meta(i) if meta else None))
    return Path(path)


def sample_shard(path, n=3, size=(160, 192), labels=("9", "21")):
    """n pairs with known Euclidean warps; the last pair of the first window mixes up scenes."""
    pairs, truth = [], []
    for i in range(n):
        m = euclid(2.0 + i, -1.5 * i, 0.3 * (i - 1), size[1] / 2, size[0] / 2)
        blurs = {}
        for j, lab in enumerate(labels):
            sharp, blurs[lab] = make_pair(m, size, off=(100 + 20 * i, 90), blur_len=float(lab),
                                          angle=0.5 + j, gain=(1.02, 0.98, 1.0))
        truth.append(m)
        pairs.append((sharp, blurs))
    _, pairs[-1][1][labels[0]] = make_pair(np.eye(3), size, photo="coffee")
    return write_shard(path, pairs, labels), truth


# ---- pure functions ---------------------------------------------------------------------------

@pytest.mark.parametrize("motion", ["translation", "euclidean", "affine", "homography"])
def test_recovers_known_warp_sharp_sharp(motion):
    truth = euclid(3.3, -2.7, 0.0 if motion == "translation" else 0.5, 96, 96)
    sharp, blur = make_pair(truth)
    r = al.align_pair(sharp, blur, motion)
    assert r.ok, r
    assert al.warp_error(r.warp, truth, 192, 192, step=8) <= 0.1
    assert r.score > 0.99


@pytest.mark.parametrize("length,angle", [(5, 0.3), (9, 1.2), (13, 2.4)])
def test_recovers_known_warp_blur_sharp(length, angle):
    truth = euclid(-4.2, 1.6, -0.4, 96, 96)
    sharp, blur = make_pair(truth, blur_len=length, angle=angle)
    r = al.align_pair(sharp, blur)
    assert r.ok, r
    assert al.warp_error(r.warp, truth, 192, 192, step=8) <= 0.25


def test_recovers_known_gain():
    gain = np.array([1.06, 0.95, 1.02])
    sharp, blur = make_pair(euclid(2.5, 1.5, 0.3, 96, 96), size=(192, 256), blur_len=7, gain=gain)
    r = al.align_pair(sharp, blur)
    # sharp ~ g * blur, so the fitted gain is the inverse of the one applied to the blur
    assert np.all(np.abs(r.gain * gain - 1) <= 0.005), r.gain * gain
    # and the aligned image matches the sharp one far better than the blur did
    m = r.margin + 2
    crop = (slice(m, -m), slice(m, -m))
    err_aligned = np.abs(r.aligned[crop].astype(int) - sharp[crop]).mean()
    err_blur = np.abs(blur[crop].astype(int) - sharp[crop]).mean()
    assert err_aligned < 0.5 * err_blur


def test_gain_ignores_a_moving_object():
    gain = np.array([0.97, 1.04, 1.0])
    sharp, blur = make_pair(euclid(1.0, -2.0, 0.2, 96, 96), size=(192, 256), blur_len=5, gain=gain)
    _, other = make_pair(size=(192, 256), photo="coffee")
    blur = blur.copy()
    blur[40:90, 60:110] = other[40:90, 60:110]          # an object that is not in the sharp frame
    r = al.align_pair(sharp, blur)
    assert np.all(np.abs(r.gain * gain - 1) <= 0.005), r.gain * gain


def test_mismatched_frames_are_flagged():
    sharp, _ = make_pair(photo="astronaut")
    _, blur = make_pair(photo="coffee", blur_len=5)
    r = al.align_pair(sharp, blur)
    assert not r.ok and r.reason in ("low score", "large shift", "ecc failed")
    assert r.aligned.shape == blur.shape and r.aligned.dtype == np.uint8


def test_large_shift_is_flagged():
    truth = euclid(24.0, 0.0, 0.0)
    sharp, blur = make_pair(truth, off=(200, 150))
    r = al.align_pair(sharp, blur, max_shift=16)
    assert not r.ok and r.reason == "large shift"
    assert al.warp_error(r.warp, truth, 192, 192) < 0.1
    assert r.margin >= 24


def test_identity_leaves_image_unchanged():
    sharp, _ = make_pair()
    r = al.align_pair(sharp, sharp)
    assert r.margin == 0 and r.ok
    np.testing.assert_allclose(r.gain, 1, atol=1e-3)
    assert np.abs(r.aligned.astype(int) - sharp).max() <= 1


def test_warp_rescaling_round_trips():
    w = euclid(3.0, -1.0, 0.7, 50, 40)
    a = al.level_matrix((720, 1280), (180, 320))
    back = al.rescale_warp(al.rescale_warp(w, np.eye(3), a), a, np.eye(3))
    np.testing.assert_allclose(back, w, atol=1e-9)


def test_valid_margin_covers_the_warp():
    w = euclid(5.5, -3.0, 0.8, 96, 96)
    m = al.valid_margin(w, 192, 192)
    inner = al.corners(192, 192, m)
    q = al._apply(w, inner)
    assert q.min() >= 0 and q.max() <= 191
    q = al._apply(w, al.corners(192, 192, m - 1))
    assert q.min() < 0 or q.max() > 191


# ---- shards ----------------------------------------------------------------------------------

def test_align_shard_writes_datasets_and_keeps_originals(tmp_path):
    path, truth = sample_shard(tmp_path / "s.h5")
    with h5py.File(path, "r") as f:
        before = {k: f[k].attrs["sha256"] for k in ("sharp", "blur/9", "blur/21")}
    calls = []
    s = align_shard(path, jobs=2, progress=lambda done, total: calls.append((done, total)))
    assert s["status"] == "aligned" and s["pairs"] == 3
    assert calls == [(k, 6) for k in range(7)]            # the total is known before the first pair
    assert s["windows"]["9"]["ok"] == 2 and s["windows"]["9"]["rejected"] == 1
    assert s["windows"]["21"]["ok"] == 3
    with h5py.File(path, "r") as f:
        for k, v in before.items():
            assert f[k].attrs["sha256"] == v == dataset_sha256(f[k])
        for lab in ("9", "21"):
            a = f[f"aligned/{lab}"]
            assert a.shape == f[f"blur/{lab}"].shape and a.dtype == np.uint8
            assert a.chunks == f[f"blur/{lab}"].chunks
            assert a.attrs["sha256"] == dataset_sha256(a)
            g = f[f"align/{lab}"]
            assert g["warp"].shape == (3, 3, 3) and g["warp"].dtype == np.float64
            assert g["gain"].shape == (3, 3) and g["gain"].dtype == np.float32
            assert g["score"].dtype == np.float32 and g["ok"].dtype == bool
            assert g["margin"].dtype == np.int32
            assert g.attrs["motion"] == al.DEFAULT_MOTION
        ok = f["align/21/ok"][()]
        for i, m in enumerate(truth):
            assert ok[i]
            assert al.warp_error(f["align/21/warp"][i], m, 160, 192, step=8) <= 0.25
        assert list(f["align/9/ok"][()]) == [True, True, False]
        assert f.attrs["complete"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_align_shard_skips_then_overwrites(tmp_path):
    path, _ = sample_shard(tmp_path / "s.h5", n=2, labels=("5",))
    align_shard(path)
    digest = file_sha256(path)
    assert align_shard(path)["status"] == "skipped (aligned)"
    assert file_sha256(path) == digest
    s = align_shard(path, motion="homography")          # new settings: redone
    assert s["status"] == "aligned"
    s = align_shard(path, motion="homography", overwrite=True)
    assert s["status"] == "aligned"
    with h5py.File(path, "r") as f:
        assert f["align/5"].attrs["motion"] == "homography"
        assert f["aligned/5"].attrs["sha256"] == dataset_sha256(f["aligned/5"])


def test_align_uses_the_shard_camera_curve(tmp_path):
    """A shard averaged in srgb: the gain comes out right only through its own curve."""
    from blurforge.curves import load_curve, srgb_to_linear

    curve = load_curve("srgb")
    sharp, _ = make_pair(size=(128, 160))
    lin = srgb_to_linear(sharp / 255.0) * np.array([1.05, 0.97, 1.0])
    blur = curve.encode(lin)
    path = write_shard(tmp_path / "c.h5", [(sharp, {"1": blur})], labels=("1",),
                       attrs={"camera_curve": "srgb"}, datasets={"camera_curve": curve.lut})
    align_shard(path)
    with h5py.File(path, "r") as f:
        gain = f["align/1/gain"][0]
        assert f["align/1"].attrs["curve"] == "srgb"
    assert np.all(np.abs(gain * [1.05, 0.97, 1.0] - 1) < 0.005), gain


def test_align_cli_json_and_default_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    sample_shard(data / "a.h5", n=2, labels=("5",))
    sample_shard(data / "b.h5", n=2, labels=("5",))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["align", "--json", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert sorted(Path(s["shard"]).name for s in out["shards"]) == ["a.h5", "b.h5"]
    assert out["rejected"] == 2 and out["failures"] == []
    res = CliRunner().invoke(main, ["align", "data"])
    assert res.exit_code == 0 and "skipped" in res.output


def test_align_cli_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(main, ["align", str(tmp_path / "nope.h5")])
    assert res.exit_code != 0 and "Traceback" not in res.output and "nope.h5" in res.output
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    res = CliRunner().invoke(main, ["align", str(bad)])
    assert res.exit_code != 0 and "bad.h5" in res.output and "Traceback" not in res.output


KILL_SCRIPT = """
import sys, time
from blurforge.align_shards import align_shard

def tick(done, total):
    print(done, total, flush=True)
    time.sleep(0.05)   # pace the run so that the kill surely lands mid-way

align_shard(sys.argv[1], progress=tick)
print("finished", flush=True)
"""


def test_killed_align_leaves_shard_intact(tmp_path):
    """SIGKILL mid-way: the shard is byte-identical, verify passes, and a re-run completes."""
    pairs = []
    for i in range(24):
        sharp, blur = make_pair(euclid(1 + i % 3, -1, 0.2, 96, 80), size=(160, 192),
                                off=(60 + 5 * i, 100), blur_len=5)
        pairs.append((sharp, {"5": blur}))
    path = write_shard(tmp_path / "k.h5", pairs, labels=("5",))
    digest = file_sha256(path)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if int(line.split()[0]) >= 6:
                break
        assert proc.poll() is None, "align finished before it could be killed"
        assert list(tmp_path.glob(".k.h5.tmp-*")), "no temporary copy while aligning"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert file_sha256(path) == digest
    res = CliRunner().invoke(main, ["verify", str(path)])
    assert res.exit_code == 0, res.output
    with h5py.File(path, "r") as f:
        assert "aligned" not in f and "align" not in f
    s = align_shard(path)                               # re-running resumes (redoes this shard)
    assert s["status"] == "aligned" and s["windows"]["5"]["ok"] == 24
    res = CliRunner().invoke(main, ["verify", str(path)])
    assert res.exit_code == 0, res.output
