import numpy as np
import pytest

from blurforge.averaging import average_windows, half_span, window_weights
from blurforge.curves import load_curve


@pytest.mark.parametrize("w", [2, 7, 36, 73])
def test_weights_span_exactly_w_intervals_centred(w):
    wts = window_weights(w)
    offsets = np.arange(len(wts)) - half_span(w)
    assert len(wts) == (w if w % 2 else w + 1)
    assert wts.sum() == pytest.approx(1.0)
    assert (wts * offsets).sum() == pytest.approx(0.0)
    # a box of W intervals: integral of a unit-rate ramp over [-W/2, W/2] sampled by the weights
    assert (wts * offsets ** 2).sum() == pytest.approx(((w ** 2 - 1) / 12) if w % 2 else (w ** 2 + 2) / 12)


@pytest.mark.parametrize("crf", ["gamma2.2", "srgb", "linear"])
def test_average_matches_brute_force(crf):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(9)]
    gains = rng.uniform(0.95, 1.05, 9)
    gains[4] = 1.0
    curve = load_curve(crf)
    out = average_windows(frames, gains, [4, 5, 9], curve)
    for w in (4, 5, 9):
        h = half_span(w)
        sel = range(4 - h, 4 + h + 1)
        lin = sum(wt * curve.lut[frames[t]] / gains[t] for wt, t in zip(window_weights(w), sel))
        ref = curve.encode(lin)
        assert np.abs(out[w].astype(int) - ref.astype(int)).max() <= 1
        assert np.mean(out[w] == ref) > 0.97


def test_constant_frames_average_to_themselves():
    f = np.full((4, 4, 3), 137, np.uint8)
    out = average_windows([f] * 7, np.ones(7), [6, 7], load_curve("gamma2.2"))
    assert (out[6] == 137).all() and (out[7] == 137).all()
