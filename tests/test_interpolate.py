"""Ghost-free blur against the continuous exposure: synth renders the exposure integral of each
window with 16 sub-renders per frame interval (lossless RGB clips, so the truth survives the codec),
and extract's default (--interpolate auto) must come closer to it than plain averaging (off)."""
import cv2
import h5py
import numpy as np
import pytest
from conftest import psnr

from blurforge.errors import BlurforgeError
from blurforge.extract import ExtractOptions, extract_clip, parse_interpolate
from blurforge.interpolate import SUBSTEP_PX, _percentile99, _stages, factor_for, flow_scale, interval_fix, merge_boxes
from blurforge.synth import SynthConfig, render_exposure, swept_mask, synthesize


def _clip(tmp_path_factory, name, **kw):
    cfg = SynthConfig(**{"width": 640, "height": 360, "crf": -1, "drift": 0.0, "shake_px": 3.0, **kw})
    path = tmp_path_factory.mktemp("interp") / f"{name}.mp4"
    synthesize(path, cfg)
    return path, cfg


def _both(path, windows, stride, **kw):
    out = {}
    for mode in ("off", "auto"):
        opts = ExtractOptions(windows=windows, out=path.parent / mode, stride=stride, interpolate=mode, **kw)
        out[mode] = extract_clip(path, opts)["shard"]
    return out


def _gains(cfg, shards, windows, max_pairs=2):
    """Per pair and window: (dB closer to the exposure than plain averaging in the swept region,
    the same outside it)."""
    out = []
    with h5py.File(shards["off"]) as fo, h5py.File(shards["auto"]) as fa:
        assert np.array_equal(fo["center"][()], fa["center"][()])
        assert np.array_equal(fo["sharp"][()], fa["sharp"][()])          # the sharp frame is never touched
        for i, c in enumerate(fa["center"][:max_pairs]):
            for w in windows:
                truth = render_exposure(cfg, int(c), w, sub=16)
                sw = swept_mask(cfg, c - w / 2, c + w / 2)
                off, auto = fo[f"blur/{w}"][i], fa[f"blur/{w}"][i]
                out.append((int(c), w, psnr(auto[sw], truth[sw]) - psnr(off[sw], truth[sw]),
                            psnr(auto[~sw], truth[~sw]) - psnr(off[~sw], truth[~sw]),
                            int(fa[f"meta/{w}/interp_factor"][i]), float(fa[f"meta/{w}/interp_confidence"][i])))
                assert fo[f"meta/{w}/interp_factor"][i] == 1 and fo[f"meta/{w}/interp_intervals"][i] == 0
    return out


@pytest.mark.parametrize("speed", [12, 24])
def test_fast_object_at_960fps_is_closer_to_the_exposure(tmp_path_factory, speed):
    path, cfg = _clip(tmp_path_factory, f"fast{speed}", frames=120, object_speed=speed, seed=40 + speed)
    rows = _gains(cfg, _both(path, [36], stride=40), [36])
    assert rows
    for c, w, gain, still, k, conf in rows:
        assert gain >= 3.0, (c, w, gain)
        assert still >= -0.5, (c, w, still)
        assert k >= speed / SUBSTEP_PX - 1 and 0 < conf <= 1


def test_gains_are_divided_out_before_the_sub_frames(tmp_path_factory):
    """4% flicker with the fast object: the exposure truth divides the true gains out, so the
    interpolated blur is only closer if the estimated gains were applied to the frames it warps."""
    path, cfg = _clip(tmp_path_factory, "flicker", frames=120, object_speed=12, flicker=0.04, seed=47)
    rows = _gains(cfg, _both(path, [36], stride=40), [36])
    assert rows
    for c, w, gain, still, _k, _conf in rows:
        assert gain >= 3.0 and still >= -0.5, (c, w, gain, still)


def test_fast_object_at_240fps_windows_9_18(tmp_path_factory):
    path, cfg = _clip(tmp_path_factory, "fast240", fps=240.0, frames=90, object_speed=24, seed=44)
    rows = _gains(cfg, _both(path, [9, 18], stride=18), [9, 18], max_pairs=3)
    assert len(rows) >= 4
    for c, w, gain, _still, _k, _conf in rows:
        assert gain >= 3.0, (c, w, gain)


def test_slow_content_is_never_worse(tmp_path_factory):
    """At <= 2 px/frame the default may interpolate a little, but never costs more than 0.3 dB."""
    path, cfg = _clip(tmp_path_factory, "slow", frames=140, object_speed=2, seed=45)
    shards = _both(path, [36], stride=40)
    with h5py.File(shards["off"]) as fo, h5py.File(shards["auto"]) as fa:
        for i, c in enumerate(fa["center"][:2]):
            truth = render_exposure(cfg, int(c), 36, sub=8)
            off, auto = fo["blur/36"][i], fa["blur/36"][i]
            assert psnr(auto, truth) >= psnr(off, truth) - 0.3, c


