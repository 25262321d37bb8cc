"""`blurforge verify`: good shards pass; truncation, flipped bytes and schema errors are named."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from blurforge.align_shards import align_shard
from blurforge.cli import main
from blurforge.shards import ShardWriter
from blurforge.verify import verify_shard


def small_shard(path, n=3, h=64, w=80, labels=("7",), seed=0):
    rng = np.random.default_rng(seed)
    with ShardWriter(path, h, w, list(labels), attrs={"kind": "video"}) as wr:
        for i in range(n):
            sharp = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            wr.add(sharp, {lab: np.roll(sharp, 1 + j, axis=1) for j, lab in enumerate(labels)}, center=i,
                   meta={f"meta/{labels[0]}/motion_px": np.float32(0.5)})
    return path


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def flip_byte(path, dataset, pair=1, byte=100):
    """Flip one byte of a stored image inside the file (located through the chunk index)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        off = None
        for k in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(k)
            if info.chunk_offset[0] == pair:
                off = info.byte_offset + byte
                break
        assert off is not None
    with open(path, "r+b") as fh:
        fh.seek(off)
        b = fh.read(1)
        fh.seek(off)
        fh.write(bytes([b[0] ^ 0x5A]))


def test_good_shard_passes(tmp_path):
    p = small_shard(tmp_path / "good.h5")
    r = verify_shard(p)
    assert r["ok"], r["problems"]
    assert set(r["datasets"]) == {"sharp", "blur/7"}
    code, out = run("verify", p)
    assert code == 0 and "ok" in out


def test_aligned_shard_passes(tmp_path):
    from test_align import sample_shard

    p, _ = sample_shard(tmp_path / "a.h5", n=2, labels=("5",))
    align_shard(p)
    r = verify_shard(p)
    assert r["ok"], r["problems"]
    assert "aligned/5" in r["datasets"]


def test_truncated_file_is_reported(tmp_path):
    good = small_shard(tmp_path / "good.h5")
    bad = tmp_path / "cut.h5"
    shutil.copy(good, bad)
    with open(bad, "r+b") as fh:
        fh.truncate(bad.stat().st_size // 2)
    r = verify_shard(bad)
    assert not r["ok"] and any("truncated" in m or "readable" in m for m in r["problems"]), r
    code, out = run("verify", good, bad)
    assert code != 0
    assert "cut.h5" in out and "good.h5: ok" in out and "Traceback" not in out


@pytest.mark.parametrize("dataset", ["sharp", "blur/7"])
def test_flipped_byte_is_reported(tmp_path, dataset):
    p = small_shard(tmp_path / "flip.h5")
    flip_byte(p, dataset)
    with h5py.File(p, "r") as f:         # the file still opens and reads: only checksums can tell
        f[dataset][()]
    r = verify_shard(p)
    assert not r["ok"]
    assert r["problems"] == [f"{dataset}: checksum mismatch (content changed since it was written)"]
    code, out = run("verify", "--json", p)
    assert code != 0
    rep = json.loads(out[:out.rindex("}") + 1])
    assert rep["bad"] == 1 and "checksum mismatch" in rep["shards"][0]["problems"][0]


def test_flipped_aligned_byte_is_reported(tmp_path):
    from test_align import sample_shard

    p, _ = sample_shard(tmp_path / "a.h5", n=2, labels=("5",))
    align_shard(p)
    flip_byte(p, "aligned/5", pair=0)
    r = verify_shard(p)
    assert r["problems"] == ["aligned/5: checksum mismatch (content changed since it was written)"]


def test_schema_problems_are_named(tmp_path):
    p = small_shard(tmp_path / "s.h5")
    with h5py.File(p, "r+") as f:
        del f.attrs["created"]
        f.attrs["format_version"] = 1
        del f["center"]
        f.create_dataset("center", data=np.zeros(2, np.int32))
        f["meta/extra"] = np.zeros(5)
    probs = verify_shard(p)["problems"]
    assert any("created" in m for m in probs)
    assert any(m.startswith("center: dtype int32") for m in probs)
    assert any(m.startswith("meta/extra") for m in probs)


def test_newer_version_and_foreign_files(tmp_path):
    p = small_shard(tmp_path / "v.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = 2
    assert any("format_version 2" in m for m in verify_shard(p)["problems"])
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    assert any("not a blurforge-shard" in m for m in verify_shard(other)["problems"])
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\0" * 1000)
    assert not verify_shard(junk)["ok"]
    code, out = run("verify", p, other, junk, tmp_path / "missing.h5")
    assert code != 0
    for name in ("v.h5", "other.h5", "junk.h5", "missing.h5"):
        assert name in out
    assert "Traceback" not in out


def test_incomplete_and_wrong_shape(tmp_path):
    p = small_shard(tmp_path / "i.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["complete"] = False
        f.attrs["num_pairs"] = 4
    probs = verify_shard(p)["problems"]
    assert any("complete" in m for m in probs)
    assert any(m.startswith("sharp: shape") for m in probs)
