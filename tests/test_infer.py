"""dsanet-deblur: tiled == untiled, both weight formats, folders with a bad file, video, atomic output."""
from __future__ import annotations

import dataclasses
import re

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_data import smooth_images

from dsanet.checkpoint import CheckpointError, build_model, export_weights, save_checkpoint
from dsanet.infer import main, restore_array, restore_tensor
from dsanet.model import DSANet, DSANetConfig


class LocalNet(torch.nn.Module):
    """A purely local 'network' (receptive field 5x5): tiles with enough overlap must give exactly
    the untiled result, which checks the tiling and blending arithmetic itself."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="replicate")
        self.c2 = torch.nn.Conv2d(8, 3, 3, padding=1, padding_mode="replicate")

    def forward(self, x):
        return [x + 0.1 * self.c2(torch.relu(self.c1(x)))]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(1)
    cfg = DSANetConfig.tiny(width=4)
    net = DSANet(cfg)
    export_weights(net.state_dict(), dataclasses.asdict(cfg), d)
    save_checkpoint({"step": 5, "model": net.state_dict(), "config": {"model": dataclasses.asdict(cfg)}},
                    d / "last.pt")
    return d


def test_tiled_equals_untiled_local_model():
    net = LocalNet().eval()
    x = torch.rand(1, 3, 150, 211)
    full = restore_tensor(net, x, tile=0)
    for tile, overlap in ((64, 16), (100, 8), (48, 20)):
        tiled = restore_tensor(net, x, tile=tile, overlap=overlap)
        assert tiled.shape == full.shape
        assert torch.allclose(tiled, full, atol=1e-5), (tile, overlap, (tiled - full).abs().max())


def test_tiled_close_to_untiled_dsanet(weights):
    net, _, _ = build_model(weights / "model.safetensors")
    img = smooth_images(1, 150, 200, seed=4)[0].astype(np.float32) / 255
    full = restore_array(net, img, torch.device("cpu"), tile=0)
    tiled = restore_array(net, img, torch.device("cpu"), tile=128, overlap=64)
    assert full.shape == tiled.shape == img.shape
    # a multi-scale network is not exactly local; on the network's own grid the seams stay tiny
    assert np.abs(full - tiled).mean() < 2e-3 and np.abs(full - tiled).max() < 0.03


def test_folder_with_bad_file_continues(weights, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    imgs = smooth_images(2, 70, 90, seed=2)
    cv2.imwrite(str(src / "a.png"), imgs[0][..., ::-1])
    cv2.imwrite(str(src / "sub" / "b.jpg"), imgs[1][..., ::-1])
    cv2.imwrite(str(src / "grey16.png"), (imgs[0][..., 0].astype(np.uint16) * 257))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["--checkpoint", str(weights / "model.safetensors"), str(src),
                                    "--out", str(out), "--no-progress"])
    assert res.exit_code == 1
    assert "broken.png" in res.output and "restored 3 of 4" in res.output
    assert (out / "a.png").exists() and (out / "sub" / "b.png").exists()
    g = cv2.imread(str(out / "grey16.png"), cv2.IMREAD_UNCHANGED)
    assert g.dtype == np.uint16 and g.shape == (70, 90, 3)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    # the .pt checkpoint and the exported weights give the same pixels
    out2 = tmp_path / "out2"
    res2 = CliRunner().invoke(main, ["-c", str(weights / "last.pt"), str(src / "a.png"), "-o", str(out2),
                                     "--no-progress"])
    assert res2.exit_code == 0, res2.output
    assert np.array_equal(cv2.imread(str(out / "a.png")), cv2.imread(str(out2 / "a.png")))


def test_bad_checkpoints_are_one_line_errors(weights, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), smooth_images(1, 40, 40)[0])
    for ck, expect in ((junk, "corrupt"), (tmp_path / "none.pt", "no such checkpoint")):
        res = CliRunner().invoke(main, ["-c", str(ck), str(img), "-o", str(tmp_path / "o")])
        assert res.exit_code == 1 and expect in res.output
        assert len(res.output.strip().splitlines()) == 1
    # safetensors without config.json beside it
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.safetensors").write_bytes((weights / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="config.json"):
        build_model(lone / "model.safetensors")
    # weights that do not fit the config
    bad = tmp_path / "bad"
    export_weights(DSANet(DSANetConfig.tiny(width=6)).state_dict(),
                   dataclasses.asdict(DSANetConfig.tiny(width=4)), bad)
    with pytest.raises(CheckpointError, match="do not match"):
        build_model(bad / "model.safetensors")


def _ffmpeg(*args):
    import subprocess

    import imageio_ffmpeg
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", *map(str, args)],
                   check=True)


def _clip(path, *, seconds=2.0, pix_fmt="yuv420p", colour="bt709:color_trc=bt709:colorspace=bt709:range=tv",
          audio="aac", rotate=(), frames=20):
    """A 64x48 test-pattern clip with uneven frame steps (0.1 s then +30 ms every third frame), a
    440 Hz tone, the given colour tags, and a display matrix added by a stream copy (``rotate``:
    extra input options such as ``-display_rotation 90``)."""
    plain = path.with_name("plain-" + path.name)
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10,gblur=sigma=2,hue=s=0.5,settb=1/1000,"
            "setpts='(N*0.1+0.03*mod(N\\,3))/TB',setparams=color_primaries=" + colour,
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-frames:v", frames,
            "-c:v", "libx264", "-pix_fmt", pix_fmt, "-enc_time_base:v", "1/1000", "-fps_mode", "passthrough",
            "-c:a", audio, plain)
    _ffmpeg(*rotate, "-i", plain, "-c", "copy", path)
    return path


def _upright_rgb(path, shape):
    """Every frame as RGB, decoded by the ffmpeg CLI (which applies the display matrix itself)."""
    import subprocess

    import imageio_ffmpeg
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path),
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, *shape, 3).astype(np.float32)


def _probe(path):
    """(frame times as exact fractions, first frame, the video codec context, audio packets)."""
    import av
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        times = [f.pts * v.time_base for f in frames]
        cc = v.codec_context
        tags = (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range, cc.pix_fmt, cc.name)
        first = frames[0]
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        packets = [(p.pts * a.time_base, p.duration * a.time_base, bytes(p)) for p in c.demux(a) if p.size]
        audio = (a.codec_context.name, a.rate, packets)
    return times, first, tags, audio


def _psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))


@pytest.fixture(scope="module")
def identity_weights(tmp_path_factory):
    """A DSANet with residual_init 0: every residual branch starts at zero, so it is the identity."""
    d = tmp_path_factory.mktemp("id")
    cfg = DSANetConfig.tiny(width=4, residual_init=0.0)
    export_weights(DSANet(cfg).state_dict(), dataclasses.asdict(cfg), d)
    net, _, _ = build_model(d / "model.safetensors")
    x = np.random.default_rng(0).random((48, 64, 3), dtype=np.float32)
    assert np.array_equal(restore_array(net, x, torch.device("cpu")), x)
    return d


def test_video_keeps_timing_audio_rotation_and_colour(identity_weights, tmp_path):
    src = _clip(tmp_path / "clip.mp4", rotate=("-display_rotation", 90))
    times_in, first_in, tags_in, audio_in = _probe(src)
    assert first_in.rotation == 90 and len(set(np.diff([float(t) for t in times_in]).round(3))) > 1
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["-c", str(identity_weights), str(src), "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    dst = out / "clip.mp4"
    times_out, first_out, tags_out, audio_out = _probe(dst)
    assert times_out == times_in                                   # every frame's own timestamp
    assert audio_out == audio_in                                   # same packets, bytes and times
    assert tags_out == (1, 1, 1, 1, "yuv420p", "h264") == tags_in  # bt709 primaries/trc/matrix, tv range
    assert first_out.rotation == 0 and (first_out.width, first_out.height) == (48, 64)   # upright, no tag
    # the identity model: the output is the input as ffmpeg shows it (rotated upright), within codec loss
    want, got = _upright_rgb(src, (64, 48)), _upright_rgb(dst, (64, 48))
    assert want.shape == got.shape == (20, 64, 48, 3)
    assert _psnr(got, want) > 40 and np.abs(got - want).mean() < 2, (_psnr(got, want), np.abs(got - want).mean())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_video_reencodes_audio_mp4_cannot_hold_and_applies_the_model(tmp_path):
    """mu-law audio (MOV takes it, MP4 does not) becomes AAC; 10-bit full-range BT.601 with a
    rotated and mirrored display matrix; a channel-reversing model shows the restored frames (not
    the decoded ones) are what is written, in RGB order."""
    from dsanet.infer import restore_video

    class Reverse(torch.nn.Module):
        def forward(self, x):
            return [x.flip(1)]

    src = _clip(tmp_path / "clip.mov", pix_fmt="yuv420p10le", audio="pcm_mulaw",
                colour="bt470bg:color_trc=smpte170m:colorspace=smpte170m:range=pc",
                rotate=("-display_rotation", 270, "-display_hflip"))
    times_in, first_in, tags_in, audio_in = _probe(src)
    assert first_in.rotation == -90 and audio_in[0] == "pcm_mulaw"
    dst = tmp_path / "out.mp4"
    assert restore_video(Reverse(), src, dst, torch.device("cpu")) == 20
    times_out, first_out, tags_out, audio_out = _probe(dst)
    assert times_out == times_in
    assert tags_out == (5, 6, 6, 2, "yuv420p10le", "h264") == tags_in
    assert first_out.rotation == 0
    name, rate, packets = audio_out
    assert name == "aac" and rate == audio_in[1] == 44100
    end_in = audio_in[2][-1][0] + audio_in[2][-1][1]
    end_out = packets[-1][0] + packets[-1][1]
    assert abs(end_out - end_in) < 0.03 and abs(end_in - 2) < 0.03
    want = np.stack([restore_array(Reverse(), f / 255, torch.device("cpu")) * 255
                     for f in _upright_rgb(src, (64, 48))])
    got = _upright_rgb(dst, (64, 48))
    assert _psnr(got, want) > 40 and np.abs(got - want).mean() < 2, (_psnr(got, want), np.abs(got - want).mean())


def test_damaged_videos_are_skipped_with_one_line_each(identity_weights, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = _clip(src / "good.mp4", rotate=())
    (src / "noise.mp4").write_bytes(np.random.default_rng(3).bytes(5000))
    data = good.read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 2])
    fast = tmp_path / "fast.mp4"                     # index first: frames decode until the cut
    _ffmpeg("-i", good, "-c", "copy", "-movflags", "+faststart", fast)
    (src / "midway.mp4").write_bytes(fast.read_bytes()[: fast.stat().st_size * 2 // 3])
    (src / "plain-good.mp4").unlink()
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["-c", str(identity_weights), str(src), "-o", str(out), "--no-progress"])
    assert res.exit_code == 1
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 3
    assert [sum(name in e for e in errors) for name in ("noise.mp4", "/cut.mp4", "midway.mp4")] == [1, 1, 1]
    assert re.search(r"midway\.mp4: video damaged or truncated after [1-9]\d* frame", res.output)
    assert "restored 1 of 4" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4"]


def test_image_exif_orientation_is_applied(identity_weights, tmp_path):
    """Like a video's display matrix: the pixels are turned upright and no tag is written."""
    from PIL import Image

    img = smooth_images(1, 40, 60, seed=7)[0]
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6                                          # display rotated 90 degrees clockwise
    pil.save(tmp_path / "phone.png", exif=exif)
    res = CliRunner().invoke(main, ["-c", str(identity_weights), str(tmp_path / "phone.png"), "-o",
                                    str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 0, res.output
    out = Image.open(tmp_path / "o" / "phone.png")
    assert 0x0112 not in out.getexif()
    assert np.array_equal(np.asarray(out), np.rot90(img, -1))


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_display_orientation_matches_ffmpeg_autorotate(tmp_path, rotation, hflip):
    """Every display matrix ffmpeg writes (4 rotations x mirror): coded frames turned upright by
    ``upright`` equal what the ffmpeg CLI shows after applying the matrix itself."""
    import av

    from dsanet.infer import display_orientation, frame_display_matrix, upright

    plain = tmp_path / "plain.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x16:rate=10,gblur=sigma=1", "-frames:v", 1, "-c:v", "libx264",
            "-pix_fmt", "yuv444p", "-crf", 0, plain)
    tagged = tmp_path / "tagged.mp4"
    _ffmpeg("-display_rotation", rotation, *(["-display_hflip"] if hflip else []), "-i", plain, "-c", "copy", tagged)
    with av.open(str(tagged)) as c:
        frame = next(c.decode(c.streams.video[0]))
        coded = frame.to_ndarray(format="rgb24").astype(np.float32)
        orientation = display_orientation(frame_display_matrix(frame))
    turned = upright(coded, orientation)
    shape = turned.shape[:2]
    assert shape == ((16, 32) if rotation in (0, 180) else (32, 16))
    shown = _upright_rgb(tagged, shape)[0]
    assert np.abs(turned - shown).mean() < 2, (orientation, np.abs(turned - shown).mean())


def test_video_odd_size_loses_its_last_row_and_column(tmp_path):
    """H.264 4:2:0 needs even sizes: a 65x49 clip comes out 64x48, cropped (not scaled, not shifted).
    The ffmpeg CLI converts odd-sized frames to RGB by a slower exact path, even-sized ones by a
    fast path about 1 code off, so the round trip here is a little looser than for even sizes."""
    from dsanet.infer import restore_video

    class Identity(torch.nn.Module):
        def forward(self, x):
            return [x]

    src = tmp_path / "odd.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25,scale=65:49,gblur=sigma=2,hue=s=0.5,format=yuv420p",
            "-frames:v", 5, "-c:v", "ffv1", src)
    dst = tmp_path / "odd.mp4"
    assert restore_video(Identity(), src, dst, torch.device("cpu")) == 5
    full, got = _upright_rgb(src, (49, 65)), _upright_rgb(dst, (48, 64))
    assert got.shape == (5, 48, 64, 3)
    scaled = np.stack([cv2.resize(f, (64, 48), interpolation=cv2.INTER_AREA) for f in full])
    scores = [_psnr(got, ref) for ref in (full[:, :48, :64], scaled, full[:, 1:, 1:])]
    assert scores[0] > 36 and max(scores[1:]) < 33, scores