def test_fast_camera_pan_is_improved(tmp_path_factory):
    """A pan of 2-4 px/frame (no moving object): the whole picture is interpolated and closer."""
    path, cfg = _clip(tmp_path_factory, "pan", frames=100, moving_object=False, pan_px_s=3000, shake_px=0.0,
                      seed=46)
    shards = _both(path, [18], stride=30)
    with h5py.File(shards["off"]) as fo, h5py.File(shards["auto"]) as fa:
        assert fa.attrs["num_pairs"] >= 1
        for i, c in enumerate(fa["center"][:2]):
            truth = render_exposure(cfg, int(c), 18, sub=16)
            m = 24                                          # the border, where the pan brings in new content
            crop = np.s_[m:-m, m:-m]
            gain = psnr(fa["blur/18"][i][crop], truth[crop]) - psnr(fo["blur/18"][i][crop], truth[crop])
            assert gain >= 1.0, (c, gain)
            assert fa["meta/18/interp_intervals"][i] >= 10


def test_factor_and_option_parsing():
    assert factor_for(0.4, 1.0) == 1 and factor_for(1.0, 1.0) == 1 and factor_for(1.01, 1.0) == 2
    assert factor_for(12, 1.5) == 8 and factor_for(12.1, 1.5) == 9 and factor_for(500) == 32
    assert parse_interpolate("auto") == "auto" and parse_interpolate("OFF") == "off"
    assert parse_interpolate("8") == "8" and parse_interpolate("1") == "off"
    for bad in ("fast", "40", "-3"):
        with pytest.raises(BlurforgeError, match="--interpolate"):
            parse_interpolate(bad)


def _texture(h, w):
    """A linear-light photograph (scikit-image's astronaut), ``h`` x ``w`` of it at half size."""
    from skimage import data

    img = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)[:h, :w]
    return (img.astype(np.float32) / 255.0) ** 2.2


def _shifted(img, dx, dy):
    return cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), img.shape[1::-1], flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("speed,least", [((3.2, 0.5), 4.0), ((12.0, 2.0), 8.0), ((22.0, -3.0), 10.0)])
def test_sub_frames_of_a_translation_approach_its_exposure(speed, least):
    """A picture translating at ``speed`` px/frame over 4 intervals: plain averaging plus the
    intervals' deltas (warped sub-steps, then smeared along the motion) must come much closer to
    the continuous exposure (256 sub-samples an interval) than plain averaging, away from the
    borders the translation brings in. Small and quick: the smear's geometry without synth."""
    img = _texture(200, 256)
    v, n = np.array(speed), 4
    frames = [_shifted(img, *(v * k)) for k in range(n + 1)]
    ts = np.linspace(0, n, 256 * n + 1)
    wts = np.where((ts == 0) | (ts == n), 0.5, 1.0)
    truth = sum(_shifted(img, *(v * s)) * wt for s, wt in zip(ts, wts)) / wts.sum()
    plain = (sum(frames) - 0.5 * (frames[0] + frames[-1])) / n
    est = plain.copy()
    for k in range(n):
        fix = interval_fix(frames[k], frames[k + 1], (0, 0, 256, 200), reach=float(np.hypot(*v)))
        # the 99th percentile of the flow: the true speed's factor, or one more step where it reads high
        assert factor_for(np.hypot(*v)) <= fix.factor <= factor_for(np.hypot(*v)) + 1, fix.factor
        est += fix.delta / n
    m = np.s_[40:-40, 40:-40]
    codes = [np.clip(np.rint(255 * np.clip(x[m], 0, 1) ** (1 / 2.2)), 0, 255).astype(np.uint8)
             for x in (truth, plain, est)]
    gain = psnr(codes[2], codes[0]) - psnr(codes[1], codes[0])
    assert gain >= least, (speed, gain)        # measured 6.2, 11.9, 17.1 dB


def test_flow_scale_and_smear_stages():
    """The flow is halved only for pictures of 1080 lines or more (small pictures need every
    pixel); sub-steps beyond two are smeared, not warped (at most 3 stages)."""
    assert flow_scale(300, 320, 360) == 1 and flow_scale(300, 320, 720) == 1
    assert flow_scale(300, 320, 1080) == 2 and flow_scale(100, 320, 1080) == 1 and flow_scale(600, 700, 2160) == 4
    assert [_stages(k) for k in (2, 3, 4, 5, 8, 9, 16, 17, 32)] == [0, 1, 1, 2, 2, 3, 3, 3, 3]


@pytest.mark.parametrize("speed,factor", [((12.3, 2.1), None), ((12.3, 2.1), 2), ((5.7, -3.2), 6),
                                          ((22.0, -3.0), None)])
