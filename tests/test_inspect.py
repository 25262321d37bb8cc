"""`blurforge inspect`: per-window statistics, warnings, JSON, and a contact sheet PNG."""
from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
from click.testing import CliRunner
from conftest import psnr
from test_align import euclid, make_pair, write_shard

import blurforge.inspect as inspect_mod
from blurforge.align_shards import align_shard
from blurforge.cli import main
from blurforge.inspect import contact_sheet, format_table, heat_map, sample_indices, summarize

TITLE = 22 + 34          # title bar + heat-map legend
CAPTION, GAP = 18, 4     # caption strip above each tile; gap between tiles and below each row


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


def inferno(code: int) -> np.ndarray:
    """The RGB colour OpenCV's inferno map gives to one code."""
    return cv2.applyColorMap(np.uint8([[code]]), cv2.COLORMAP_INFERNO)[0, 0, ::-1]


def hand_aligned_shard(path, h=72, w=160, diff=32, margin=6):
    """Two pairs, window "5", with alignment written by hand: pair 0 has aligned == sharp, ok,
    margin ``margin``, score 0.99; pair 1 has aligned == sharp + ``diff``, rejected, no margin, score 0.3.
    Window "0" has blur == sharp and no alignment."""
    rng = np.random.default_rng(7)
    sharps = [rng.integers(0, 200, (h, w, 3), dtype=np.uint8) for _ in range(2)]
    blurs = [cv2.GaussianBlur(s, (9, 9), 3) for s in sharps]
    write_shard(path, [(s, {"5": b, "0": s}) for s, b in zip(sharps, blurs)], labels=("5", "0"))
    aligned = [sharps[0], sharps[1] + np.uint8(diff)]
    with h5py.File(path, "a") as f:
        f.create_dataset("aligned/5", data=np.stack(aligned), chunks=(1, h, w, 3))
        g = f.create_group("align/5")
        g.attrs["motion"] = "euclidean"
        g.create_dataset("warp", data=np.stack([np.eye(3)] * 2))
        g.create_dataset("gain", data=np.ones((2, 3), np.float32))
        g.create_dataset("score", data=np.float32([0.99, 0.3]))
        g.create_dataset("ok", data=np.array([True, False]))
        g.create_dataset("margin", data=np.int32([margin, 0]))
    return path, sharps, blurs


def test_sampling_is_even_and_includes_both_ends():
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(10, 3) == [0, 4, 9]            # 4.5 rounds half to even
    assert sample_indices(2, 16) == [0, 1]
    assert sample_indices(1, 3) == [0]
    assert sample_indices(0, 3) == [] and sample_indices(5, 0) == []


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


