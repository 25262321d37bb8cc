import numpy as np
import pytest

from blurforge.curves import load_curve
from blurforge.photometric import NEGLIGIBLE_FLICKER, flicker_found, frame_brightness, window_gains


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


def test_negligible_flicker_moves_no_code_by_half_a_step():
    """Below the threshold a flicker gain changes no gamma-2.2 code by half a step (so a summary may
    call it "no flicker"); at twice the threshold white moves by more than half a step."""
    lut = load_curve("gamma2.2").lut
    codes = np.arange(256)

    def worst_code_shift(a):
        lin = lut[codes] * (1 + a)
        return np.max(np.abs(255 * np.clip(lin, 0, None) ** (1 / 2.2) - codes))

    assert worst_code_shift(NEGLIGIBLE_FLICKER) < 0.5 < worst_code_shift(2 * NEGLIGIBLE_FLICKER)
    assert not flicker_found(0.0) and not flicker_found(0.999 * NEGLIGIBLE_FLICKER)
    assert flicker_found(NEGLIGIBLE_FLICKER) and flicker_found(0.04)


def test_fitted_noise_stays_below_the_threshold_and_real_flicker_above():
    """Brightness noise of 0.1% (codec noise on a steady scene) fits a sinusoid far below the
    threshold; a 1% flicker under the same noise is found."""
    rng = np.random.default_rng(1)
    n, fps = 73, 960.0
    t = np.arange(n) - n // 2
    swings = []
    for flicker in (0.0, 0.01):
        for _ in range(20):
            b = 0.3 * (1 + flicker * np.sin(2 * np.pi * 120 * t / fps + rng.uniform(0, 6)))
            g, _ = window_gains(b * (1 + 0.001 * rng.standard_normal(n)), fps, None)
            swings.append(np.ptp(g) / 2)
    steady, flickering = np.array(swings[:20]), np.array(swings[20:])
    assert not any(flicker_found(a) for a in steady), steady.max()
    assert all(flicker_found(a) for a in flickering), flickering.min()
