"""dsanet-deblur: tiled == untiled, both weight formats, folders with a bad file, video, atomic output."""
from __future__ import annotations

import dataclasses

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


def test_video_frame_by_frame(weights, tmp_path):
    import imageio_ffmpeg
    src = tmp_path / "clip.mp4"
    w = imageio_ffmpeg.write_frames(str(src), (64, 48), fps=10, codec="libx264", macro_block_size=1,
                                    ffmpeg_log_level="error")
    w.send(None)
    frames = smooth_images(6, 48, 64, seed=5)
    for f in frames:
        w.send(np.ascontiguousarray(f))
    w.close()
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["-c", str(weights), str(src), "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    r = imageio_ffmpeg.read_frames(str(out / "clip.mp4"))
    meta = next(r)
    assert tuple(meta["size"]) == (64, 48)
    assert sum(1 for _ in r) == 6
