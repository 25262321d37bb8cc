"""Training-crop loader throughput: random 256x256 aligned crop pairs per second from shards.

Writes a temporary 1280x720 uncompressed shard (two window labels) and runs ``dsanet.data``'s
CropDataset through a DataLoader with 0 and 2 worker processes (flips/rotations on, batches of
16, uint8 tensors as the trainer gets them). Prints one JSON object. Target: >= 1000 pairs/s
with 2 workers.

    python bench/loader.py [--pairs 24] [--seconds 4] [--crop 256] [--batch 16] [--workers 0,2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blurforge.shards import ShardWriter  # noqa: E402
from dsanet.data import CropDataset, ShardIndex, make_loader  # noqa: E402


def make_shard(path: Path, n: int, h: int = 720, w: int = 1280):
    rng = np.random.default_rng(0)
    with ShardWriter(path, h, w, ["36", "73"], attrs={"kind": "video"}) as wr:
        for i in range(n):
            sharp = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            wr.add(sharp, {"36": sharp, "73": sharp[::-1].copy()}, center=i)
    return path


def measure(ds, batch: int, workers: int, seconds: float) -> float:
    loader = make_loader(ds, batch, workers=workers)
    it = iter(loader)
    for _ in range(3 if workers == 0 else 3 * workers):   # warm-up: worker start, file opening
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b, s, _ = next(it)
        n += b.shape[0]
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", default="0,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="dsanet-bench-") as tmp:
        path = make_shard(Path(tmp) / "bench720p.h5", args.pairs)
        ds = CropDataset(ShardIndex([path]), crop=args.crop, seed=0)
        res = {"bench": "dsanet.data CropDataset", "shard": f"{args.pairs} pairs 1280x720 uncompressed, "
               "2 labels", "crop": args.crop, "batch": args.batch, "augment": True,
               "cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
        for w in (int(x) for x in args.workers.split(",")):
            res[f"pairs_per_s_workers{w}"] = round(measure(ds, args.batch, w, args.seconds), 1)
        res["target_pairs_per_s_workers2"] = 1000
    print(json.dumps(res))


if __name__ == "__main__":
    main()
