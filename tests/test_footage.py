"""Real footage as cameras store it: capture-rate tags, rotation, 10-bit and HDR, frame folders,
trimming, variable frame rate, folders of clips, disk full. Clips are made by imageio-ffmpeg's ffmpeg;
truth comes from the ffmpeg command line's own decode (which also applies display rotation)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_clip, transcode

from blurforge.cli import main
from blurforge.video import ffmpeg_exe, probe

W, H = 320, 180
WINDOWS = ["--windows", "9,17", "--stride", "20", "--flicker", "off"]


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def ok(*args):
    """Output (stdout and stderr) of a command that must succeed."""
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def ok_json(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def restore(src, dst, *out_args, before=()):
    """ffmpeg with input options ``before`` (-itsscale, -display_rotation apply to the input)."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *before, "-i", str(src), *out_args, str(dst)], check=True)
    return dst


def ffmpeg_frames(path, pix_fmt="rgb24"):
    """Independent truth: the ffmpeg CLI's decode (autorotated, every frame as stored)."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo",
                          "-pix_fmt", pix_fmt, "-"], capture_output=True, check=True).stdout
    dtype = np.uint16 if "48" in pix_fmt else np.uint8
    frames = np.frombuffer(out, dtype)
    info = probe(path)
    h, w = (info.width, info.height) if info.rotation in (90, 270) else (info.height, info.width)
    return frames.reshape(-1, h, w, 3)


def window_mean(frames, c, w, to_lin, from_lin):
    """Reference blur from the definition: odd w, w frames with equal weights, averaged in linear light."""
    h = w // 2
    lin = np.mean([to_lin(frames[t].astype(np.float64)) for t in range(c - h, c + h + 1)], axis=0)
    return from_lin(lin)


def g22(scale):
    return (lambda v: (v / scale) ** 2.2), (lambda x: 255.0 * np.clip(x, 0, 1) ** (1 / 2.2))


@pytest.fixture(scope="module")
def clip960(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("f") / "c960.mp4", frames=150, seed=5)


def shard(path):
    return h5py.File(path, "r")


# ---- capture rate ---------------------------------------------------------------------------------

def test_capture_rate_tag_and_option(clip960, tmp_path):
    """A 960 fps capture stored at 30 fps: the Android tag is read, --capture-fps stands in for it,
    and either way the pairs equal those of the same frames stored at 960 fps."""
    tagged = restore(clip960, tmp_path / "tagged.mp4", "-c", "copy", "-movflags", "use_metadata_tags",
                     "-metadata", "com.android.capture.fps=960.000000", before=["-itsscale", "32"])
    plain = restore(clip960, tmp_path / "plain.mp4", "-c", "copy", before=["-itsscale", "32"])
    info = probe(tagged)
    assert info.fps == 960 and abs(info.container_fps - 30) < 0.5 and info.fps_source == "com.android.capture.fps"
    code, out = run("extract", plain, "--out", tmp_path / "o", *WINDOWS)
    assert code == 1 and "--capture-fps" in out and len(out.strip().splitlines()) == 1, out
    ok("extract", clip960, tagged, "--out", tmp_path / "o", *WINDOWS)
    ok("extract", plain, "--capture-fps", "960", "--out", tmp_path / "o", *WINDOWS)
    with shard(tmp_path / "o" / "c960.h5") as ref, shard(tmp_path / "o" / "tagged.h5") as a, \
            shard(tmp_path / "o" / "plain.h5") as b:
        for f, source in ((a, "com.android.capture.fps"), (b, "--capture-fps")):
            assert f.attrs["fps"] == 960 and abs(f.attrs["container_fps"] - 30) < 0.5
            assert f.attrs["fps_source"] == source
            assert f["blur/17"].attrs["exposure_s"] == pytest.approx(17 / 960)
            assert np.array_equal(f["center"][:], ref["center"][:]) and len(ref["center"]) >= 3
            assert np.array_equal(f["blur/17"][:], ref["blur/17"][:])
    report = ok_json("probe", tagged, "--json")[0]
    assert report["fps"] == 960 and report["windows"]["36"]["exposure_ms"] == pytest.approx(37.5)
    assert "captured (com.android.capture.fps), 30" in ok("probe", tagged).replace("30.", "30")


# ---- rotation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rotation", [90, 270])
def test_display_rotation_makes_shards_upright(clip960, tmp_path, rotation):
    rot = restore(clip960, tmp_path / "rot.mp4", "-c", "copy", before=["-display_rotation", str(rotation)])
    truth = ffmpeg_frames(rot)  # the ffmpeg CLI turns frames upright as players do
    assert truth.shape[1:3] == (W, H)
    ok("extract", rot, "--out", tmp_path / "o", *WINDOWS)
    with shard(tmp_path / "o" / "rot.h5") as f:
        assert f.attrs["rotation"] == rotation and f["sharp"].shape[1:3] == (W, H)
        for i, c in enumerate(f["center"][:]):
            assert np.array_equal(f["sharp"][i], truth[c])


# ---- 10-bit, HDR ----------------------------------------------------------------------------------

def dark_gradient_frames(n=120, seed=0):
    """A dark, smooth scene drifting slowly (sub-pixel steps) with a little texture: where 8-bit
    codes are coarse in linear light and rounding each frame to 8 bits biases the average."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((H + 40, W + 200)).astype(np.float32), (0, 0), 3)
    x = np.linspace(0.0, 1.0, W + 200, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, H + 40, dtype=np.float32)[:, None]
    scene = 0.002 + 0.03 * x * (0.6 + 0.4 * y) + 0.01 * tex
    frames = []
    for t in range(n):
        dx = 0.35 * t
        m = np.float32([[1, 0, -dx], [0, 1, -0.1 * t]])
        lin = cv2.warpAffine(scene, m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        lin = np.stack([lin, 0.9 * lin, 1.1 * lin], axis=-1)
        frames.append(np.rint(65535 * np.clip(lin, 0, 1) ** (1 / 2.2)).astype(np.uint16))
    return frames


def encode16(frames, path, *codec):
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", f"{W}x{H}",
           "-r", "960", "-i", "-", *codec, str(path)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)
    return path


