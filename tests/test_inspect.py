"""`blurforge inspect`: per-window statistics, warnings, JSON, and a contact sheet PNG."""
from __future__ import annotations

import json

import cv2
import numpy as np
from click.testing import CliRunner
from test_align import euclid, make_pair, write_shard

from blurforge.align import align_shard
from blurforge.cli import main
from blurforge.inspect import contact_sheet, heat_map, psnr, sample_indices, summarize


def shard_with_meta(path, n=4, size=(128, 160)):
    pairs = []
    for i in range(n):
        m = euclid(1.0 + i, -1.0, 0.2, size[1] / 2, size[0] / 2)
        sharp, b9 = make_pair(m, size, off=(120 + 15 * i, 100), blur_len=9)
        _, b3 = make_pair(m, size, off=(120 + 15 * i, 100), blur_len=3)
        pairs.append((sharp, {"3": b3, "9": b9}))
    if n > 2:
        _, pairs[2][1]["9"] = make_pair(np.eye(3), size, photo="coffee")     # a mismatched pair

    def meta(i):
        return {"meta/9/motion_px": np.float32(0.5 + i), "meta/9/ghosting": bool(0.5 + i > 1),
                "meta/3/motion_px": np.float32(0.2), "meta/3/ghosting": False}
    return write_shard(path, pairs, labels=("3", "9"), meta=meta), pairs


def test_psnr_and_sampling():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert abs(psnr(a, b) - 10 * np.log10(48)) < 1e-9
    assert psnr(a, a) == float("inf")
    assert sample_indices(10, 3) == [0, 4, 9] or sample_indices(10, 3) == [0, 5, 9]
    assert sample_indices(2, 16) == [0, 1]


def test_summary_before_and_after_align(tmp_path):
    p, pairs = shard_with_meta(tmp_path / "m.h5")
    s = summarize(p, sample=16)
    assert s["pairs"] == 4 and s["size"] == [160, 128] and s["windows"] == ["3", "9"]
    expect = np.mean([psnr(b["9"], sh) for sh, b in pairs])
    assert abs(s["per_window"]["9"]["psnr_blur_db"] - expect) < 0.01
    assert s["per_window"]["9"]["motion_px_per_frame"] == {"median": 2.0, "max": 3.5}
    assert s["per_window"]["9"]["ghosting"] == 3 and s["per_window"]["3"]["ghosting"] == 0
    assert "align" not in s["per_window"]["9"]
    assert any("ghosting" in w for w in s["warnings"])
    align_shard(p)
    s = summarize(p)
    a = s["per_window"]["9"]["align"]
    assert a["ok"] == 3 and a["rejected"] == 1 and a["rejected_pairs"] == [2]
    assert a["psnr_aligned_db"] > s["per_window"]["9"]["psnr_blur_db"]
    assert s["per_window"]["3"]["align"]["rejected"] == 0
    assert any("rejected by align" in w for w in s["warnings"])


def test_inspect_cli_table_json_and_sheet(tmp_path):
    p, _ = shard_with_meta(tmp_path / "m.h5")
    align_shard(p)
    sheet = tmp_path / "sheet.png"
    res = CliRunner().invoke(main, ["inspect", str(p), "--sheet", str(sheet), "--tile", "128"])
    assert res.exit_code == 0, res.output
    assert "PSNR(blur,sharp)" in res.output and "euclidean" in res.output and "1/4" in res.output
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[2] == 3
    # 3 rows of sharp + 2 blurs + 2 heat maps, 128 px wide each with 4 px gaps
    assert img.shape[1] == max(600, 5 * 128 + 4 * 4)
    assert img.shape[0] > 3 * (128 * 128 // 160)
    res = CliRunner().invoke(main, ["inspect", str(p), "--json"])
    out = json.loads(res.output)
    assert out["shards"][0]["per_window"]["9"]["align"]["rejected"] == 1


def test_sheet_without_alignment_and_heat_map_colours(tmp_path):
    p, _ = shard_with_meta(tmp_path / "m.h5", n=2)
    sheet = contact_sheet([p], rows_per_shard=5, tile=96)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3
    zero = heat_map(np.zeros((4, 4, 3)), None)
    hot = heat_map(np.full((4, 4, 3), 100.0), None)
    assert zero.mean() < 20 and hot.mean() > 150
    grey = heat_map(np.zeros((4, 4, 3)), np.zeros((4, 4), bool))
    assert (grey == 90).all()


def test_inspect_errors(tmp_path):
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "none.h5")])
    assert res.exit_code != 0 and "none.h5" in res.output and "Traceback" not in res.output
