import itertools

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


@pytest.fixture
def simd_modes():
    """The lookup kernels to test: scalar, and the AVX-512 VBMI one where this CPU has it."""
    _linear = pytest.importorskip("blurforge._linear")
    modes = ["scalar"] + (["avx512vbmi"] if _linear.simd() == "avx512vbmi" else [])
    yield _linear, modes
    _linear.simd(True)


def test_table_lookups_add_numpys_float32_sums_exactly(simd_modes):
    """accumulate_many gives, bit for bit, numpy's float32 ``acc + (((l0[x0] + l1[x1]) + l2[x2]) +
    l3[x3])`` with either lookup kernel: 1 to 4 frames, started or not, lengths around the SIMD
    kernel's 64 values (its scalar tail), negative and large table values."""
    _linear, modes = simd_modes
    rng = np.random.default_rng(5)
    for n in (1, 63, 64, 65, 127, 1000, 4099):
        for k in range(1, 5):
            xs = [rng.integers(0, 256, n, dtype=np.uint8) for _ in range(k)]
            luts = [(rng.standard_normal(256) * 10.0 ** rng.integers(-3, 4)).astype(np.float32) for _ in range(k)]
            s = luts[0][xs[0]]
            for lut, x in zip(luts[1:], xs[1:]):
                s = s + lut[x]
            acc = rng.uniform(-2, 2, n).astype(np.float32)
            for start in (False, True):
                truth = s if start else acc + s
                for mode in modes:
                    _linear.simd(mode != "scalar")
                    assert _linear.simd() == mode
                    out = acc.copy()
                    _linear.accumulate_many(out, xs, luts, start)
                    assert np.array_equal(out, truth), (n, k, start, mode)


def test_decoded_frames_add_as_their_rgb_does(tmp_path, simd_modes):
    """accumulate_yuv (bands of decoded frames made RGB inside the kernel) adds exactly what
    accumulate_many adds from the same frames' RGB, with either lookup kernel, 1 to 4 frames,
    started or not, with a picture height that is no multiple of the band; and average_windows
    gives the same windows either way."""
    from conftest import make_clip

    from blurforge import averaging
    from blurforge.video import FrameReader, SwsBands, probe

    if averaging._accumulate_yuv is None:
        pytest.skip("blurforge._linear not built")
    clip = make_clip(tmp_path / "c.mp4", frames=9, height=186)
    decoded = list(FrameReader(probe(clip)))
    bands = SwsBands.for_clip(decoded[0], averaging.GROUP)
    rgbs = [f.rgb() for f in decoded]
    luts = [(load_curve("srgb").lut / g).astype(np.float32) for g in (1.03, 0.98, 1.0, 1.01)]
    start = np.random.default_rng(2).uniform(0, 5, rgbs[0].shape).astype(np.float32)
    for k, begin, mode in itertools.product(range(1, 5), (False, True), simd_modes[1]):
        simd_modes[0].simd(mode != "scalar")
        a, b = start.copy(), start.copy()
        averaging._accumulate_many(a, rgbs[:k], luts[:k], begin)
        averaging._accumulate_yuv(b, [bands.source(f, j) for j, f in enumerate(decoded[:k])], luts[:k], begin,
                                  bands.scale, bands.height, bands.width, bands.BAND)
        assert np.array_equal(a, b)

    class Window:
        """Decoded frames for the kernel, except the centre (as extract's _RgbWindow does)."""

        def __init__(self, decoded, with_bands):
            self.decoded, self.bands = decoded, with_bands and bands

        def __len__(self):
            return len(self.decoded)

        def __getitem__(self, i):
            return self.decoded[i].rgb()

        def yuv(self, i):
            return self.decoded[i] if self.bands and i != len(self) // 2 else None

    gains = np.linspace(0.97, 1.03, 9)
    plain = average_windows(Window(decoded, False), gains, [4, 9], load_curve("srgb"))
    banded = average_windows(Window(decoded, True), gains, [4, 9], load_curve("srgb"))
    for w in (4, 9):
        assert np.abs(plain[w].astype(int) - banded[w]).max() <= 1
        assert (plain[w] != banded[w]).mean() < 1e-4
    with pytest.raises(ValueError, match="1 to 4 sources"):
        averaging._accumulate_yuv(start, [], [], False, bands.scale, bands.height, bands.width, 8)
    with pytest.raises(ValueError, match="even band"):
        averaging._accumulate_yuv(start, [bands.source(decoded[0], 0)], luts[:1], False, bands.scale,
                                  bands.height, bands.width, 7)
    with pytest.raises(ValueError, match="even band"):
        averaging._accumulate_yuv(start[1:], [bands.source(decoded[0], 0)], luts[:1], False, bands.scale,
                                  bands.height, bands.width, 8)
    bands.close()


