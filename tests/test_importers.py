"""`blurforge import gopro|pairs`: layouts become shards holding exactly the PNG pixels."""
from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from blurforge.cli import main
from blurforge.importers import ImportFailed, import_gopro, import_pairs, match_pairs
from blurforge.verify import verify_shard


def put(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def rand(rng, h=24, w=32):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def gopro_tree(root, rng):
    """train: 2 sequences x 3 frames, test: 1 sequence x 2 frames; returns {(split, seq): [frames]}."""
    truth = {}
    for split, seqs in (("train", {"GOPR0001_00_00": 3, "GOPR0002_11_00": 3}), ("test", {"GOPR0410_11_00": 2})):
        for seq, n in seqs.items():
            rows = []
            for k in range(n):
                name = f"{47 + 2 * k:06d}.png"
                d = root / split / seq
                rows.append({"name": name, "sharp": put(d / "sharp" / name, rand(rng)),
                             "gopro": put(d / "blur" / name, rand(rng)),
                             "gopro_gamma": put(d / "blur_gamma" / name, rand(rng))})
            truth[(split, seq)] = rows
    return truth


def test_gopro_import_reads_back_exact_pixels(tmp_path):
    rng = np.random.default_rng(1)
    truth = gopro_tree(tmp_path / "GOPRO_Large", rng)
    out = tmp_path / "shards"
    res = import_gopro(tmp_path / "GOPRO_Large", out, jobs=2)
    assert sorted(r["shard"].split("/")[-1] for r in res) == [
        "gopro-test-GOPR0410_11_00.h5", "gopro-train-GOPR0001_00_00.h5", "gopro-train-GOPR0002_11_00.h5"]
    for (split, seq), rows in truth.items():
        p = out / f"gopro-{split}-{seq}.h5"
        assert verify_shard(p)["ok"]
        with h5py.File(p, "r") as f:
            assert f.attrs["kind"] == "gopro" and f.attrs["split"] == split and f.attrs["sequence"] == seq
            assert list(f.attrs["windows"]) == ["gopro", "gopro_gamma"]
            assert f["blur/gopro"].attrs["averaging_curve"] == "linear"
            assert f["blur/gopro_gamma"].attrs["averaging_curve"] == "gamma2.2"
            assert [n.decode() for n in f["meta/name"][()]] == [r["name"] for r in rows]
            assert list(f["center"][()]) == [int(r["name"][:6]) for r in rows]
            for i, r in enumerate(rows):
                np.testing.assert_array_equal(f["sharp"][i], r["sharp"])
                np.testing.assert_array_equal(f["blur/gopro"][i], r["gopro"])
                np.testing.assert_array_equal(f["blur/gopro_gamma"][i], r["gopro_gamma"])
    again = import_gopro(tmp_path / "GOPRO_Large", out)
    assert all(r["status"] == "skipped (complete)" for r in again)


def test_gopro_cli_split_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    gopro_tree(tmp_path / "G", rng)
    res = CliRunner().invoke(main, ["import", "gopro", str(tmp_path / "G"), "--out", str(tmp_path / "o"),
                                    "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    assert [s["sequence"] for s in json.loads(res.output)["shards"]] == ["GOPR0410_11_00"]
    (tmp_path / "G/train/GOPR0001_00_00/blur/000047.png").unlink()
    res = CliRunner().invoke(main, ["import", "gopro", str(tmp_path / "G"), "--out", str(tmp_path / "o2")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "000047.png" in res.output and "GOPR0001_00_00" in res.output
    assert not list((tmp_path / "o2").glob("*GOPR0001*")) and not list((tmp_path / "o2").glob(".*tmp*"))
    res = CliRunner().invoke(main, ["import", "gopro", str(tmp_path / "nothing")])
    assert res.exit_code != 0 and "no such folder" in res.output


def test_pairs_import_by_relative_path_reds_layout(tmp_path):
    """REDS: frame names repeat across sequences, so pairs match by relative path."""
    rng = np.random.default_rng(3)
    truth = []
    for seq in ("000", "001"):
        for k in range(2):
            rel = f"{seq}/{k:08d}.png"
            truth.append((rel, put(tmp_path / "train_blur" / rel, rand(rng)),
                          put(tmp_path / "train_sharp" / rel, rand(rng))))
    res = import_pairs(tmp_path / "train_blur", tmp_path / "train_sharp", tmp_path / "o", label="reds",
                       split="train")
    assert res["pairs"] == 4 and [s["status"] for s in res["shards"]] == ["imported"]
    with h5py.File(tmp_path / "o/reds.h5", "r") as f:
        assert f.attrs["kind"] == "pairs" and f.attrs["split"] == "train"
        assert [n.decode() for n in f["meta/name"][()]] == [t[0] for t in truth]
        for i, (_rel, blur, sharp) in enumerate(truth):
            np.testing.assert_array_equal(f["blur/reds"][i], blur)
            np.testing.assert_array_equal(f["sharp"][i], sharp)
    assert verify_shard(tmp_path / "o/reds.h5")["ok"]


def test_pairs_import_by_name_hide_and_realblur_names(tmp_path):
    """HIDE: blurred images in a subfolder, sharp ones flat (by name); RealBlur: blur_N / gt_N;
    grey and RGBA files become RGB; extra sharp images are a note, not an error."""
    rng = np.random.default_rng(4)
    b1 = put(tmp_path / "blur/long/1_a.png", rand(rng))
    s1 = put(tmp_path / "gt/1_a.png", rand(rng))
    grey = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "blur/long/blur_2.png"), grey)
    s2 = put(tmp_path / "gt/gt_2.png", rand(rng))
    put(tmp_path / "gt/unused.png", rand(rng))
    pairs, notes = match_pairs(tmp_path / "blur", tmp_path / "gt")
    assert [(b.name, s.name) for b, s in pairs] == [("1_a.png", "1_a.png"), ("blur_2.png", "gt_2.png")]
    assert notes and "no blurred partner" in notes[0]
    res = CliRunner().invoke(main, ["import", "pairs", str(tmp_path / "blur"), str(tmp_path / "gt"),
                                    "--out", str(tmp_path / "o"), "--label", "hide"])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "o/hide.h5", "r") as f:
        np.testing.assert_array_equal(f["blur/hide"][0], b1)
        np.testing.assert_array_equal(f["sharp"][0], s1)
        np.testing.assert_array_equal(f["blur/hide"][1], np.stack([grey] * 3, -1))
        np.testing.assert_array_equal(f["sharp"][1], s2)
        assert [n.decode() for n in f["meta/sharp_name"][()]] == ["1_a.png", "gt_2.png"]


def test_pairs_unmatched_and_size_errors(tmp_path):
    rng = np.random.default_rng(5)
    put(tmp_path / "b/x.png", rand(rng))
    put(tmp_path / "b/y.png", rand(rng))
    put(tmp_path / "s/x.png", rand(rng))
    with pytest.raises(ImportFailed, match="y.png"):
        match_pairs(tmp_path / "b", tmp_path / "s")
    res = CliRunner().invoke(main, ["import", "pairs", str(tmp_path / "b"), str(tmp_path / "s"),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "1 of 2 blurred" in res.output and "Traceback" not in res.output
    put(tmp_path / "s/y.png", rand(rng, 20, 32))                  # sharp y differs in size from blur y
    res = CliRunner().invoke(main, ["import", "pairs", str(tmp_path / "b"), str(tmp_path / "s"),
                                    "--out", str(tmp_path / "o"), "--pairs-per-shard", "0"])
    assert res.exit_code != 0 and "y.png is 32x24" in res.output and "32x20" in res.output
    assert not list((tmp_path / "o").glob("*.h5")) and not list((tmp_path / "o").glob(".*tmp*"))


def test_pairs_of_several_sizes_go_to_separate_shards(tmp_path):
    rng = np.random.default_rng(6)
    for k, (h, w) in enumerate([(24, 32), (24, 32), (16, 20)]):
        put(tmp_path / f"b/{k}.png", rand(rng, h, w))
        put(tmp_path / f"s/{k}.png", rand(rng, h, w))
    res = import_pairs(tmp_path / "b", tmp_path / "s", tmp_path / "o", pairs_per_shard=1)
    names = sorted(s["shard"].split("/")[-1] for s in res["shards"])
    assert names == ["b-20x16.h5", "b-32x24-0000.h5", "b-32x24-0001.h5"]


def test_unreadable_and_16bit_images(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "s").mkdir()
    (tmp_path / "b/a.png").write_bytes(b"not a png")
    put(tmp_path / "s/a.png", np.zeros((8, 8, 3), np.uint8))
    res = CliRunner().invoke(main, ["import", "pairs", str(tmp_path / "b"), str(tmp_path / "s"),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "not a readable image" in res.output
    cv2.imwrite(str(tmp_path / "b/a.png"), np.zeros((8, 8, 3), np.uint16))
    res = CliRunner().invoke(main, ["import", "pairs", str(tmp_path / "b"), str(tmp_path / "s"),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "uint16" in res.output
