import numpy as np
import pytest

from blurforge.curves import load_curve
from blurforge.photometric import frame_brightness, window_gains


@pytest.mark.parametrize("hz", [120.0, 100.0])
def test_gains_recover_flicker_under_a_slow_trend(hz):
    n, fps = 73, 960.0
    t = np.arange(n) - n // 2
    flick = 1 + 0.04 * np.sin(2 * np.pi * hz * t / fps + 0.7)
    content = 0.3 * (1 + 0.01 * t / n + 0.02 * (t / n) ** 2)  # slow content / drift trend
    gains, chosen = window_gains(content * flick, fps, None)
    assert chosen == hz
    np.testing.assert_allclose(gains, flick / flick[n // 2], atol=2e-3)


def test_no_flicker_gives_unit_gains_and_off_disables():
    b = 0.3 * (1 + 0.001 * np.arange(37))
    g, _ = window_gains(b, 960.0, None)
    np.testing.assert_allclose(g, 1.0, atol=1e-3)
    g, hz = window_gains(b * (1 + 0.04 * np.sin(np.arange(37))), 960.0, 0.0)
    assert hz == 0.0 and np.all(g == 1.0)


def test_brightness_ignores_saturated_pixels():
    lut = load_curve("gamma2.2").lut
    img = np.full((20, 20), 128.0)
    sat = img.copy()
    sat[:5] = 255.0
    assert frame_brightness(sat, lut) == pytest.approx(frame_brightness(img, lut))


def test_brightness_is_the_mean_linear_light_of_mid_tones():
    lut = load_curve("srgb").lut
    rng = np.random.default_rng(5)
    img = rng.uniform(-3, 260, (40, 60))
    codes = np.clip(np.rint(img), 0, 255).astype(int)
    keep = (codes > 8) & (codes < 245)
    assert frame_brightness(img.astype(np.float32), lut) == pytest.approx(lut[codes[keep]].mean(), rel=1e-9)