def test_sheet_layout_tiles_heat_maps_and_captions(tmp_path, monkeypatch):
    h, w = 72, 160
    p, sharps, blurs = hand_aligned_shard(tmp_path / "m.h5", h, w)
    texts = []
    real_caption = inspect_mod._caption

    def recording_caption(tile, text, color=(255, 255, 255), bar=18):
        texts.append((text, tuple(color)))
        return real_caption(tile, text, color, bar)
    monkeypatch.setattr(inspect_mod, "_caption", recording_caption)
    sheet = contact_sheet([p], rows_per_shard=5, tile=w)      # tile = image width: tiles are the images
    row_h = CAPTION + h + GAP
    # 2 rows of sharp | blur 5 | blur 0 | heat 5 | heat 0; width at least 600
    row_w = 5 * w + 4 * GAP
    assert sheet.shape == (TITLE + 2 * row_h, max(600, row_w), 3) and sheet.dtype == np.uint8
    grey = np.array([90, 90, 90], np.uint8)
    for i in range(2):
        y = TITLE + i * row_h + CAPTION
        tiles = [sheet[y:y + h, k * (w + GAP):k * (w + GAP) + w] for k in range(5)]
        assert np.array_equal(tiles[0], sharps[i])
        assert np.array_equal(tiles[1], blurs[i])
        assert np.array_equal(tiles[2], sharps[i])                           # window 0: blur == sharp
        assert (tiles[4] == inferno(0)).all()                                # |blur 0 - sharp| = 0
        assert (sheet[y - CAPTION:y, :] != 12).any()                         # a caption above the row
        assert (sheet[y + h:y + h + GAP] == 12).all()                        # gap below the row
    heat0 = sheet[TITLE + CAPTION:TITLE + CAPTION + h, 3 * (w + GAP):3 * (w + GAP) + w]
    assert (heat0[6:h - 6, 6:w - 6] == inferno(0)).all()                  # aligned == sharp: zero
    ring = np.ones((h, w), bool)
    ring[6:h - 6, 6:w - 6] = False
    assert (heat0[ring] == grey).all()                                      # invalid margin: grey
    y1 = TITLE + row_h + CAPTION
    heat1 = sheet[y1:y1 + h, 3 * (w + GAP):3 * (w + GAP) + w]
    assert (heat1 == inferno(32 * 255 // 48)).all()                        # |difference| 32 codes everywhere
    db1 = 20 * np.log10(255 / 32)
    blur_db = [psnr(b, s) for s, b in zip(sharps, blurs)]
    white, red = (255, 255, 255), (255, 70, 70)
    assert texts == [                                                       # in the order they are made
        ("m.h5 #0 sharp", white), (f"blur 5: {blur_db[0]:.1f} dB", white), ("aligned 5: inf dB, score 0.990", white),
        ("blur 0: inf dB", white), ("blur 0 - sharp (not aligned)", (200, 200, 200)),
        ("m.h5 #1 sharp", white), (f"blur 5: {blur_db[1]:.1f} dB", white),
        (f"aligned 5: {db1:.1f} dB, score 0.300 REJECTED", red),
        ("blur 0: inf dB", white), ("blur 0 - sharp (not aligned)", (200, 200, 200))]
    strip1 = sheet[y1 - CAPTION:y1, 3 * (w + GAP):3 * (w + GAP) + w].astype(int)
    strip0 = sheet[TITLE:TITLE + CAPTION, 3 * (w + GAP):3 * (w + GAP) + w].astype(int)
    assert (strip1[..., 0] - strip1[..., 1] > 100).any()                   # rejected: red caption
    assert not (strip0[..., 0] - strip0[..., 1] > 20).any()


def test_sheet_tiles_are_resized_images_and_rows_are_capped(tmp_path):
    h, w, tile = 72, 160, 96
    p, sharps, blurs = hand_aligned_shard(tmp_path / "a.h5", h, w)
    q, sharps_b, _ = hand_aligned_shard(tmp_path / "b.h5", h, w)
    th = round(h * tile / w)
    sheet = contact_sheet([p, q], rows_per_shard=2, tile=tile, max_rows=3)
    row_h = CAPTION + th + GAP
    assert sheet.shape == (TITLE + 3 * row_h, 600, 3)                       # 2 rows of a, 1 of b
    for r, (img, blur) in enumerate([(sharps[0], blurs[0]), (sharps[1], blurs[1]), (sharps_b[0], None)]):
        y = TITLE + r * row_h + CAPTION
        small = cv2.resize(img, (tile, th), interpolation=cv2.INTER_AREA)
        assert np.array_equal(sheet[y:y + th, :tile], small)
        if blur is not None:
            assert np.array_equal(sheet[y:y + th, tile + GAP:2 * tile + GAP],
                                  cv2.resize(blur, (tile, th), interpolation=cv2.INTER_AREA))
    assert (sheet[TITLE:, 5 * tile + 4 * GAP:] == 12).all()               # rows padded to the sheet width


def test_summary_of_hand_aligned_shard(tmp_path):
    p, sharps, blurs = hand_aligned_shard(tmp_path / "m.h5")
    s = summarize(p)
    d5, d0 = s["per_window"]["5"], s["per_window"]["0"]
    assert abs(d5["psnr_blur_db"] - np.mean([psnr(b, x) for x, b in zip(sharps, blurs)])) < 0.01
    assert d0["psnr_blur_db"] is None and "align" not in d0                 # identical images: no finite dB
    a = d5["align"]
    assert a["motion"] == "euclidean" and a["ok"] == 1 and a["rejected"] == 1 and a["rejected_pairs"] == [1]
    assert a["margin_max"] == 6 and a["score_median"] == round((0.99 + 0.3) / 2, 4)
    assert abs(a["psnr_aligned_db"] - 20 * np.log10(255 / 32)) < 0.01      # pair 0 is exact (inf, left out)
    assert a["gain_median"] == [1.0, 1.0, 1.0]
    table = format_table(s)
    assert "1/1" in table and "not aligned" in table and "pairs rejected by align (pairs 1)" in table


def test_heat_map_colours():
    zero = heat_map(np.zeros((4, 4, 3)), None)
    assert (zero == inferno(0)).all()
    assert (heat_map(np.full((4, 4, 3), 100.0), None) == inferno(255)).all()   # beyond the scale: top
    assert (heat_map(np.full((4, 4, 3), 12.0), None, vmax=24) == inferno(127)).all()
    mixed = np.zeros((2, 2, 3))
    mixed[0, 0] = (48, 0, 0)                                                # mean over RGB: 16 codes
    assert (heat_map(mixed, None)[0, 0] == inferno(85)).all()
    grey = heat_map(np.zeros((4, 4, 3)), np.zeros((4, 4), bool))
    assert (grey == 90).all()


def test_inspect_errors(tmp_path):
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "none.h5")])
    assert res.exit_code != 0 and "none.h5" in res.output and "Traceback" not in res.output