@pytest.fixture(scope="module")
def deep_frames():
    return dark_gradient_frames()


@pytest.mark.parametrize("codec", [
    ["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error:lossless=1"],
    ["-c:v", "prores_ks", "-profile:v", "3", "-pix_fmt", "yuv422p10le"]], ids=["hevc10", "prores"])
def test_ten_bit_is_averaged_from_sixteen_bits(deep_frames, tmp_path, codec):
    """Against the ideal (the 16-bit decode averaged in float, not rounded), the blur averaged from
    16-bit RGB is measurably closer than averaging the 8-bit decode (what extract did before)."""
    clip = encode16(deep_frames, tmp_path / ("c.mp4" if "libx265" in codec else "c.mov"), *codec)
    out = ok("extract", clip, "--out", tmp_path / "o", "--crf", "gamma2.2", *WINDOWS)
    assert "10-bit" in out
    f16 = ffmpeg_frames(clip, "rgb48le")
    f8 = ffmpeg_frames(clip, "rgb24")
    err16, err8 = [], []
    with shard(tmp_path / "o" / f"{clip.stem}.h5") as f:
        assert f.attrs["averaged_bits"] == 16 and f.attrs["bit_depth"] == 10
        assert len(f["center"]) >= 3
        for i, c in enumerate(f["center"][:]):
            # sharp: the 16-bit frame rounded to 8 bits (libswscale in process vs the CLI: within a code)
            assert np.abs(f["sharp"][i].astype(int) - np.rint(f16[c] / 257.0)).max() <= 1
            for w in (9, 17):
                ideal = window_mean(f16, c, w, *g22(65535.0))
                path8 = np.rint(window_mean(f8, c, w, *g22(255.0)))
                err16.append(np.sqrt(np.mean((f[f"blur/{w}"][i] - ideal) ** 2)))
                err8.append(np.sqrt(np.mean((path8 - ideal) ** 2)))
    # rounding alone is 0.29 code RMS; the 8-bit path adds the rounding of every frame before averaging
    print(f"RMS error vs 16-bit ideal: 16-bit path {np.mean(err16):.3f}, 8-bit path {np.mean(err8):.3f} codes")
    assert np.mean(err16) < 0.33
    assert np.mean(err16) < 0.8 * np.mean(err8)


