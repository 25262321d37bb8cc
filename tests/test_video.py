"""Decoding: the frames we average are the frames ffmpeg decodes; damage stops decoding."""
from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest
from conftest import make_clip, transcode

from blurforge.video import FrameReader, SwsBands, ffmpeg_exe, probe


def ffmpeg_rgb(path, width, height):
    """Independent truth: the ffmpeg command line's own RGB24 output."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


@pytest.mark.parametrize("tags", [[], ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"],
                                  ["-pix_fmt", "yuvj420p", "-color_range", "pc"]])
def test_rgb_is_what_ffmpeg_decodes(tmp_path, tags):
    clip = make_clip(tmp_path / "c.mp4", frames=24)
    src = transcode(clip, tmp_path / "t.mp4", "-c:v", "libx264", "-crf", "18", *tags) if tags else clip
    info = probe(src)
    ref = ffmpeg_rgb(src, info.width, info.height)
    ours = [f.rgb() for f in FrameReader(info)]
    assert len(ours) == len(ref) == 24
    assert all(np.array_equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize("tags", [[], ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"],
                                  ["-colorspace", "smpte170m"], ["-pix_fmt", "yuvj420p", "-color_range", "pc"]])
def test_banded_conversion_is_what_ffmpeg_decodes(tmp_path, tags):
    """The averaging's band-by-band conversion (video.SwsBands, in the C kernel) gives ffmpeg's own
    RGB24 of every frame, for video- and full-range streams and each colour matrix tag."""
    _linear = pytest.importorskip("blurforge._linear")
    clip = make_clip(tmp_path / "c.mp4", frames=24, height=186)  # 186 rows: the last band is short
    src = transcode(clip, tmp_path / "t.mp4", "-c:v", "libx264", "-crf", "18", *tags) if tags else clip
    info = probe(src)
    ref = ffmpeg_rgb(src, info.width, info.height)
    bands, n = None, 0
    for i, f in enumerate(FrameReader(info)):
        bands = bands or SwsBands.for_clip(f, 3)
        assert bands is not None and bands.fits(f)
        out = np.zeros((info.height, info.width, 3), np.uint8)
        _linear.convert_yuv(out, bands.source(f, i % 3), bands.scale, bands.height, bands.width, bands.BAND)
        assert np.array_equal(out, ref[i])
        n += 1
    assert n == 24
    bands.close()


def test_banded_conversion_declines_what_it_does_not_handle(tmp_path):
    """4:2:2 and rotated streams keep whole-frame conversion (for_clip gives None), and so does a
    frame stored otherwise than the one the conversion was checked on."""
    clip = make_clip(tmp_path / "c.mp4", frames=4)
    rotated = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(clip), "-c", "copy",
                    str(rotated)], check=True)
    assert probe(rotated).rotation == 90
    bands = SwsBands.for_clip(next(iter(FrameReader(probe(clip)))), 4)
    assert bands is not None
    p422 = transcode(clip, tmp_path / "p422.mp4", "-c:v", "libx264", "-pix_fmt", "yuv422p")
    full = transcode(clip, tmp_path / "full.mp4", "-c:v", "libx264", "-pix_fmt", "yuvj420p", "-color_range", "pc")
    for src in (p422, rotated):
        assert SwsBands.for_clip(next(iter(FrameReader(probe(src)))), 4) is None, src
    assert not bands.fits(next(iter(FrameReader(probe(full)))))   # another range: converted whole


def test_grey_half_follows_rgb_grey(tmp_path):
    """The luma-plane grey used for analysis is the RGB frame's grey, range and all (within codec
    rounding), for video-range and full-range streams."""
    clip = make_clip(tmp_path / "c.mp4", frames=8)
    full = transcode(clip, tmp_path / "j.mp4", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuvj420p",
                     "-color_range", "pc")
    for src in (clip, full):
        for f in FrameReader(probe(src)):
            rgb = f.rgb()
            ref = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (rgb.shape[1] // 2, rgb.shape[0] // 2),
                             interpolation=cv2.INTER_AREA).astype(float)
            ours = f.grey_half().astype(float)
            assert abs(ours.mean() - ref.mean()) < 1.5
            assert np.abs(ours - ref).mean() < 2.0


def test_corrupt_packets_stop_decoding_before_the_damage(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=200)
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.integers(len(data) // 2, len(data) * 3 // 5, 40):
        data[i] ^= 0xFF
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    good = [f.rgb() for f in FrameReader(probe(clip))]
    reader = FrameReader(probe(bad))
    got = [f.rgb() for f in reader]
    assert reader.error and 0 < len(got) < 200
    # every frame delivered is a clean decode: none is a concealed, damaged picture
    assert all(np.array_equal(a, b) for a, b in zip(got, good))