def test_kernel_matches_opencv(monkeypatch, speed, factor):
    """The C kernel (blurforge._subframe: fused sub-frames and smear stages) gives the OpenCV path's
    correction on a translating texture, with and without smear stages (OpenCV's remap samples at
    float positions too: measured equal to 1.2e-7)."""
    import blurforge.interpolate as ip

    if ip._kernel is None:
        pytest.skip("blurforge._subframe not built")
    _subframe = ip._kernel
    img = _texture(200, 256)
    a, b = img, _shifted(img, *speed)
    fixes = []
    for kernel in (ip._kernel, None):
        monkeypatch.setattr(ip, "_kernel", kernel)
        fixes.append(interval_fix(a, b, (0, 0, 256, 200), factor, before=True, after=True,
                                  reach=float(np.hypot(*speed))))
    assert fixes[0].factor == fixes[1].factor and fixes[0].confidence == fixes[1].confidence
    assert np.abs(fixes[1].delta).mean() > 0.01
    for part in ("delta", "before", "after"):       # the end half intervals use the kernel's trust
        np.testing.assert_allclose(getattr(fixes[0], part), getattr(fixes[1], part), rtol=0, atol=1e-4)
    monkeypatch.setattr(ip, "_kernel", _subframe)
    monkeypatch.setattr(ip, "BAND_ROWS", 7)         # more bands than rows divide evenly into: the same, exactly
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)
        banded = interval_fix(a, b, (0, 0, 256, 200), factor, reach=float(np.hypot(*speed)))
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(banded.delta, fixes[0].delta)


def test_kernel_checks_its_buffers():
    """The C kernel refuses buffers of the wrong size or layout and row ranges outside the crop
    instead of reading or writing past them."""
    import blurforge.interpolate as ip

    if ip._kernel is None:
        pytest.skip("blurforge._subframe not built")
    k, h, w = ip._kernel, 12, 10
    f4, chg = np.zeros((h, w, 4), np.float32), np.zeros((h, w), np.float32)
    out, vel = np.zeros((h, w, 4), np.float32), np.zeros((h, w, 2), np.float32)
    k.substeps(f4, f4, f4, f4, chg, out, vel, h, w, 2, 2, True)
    with pytest.raises(ValueError, match="chg"):
        k.substeps(f4, f4, f4, f4, chg[:-1], out, vel, h, w, 2, 2, True)
    with pytest.raises(ValueError, match="C-contiguous"):
        k.substeps(f4, f4, f4, f4, np.zeros((w, h), np.float32).T, out, vel, h, w, 2, 2, True)
    with pytest.raises(ValueError, match="y1"):
        k.substeps(f4, f4, f4, f4, chg, out, vel, h, w, 2, 2, True, 0, h + 1)
    with pytest.raises(ValueError, match="dst"):
        k.smear(out, vel, chg, f4, f4, out, h, w, 0.1, 2, False)
    with pytest.raises(ValueError, match="img"):
        k.trust(f4, f4, f4, out, chg, h, w, 1.0)
    with pytest.raises(ValueError, match="speed"):
        k.pack_flow(vel, f4, vel, h, w, 0.5)
    with pytest.raises(ValueError, match="out"):
        k.half_end(f4, f4, vel, h, w, 3, 2)


def test_kernel_on_several_threads_at_once():
    """extract makes sub-frames on a pool of threads: with the C kernel each thread has its own
    work arrays and all share the band threads, so concurrent corrections equal serial ones."""
    from concurrent.futures import ThreadPoolExecutor

    import blurforge.interpolate as ip

    if ip._kernel is None:
        pytest.skip("blurforge._subframe not built")
    img = _texture(200, 256)
    pairs = [(img, _shifted(img, *v)) for v in ((12.3, 2.1), (5.7, -3.2), (22.0, -3.0), (-8.0, 9.5))]

    def fix(p):
        return interval_fix(p[0], p[1], (0, 0, 256, 200), None, reach=25.0).delta

    serial = [fix(p) for p in pairs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(2):
            for want, got in zip(serial * 2, pool.map(fix, pairs * 2), strict=True):
                assert np.array_equal(want, got)


def test_percentile_from_one_partition_is_numpys():
    rng = np.random.default_rng(7)
    for n in (16, 17, 101, 4999, 60000):
        v = rng.gamma(2.0, 5.0, n).astype(np.float32)
        assert _percentile99(v.copy()) == pytest.approx(float(np.percentile(v, 99)), rel=1e-6)


def test_boxes_that_overlap_or_touch_are_merged():
    assert merge_boxes([(0, 0, 10, 10), (20, 20, 30, 30)]) == [(0, 0, 10, 10), (20, 20, 30, 30)]
    assert merge_boxes([(0, 0, 10, 10), (10, 5, 30, 8)]) == [(0, 0, 30, 10)]
    # a chain: the third joins the first only through the second
    assert merge_boxes([(0, 0, 10, 10), (40, 0, 50, 10), (9, 0, 41, 2)]) == [(0, 0, 50, 10)]
    assert merge_boxes([(3 * k, 0, 3 * k + 1, 1) for k in range(10)], most=4) == [(0, 0, 28, 1)]