def test_curves_match_published_references():
    """HLG (BT.2100 inverse OETF), PQ (ST 2084 EOTF) and the log profiles against colour-science,
    plus BT.2100's own anchor values."""
    colour = pytest.importorskip("colour")
    from blurforge import curves as C

    v = np.linspace(0, 1, 2001)
    assert np.allclose(C.hlg_to_linear(v), colour.models.oetf_inverse_BT2100_HLG(v), atol=1e-8)
    assert np.allclose(C.pq_to_linear(v) * 10000, colour.models.eotf_ST2084(v), rtol=1e-9, atol=1e-9)
    assert np.allclose(C.slog3_to_reflectance(v), colour.models.log_decoding_SLog3(v, in_normalised_code_value=False))
    assert np.allclose(C.vlog_to_reflectance(v), colour.models.log_decoding_VLog(v, in_normalised_code_value=False))
    assert np.allclose(C.logc3_to_reflectance(v), colour.models.log_decoding_ARRILogC3((64 + 876 * v) / 1023))
    # BT.2100 anchors: HLG E' = 0.5 at E = 1/12; PQ 100 cd/m2 at E' = 0.5081 (BT.2408 reference white 203
    # cd/m2 at 0.58)
    assert C.hlg_to_linear(0.5) == pytest.approx(1 / 12)
    assert C.pq_to_linear(0.50807) * 10000 == pytest.approx(100, rel=2e-3)
    assert C.pq_to_linear(0.58) * 10000 == pytest.approx(203, rel=0.01)
    for name in C.NAMED:  # every named curve encodes its own codes back exactly
        c = C.load_curve(name)
        codes = np.arange(256, dtype=np.uint8)
        assert np.array_equal(c.encode(c.lut[codes].astype(np.float32)), codes), name


@pytest.mark.parametrize("trc,curve", [("arib-std-b67", "hlg"), ("smpte2084", "pq")])
def test_hdr_clips_use_their_transfer_curve(deep_frames, tmp_path, trc, curve):
    from blurforge import curves as C

    clip = encode16(deep_frames, tmp_path / f"{curve}.mp4", "-c:v", "libx265", "-pix_fmt", "yuv420p10le",
                    "-x265-params", f"log-level=error:lossless=1:colorprim=bt2020:transfer={trc}:colormatrix=bt2020nc")
    assert probe(clip).transfer == trc
    ok("extract", clip, "--out", tmp_path / "o", *WINDOWS)
    f16 = ffmpeg_frames(clip, "rgb48le")
    to_lin = {"hlg": C.hlg_to_linear, "pq": C.pq_to_linear}[curve]
    from_lin = {"hlg": C.linear_to_hlg, "pq": C.linear_to_pq}[curve]
    with shard(tmp_path / "o" / f"{curve}.h5") as f:
        assert f.attrs["camera_curve"] == curve and f.attrs["transfer"] == trc
        for i, c in enumerate(f["center"][:]):
            ref = window_mean(f16, c, 17, lambda v: to_lin(v / 65535.0), lambda x: 255.0 * from_lin(x))
            assert np.abs(f["blur/17"][i] - ref).mean() < 0.3
    # asking for gamma 2.2 on an HDR clip is done, but said
    out = ok("extract", clip, "--out", tmp_path / "o2", "--crf", "gamma2.2", *WINDOWS)
    assert f"tagged {trc}" in out


# ---- image sequences ------------------------------------------------------------------------------

