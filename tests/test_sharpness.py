import cv2
import numpy as np

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
