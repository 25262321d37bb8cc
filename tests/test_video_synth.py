import json

import numpy as np
from click.testing import CliRunner
from conftest import decode_all, make_clip

from blurforge.cli import main
from blurforge.curves import load_curve
from blurforge.synth import SynthConfig, camera_matrix, truth_table
from blurforge.video import probe


def test_synth_clip_and_truth(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=64, flicker=0.04)
    info = probe(clip)
    assert (info.width, info.height, info.fps, info.codec, info.pix_fmt) == (320, 180, 960.0, "h264", "yuv420p")
    frames = decode_all(clip)
    assert len(frames) == 64
    truth = json.loads((tmp_path / "c.json").read_text())
    rows = truth["frames"]
    assert len(rows) == 64 and truth["camera_curve"] == "gamma2.2"
    g = np.array([r["flicker"] for r in rows])
    assert 0.07 < np.ptp(g) < 0.081  # 4% amplitude at 120 Hz: period of 8 frames
    assert np.allclose(g[:-8], g[8:], atol=1e-9)
    speed = np.hypot(np.diff([r["dx"] for r in rows]), np.diff([r["dy"] for r in rows]))
    assert 0.02 < speed.mean() < 1.0


def test_camera_matrix_is_the_known_affine():
    row = dict(angle_deg=0.0, scale=1.0, dx=3.0, dy=-2.0)
    m = camera_matrix(row, (100, 80), (60, 40))
    assert np.allclose(m @ [50, 40, 1], [30 + 3, 20 - 2])


def test_truth_is_deterministic_in_seed():
    a = truth_table(SynthConfig(frames=20, seed=7))
    b = truth_table(SynthConfig(frames=20, seed=7))
    c = truth_table(SynthConfig(frames=20, seed=8))
    assert a == b and a != c


def test_probe_cli_reports_exposure_and_low_fps(tmp_path):
    clip = make_clip(tmp_path / "slow.mp4", frames=30, fps=120)
    res = CliRunner().invoke(main, ["probe", str(clip), "--windows", "9,73"])
    assert res.exit_code == 0
    assert "75.0 ms" in res.stdout and "608.3 ms" in res.stdout and "too short" in res.stdout
    assert "below 240" in res.output


def test_curve_roundtrip_and_file(tmp_path):
    for name in ("gamma2.2", "srgb", "linear"):
        c = load_curve(name)
        codes = np.arange(256, dtype=np.uint8)
        assert np.array_equal(c.encode(c.linearize(codes)), codes)
    path = tmp_path / "crf.txt"
    np.savetxt(path, (np.arange(256) / 255.0) ** 2.0)
    c = load_curve(str(path))
    assert c.name == "file:crf.txt"
    assert np.array_equal(c.encode(c.lut), np.arange(256))


