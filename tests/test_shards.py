"""blurforge.shards: the atomic writer and the one reader API (label sources, alignment, crops, attributes)."""
from __future__ import annotations

import os
import threading

import h5py
import numpy as np
import pytest

import blurforge.atomic as atomic
from blurforge.shards import (
    ALIGN_FIELDS,
    ShardError,
    ShardWriter,
    TileReader,
    alignment,
    attr_str,
    decode_attr,
    file_map,
    label_source,
    open_shard,
    read_header,
    tmp_path_for,
    valid_mask,
    window_labels,
)


def write(path, n=3, h=40, w=56, labels=("7", "gopro"), seed=0):
    rng = np.random.default_rng(seed)
    sharps = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    with ShardWriter(path, h, w, list(labels), attrs={"kind": "video"}) as wr:
        for i, s in enumerate(sharps):
            wr.add(s, {lab: np.roll(s, j + 1, axis=1) for j, lab in enumerate(labels)}, center=i)
    return path, sharps


def add_alignment(path, label, ok, margin, aligned=True, score=None):
    with h5py.File(path, "a") as f:
        n, h, w = f["sharp"].shape[:3]
        if aligned:
            f.create_dataset(f"aligned/{label}", data=f["sharp"][()] // 2)
        g = f.require_group(f"align/{label}")
        g.attrs["motion"] = "homography"
        g.create_dataset("ok", data=np.asarray(ok, bool))
        g.create_dataset("margin", data=np.asarray(margin, np.int32))
        g.create_dataset("score", data=np.asarray(score if score is not None else [0.9] * n, np.float32))


def test_writer_is_invisible_until_close_and_fsyncs_the_folder(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic, "fsync_dir", lambda d: synced.append(os.fspath(d)))
    final = tmp_path / "s.h5"
    final.write_bytes(b"previous version")
    wr = ShardWriter(final, 8, 8, ["3"])
    assert wr.tmp == tmp_path_for(final) == tmp_path / f".s.h5.tmp-{os.getpid()}"
    wr.add(np.zeros((8, 8, 3), np.uint8), {"3": np.ones((8, 8, 3), np.uint8)}, center=4)
    assert wr.tmp.exists() and final.read_bytes() == b"previous version"
    assert wr.close() == final
    assert not wr.tmp.exists() and synced == [os.fspath(tmp_path)]
    with open_shard(final) as f:
        assert bool(f.attrs["complete"]) and int(f.attrs["num_pairs"]) == 1 and list(f["center"]) == [4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_writer_error_leaves_nothing_behind(tmp_path):
    final = tmp_path / "bad.h5"
    with pytest.raises(ShardError, match="expected uint8"):
        with ShardWriter(final, 8, 8, ["3"]) as wr:
            wr.add(np.zeros((8, 8, 3), np.uint8), {"3": np.zeros((8, 9, 3), np.uint8)})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ShardError, match="cannot write"):
        ShardWriter(tmp_path / "missing" / "x.h5", 8, 8, ["3"])


def test_per_pair_rows_are_written_in_blocks_and_keep_their_pairs(tmp_path, monkeypatch):
    """Rows are held and appended META_ROWS at a time: every pair's row lands at its own index,
    across blocks, for a dataset that starts late (earlier pairs read 0) or stops early."""
    monkeypatch.setattr("blurforge.shards.META_ROWS", 4)
    img = np.zeros((8, 8, 3), np.uint8)
    with ShardWriter(tmp_path / "m.h5", 8, 8, ["3"]) as wr:
        for i in range(11):
            meta = {"meta/x": np.float32(i), "meta/v": np.full(2, i, np.int32)}
            if i >= 3:
                meta["meta/late"] = np.int64(10 * i)
            if i < 6:
                meta["meta/early"] = np.float32(-i)
            wr.add(img, {"3": img}, center=100 + i, meta=meta)
        with pytest.raises(ShardError, match=r"meta/x: expected float32 \(\) per pair, got float64"):
            wr.add(img, {"3": img}, center=0, meta={"meta/x": np.float64(1)})
    with open_shard(tmp_path / "m.h5") as f:
        assert int(f.attrs["num_pairs"]) == 11 and list(f["center"]) == list(range(100, 111))
        assert list(f["meta/x"]) == list(range(11)) and f["meta/v"].shape == (11, 2)
        assert list(f["meta/v"][:, 1]) == list(range(11))
        assert list(f["meta/late"]) == [0, 0, 0] + [10 * i for i in range(3, 11)]
        assert list(f["meta/early"]) == [-i for i in range(6)]
        assert len(f["sharp"]) == 11


def test_writeback_flushes_while_writing_and_lets_go(tmp_path, monkeypatch):
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    wb = atomic.Writeback(path)
    wb.poke()
    for _ in range(200):
        if synced:
            break
        threading.Event().wait(0.01)
    wb.stop()
    assert synced and not wb._thread.is_alive() and wb._fd is None
    atomic.Writeback(tmp_path / "missing").stop()  # a file that cannot be opened: nothing to do


def test_label_source_aligned_beats_blur_ok_flags_and_margins(tmp_path):
    p, _ = write(tmp_path / "a.h5", n=4)
    add_alignment(p, "7", ok=[True, False, True, False], margin=[3, 0, 5, 1])
    add_alignment(p, "gopro", ok=[True, True, False, True], margin=[9, 9, 9, 9], aligned=False)
    with open_shard(p) as f:
        s7, sg = label_source(f, "7"), label_source(f, "gopro")
        assert s7.dataset == "aligned/7" and s7.aligned
        assert s7.usable().tolist() == [0, 2] and s7.margin.tolist() == [3, 0, 5, 1]
        # ok flags count without aligned images; a margin only describes aligned images
        assert sg.dataset == "blur/gopro" and not sg.aligned
        assert sg.usable().tolist() == [0, 1, 3] and sg.margin.tolist() == [0, 0, 0, 0]
        assert label_source(f, "7", n=2).ok.tolist() == [True, False]
        with pytest.raises(ShardError, match="window 9 listed but blur/9 is missing"):
            label_source(f, "9")


def test_alignment_reads_the_align_group(tmp_path):
    p, _ = write(tmp_path / "a.h5", n=3)
    add_alignment(p, "7", ok=[True, False, True], margin=[2, 4, 6], score=[0.5, 0.25, 1.0])
    with open_shard(p) as f:
        assert alignment(f, "gopro") is None
        a = alignment(f, "7")
        assert a.motion == "homography" and a.attrs == {"motion": "homography"}
        assert a.ok.tolist() == [True, False, True] and a.margin.tolist() == [2, 4, 6]
        assert a.score.tolist() == [0.5, 0.25, 1.0]
        # fields align did not write read as their documented dtype and shape, zero-filled
        assert a.gain.shape == (3, 3) and a.gain.dtype == ALIGN_FIELDS["gain"][0] and not a.gain.any()
        assert a.warp.shape == (3, 3, 3) and a.warp.dtype == np.float64


def test_header_and_attributes(tmp_path):
    p, _ = write(tmp_path / "a.h5", n=2, h=40, w=56)
    with h5py.File(p, "a") as f:
        f.attrs["name_bytes"] = np.bytes_(b"clip.mp4")
        f.attrs["fps"] = np.float64(960.0)
    with open_shard(p) as f:
        head = read_header(f)
        assert (head.height, head.width, head.num_pairs) == (40, 56, 2)
        assert head.labels == ["7", "gopro"] and head.complete
        assert head.sharp_sha256 == attr_str(f["sharp"], "sha256") and len(head.sharp_sha256) == 64
        assert window_labels(f) == ["7", "gopro"]
        assert attr_str(f, "name_bytes") == "clip.mp4" and attr_str(f, "absent", "-") == "-"
        assert decode_attr(f.attrs["fps"]) == 960.0 and type(decode_attr(f.attrs["fps"])) is float
        assert decode_attr(f.attrs["windows"]) == ["7", "gopro"]
        assert decode_attr(f.attrs["complete"]) is True
    assert decode_attr(np.array([b"a", b"b"])) == ["a", "b"]
    assert decode_attr(np.array([[1, 2]], np.int64)) == [[1, 2]]
    with h5py.File(p, "a") as f:
        del f.attrs["height"]
    with open_shard(p) as f, pytest.raises(ShardError, match="missing height; not a complete shard"):
        read_header(f)


def test_valid_mask():
    m = valid_mask((6, 8), 2)
    assert m.sum() == (6 - 4) * (8 - 4) and m[2:4, 2:6].all()
    assert valid_mask((6, 8), 0).all()
    assert not valid_mask((6, 8), 3).any()            # nothing left


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_tile_reader_equals_hdf5_slicing(tmp_path, compression):
    """Crops across tile borders, at the edges and into a caller's buffer, on the format's layout
    (memory-mapped chunks) and on a compressed dataset (the h5py fallback)."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (3, 300, 530, 3), dtype=np.uint8)
    p = tmp_path / "t.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("img", data=data, chunks=(1, 256, 256, 3), compression=compression)
    with h5py.File(p, "r") as f:
        rd = TileReader(f["img"], file_map(p))
        assert (rd.mm is not None) == (compression is None)
        for n, y, x, h, w in [(0, 0, 0, 300, 530), (1, 250, 250, 20, 20), (2, 100, 500, 200, 30),
                              (1, 256, 512, 44, 18), (0, 3, 7, 1, 1)]:
            np.testing.assert_array_equal(rd.read(n, y, x, h, w), data[n, y:y + h, x:x + w])
            out = np.empty((h, w, 3), np.uint8)
            assert rd.read(n, y, x, h, w, out) is out
            np.testing.assert_array_equal(out, data[n, y:y + h, x:x + w])
