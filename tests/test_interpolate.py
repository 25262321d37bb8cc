"""Ghost-free blur against the continuous exposure: synth renders the exposure integral of each
window with 16 sub-renders per frame interval (lossless RGB clips, so the truth survives the codec),
and extract's default (--interpolate auto) must come closer to it than plain averaging (off)."""
import h5py
import numpy as np
import pytest
from conftest import psnr

from blurforge.errors import BlurforgeError
from blurforge.extract import ExtractOptions, extract_clip, parse_interpolate
from blurforge.interpolate import SUBSTEP_PX, factor_for
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
