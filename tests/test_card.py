"""`blurforge card`: every figure of the card recomputed here from the shards (PSNR by scikit-image),
the front matter, the commands, and plots and contact sheet that open."""
from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_clip
from conftest import psnr as ref_psnr
from PIL import Image
from test_split import import_shard, video_shard

from blurforge.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A real clip (synth, 4% flicker) extracted with windows 9,17 and aligned; two hand-made video
    shards, one with align rejections and two newer meta fields; a GoPro import; split lists."""
    tmp = tmp_path_factory.mktemp("card")
    d = tmp / "data"
    clip = make_clip(tmp / "real.mp4", frames=200, flicker=0.04, seed=3)
    res = CliRunner().invoke(main, ["extract", str(clip), "--windows", "9,17", "--out", str(d), "--align", "--quiet"])
    assert res.exit_code == 0, res.output
    video_shard(d / "hand1.h5", 5, "hand1.mp4", windows=(9, 17), seed=1)
    hand2 = video_shard(d / "hand2.h5", 4, "hand2.mp4", windows=(9,), seed=2, fps=480.0)
    with h5py.File(hand2, "a") as f:
        f.create_dataset("aligned/9", data=f["blur/9"][()], chunks=(1, 64, 80, 3))
        g = f.create_group("align/9")
        g.attrs.update(motion="homography", min_score=0.8, max_shift=16.0, tool_version="0.0.9")
        g.create_dataset("ok", data=np.array([True, False, False, True]))
        g.create_dataset("margin", data=np.int32([1, 2, 3, 4]))
        f.create_dataset("meta/9/moving_fraction", data=np.float32([0.1, 0.2, 0.4, 0.3]))
        f.create_dataset("meta/9/flicker_significant", data=np.array([True, False, True, True]))
    import_shard(d / "gopro-test-GOPR0007.h5", 3, "gopro", "GOPRO_Large", seed=6, sequence="GOPR0007", split="test")
    res = CliRunner().invoke(main, ["split", str(d), "--val", "0.25", "--test", "0.25", "--seed", "2"])
    assert res.exit_code == 0, res.output
    return d


def truth(d) -> dict:
    """The test's own reading of the shards: per window, every pair's numbers; splits from the lists."""
    lists = {}
    for sp in ("train", "val", "test"):
        for line in (d / f"{sp}.txt").read_text().splitlines():
            if line and not line.startswith("#"):
                lists[line] = sp
    t = {"pairs": 0, "splits": {}, "win": {}, "res": {}, "fps": {}}
    for p in sorted(d.rglob("*.h5")):
        with h5py.File(p, "r") as f:
            n = int(f.attrs["num_pairs"])
            t["pairs"] += n
            sp = lists[p.relative_to(d).as_posix()]
            t["splits"][sp] = t["splits"].get(sp, 0) + n
            size = f"{f.attrs['width']}x{f.attrs['height']}"
            t["res"][size] = t["res"].get(size, 0) + n
            fps = f"{f.attrs['fps']:g}" if "fps" in f.attrs else "n/a (imported)"
            t["fps"][fps] = t["fps"].get(fps, 0) + n
            for lab in [x.decode() if isinstance(x, bytes) else str(x) for x in f.attrs["windows"]]:
                w = t["win"].setdefault(lab, {"psnr": [], "motion": [], "ghost": [], "corrected": [], "swing": [],
                                              "ok": [], "exposure": {}, "extra": {}})
                w["psnr"] += [ref_psnr(f[f"blur/{lab}"][i], f["sharp"][i]) for i in range(n)]
                if "exposure_s" in f[f"blur/{lab}"].attrs:
                    ms = round(1000 * float(f[f"blur/{lab}"].attrs["exposure_s"]), 3)
                    w["exposure"][ms] = w["exposure"].get(ms, 0) + n
                if f"meta/{lab}/motion_px" in f:
                    w["motion"] += list(f[f"meta/{lab}/motion_px"][()])
                if f"meta/{lab}/ghosting" in f:
                    w["ghost"] += list(f[f"meta/{lab}/ghosting"][()])
                if f"meta/{lab}/gains" in f:
                    g = f[f"meta/{lab}/gains"][()].astype(np.float64)
                    w["corrected"] += [bool(np.any(row != 1)) for row in g]
                    w["swing"] += [100 * (row.max() - row.min()) / 2 for row in g]
                if f"align/{lab}/ok" in f:
                    w["ok"] += list(f[f"align/{lab}/ok"][()])
                for k in ("moving_fraction", "flicker_significant"):
                    if f"meta/{lab}/{k}" in f:
                        w["extra"].setdefault(k, []).extend(f[f"meta/{lab}/{k}"][()])
    return t


@pytest.fixture(scope="module")
def card(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cardout") / "card"
    res = CliRunner().invoke(main, ["card", str(data), "--out", str(out), "--name", "Test set",
                                    "--license", "cc-by-4.0", "--quiet"])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "stats.json").read_text()), (out / "README.md").read_text()


def test_card_numbers_are_the_shards_numbers(data, card):
    _, st, text = card
    t = truth(data)
    assert st["pairs"] == t["pairs"] and st["shards"] == 4 and st["sources"] == 4
    assert {sp: d["pairs"] for sp, d in st["splits"].items()} == t["splits"]
    assert st["resolutions"] == t["res"] and st["frame_rates"] == t["fps"]
    assert set(st["per_window"]) == set(t["win"]) == {"9", "17", "gopro"}
    for lab, w in t["win"].items():
        s = st["per_window"][lab]
        ps = np.array(w["psnr"])
        assert s["psnr_db"]["count"] == len(ps)
        for key, fn in (("median", np.median), ("min", np.min), ("max", np.max), ("mean", np.mean)):
            assert s["psnr_db"][key] == pytest.approx(fn(ps), abs=6e-4), (lab, key)
        assert s["psnr_db"]["p90"] == pytest.approx(np.percentile(ps, 90), abs=6e-4)
        assert {float(k): v for k, v in s["exposure_ms"].items()} == w["exposure"]
        if w["motion"]:
            assert s["motion_px_per_frame"]["median"] == pytest.approx(np.median(w["motion"]), abs=6e-4)
        if w["ghost"]:
            assert s["ghosting"] == {"pairs": int(np.sum(w["ghost"])), "of": len(w["ghost"])}
        if w["swing"]:
            assert s["flicker"]["corrected_pairs"] == int(np.sum(w["corrected"]))
            assert s["flicker"]["gain_swing_pct"]["max"] == pytest.approx(max(w["swing"]), abs=6e-4)
        if w["ok"]:
            assert s["alignment"]["rejected"] == int(np.sum(~np.array(w["ok"], bool)))
            assert s["alignment"]["aligned_pairs"] == len(w["ok"])
    a9 = st["per_window"]["9"]["alignment"]
    assert a9["rejected"] >= 2 and a9["motion"] == ["euclidean", "homography"]
    mf = st["per_window"]["9"]["other_meta"]          # fields newer extract versions add, where present
    assert mf["moving_fraction"]["median"] == pytest.approx(np.median(t["win"]["9"]["extra"]["moving_fraction"]),
                                                            abs=6e-4)
    assert mf["flicker_significant"] == {"true": 3, "of": 4}
    # the flicker clip's gains are corrections
    assert st["per_window"]["17"]["flicker"]["corrected_pairs"] >= 1
    # the card prints those same numbers
    for sp, n in t["splits"].items():
        assert f"| {sp} | {st['splits'][sp]['shards']} | {st['splits'][sp]['sources']} | {n} |" in text
    for lab in t["win"]:
        d = st["per_window"][lab]["psnr_db"]
        assert f"| {lab} | {st['per_window'][lab]['pairs']} | PSNR dB | {d['median']:g} | {d['p10']:g} |" in text
    assert "| 80x64 |" in text and "| 960 |" in text and "| 480 |" in text
    assert "`meta/9/moving_fraction`" in text and "3 of 4 true" in text


def test_card_front_matter_commands_and_images(data, card):
    out, st, text = card
    assert text.startswith("---\n")
    front = text.split("---\n")[1]
    assert "license: cc-by-4.0" in front and '"Test set"' in front
    assert "task_categories:\n- image-to-image" in front and "size_categories:\n- n<1K" in front
    assert "# Test set" in text
    assert "`blurforge extract CLIPS --windows 9,17 --crf gamma2.2`" in text
    assert "`blurforge align --motion euclidean --min-score 0.75 --max-shift 16`" in text
    assert "`blurforge align --motion homography --min-score 0.8 --max-shift 16` - 1 shard(s) (blurforge 0.0.9)" in text
    assert "`blurforge import gopro GOPRO_Large`" in text
    assert f"`blurforge split {data} --val 0.25 --test 0.25 --seed 2`" in text
    linked = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert set(linked) == {"psnr.png", "motion.png", "gain_swing.png", "splits.png", "contact_sheet.png"}
    for name in linked:
        with Image.open(out / name) as im:
            im.load()
            assert im.format == "PNG" and im.size[0] >= 300 and im.size[1] >= 150
            assert np.asarray(im.convert("L")).std() > 5          # something is drawn
    assert not list(out.glob(".*tmp*"))


def test_card_sample_and_errors(data, tmp_path, monkeypatch):
    res = CliRunner().invoke(main, ["card", str(data), "--out", str(tmp_path / "c"), "--sample", "2",
                                    "--sheet-rows", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    st = json.loads((tmp_path / "c" / "stats.json").read_text())
    with h5py.File(data / "hand1.h5", "r") as f:
        assert f.attrs["num_pairs"] == 5
    assert st["per_window"]["17"]["psnr_db"]["count"] == 2 + 2          # real clip + hand1, two pairs each
    assert not (tmp_path / "c" / "contact_sheet.png").exists()
    res = CliRunner().invoke(main, ["card", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")])
    assert res.exit_code == 1 and "no such folder" in res.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)              # as if it were not installed
    res = CliRunner().invoke(main, ["card", str(data), "--out", str(tmp_path / "e")])
    assert res.exit_code == 1 and "blurforge[card]" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "e").exists()