def test_sixteen_bit_png_sequence(deep_frames, tmp_path):
    """A frame folder ordered by the number in the name (f2 before f10), 16-bit PNG: one clip; the
    sharp frame is the PNG rounded to 8 bits, the blur the 16-bit frames' linear-light mean."""
    folder = tmp_path / "shot"
    folder.mkdir()
    for i, fr in enumerate(deep_frames):
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    code, out = run("extract", folder, "--out", tmp_path / "o", *WINDOWS)
    assert code == 1 and "--capture-fps" in out
    ok("extract", folder, "--capture-fps", "960", "--out", tmp_path / "o", "--crf", "gamma2.2", *WINDOWS)
    with shard(tmp_path / "o" / "shot.h5") as f:
        assert f.attrs["source_type"] == "frames" and f.attrs["fps"] == 960 and f.attrs["averaged_bits"] == 16
        assert f.attrs["frames_decoded"] == len(deep_frames) and len(f["center"]) >= 3
        for i, c in enumerate(f["center"][:]):
            assert np.array_equal(f["sharp"][i], np.rint(deep_frames[c] / 257.0).astype(np.uint8))
            ref = window_mean(deep_frames, c, 9, *g22(65535.0))
            assert np.abs(f["blur/9"][i] - ref).max() <= 0.5 + 1e-3


def test_eight_bit_png_sequence(deep_frames, tmp_path):
    """An 8-bit frame folder is averaged from its frames as they are (no decoder, no YUV)."""
    frames = [np.rint(fr / 257.0).astype(np.uint8) for fr in deep_frames]
    folder = tmp_path / "shot8"
    folder.mkdir()
    for i, fr in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    ok("extract", folder, "--capture-fps", "960", "--out", tmp_path / "o", "--crf", "gamma2.2", *WINDOWS)
    with shard(tmp_path / "o" / "shot8.h5") as f:
        assert f.attrs["averaged_bits"] == 8 and len(f["center"]) >= 3
        for i, c in enumerate(f["center"][:]):
            assert np.array_equal(f["sharp"][i], frames[c])
            ref = window_mean(frames, c, 9, *g22(255.0))
            assert np.abs(f["blur/9"][i] - ref).max() <= 0.5 + 1e-3


# ---- trimming, VFR --------------------------------------------------------------------------------

def test_start_and_end_restrict_windows(clip960, tmp_path):
    out = ok_json("extract", clip960, "--out", tmp_path / "o", "--start", "0.03", "--end", "120f",
                  "--json", *WINDOWS)
    assert out["clips"][0]["pairs"] >= 1
    with shard(tmp_path / "o" / "c960.h5") as f:
        assert list(f.attrs["frame_range"]) == [29, 120]  # 0.03 s x 960 fps = frame 28.8 -> 29
        assert f["meta/17/first"][:].min() >= 29 and f["meta/17/last"][:].max() < 120
        assert f.attrs["frames_decoded"] == 120 and not f.attrs["truncated"]
    code, msg = run("extract", clip960, "--out", tmp_path / "o2", "--start", "2s", *WINDOWS)
    assert code == 1 and "past the clip" in msg
    code, msg = run("extract", clip960, "--out", tmp_path / "o2", "--end", "soon", *WINDOWS)
    assert code == 1 and "--end" in msg and len(msg.strip().splitlines()) == 1


