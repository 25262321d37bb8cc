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


def test_fused_kernel_and_opencv_path_add_the_same():
    """The C kernel (when built) and the OpenCV fallback both compute acc (+)= sum of lut[frame]
    over 1 to 4 frames: OpenCV exactly in order, the kernel within float32 rounding of the sum."""
    from blurforge import averaging

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (131, 67, 3), dtype=np.uint8) for _ in range(4)]  # rows not a band multiple
    luts = [(load_curve("srgb").lut / g).astype(np.float32) for g in (1.03, 0.98, 1.0, 1.01)]
    start = rng.uniform(0, 5, frames[0].shape).astype(np.float32)
    tmp = np.empty((averaging.STRIP_ROWS,) + frames[0].shape[1:], np.float32)
    for k in range(1, 5):
        for begin in (False, True):
            fused, banded = start.copy(), start.copy()
            averaging.add_linear(fused, frames[:k], luts[:k], tmp, start=begin)
            averaging.add_linear(banded, frames[:k], luts[:k], tmp, start=begin, fused=False)
            expect = np.zeros_like(start) if begin else start.copy()
            for f, lut in zip(frames[:k], luts[:k]):
                expect = (lut[f] if begin and f is frames[0] else expect + lut[f]).astype(np.float32)
            assert np.array_equal(banded, expect)
            truth = sum(lut[f].astype(np.float64) for f, lut in zip(frames[:k], luts[:k])) + (0 if begin else start)
            np.testing.assert_allclose(fused, truth, rtol=1e-6, atol=1e-6)
