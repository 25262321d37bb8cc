"""`blurforge split` and @LIST.txt: lists never share a source or a --group-by scene, fractions are of
pairs, the draw is reproducible; every shard-taking command (align/inspect, dsanet-train, dsanet-eval)
reads @list.txt."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from test_data import box_blur, smooth_images

from blurforge.cli import main
from blurforge.cliutil import find_shards, read_list
from blurforge.errors import BlurforgeError
from blurforge.shards import ShardWriter
from blurforge.split import assign


def video_shard(path, n, source, h=64, w=80, windows=(9, 17), seed=0, sha=None, fps=960.0, meta=True,
                attrs=None):
    """A shard as `extract` writes it (attributes, blur/<W> exposure, meta/<W>/*), with smooth images
    and horizontal box blurs; ``sha`` defaults to a hash of ``source`` (one video, one checksum)."""
    sharps = smooth_images(n, h, w, seed=seed)
    rng = np.random.default_rng(seed)
    base = {"kind": "video", "source_name": source, "fps": fps, "camera_curve": "gamma2.2", "mains_hz": 60.0,
            "source_sha256": sha or hashlib.sha256(source.encode()).hexdigest(),
            "window_frames": np.array(windows, np.int64), **(attrs or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with ShardWriter(path, h, w, [str(x) for x in windows], attrs=base) as wr:
        for x in windows:
            wr.f[f"blur/{x}"].attrs.update(exposure_frames=x, exposure_s=x / fps)
        for i, s in enumerate(sharps):
            m = {}
            if meta:
                for x in windows:
                    f = x | 1
                    m.update({f"meta/{x}/motion_px": np.float32(rng.uniform(0.1, 2.0)),
                              f"meta/{x}/gains": (1 + rng.uniform(-0.03, 0.03, f) * (i % 2)).astype(np.float32),
                              f"meta/{x}/first": np.int64(100 * i), f"meta/{x}/last": np.int64(100 * i + f - 1)})
                    m[f"meta/{x}/ghosting"] = bool(m[f"meta/{x}/motion_px"] > 1)
            wr.add(s, {str(x): box_blur(s, 3 + 2 * (x % 7)) for x in windows}, center=40 * i + 20, meta=m)
    return Path(path)


def import_shard(path, n, kind, source, seed=0, **attrs):
    """A shard as `import gopro|pairs` writes it (no checksum of a source file)."""
    sharps = smooth_images(n, 64, 80, seed=seed)
    lab = "gopro" if kind == "gopro" else "reds"
    with ShardWriter(path, 64, 80, [lab], attrs={"kind": kind, "source_name": source, **attrs}) as wr:
        for i, s in enumerate(sharps):
            wr.add(s, {lab: box_blur(s, 5)}, center=i)
    return Path(path)


def source_key(path) -> str:
    """The test's own reading of a shard's source identity (data/README.md root attributes)."""
    with h5py.File(path, "r") as f:
        a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    if a.get("source_sha256"):
        return a["source_sha256"]
    return f"{a['kind']}|{a['source_name']}|{a.get('sequence', '')}|{a.get('blur_dir', '')}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Shards of 14 sources: one video in two shards (a copy under another name, same sha256), scene
    01 and 02 filmed twice each, a GoPro import, a folder-pair import in two numbered shards."""
    d = tmp_path_factory.mktemp("split") / "data"
    video_shard(d / "drive.h5", 3, "drive.mp4", seed=1)
    video_shard(d / "old" / "drive_copy.h5", 3, "drive_renamed.mp4", seed=1,
                sha=hashlib.sha256(b"drive.mp4").hexdigest())
    for k, name in enumerate(["scene01_take1", "scene01_take2", "scene02_take1", "scene02_take2"]):
        video_shard(d / f"{name}.h5", 2 + k % 2, f"{name}.mp4", seed=10 + k)
    for k in range(8):
        video_shard(d / "more" / f"clip{k}.h5", 1 + k % 3, f"clip{k}.mp4", seed=20 + k)
    import_shard(d / "gopro-train-GOPR0001.h5", 2, "gopro", "GOPRO_Large", sequence="GOPR0001", split="train")
    import_shard(d / "reds-0000.h5", 2, "pairs", "train_blur", blur_dir="/x/train_blur", sharp_dir="/x/s")
    import_shard(d / "reds-0001.h5", 2, "pairs", "train_blur", seed=3, blur_dir="/x/train_blur", sharp_dir="/x/s")
    return d


def lists(d) -> dict[str, list[str]]:
    out = {}
    for sp in ("train", "val", "test"):
        lines = (d / f"{sp}.txt").read_text().splitlines()
        out[sp] = [x for x in lines if x and not x.startswith("#")]
    return out


def run_split(d, *args):
    res = CliRunner().invoke(main, ["split", str(d), *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_split_never_shares_a_source_and_covers_every_shard(data):
    every = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.h5"))
    for seed in range(6):
        s = run_split(data, "--val", "0.2", "--test", "0.2", "--seed", str(seed))
        ls = lists(data)
        assert sorted(sum(ls.values(), [])) == every                          # each shard exactly once
        keys = {sp: {source_key(data / p) for p in ls[sp]} for sp in ls}
        assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
        for sp in ls:                                                         # summary = lists = shards
            pairs = sum(h5py.File(data / p, "r").attrs["num_pairs"] for p in ls[sp])
            assert s["splits"][sp]["pairs"] == pairs and s["splits"][sp]["shards"] == len(ls[sp])
            assert all(ls[sp]), "paths are relative to the data folder"
        assert all(s["splits"][sp]["shards"] for sp in ls)
    # the copy of drive.mp4 (another name, same checksum) and the two numbered imports go together
    where = {p: sp for sp, ps in lists(data).items() for p in ps}
    assert where["drive.h5"] == where["old/drive_copy.h5"]
    assert where["reds-0000.h5"] == where["reds-0001.h5"]


def test_group_by_keeps_scenes_together_and_is_needed(data):
    apart = 0
    for seed in range(12):
        run_split(data, "--val", "0.25", "--test", "0.25", "--seed", str(seed))
        where = {p: sp for sp, ps in lists(data).items() for p in ps}
        apart += where["scene01_take1.h5"] != where["scene01_take2.h5"] or \
            where["scene02_take1.h5"] != where["scene02_take2.h5"]
        s = run_split(data, "--val", "0.25", "--test", "0.25", "--seed", str(seed), "--group-by", r"^(scene\d+)_")
        where = {p: sp for sp, ps in lists(data).items() for p in ps}
        assert where["scene01_take1.h5"] == where["scene01_take2.h5"], seed
        assert where["scene02_take1.h5"] == where["scene02_take2.h5"], seed
        assert s["group_by_unmatched"] == 13 and s["groups"] == 13     # 17 shards; 4 takes of 2 scenes
    assert apart, "without --group-by the takes of a scene are drawn independently"


def test_same_seed_same_lists_other_seed_other_lists(data):
    run_split(data, "--val", "0.2", "--test", "0.2", "--seed", "5")
    a = lists(data)
    run_split(data, "--val", "0.2", "--test", "0.2", "--seed", "5")
    assert lists(data) == a
    others = []
    for seed in (6, 7, 8):
        run_split(data, "--val", "0.2", "--test", "0.2", "--seed", str(seed))
        others.append(lists(data))
    assert any(o != a for o in others)


def test_fractions_are_of_pairs():
    sizes = [5] * 20
    names = assign(sizes, {"val": 0.2, "test": 0.1}, seed=3)
    assert names.count("val") == 4 and names.count("test") == 2 and names.count("train") == 14
    sizes = [1, 50, 2, 3, 4, 40]                     # a small share cannot be met exactly
    for seed in range(10):
        names = assign(sizes, {"val": 0.05, "test": 0.05}, seed)
        for sp in ("val", "test"):
            got = sum(s for s, n in zip(sizes, names) if n == sp)
            assert got and abs(got - 0.05 * 100) <= max(sizes[i] for i, n in enumerate(names) if n == sp)
        assert "train" in names
    assert assign([7], {"val": 0.2, "test": 0.2}, 0) == ["train"]      # one group: train keeps it
    assert assign([3, 3, 3], {"val": 0.0, "test": 0.3}, 0).count("val") == 0


def test_split_errors_are_one_line(data, tmp_path):
    for args, expect in [(["--val", "0.6", "--test", "0.5"], "nothing to train"),
                         (["--val", "-0.1"], "--val"),
                         (["--group-by", "scene("], "regular expression")]:
        res = CliRunner().invoke(main, ["split", str(data), *args])
        assert res.exit_code == 1 and expect in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["split", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "no such folder" in res.output
    bad = tmp_path / "bad"
    video_shard(bad / "a.h5", 2, "a.mp4")
    with h5py.File(bad / "a.h5", "a") as f:
        f.attrs["complete"] = False
    res = CliRunner().invoke(main, ["split", str(bad)])
    assert res.exit_code == 1 and "incomplete" in res.output and "a.h5" in res.output


def test_list_files_relative_comments_nesting_and_errors(tmp_path):
    d = tmp_path / "data"
    a = video_shard(d / "a.h5", 1, "a.mp4")
    b = video_shard(d / "sub" / "b.h5", 1, "b.mp4", seed=2)
    (d / "sub" / "more.txt").write_text("b.h5\n")
    (d / "l.txt").write_text("# comment\n\n  a.h5  \n@sub/more.txt\n" + f"{b.resolve()}\n")
    assert read_list(d / "l.txt") == [str(d / "a.h5"), str(d / "sub" / "b.h5"), str(b.resolve())]
    assert find_shards([f"@{d / 'l.txt'}"], default=None) == [a, d / "sub" / "b.h5"]   # duplicates dropped
    (d / "empty.txt").write_text("# nothing\n")
    (d / "loop.txt").write_text("@loop.txt\n")
    (d / "gone.txt").write_text("missing.h5\n")
    for spec, expect in [("nolist.txt", "no such list file"), ("empty.txt", "lists no shards"),
                         ("loop.txt", "includes itself"), ("gone.txt", "missing.h5: no such file")]:
        with pytest.raises(BlurforgeError, match=expect):
            find_shards([f"@{d / spec}"], default=None)
        res = CliRunner().invoke(main, ["inspect", f"@{d / spec}"])
        assert res.exit_code == 1 and expect in res.output and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(main, ["inspect", "--json", f"@{d / 'l.txt'}"])
    assert res.exit_code == 0, res.output
    assert [Path(s["shard"]).name for s in json.loads(res.output)["shards"]] == ["a.h5", "b.h5"]


def test_trainer_and_evaluator_read_split_lists(tmp_path, monkeypatch):
    import dsanet.evaluate as ev
    import dsanet.train as tr
    from dsanet.checkpoint import load_checkpoint

    d = tmp_path / "data"
    for k in range(5):
        video_shard(d / f"c{k}.h5", 2 + k % 2, f"c{k}.mp4", seed=k, windows=(9,), meta=False)
    run_split(d, "--val", "0.2", "--test", "0.2", "--seed", "1")
    ls = lists(d)
    monkeypatch.chdir(tmp_path)                       # the lists are given relative to the working folder
    res = CliRunner().invoke(tr.main, ["--shards", "@data/train.txt", "--val-shards", "@data/val.txt", "--tiny",
                                       "--model-opt", "width=4", "--model-opt", "blocks=1", "--crop", "32",
                                       "--batch", "2", "--steps", "2", "--val-every", "2", "--workers", "0",
                                       "--out", "run", "--no-progress", "--no-tensorboard"])
    assert res.exit_code == 0, res.output
    st = load_checkpoint(tmp_path / "run" / "last.pt")
    assert sorted(st["shards"]) == sorted(Path(p).name for p in ls["train"])
    val_recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val_pairs = sum(h5py.File(d / p, "r").attrs["num_pairs"] for p in ls["val"])
    assert any(r["kind"] == "val" for r in val_recs)
    res = CliRunner().invoke(ev.main, ["--shards", "@data/test.txt", "--json", "scores.json", "--no-progress"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "scores.json").read_text())
    assert rep["all"]["count"] == sum(h5py.File(d / p, "r").attrs["num_pairs"] for p in ls["test"])
    assert val_pairs and rep["all"]["count"]