def test_variable_frame_rate_from_timestamps(clip960, tmp_path):
    vfr = transcode(clip960, tmp_path / "vfr.mp4", "-vf", "setpts='if(lt(N,75),N/960,(N-75)/480+75/960)/TB'",
                    "-fps_mode", "vfr")
    # a constant 960 fps in Matroska's 1 ms time base: intervals of 1 and 2 ms, yet evenly spaced
    mkv = transcode(clip960, tmp_path / "cfr.mkv", "-c", "copy")
    info = probe(vfr)
    assert info.variable_frame_rate
    assert info.pts_spread["interval_ms"][0] == pytest.approx(1000 / 960, abs=0.01)
    assert info.pts_spread["interval_ms"][2] == pytest.approx(1000 / 480, abs=0.01)
    cfr = probe(mkv)
    assert cfr.vfr is False, cfr.pts_spread
    assert cfr.pts_spread["interval_ms"][2] - cfr.pts_spread["interval_ms"][0] >= 0.9, cfr.pts_spread
    assert probe(clip960).vfr is False
    code, out = run("extract", vfr, "--out", tmp_path / "o", *WINDOWS)
    assert code == 1 and "variable frame rate (frame intervals 1.04" in out
    assert "variable frame rate" in ok("probe", vfr)


# ---- folders of clips, disk full ------------------------------------------------------------------

def test_folders_of_clips(clip960, deep_frames, tmp_path):
    root = tmp_path / "footage"
    (root / "day1").mkdir(parents=True)
    (root / "day2" / "frames_a").mkdir(parents=True)
    (root / ".hidden").mkdir()
    transcode(clip960, root / "day1" / "a.mp4", "-c", "copy")
    transcode(clip960, root / "day1" / "b.mkv", "-c", "copy")
    transcode(clip960, root / ".hidden" / "x.mp4", "-c", "copy")
    (root / "day1" / "notes.txt").write_text("not a clip")
    for i, fr in enumerate(deep_frames[:60]):
        cv2.imwrite(str(root / "day2" / "frames_a" / f"{i:04d}.tif"), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    reports = ok_json("probe", root, "--capture-fps", "960", "--json")
    assert sorted(Path(r["clip"]).name for r in reports) == ["a.mp4", "b.mkv", "frames_a"]
    assert {r["kind"] for r in reports} == {"video", "frames"}
    ok("extract", root, "--capture-fps", "960", "--out", tmp_path / "o", *WINDOWS)
    assert sorted(p.name for p in (tmp_path / "o").glob("*.h5")) == ["a.h5", "b.h5", "frames_a.h5"]
    code, out = run("probe", tmp_path / "o")
    assert code == 1 and "no videos" in out


def test_disk_full_is_one_line_no_crash(clip960, tmp_path, monkeypatch):
    """HDF5 crashes the process when its metadata cannot be written; extract stops before that."""
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=3 << 20))
    code, out = run("extract", clip960, "--out", tmp_path / "o", *WINDOWS)
    assert code == 1 and "No space left on device" in out and len(out.strip().splitlines()) == 1, out
    assert not list((tmp_path / "o").iterdir())


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a tmpfs needs root on Linux")
def test_disk_full_on_a_real_small_disk(clip960, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        res = subprocess.run([sys.executable, "-m", "blurforge", "extract", str(clip960), "--out", str(disk),
                              "--quiet", *WINDOWS], capture_output=True, text=True, timeout=120)
        assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
        assert res.stderr.count("\n") == 1 and "No space left on device" in res.stderr, res.stderr
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)])


# ---- disk full for every shard writer: import, align ---------------------------------------------

def sha(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shard960(clip960, tmp_path_factory):
    out = tmp_path_factory.mktemp("s")
    ok("extract", clip960, "--out", out, *WINDOWS, "--quiet")
    with shard(out / "c960.h5") as f:
        assert f.attrs["num_pairs"] >= 3
    return out / "c960.h5"


def test_import_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """ShardWriter checks the room itself: import (not only extract) stops with one line, no file."""
    import shutil

    rng = np.random.default_rng(1)
    for i in range(3):
        img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        for side in ("blur", "sharp"):
            (tmp_path / side).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / side / f"{i:03d}.png"), img)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    code, out = run("import", "pairs", tmp_path / "blur", tmp_path / "sharp", "--out", tmp_path / "o", "--quiet")
    assert code == 1 and "No space left on device" in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