def test_object_cut_from_the_scene_photo(tmp_path):
    """object_photo="" films one photo only: on a grey scene the disc is grey too (coffee's is not)."""
    from blurforge.synth import render_frames, truth_table

    for obj, grey in (("", True), ("coffee", False)):
        cfg = SynthConfig(width=160, height=96, frames=2, photo="camera", object_photo=obj, seed=1)
        rows = truth_table(cfg)
        frame = next(render_frames(cfg, rows)).astype(int)
        x, y, r = int(rows[0]["object_x"]), int(rows[0]["object_y"]), int(rows[0]["object_radius"])
        disc = frame[y - r // 2:y + r // 2, x - r // 2:x + r // 2]
        spread = np.abs(disc[..., 0] - disc[..., 2]).max()
        assert (spread <= 1) == grey, (obj, spread)


def test_no_object_films_the_shaking_scene_only():
    """--no-object: the truth has no object, and the frame differs from one with the disc only
    inside the disc (the camera shake is the same)."""
    from blurforge.synth import render_frames, truth_table

    base = dict(width=160, height=96, frames=1, photo="camera", seed=2)
    rows_obj = truth_table(SynthConfig(**base))
    with_obj = next(render_frames(SynthConfig(**base), rows_obj)).astype(int)
    cfg = SynthConfig(**base, moving_object=False)
    rows = truth_table(cfg)
    assert rows[0]["object_x"] is None and rows[0]["dx"] == rows_obj[0]["dx"] != 0
    without = next(render_frames(cfg, rows)).astype(int)
    differs = np.abs(with_obj - without).max(-1) > 0
    yy, xx = np.mgrid[0:96, 0:160]
    outside = np.hypot(xx - rows_obj[0]["object_x"], yy - rows_obj[0]["object_y"]) > rows_obj[0]["object_radius"] + 3
    assert differs.any() and not differs[outside].any()


def test_dead_leaves_is_a_new_scene_per_seed():
    """Same seed, same picture; another seed, another; occluding discs at many sizes, so edges of
    every orientation; anti-aliased (edge pixels mix two colours)."""
    import cv2

    from blurforge.synth import dead_leaves

    a, b, c = dead_leaves(200, 120, 1), dead_leaves(200, 120, 1), dead_leaves(200, 120, 2)
    assert a.shape == (120, 200, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b) and np.abs(a - c).mean() > 0.05
    g = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    strong = np.hypot(gx, gy) > 0.05
    angles = np.degrees(np.arctan2(gy[strong], gx[strong])) % 180
    assert np.histogram(angles, bins=6, range=(0, 180))[0].min() > 0.05 * strong.sum()
    codes = np.rint(255 * a ** (1 / 2.2)).astype(int).reshape(-1, 3)
    assert len(np.unique(codes, axis=0)) > 1000    # far more than the visible discs: blended edges


def test_deadleaves_clip_renders():
    from blurforge.synth import render_frames, truth_table

    cfg = SynthConfig(width=96, height=64, frames=2, photo="deadleaves", object_photo="", seed=5)
    f0, f1 = list(render_frames(cfg, truth_table(cfg)))
    assert f0.shape == (64, 96, 3) and f0.std() > 20 and not np.array_equal(f0, f1)


def test_pan_adds_a_straight_constant_velocity_path():
    """--pan: the camera path is the shake-only path plus a constant velocity of 50-100% of the
    given speed (scaled to the width), in a direction the seed draws; the truth records it."""
    from blurforge.synth import truth_table

    base = dict(width=320, height=180, frames=200, seed=7)
    shake = truth_table(SynthConfig(**base))
    panned = truth_table(SynthConfig(**base, pan_px_s=400.0))
    t = np.array([r["time"] for r in shake])
    d = np.array([[p["dx"] - s["dx"], p["dy"] - s["dy"]] for p, s in zip(panned, shake)])
    v = np.polyfit(t, d, 1)[0]                       # px/s, per axis
    assert np.abs(d - np.outer(t - t.mean(), v)).max() < 1e-9      # a straight line, centred
    assert 0.5 * 200 - 1e-6 <= np.hypot(*v) <= 200 + 1e-6          # 400 px/s at 640 px = 200 at 320
    other = truth_table(SynthConfig(**{**base, "seed": 8}, pan_px_s=400.0))
    assert (other[-1]["dx"], other[-1]["dy"]) != (panned[-1]["dx"], panned[-1]["dy"])


def test_synth_cli_pan_and_scene_options(tmp_path):
    out = tmp_path / "p.mp4"
    res = CliRunner().invoke(main, ["synth", str(out), "--frames", "8", "--size", "64x48", "--photo", "deadleaves",
                                    "--pan", "300", "--shake", "3", "--no-object", "--quiet"])
    assert res.exit_code == 0, res.output
    cfg = json.loads(out.with_suffix(".json").read_text())["config"]
    assert (cfg["pan_px_s"], cfg["shake_px"], cfg["moving_object"], cfg["photo"]) == (300.0, 3.0, False, "deadleaves")
    assert len(decode_all(out)) == 8
