"""The parallel engine (blurforge.engine): the dask executor gives the local run's shards bit for bit;
a failing clip or shard is retried, then reported, and the others finish; workers x decode threads
stay within the cores."""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from blurforge.cli import main
from blurforge.engine import run_tasks

# (workers of the local pool import this module to run _work: no torch, no dask at import time)
needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="dask.distributed is not installed (the test extra has it)")

WINDOWS = "9,17"
CLIPS = 3


def blurforge(*args, cwd=None):
    """The real command in a fresh interpreter (spawned workers, a LocalCluster): (exit code, stderr)."""
    res = subprocess.run([sys.executable, "-m", "blurforge", *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, timeout=300)
    return res.returncode, res.stderr


def tree(path) -> dict:
    """Every dataset's values and every attribute of a shard, by name; ``created`` (a clock) left out."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
            out.update({f"{name}@{k}": v for k, v in obj.attrs.items() if k != "created"})
        visit("/", f)
        f.visititems(visit)
    return out


def assert_same_shard(a, b):
    ta, tb = tree(a), tree(b)
    assert ta.keys() == tb.keys(), (a, b)
    for k in ta:
        va, vb = np.asarray(ta[k]), np.asarray(tb[k])
        assert va.dtype == vb.dtype and va.shape == vb.shape, (a, k)
        same = va.tolist() == vb.tolist() if va.dtype == object else va.tobytes() == vb.tobytes()  # strings
        assert same, (a, k)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three tiny clips of different scenes, and a file that is not a video."""
    from conftest import make_clip

    d = tmp_path_factory.mktemp("engine")
    good = [make_clip(d / f"c{i}.mp4", frames=160, seed=i) for i in range(CLIPS)]
    bad = d / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return d, good, bad


@pytest.fixture(scope="module")
def local_shards(clips):
    """The reference: one clip after another in this process."""
    d, good, _ = clips
    code, err = blurforge("extract", *good, "--windows", WINDOWS, "--out", d / "serial", "--quiet")
    assert code == 0, err
    return d / "serial"


@needs_dask
def test_dask_extract_is_bit_identical_and_a_bad_clip_is_reported(clips, local_shards):
    d, good, bad = clips
    for name, extra in [("dask", ["--executor", "dask"]), ("pool", [])]:
        code, err = blurforge("extract", *good, bad, "--windows", WINDOWS, "--out", d / name, "--jobs", 2, "--quiet",
                              *extra)
        # the bad clip fails the run with one line naming it; every good clip is done all the same
        assert code == 1, (name, err)
        assert "Traceback" not in err
        assert [ln for ln in err.splitlines() if ln.startswith("Error:")] == \
            [f"Error: {bad}: not a video (ffmpeg found no video stream)"], (name, err)
        assert sorted(p.name for p in (d / name).iterdir()) == [f"c{i}.h5" for i in range(CLIPS)], name
        for i in range(CLIPS):
            assert_same_shard(local_shards / f"c{i}.h5", d / name / f"c{i}.h5")


# ---- retries, crashes, thread budget: run_tasks with a function that misbehaves on given items ----

def _work(item):
    """Records each try in a file; ``flaky`` fails its first two tries, ``fail`` every try, ``crash``
    kills its worker process. Returns (name, try, decode threads the engine set here)."""
    from blurforge import video

    name, folder = item
    marker = Path(folder) / name
    tries = len(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text("x" * tries)
    if name == "crash":
        os._exit(3)
    if name == "fail":
        raise ValueError(f"{name} is broken")
    if name == "flaky" and tries < 3:
        raise RuntimeError("not yet")
    return name, tries, video._DECODE_THREADS


@pytest.mark.parametrize("executor", ["local", pytest.param("dask", marks=needs_dask)])
def test_failures_are_retried_then_reported_and_the_rest_finish(tmp_path, executor):
    names = ["ok1", "fail", "flaky", "crash", "ok2"]
    got = {item[0]: (res, err) for item, res, err in
           run_tasks(_work, [(n, str(tmp_path)) for n in names], executor, 2, None, "t", quiet=True)}
    assert sorted(got) == sorted(names)
    tries = {n: len((tmp_path / n).read_text()) for n in names}
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // 2)  # 2 workers x threads <= cores
    # dask may run an item again when a worker dies (here: the crashing item's) holding its result
    # before it was fetched, or while running it; the local pool charges a death to its own item only
    again = (lambda n: n >= 0) if executor == "dask" else (lambda n: n == 0)
    for n in ("ok1", "ok2"):
        (name, t, th), err = got[n]
        assert (name, th, err) == (n, threads, None) and again(t - 1)
    (name, t, th), err = got["flaky"]
    assert (name, th, err) == ("flaky", threads, None) and again(t - 3)  # two failures, then the third try
    assert got["fail"] == (None, "ValueError: fail is broken") and again(tries["fail"] - 3)
    assert got["crash"][0] is None and "worker process died" in got["crash"][1]
    assert tries["crash"] >= 3  # dask: its scheduler's allowed-failures (3) + 1


# ---- align --------------------------------------------------------------------------------------

@needs_dask
def test_align_on_a_dask_cluster_matches_the_local_pool(clips, local_shards, tmp_path):
    """Through --scheduler (a cluster the user started; here a LocalCluster of 2 workers): aligned
    shards equal those of the local pool, and a broken shard is reported while the others align."""
    from distributed import LocalCluster

    d, _, _ = clips
    for name in ("pool", "dask"):
        shutil.copytree(local_shards, tmp_path / name)
        (tmp_path / name / "broken.h5").write_bytes(b"not hdf5" * 100)
    code, err = blurforge("align", tmp_path / "pool", "--jobs", 2, "--quiet")
    assert code == 1 and err.count("Error:") == 1 and "broken.h5" in err, err
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.CRITICAL) as cluster:
        # relative paths from another folder: the engine sends absolute ones to the cluster
        code, err = blurforge("align", "dask", "--executor", "dask", "--scheduler", cluster.scheduler_address,
                              "--quiet", cwd=tmp_path)
    assert code == 1 and err.count("Error:") == 1 and "broken.h5" in err and "Traceback" not in err, err
    for i in range(CLIPS):
        shard = tmp_path / "dask" / f"c{i}.h5"
        with h5py.File(shard, "r") as f:
            assert set(f["aligned"]) == set(WINDOWS.split(","))
        assert_same_shard(tmp_path / "pool" / f"c{i}.h5", shard)


# ---- options ------------------------------------------------------------------------------------

def test_without_dask_the_error_says_how_to_install_it(clips, tmp_path, monkeypatch):
    _, good, _ = clips
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    res = CliRunner().invoke(main, ["extract", str(good[0]), "--executor", "dask", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == \
        ["Error: --executor dask needs dask.distributed: pip install 'blurforge[dask]'"]


def test_scheduler_needs_the_dask_executor(clips, tmp_path):
    _, good, _ = clips
    res = CliRunner().invoke(main, ["extract", *map(str, good), "--scheduler", "tcp://127.0.0.1:8786",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 1 and res.output.strip() == "Error: --scheduler needs --executor dask"
