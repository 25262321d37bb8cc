"""dsanet-eval: numbers equal scikit-image's on a pair directory; shards per label; ECC alignment."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from test_data import box_blur, make_shard, smooth_images

from dsanet.checkpoint import build_model, export_weights
from dsanet.evaluate import main, score_aligned
from dsanet.infer import restore_array, to_codes
from dsanet.model import DSANet, DSANetConfig


def sk(a, b):
    return (peak_signal_noise_ratio(b, a),
            structural_similarity(b, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                  data_range=255, channel_axis=-1))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    (d / "blur" / "seq").mkdir(parents=True)
    (d / "sharp" / "seq").mkdir(parents=True)
    sharps = smooth_images(3, 72, 100, seed=7)
    names = ["a", "b", "seq/c"]
    for n, s in zip(names, sharps):
        cv2.imwrite(str(d / "sharp" / f"{n}.png"), s[..., ::-1])
        cv2.imwrite(str(d / "blur" / f"{n}.png"), box_blur(s)[..., ::-1])
    cv2.imwrite(str(d / "blur" / "unmatched.png"), sharps[0])
    return d, names, sharps


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(2)
    cfg = DSANetConfig.tiny(width=4)
    export_weights(DSANet(cfg).state_dict(), dataclasses.asdict(cfg), d)
    return d / "model.safetensors"


def test_pair_directory_matches_scikit_image(pairs, weights, tmp_path):
    d, names, sharps = pairs
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["--checkpoint", str(weights), "--pairs", str(d / "blur"), str(d / "sharp"),
                                    "--json", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "no match" in res.output and "blur" in res.output      # the unmatched file is reported
    rep = json.loads(out.read_text())
    net, _, _ = build_model(weights)
    assert [r["name"] for r in rep["images"]] == names
    exp_p, exp_s, exp_pb, exp_sb = [], [], [], []
    for rec, s in zip(rep["images"], sharps):
        b = box_blur(s)
        r = to_codes(restore_array(net, b.astype(np.float32) / 255, torch.device("cpu")))
        p, q = sk(s, r)
        pb, qb = sk(s, b)
        assert rec["psnr"] == pytest.approx(p, abs=1e-6) and rec["ssim"] == pytest.approx(q, abs=1e-6)
        assert rec["psnr_blur"] == pytest.approx(pb, abs=1e-6) and rec["ssim_blur"] == pytest.approx(qb, abs=1e-6)
        exp_p.append(p), exp_s.append(q), exp_pb.append(pb), exp_sb.append(qb)
    m = rep["labels"]["blur"]
    assert m["count"] == 3
    assert m["psnr"] == pytest.approx(np.mean(exp_p), abs=1e-6)
    assert m["ssim_blur"] == pytest.approx(np.mean(exp_sb), abs=1e-6)
    assert m["gain_db"] == pytest.approx(np.mean(exp_p) - np.mean(exp_pb), abs=1e-6)


def test_baseline_only_and_shards_per_label(pairs, tmp_path):
    d, names, sharps = pairs
    res = CliRunner().invoke(main, ["--pairs", str(d / "blur"), str(d / "sharp"), "--no-progress"])
    assert res.exit_code == 0, res.output
    p = np.mean([sk(s, box_blur(s))[0] for s in sharps])
    assert f"{p:.2f}" in res.output
    (tmp_path / "data" / "deep").mkdir(parents=True)
    make_shard(tmp_path / "data" / "deep" / "t.h5", sharps, {"9": [box_blur(s) for s in sharps],
                                                             "5": [box_blur(s, 5) for s in sharps]})
    out = tmp_path / "s.json"      # a folder is searched recursively, as by every other command
    res = CliRunner().invoke(main, ["--shards", str(tmp_path / "data"), "--json", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert set(rep["labels"]) == {"9", "5"} and rep["all"]["count"] == 6
    assert rep["labels"]["5"]["psnr_blur"] > rep["labels"]["9"]["psnr_blur"]
    assert rep["labels"]["9"]["psnr_blur"] == pytest.approx(p, abs=1e-6)


def test_ecc_alignment_recovers_shifted_gained_output():
    sharp = smooth_images(1, 120, 160, seed=3)[0]
    M = np.float32([[1, 0, 1.7], [0, 1, -1.2]])
    moved = cv2.warpAffine(sharp.astype(np.float32), M, (160, 120), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    restored = np.clip(moved * 0.9, 0, 255).round().astype(np.uint8)
    p_plain = sk(sharp, restored)[0]
    p, q, ok = score_aligned(restored, sharp)
    assert ok and p > p_plain + 8 and p > 35 and q > 0.97


def test_errors(pairs, tmp_path):
    d, _, _ = pairs
    r = CliRunner().invoke(main, ["--pairs", str(d / "blur"), str(tmp_path)])
    assert r.exit_code == 1 and "no image" in r.output
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 1 and "either --shards or --pairs" in r.output
    r = CliRunner().invoke(main, ["--shards", str(tmp_path / "missing.h5")])
    assert r.exit_code == 1 and "no such file" in r.output and "Traceback" not in r.output
