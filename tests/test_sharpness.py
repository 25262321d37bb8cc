import cv2
import numpy as np
import pytest

from blurforge import sharpness as sh


def test_tenengrad_prefers_sharp_and_ignores_brightness():
    rng = np.random.default_rng(0)
    img = rng.integers(40, 200, (90, 120)).astype(np.uint8)
    blurred = cv2.GaussianBlur(img, (0, 0), 2)
    assert sh.tenengrad(img) > 3 * sh.tenengrad(blurred)
    brighter = np.clip(img.astype(float) * 1.05, 0, 255).astype(np.uint8)
    assert abs(sh.tenengrad(brighter) / sh.tenengrad(img) - 1) < 0.02


def test_streaming_picker_equals_offline_and_respects_rules():
    rng = np.random.default_rng(2)
    scores = np.convolve(rng.random(1000), np.ones(5) / 5, mode="same")
    cuts = np.zeros(1000, bool)
    cuts[500] = True
    offline = sh.choose_centres(scores, 36, 73, cuts)
    picker, streamed = sh.CentrePicker(36, 73), []
    for t, s in enumerate(scores):
        got = picker.push(s, cuts[t])
        assert all(c + 36 < t + 1 for c in got)  # decided only once the window is decoded
        streamed += got
    streamed += picker.finish()
    assert streamed == offline and len(offline) >= 8
    c = np.array(offline)
    assert np.all(np.diff(c) >= 73) and c.min() >= 36 and c.max() < 1000 - 36
    assert not np.any((c - 36 < 500) & (c + 36 >= 500))
    r = 73 // 8
    assert all(scores[x] == scores[max(0, x - r):x + r + 1].max() for x in offline)


def test_cut_score_separates_cuts_from_flicker():
    rng = np.random.default_rng(3)
    a = rng.random((40, 60)).astype(np.float32) * 200 + 20
    b = rng.random((40, 60)).astype(np.float32) * 200 + 20
    assert sh.cut_score(a, a * 1.04) < 1.0
    assert sh.cut_score(a, b) > 30


def test_tenengrad_of_video_range_luma_needs_no_conversion():
    rng = np.random.default_rng(2)
    full = cv2.GaussianBlur(rng.integers(0, 256, (90, 120)).astype(np.uint8), (0, 0), 1)
    video = np.rint(16 + full.astype(float) * 219 / 255).astype(np.uint8)
    assert abs(sh.tenengrad(video, black=16) / sh.tenengrad(full) - 1) < 0.02
    assert abs(sh.tenengrad(video) / sh.tenengrad(full) - 1) > 0.05  # without the black level it is off


def _sobel_energy_truth(g):
    """Sum of squared 3x3 Sobel gradients with reflect-101 borders, in int64 numpy."""
    p = np.pad(g.astype(np.int64), 1, mode="reflect") if min(g.shape) > 1 else np.pad(g.astype(np.int64), 1,
                                                                                       mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return int((gx * gx).sum() + (gy * gy).sum())


def test_tenengrad_kernel_sums_are_exact_and_match_opencv():
    """The C kernel's sums equal an int64 numpy Sobel (reflect-101 borders) exactly, at the extremes
    too (a 0/255 checkerboard: the largest gradients; rows wider than its 1024-pixel blocks; more
    than 2^20 pixels of 255), and tenengrad agrees with the OpenCV path to the last bits."""
    if sh._sums is None:
        pytest.skip("blurforge._tenengrad not built")
    rng = np.random.default_rng(3)
    for h, w in [(1, 1), (1, 9), (2, 2), (3, 5), (9, 13), (67, 120), (270, 2100), (1100, 1000)]:
        checker = (np.indices((h, w)).sum(0) % 2 * 255).astype(np.uint8)
        for g in (rng.integers(0, 256, (h, w), dtype=np.uint8), checker, np.full((h, w), 255, np.uint8)):
            energy, total = sh._sums(g)
            assert total == int(g.astype(np.int64).sum())
            if min(h, w) > 1:
                assert energy == _sobel_energy_truth(g), (h, w)
            assert sh.tenengrad(g, 16.0) == pytest.approx(sh.tenengrad(g, 16.0, fused=False), rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match="2-D uint8"):
        sh._sums(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="2-D uint8"):
        sh._sums(np.zeros((4, 4), np.uint16))


def test_no_centre_comes_before_earliest():
    """extract lets go of frames before ``earliest() - h``: no centre decided later may lie before it."""
    rng = np.random.default_rng(4)
    for stride in (5, 24, 96):
        picker = sh.CentrePicker(12, stride)
        bounds, centres = [], []
        for _ in range(600):
            got = picker.push(float(rng.random()), cut=bool(rng.random() < 0.01))
            centres += [(c, len(bounds)) for c in got]
            bounds.append(picker.earliest())
        centres += [(c, len(bounds)) for c in picker.finish()]
        assert len(centres) > 3
        for c, k in centres:   # decided after bounds[:k] were given
            assert all(c >= b for b in bounds[:k])
