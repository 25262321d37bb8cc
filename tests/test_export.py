"""`blurforge export`: GoPro layout and BasicSR pairs, read back by a GoPro-style loader written here
and by `blurforge import gopro|pairs`, pixel for pixel; --aligned skips rejected pairs and crops."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_split import import_shard, video_shard

from blurforge.cli import main
from blurforge.importers import import_gopro, import_pairs
from blurforge.shards import ShardWriter


def rgb(path) -> np.ndarray:
    """A PNG as RGB uint8, read by PIL (not by the OpenCV the exporter used)."""
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im).copy()


def gopro_loader(root: Path):
    """What a GoPro dataset class does: for each split/sequence, sorted blur/*.png and sharp/*.png
    taken as pairs. Yields (split, sequence, file name, blur, sharp)."""
    for split in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for seq in sorted((root / split).iterdir()):
            blurs, sharps = sorted((seq / "blur").glob("*.png")), sorted((seq / "sharp").glob("*.png"))
            assert [p.name for p in blurs] == [p.name for p in sharps]
            for b, s in zip(blurs, sharps):
                yield split, seq.name, b.name, rgb(b), rgb(s)


@pytest.fixture()
def data(tmp_path):
    """cam.h5: video shard, windows 9 and 17, 4 pairs (sharp frames 20, 60, 100, 140); window 9
    aligned by hand (pair 1 rejected, margins 2, 0, 3, 1). A GoPro import (split test) and a
    folder-pair import whose sharp frame numbers repeat."""
    d = tmp_path / "data"
    cam = video_shard(d / "cam.h5", 4, "cam.mp4", windows=(9, 17), seed=4)
    with h5py.File(cam, "a") as f:
        al = np.clip(f["blur/9"][()].astype(np.int16) + 7, 0, 255).astype(np.uint8)
        f.create_dataset("aligned/9", data=al, chunks=(1, 64, 80, 3))
        f.create_dataset("align/9/ok", data=np.array([True, False, True, True]))
        f.create_dataset("align/9/margin", data=np.int32([2, 0, 3, 1]))
    import_shard(d / "gopro-test-GOPR0002.h5", 3, "gopro", "GOPRO_Large", seed=5, sequence="GOPR0002", split="test")
    imgs = [np.full((64, 80, 3), v, np.uint8) + np.arange(80, dtype=np.uint8)[None, :, None] for v in (10, 90)]
    with ShardWriter(d / "folder.h5", 64, 80, ["reds"], attrs={"kind": "pairs", "source_name": "blurred"}) as wr:
        for im in imgs:
            wr.add(im, {"reds": 255 - im}, center=5)
    return d


def shard_images(path, label):
    with h5py.File(path, "r") as f:
        return f["sharp"][()], f[f"blur/{label}"][()], f["center"][()]


def export(args):
    res = CliRunner().invoke(main, ["export", *map(str, args)])
    return res


def test_gopro_export_loader_and_import_round_trip(data, tmp_path):
    out = tmp_path / "GOPRO_export"
    res = export([data, "--format", "gopro", "--out", out, "--jobs", "3", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["images"] == 2 * (4 + 4 + 3 + 2) and summary["pairs"] == 13
    got = {}
    for split, seq, name, blur, sharp in gopro_loader(out):
        got[(split, seq, name)] = (blur, sharp)
    want = {}
    for shard, split, clip, labels in ((data / "cam.h5", "train", "cam", ("9", "17")),
                                       (data / "gopro-test-GOPR0002.h5", "test", "GOPR0002", ("gopro",)),
                                       (data / "folder.h5", "train", "folder", ("reds",))):
        for lab in labels:
            sharps, blurs, centers = shard_images(shard, lab)
            names = centers if len(set(centers)) == len(centers) else range(len(centers))
            for i, c in enumerate(names):
                want[(split, f"{clip}_{lab}", f"{int(c):06d}.png")] = (blurs[i], sharps[i])
    assert sorted(got) == sorted(want)
    assert ("train", "cam_9", "000060.png") in got          # named by the sharp frame's number
    assert ("train", "folder_reds", "000001.png") in got     # repeated frame numbers: the pair index
    for k, (b, s) in want.items():
        np.testing.assert_array_equal(got[k][0], b, err_msg=str(k))
        np.testing.assert_array_equal(got[k][1], s, err_msg=str(k))
    assert not list(out.rglob(".*tmp*"))
    # blurforge import gopro reads the export back: same pixels, same frame numbers
    back = import_gopro(out, tmp_path / "back", jobs=2)
    assert len(back) == 4
    for (split, seq, name), (b, s) in want.items():
        sharps, blurs, centers = shard_images(tmp_path / "back" / f"gopro-{split}-{seq}.h5", "gopro")
        i = list(centers).index(int(name[:6]))
        np.testing.assert_array_equal(blurs[i], b)
        np.testing.assert_array_equal(sharps[i], s)


def test_split_lists_decide_the_split_folder(data, tmp_path):
    """The nearest list naming a shard wins over lists further up and over the split attribute."""
    (data / "train.txt").write_text("# made by hand\nfolder.h5\n")
    (data / "val.txt").write_text("")
    (data / "test.txt").write_text("cam.h5\n")
    (data.parent / "val.txt").write_text("data/gopro-test-GOPR0002.h5\ndata/folder.h5\n")
    out = tmp_path / "e"
    res = export([data, "--format", "gopro", "--out", out, "--windows", "9,gopro,reds"])
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*")) == [
        "test/cam_9", "train/folder_reds", "val/GOPR0002_gopro"]
    assert len(list((out / "test" / "cam_9" / "blur").glob("*.png"))) == 4


def test_pairs_export_matches_names_and_imports_back(data, tmp_path):
    out = tmp_path / "pairs"
    res = export([data / "cam.h5", data / "folder.h5", "--format", "pairs", "--out", out])
    assert res.exit_code == 0, res.output
    blur_names = sorted(p.name for p in (out / "blur").iterdir())
    assert blur_names == sorted(p.name for p in (out / "sharp").iterdir())
    assert len(blur_names) == 4 + 4 + 2 and "cam_17_000140.png" in blur_names and "folder_reds_000000.png" in blur_names
    back = import_pairs(out / "blur", out / "sharp", tmp_path / "back", label="x", pairs_per_shard=0)
    assert back["pairs"] == 10
    originals = {}
    for shard, clip, labels in ((data / "cam.h5", "cam", ("9", "17")), (data / "folder.h5", "folder", ("reds",))):
        for lab in labels:
            sharps, blurs, centers = shard_images(shard, lab)
            names = centers if len(set(centers)) == len(centers) else range(len(centers))
            for i, c in enumerate(names):
                originals[f"{clip}_{lab}_{int(c):06d}.png"] = (blurs[i], sharps[i])
    seen = 0
    for s in back["shards"]:
        with h5py.File(s["shard"], "r") as f:
            for i, name in enumerate(f["meta/name"][()]):
                b, sh = originals[name.decode()]
                np.testing.assert_array_equal(f["blur/x"][i], b)
                np.testing.assert_array_equal(f["sharp"][i], sh)
                seen += 1
    assert seen == 10


def test_aligned_export_skips_rejected_and_crops_the_margin(data, tmp_path):
    out = tmp_path / "al"
    res = export([data / "cam.h5", "--format", "gopro", "--out", out, "--aligned"])
    assert res.exit_code == 0, res.output
    assert "window 17 is not aligned" in res.output and "1 pair(s) rejected" in res.output
    with h5py.File(data / "cam.h5", "r") as f:
        aligned, sharp, blur17 = f["aligned/9"][()], f["sharp"][()], f["blur/17"][()]
    files = sorted((out / "train" / "cam_9" / "blur").glob("*.png"))
    assert [p.name for p in files] == ["000020.png", "000100.png", "000140.png"]       # pair 1 rejected
    m = 3                                                          # the largest margin of the kept pairs
    for p, i in zip(files, (0, 2, 3)):
        np.testing.assert_array_equal(rgb(p), aligned[i, m:-m, m:-m])
        np.testing.assert_array_equal(rgb(out / "train" / "cam_9" / "sharp" / p.name), sharp[i, m:-m, m:-m])
    full = sorted((out / "train" / "cam_17" / "blur").glob("*.png"))  # no alignment: blur/17 as it is
    assert len(full) == 4 and np.array_equal(rgb(full[1]), blur17[1])
    back = import_gopro(out, tmp_path / "back")
    with h5py.File(tmp_path / "back" / "gopro-train-cam_9.h5", "r") as f:
        np.testing.assert_array_equal(f["blur/gopro"][()], aligned[[0, 2, 3], m:-m, m:-m])
    assert {r["sequence"] for r in back} == {"cam_9", "cam_17"}


def test_export_errors_are_one_line(data, tmp_path):
    twin = tmp_path / "other"
    video_shard(twin / "cam.h5", 1, "cam.mp4", seed=9)
    cases = [([data / "cam.h5", twin / "cam.h5"], "would both export cam_9"),
             ([data / "cam.h5", "--windows", "33"], "no shard has window(s) 33"),
             ([tmp_path / "none.h5"], "no such file"),
             ([f"@{tmp_path / 'no.txt'}"], "no such list file")]
    for args, expect in cases:
        res = export([*args, "--format", "gopro", "--out", tmp_path / "x"])
        assert res.exit_code == 1 and expect in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*.png"))
