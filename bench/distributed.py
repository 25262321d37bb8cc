"""What the dask engine costs: `extract` of 8 clips with `--executor dask --jobs 2` against `--jobs 2` locally.

Synthesises the clips once (different scenes), then runs the real command, `blurforge extract
CLIPS --jobs 2 [--executor dask] --overwrite`, alternately, each in a fresh interpreter, timing the
whole command (dask's includes starting and closing its LocalCluster of 2 worker processes), and
checks that both wrote the same shards (every dataset equal). Also times starting and closing a
bare LocalCluster of 2 workers, the fixed part of the overhead. Prints one JSON object: wall
times per repeat, their medians, and the ratio dask / local (median of the per-repeat ratios); the
same for CPU seconds (the command and its worker processes), which other users' load moves less
than wall time on a shared machine (the load average is printed too).

    python bench/distributed.py [--clips 8] [--size 640x360] [--frames 480] [--windows 36,73] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blurforge.synth import SynthConfig, synthesize  # noqa: E402

CLUSTER = """
import logging, time
from distributed import Client, LocalCluster
t = time.perf_counter()
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                  silence_logs=logging.CRITICAL) as c, Client(c) as cl:
    cl.submit(sum, [1, 2], pure=False).result()
print(time.perf_counter() - t)
"""


def extract(clips, out: Path, extra: list[str], windows: str) -> tuple[float, float]:
    """(wall s, CPU s) of one run; the CPU time is that of the command and all its worker processes."""
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "blurforge", "extract", *map(str, clips), "--windows", windows,
                          "--out", str(out), "--jobs", "2", "--overwrite", "--quiet", *extra],
                         capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"extract {' '.join(extra)} failed: {res.stderr.strip()}")
    wall = time.perf_counter() - t  # (ghosting warnings on stderr are not of interest here)
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, now.ru_utime + now.ru_stime - cpu.ru_utime - cpu.ru_stime


def datasets(path: Path) -> dict:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, o: out.__setitem__(k, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def same_shards(a: Path, b: Path) -> bool:
    """Every dataset of every shard equal (attributes such as ``created`` may differ)."""
    import numpy as np

    names = sorted(p.name for p in a.glob("*.h5"))
    if not names or names != sorted(p.name for p in b.glob("*.h5")):
        return False
    for n in names:
        da, db = datasets(a / n), datasets(b / n)
        if da.keys() != db.keys() or any(not np.array_equal(da[k], db[k]) for k in da):
            return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--frames", type=int, default=480)
    ap.add_argument("--windows", default="36,73")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = [tmp / f"clip{i}.mp4" for i in range(args.clips)]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda ic: synthesize(ic[1], SynthConfig(width=w, height=h, frames=args.frames,
                                                                  seed=ic[0], photo="deadleaves")),
                          enumerate(clips)))
        runs: dict = {"local": [], "dask": []}
        for r in range(args.repeats):
            order = [("local", []), ("dask", ["--executor", "dask"])]
            for name, extra in order if r % 2 == 0 else order[::-1]:  # alternate: load hits both alike
                runs[name].append(extract(clips, tmp / name, extra, args.windows))
        cluster = [float(subprocess.run([sys.executable, "-c", CLUSTER], check=True, capture_output=True,
                                        text=True).stdout) for _ in range(args.repeats)]
        identical = same_shards(tmp / "local", tmp / "dask")
    wall = {k: [r[0] for r in v] for k, v in runs.items()}
    cpu = {k: [r[1] for r in v] for k, v in runs.items()}

    def ratio(d):
        return round(statistics.median(a / b for a, b in zip(d["dask"], d["local"])), 3)

    print(json.dumps({
        "clips": args.clips, "size": args.size, "frames": args.frames, "windows": args.windows, "jobs": 2,
        "local_s": [round(x, 2) for x in wall["local"]], "dask_s": [round(x, 2) for x in wall["dask"]],
        "local_median_s": round(statistics.median(wall["local"]), 2),
        "dask_median_s": round(statistics.median(wall["dask"]), 2),
        "ratio_dask_over_local": ratio(wall),
        "local_cpu_s": [round(x, 2) for x in cpu["local"]], "dask_cpu_s": [round(x, 2) for x in cpu["dask"]],
        "cpu_ratio_dask_over_local": ratio(cpu),
        "localcluster_start_close_s": round(statistics.median(cluster), 2),
        "identical_shards": identical,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    main()