@pytest.mark.parametrize("fail_at", [1, 3])
def test_align_on_a_full_disk_leaves_the_shard_untouched(shard960, tmp_path, monkeypatch, fail_at):
    """The disk fills before the copy (1st check) or after the copy and a pair were written (3rd):
    one line, exit 1, the original shard byte for byte as it was, no temporary file."""
    import shutil

    path = Path(shutil.copy(shard960, tmp_path / "c960.h5"))
    before = sha(path)
    real, calls, tmp_sizes = shutil.disk_usage, [], []

    def usage(p):
        calls.append(p)
        tmp_sizes.extend(q.stat().st_size for q in tmp_path.glob(".c960.h5.tmp-*"))
        return real(p)._replace(free=0) if len(calls) >= fail_at else real(p)
    monkeypatch.setattr(shutil, "disk_usage", usage)
    code, out = run("align", path, "--quiet")
    assert code == 1 and "No space left on device" in out and len(out.strip().splitlines()) == 1, out
    assert len(calls) == fail_at
    if fail_at > 1:  # the copy had been written when the disk filled
        assert max(tmp_sizes) > path.stat().st_size // 2, tmp_sizes
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c960.h5"]
    monkeypatch.setattr(shutil, "disk_usage", real)
    ok("align", path, "--quiet")  # with room again it aligns
    with shard(path) as f:
        assert "aligned/9" in f and "aligned/17" in f


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a tmpfs needs root on Linux")
def test_align_on_a_real_small_disk(shard960, tmp_path):
    """A tmpfs that holds the shard but not its aligned copy."""
    import shutil

    disk = tmp_path / "disk"
    disk.mkdir()
    size = shard960.stat().st_size + (4 << 20)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        path = Path(shutil.copy(shard960, disk / "c960.h5"))
        before = sha(path)
        res = subprocess.run([sys.executable, "-m", "blurforge", "align", str(path), "--quiet"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
        assert res.stderr.count("\n") == 1 and "No space left on device" in res.stderr, res.stderr
        assert os.listdir(disk) == ["c960.h5"] and sha(path) == before
    finally:
        subprocess.run(["umount", str(disk)])


# ---- --bits 16 -----------------------------------------------------------------------------------

def test_sixteen_bit_curves_encode_their_own_codes():
    """At 16 bits every named curve gives back the 16-bit code whose linear value it is given."""
    import dataclasses

    from blurforge import curves as C

    codes = np.unique(np.linspace(0, 65535, 4001).round().astype(np.uint16))
    for name in C.NAMED:
        c = dataclasses.replace(C.load_curve(name), bits=16)
        got = c.encode(c.lut16[codes])
        assert got.dtype == np.uint16
        err = np.abs(got.astype(int) - codes)
        assert err.max() <= 1 and np.mean(err == 0) > 0.99, (name, err.max(), np.mean(err == 0))


def test_bits_16_stores_deep_sources_as_uint16(deep_frames, clip960, tmp_path):
    """16-bit PNG frames, --bits 16: sharp is the PNG frame itself, blur the float linear-light mean
    rounded once to 16 bits; verify and inspect read the shard; tools that read only 8-bit shards say so."""
    from skimage.metrics import peak_signal_noise_ratio

    folder = tmp_path / "shot"
    folder.mkdir()
    for i, fr in enumerate(deep_frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    args = ["--capture-fps", "960", "--crf", "gamma2.2", *WINDOWS]
    assert "stored as 16-bit" in ok("extract", folder, "--out", tmp_path / "o16", "--bits", "16", *args)
    assert "stored as 8-bit" in ok("extract", folder, "--out", tmp_path / "o8", *args)
    err16, err8 = [], []
    with shard(tmp_path / "o16" / "shot.h5") as f, shard(tmp_path / "o8" / "shot.h5") as g:
        assert np.array_equal(f["center"][:], g["center"][:]) and len(f["center"]) >= 3
        for name in ("sharp", "blur/9", "blur/17"):
            assert f[name].dtype == np.uint16 and g[name].dtype == np.uint8
        for i, c in enumerate(f["center"][:]):
            assert np.array_equal(f["sharp"][i], deep_frames[c])
            for w in (9, 17):
                ideal = window_mean(deep_frames, c, w, *g22(65535.0)) * 257.0  # on the 0..65535 scale
                assert np.abs(f[f"blur/{w}"][i] - ideal).max() <= 0.5 + 0.05 * 257 / 255
                err16.append(np.sqrt(np.mean((f[f"blur/{w}"][i] - ideal) ** 2)))
                err8.append(np.sqrt(np.mean((g[f"blur/{w}"][i] * 257.0 - ideal) ** 2)))
        truth = np.mean([peak_signal_noise_ratio(f["sharp"][i] / 257.0, f["blur/9"][i] / 257.0, data_range=255)
                         for i in range(len(f["center"]))])
    print(f"blur RMS error vs the float ideal, 16-bit codes: --bits 16 {np.mean(err16):.1f}, "
          f"8 bits {np.mean(err8):.1f}")
    assert np.mean(err16) < 0.05 * np.mean(err8)  # 8-bit storage rounds to 257 16-bit codes
    ok("verify", tmp_path / "o16" / "shot.h5")
    report = ok_json("inspect", tmp_path / "o16" / "shot.h5", "--json")
    report = report["shards"][0]
    assert report["bits"] == 16 and report["per_window"]["9"]["psnr_blur_db"] == pytest.approx(truth, abs=0.01)
    ok("inspect", tmp_path / "o16", "--sheet", tmp_path / "sheet.png")
    assert cv2.imread(str(tmp_path / "sheet.png")) is not None
    for cmd in (["align", tmp_path / "o16"],
                ["export", tmp_path / "o16", "--format", "pairs", "--out", tmp_path / "x"]):
        code, out = run(*cmd)
        assert code == 1 and "16-bit" in out and "Traceback" not in out, out
    res = subprocess.run([sys.executable, "-m", "dsanet.train", "--shards", str(tmp_path / "o16"), "--out",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "16-bit" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]
    # an 8-bit source stays 8 bits, and says so; --align cannot read what --bits 16 writes
    out = ok("extract", clip960, "--out", tmp_path / "o8v", "--bits", "16", *WINDOWS)
    assert "stored as 8 bits" in out
    with shard(tmp_path / "o8v" / "c960.h5") as f:
        assert f["sharp"].dtype == np.uint8
    code, out = run("extract", folder, "--out", tmp_path / "oa", "--bits", "16", "--align", *args)
    assert code == 1 and "--bits 16" in out


# ---- DNG raw sequences ---------------------------------------------------------------------------

# XYZ (D65) -> linear sRGB: as a DNG ColorMatrix1 it says "the camera's RGB is linear sRGB", so
# LibRaw's colour conversion is the identity and its output can be checked against the scene itself
XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
                        [0.0556434, -0.2040259, 1.0572252]])


def write_dng(path, lin_rgb, black=512, white=16383):
    """A minimal uncompressed DNG 1.4 (tifffile): the RGGB mosaic of linear RGB in [0, 1], 14-bit
    codes above a black level, neutral white balance, ColorMatrix1 = XYZ -> sRGB."""
    tifffile = pytest.importorskip("tifffile")
    mosaic = np.empty(lin_rgb.shape[:2])
    mosaic[0::2, 0::2] = lin_rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = lin_rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = lin_rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = lin_rgb[1::2, 1::2, 2]
    raw = np.rint(black + np.clip(mosaic, 0, 1) * (white - black)).astype(np.uint16)
    cm = tuple(v for x in XYZ_TO_SRGB.ravel() for v in (int(round(x * 10000)), 10000))
    tags = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True),  # CFA 2x2, RGGB
            (50706, "B", 4, (1, 4, 0, 0), True), (50707, "B", 4, (1, 1, 0, 0), True),  # DNG version
            (50708, "s", 0, "blurforge test camera", True), (50714, "H", 1, black, True),
            (50717, "H", 1, white, True), (50721, "2i", 9, cm, True),  # black, white, ColorMatrix1
            (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True), (50778, "H", 1, 21, True)]  # AsShotNeutral, D65
    tifffile.imwrite(path, raw, photometric=32803, subfiletype=0, extratags=tags, metadata=None)
    return path