def test_gamma_encode_rounds_exactly_at_its_code_thresholds(monkeypatch):
    """gamma 2.2's encode (the C kernel's threshold rounding) is round(255 x^(1/2.2)) computed in
    float64, for every value: each code's threshold as a float32 and its neighbours on both sides,
    values spread over the range and near black, out of range, inf and NaN (as 0). OpenCV's pow,
    its fallback, is that within a code."""
    from blurforge import curves

    _linear = pytest.importorskip("blurforge._linear")
    rng = np.random.default_rng(8)
    t = (((np.arange(1, 256) - 0.5) / 255.0) ** 2.2).astype(np.float32)
    x = np.concatenate([t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(1)),
                        rng.random(200000, dtype=np.float32) ** np.float32(2.2), rng.uniform(0, 1e-4, 20000),
                        np.float32([0, -1, 1, 2, 1e-30, 1e-45, np.inf, -np.inf, np.nan])]).astype(np.float32)
    x64 = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=1.0)
    truth = np.floor(255.0 * np.clip(x64, 0, 1) ** (1 / 2.2) + 0.5)
    curve = load_curve("gamma2.2")
    fast = curve.encode(x.copy())
    assert fast.dtype == np.uint8 and np.array_equal(fast, truth)
    codes = np.arange(256)
    assert np.array_equal(fast[255:510], codes[:-1]) and np.array_equal(fast[510:765], codes[1:])  # 1 ulp apart
    monkeypatch.setattr(curves, "_encode_thresholds", None)
    slow = curve.encode(x[:-1].copy())
    assert np.abs(slow.astype(int) - truth[:-1]).max() <= 1
    with pytest.raises(ValueError, match="encode_thresholds"):
        _linear.encode_thresholds(x, np.zeros(16, np.uint8), np.zeros(257, np.float32), np.empty(x.shape, np.uint8))


def test_table_encode_kernel_gives_the_numpy_codes(monkeypatch):
    """The C kernel's one-pass table encode gives the numpy steps' codes exactly, out-of-range
    values and a curve file (lut[0] < 0 is clipped at lut[0]) included."""
    from blurforge import curves

    if curves._encode_table is None:
        pytest.skip("blurforge._linear not built")
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-0.2, 1.3, 60000), rng.uniform(0, 0.01, 20000),
                        np.linspace(0, 1, 40000)]).astype(np.float32).reshape(200, 200, 3)
    offset = curves.CameraCurve("test-offset-curve", np.linspace(-0.05, 1, 256))
    for curve in [load_curve(n) for n in ("srgb", "hlg", "slog3", "vlog", "logc3")] + [offset]:
        fast = curve.encode(x.copy())
        monkeypatch.setattr(curves, "_encode_table", None)
        slow = curve.encode(x.copy())
        monkeypatch.undo()
        assert fast.dtype == np.uint8 and np.array_equal(fast, slow), curve.name
    with pytest.raises(ValueError, match="encode_table"):
        curves._encode_table(x, np.zeros(16, np.uint8), np.empty(x.shape, np.uint8), 0.0, 1000.0)
