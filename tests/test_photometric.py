import cv2
import numpy as np
import pytest

from blurforge.curves import load_curve
from blurforge.photometric import NEGLIGIBLE, fit_gains, linear_small, measure_ratios

FPS = 960.0


def _window(n=73):
    return np.arange(n) - n // 2


@pytest.mark.parametrize("hz", [120.0, 100.0])
def test_gains_recover_flicker_under_a_slow_drift(hz):
    t = _window()
    flick = 1 + 0.04 * np.sin(2 * np.pi * hz * t / FPS + 0.7)
    drift = 1 + 0.01 * t / len(t) + 0.02 * (t / len(t)) ** 2
    noise = 1 + 0.0005 * np.random.default_rng(0).standard_normal(len(t))
    truth = flick * drift / (flick * drift)[len(t) // 2]
    fit = fit_gains(truth * noise / noise[len(t) // 2], FPS, None)
    assert fit.flicker_hz == hz and fit.significance >= 100
    assert fit.amplitude == pytest.approx(0.04, rel=0.05)
    np.testing.assert_allclose(fit.gains, truth, atol=2e-3)
    assert fit.gains[len(t) // 2] == 1.0


def test_no_flicker_and_no_drift_give_gains_of_exactly_one():
    """Noise of the size ratios over thousands of pixels leave (0.05%) is never fitted as flicker."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        g = 1 + 0.0005 * rng.standard_normal(73)
        fit = fit_gains(g / g[36], FPS, None)
        assert np.all(fit.gains == 1.0) and fit.flicker_hz == 0 and not fit.drift, fit.significance


def test_small_flicker_is_left_alone_and_off_disables():
    """Flicker below NEGLIGIBLE moves no code by half a step: not applied even when significant;
    --flicker off applies nothing whatever the data."""
    t = _window()
    small = 1 + 0.5 * NEGLIGIBLE * np.sin(2 * np.pi * 120 * t / FPS)
    fit = fit_gains(small / small[36], FPS, None)
    assert fit.significance >= 12 and fit.flicker_hz == 0 and np.all(fit.gains == 1.0)
    big = 1 + 0.03 * np.sin(2 * np.pi * 120 * t / FPS)
    off = fit_gains(big / big[36], FPS, 0.0)
    assert off.flicker_hz == 0 and np.all(off.gains == 1.0)


def test_negligible_change_moves_no_code_by_half_a_step():
    lut = load_curve("gamma2.2").lut
    codes = np.arange(256)

    def worst_code_shift(a):
        return np.max(np.abs(255 * np.clip(lut[codes] * (1 + a), 0, None) ** (1 / 2.2) - codes))

    assert worst_code_shift(NEGLIGIBLE) < 0.5 < worst_code_shift(2 * NEGLIGIBLE)


def _scene(seed=0, size=(90, 160)):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(20, 230, size).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 20, 230, cv2.NORM_MINMAX)


def test_ratios_ignore_a_moving_object_and_saturation():
    """Frames = the scene shifted by known warps times known gains, with a bright block covering an
    eighth of the picture at a different place in every frame and a saturated band: the measured
    ratios are the gains (a whole-frame mean would be off by percents)."""
    lut = load_curve("gamma2.2").lut
    base = _scene()
    h, w = base.shape
    gains = np.array([0.97, 1.0, 1.03, 0.99, 1.02])
    lin_base = lut[np.clip(np.rint(base), 0, 255).astype(np.uint8)]
    frames, warps = [], []
    for k, g in enumerate(gains):
        m = np.array([[1.0, 0, 0.7 * (k - 2)], [0, 1.0, -0.4 * (k - 2)]])
        moved = cv2.warpAffine(lin_base.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        img = moved * g
        img[:, 30 * k:30 * k + 20] = 0.9                 # the moving object
        img[:6] = 1.5                                    # saturates
        codes = np.clip(np.rint(255 * np.clip(img, 0, 1) ** (1 / 2.2)), 0, 255).astype(np.uint8)
        frames.append(linear_small(codes, lut, video_range=False))
        warps.append(np.vstack([m, [0, 0, 1]]))
    # frame k shows the scene point p at inv(m_k) p: centre-frame px -> frame k px is inv(m_k) m_1
    to_frame = np.array([np.linalg.inv(m) @ warps[1] for m in warps])[:, :2]
    measured = measure_ratios(frames, 1, to_frame, lut)
    np.testing.assert_allclose(measured, gains / gains[1], atol=1e-3)
    whole = np.array([f.mean() for f in frames]) / frames[1].mean()
    assert np.abs(whole - gains / gains[1]).max() > 0.01


def test_linear_small_maps_video_range():
    lut = load_curve("srgb").lut
    codes = np.array([[16, 235, 126]], np.uint8)
    np.testing.assert_allclose(linear_small(codes, lut, True)[0], [lut[0], lut[255], lut[128]], rtol=1e-6)