def test_dng_raw_sequence_is_linear(deep_frames, tmp_path):
    """A folder of DNG raw frames (a moving scene rendered in linear light, mosaicked, 14-bit): read
    through LibRaw as linear 16-bit RGB, averaged with the linear curve; sharp and blur are checked
    against the scene's own linear light, and against rawpy's decode with the documented settings."""
    rawpy = pytest.importorskip("rawpy")
    scene = [np.clip((f / 65535.0) ** 2.2 * 10.0, 0, 1) for f in deep_frames[:80]]  # linear, up to ~0.5
    folder = tmp_path / "raw"
    folder.mkdir()
    for i, lin in enumerate(scene):
        write_dng(folder / f"C001_{i:05d}.dng", lin)
    info = ok_json("probe", folder, "--capture-fps", "960", "--json")[0]
    assert (info["codec"], info["transfer"], info["bit_depth"], info["frames"]) == ("dng", "linear", 16, 80)
    ok("extract", folder, "--capture-fps", "960", "--out", tmp_path / "o", "--bits", "16", *WINDOWS)

    def decode(i):
        with rawpy.imread(str(folder / f"C001_{i:05d}.dng")) as r:
            return r.postprocess(gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True)
    with shard(tmp_path / "o" / "raw.h5") as f:
        assert f.attrs["camera_curve"] == "linear" and f.attrs["transfer"] == "linear"
        assert f.attrs["source_type"] == "frames" and f.attrs["averaged_bits"] == 16
        assert len(f["center"]) >= 2
        inner = (slice(4, -4), slice(4, -4))  # demosaicing has no neighbours at the border
        errs = []
        for i, c in enumerate(f["center"][:]):
            assert np.array_equal(f["sharp"][i], decode(c))
            # the scene's linear light, to demosaicing error: 0.1% of white on average
            errs.append(np.abs(f["sharp"][i][inner] / 65535.0 - scene[c][inner]).mean())
            assert errs[-1] < 1e-3
            mean_dec = np.mean([decode(t).astype(np.float64) for t in range(c - 8, c + 9)], axis=0)
            assert np.abs(f["blur/17"][i] - mean_dec).max() <= 0.5 + 1e-6  # linear: the plain mean, rounded once
            mean_scene = np.mean(scene[c - 8:c + 9], axis=0)
            errs.append(np.abs(f["blur/17"][i][inner] / 65535.0 - mean_scene[inner]).mean())
            assert errs[-1] < 1e-3
    print(f"DNG: sharp and blur/17 against the scene's linear light, mean |error| {max(errs):.2e} of white at most")
    # a tone curve asked for on linear raw data is done, but said
    out = ok("extract", folder, "--capture-fps", "960", "--out", tmp_path / "o2", "--crf", "gamma2.2", *WINDOWS)
    assert "tagged linear" in out


def test_dng_without_rawpy_or_damaged_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("tifffile")
    folder = tmp_path / "raw"
    folder.mkdir()
    for i in range(20):
        write_dng(folder / f"f{i:03d}.dng", np.full((32, 48, 3), 0.2))
    (folder / "f005.dng").write_bytes(b"not a raw file")
    code, out = run("extract", folder, "--capture-fps", "960", "--out", tmp_path / "o", "--windows", "9")
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert code == 1 and len(errors) == 1 and "f005.dng: not a readable DNG" in errors[0], out
    assert "Traceback" not in out and not list((tmp_path / "o").glob("*.h5"))
    monkeypatch.setitem(sys.modules, "rawpy", None)  # as if the raw extra were not installed
    code, out = run("probe", folder, "--capture-fps", "960")
    assert code == 1 and "pip install 'blurforge[raw]'" in out and len(out.strip().splitlines()) == 1, out
