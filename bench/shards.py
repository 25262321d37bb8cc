"""Shard storage layout: random 256x256 crop reads and file size for chunking/compression choices.

Prints JSON: ms per random crop pair (sharp + one blur) and compression ratio for uncompressed
256-tile chunks (the format's choice), whole-image chunks, lzf tiles and gzip-4 tiles, on
camera-like 720p frames from `blurforge synth`, with the chosen layout as the ratios' baseline.

    python bench/shards.py [--pairs 16] [--reads 400]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from blurforge.shards import image_chunks  # noqa: E402
from blurforge.synth import SynthConfig, render_frames, truth_table  # noqa: E402

LAYOUTS = {
    "tiles_uncompressed": {},
    "whole_image_chunks": {"whole": True},
    "tiles_lzf": {"compression": "lzf"},
    "tiles_gzip4": {"compression": "gzip", "compression_opts": 4},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--reads", type=int, default=400)
    args = ap.parse_args()
    cfg = SynthConfig(width=1280, height=720, frames=args.pairs * 2, seed=1)
    frames = np.stack(list(render_frames(cfg, truth_table(cfg))))
    sharp, blur = frames[0::2], frames[1::2]
    n, h, w, _ = sharp.shape
    raw = sharp.nbytes + blur.nbytes
    rng = np.random.default_rng(0)
    picks = [(rng.integers(n), rng.integers(h - 256), rng.integers(w - 256)) for _ in range(args.reads)]
    out = {"size": "1280x720", "pairs": n, "reads": args.reads, "layouts": {}}
    with tempfile.TemporaryDirectory() as d:
        for name, opts in LAYOUTS.items():
            path = Path(d) / f"{name}.h5"
            opts = dict(opts)
            chunks = (1, h, w, 3) if opts.pop("whole", False) else image_chunks(h, w)
            with h5py.File(path, "w") as f:
                f.create_dataset("sharp", data=sharp, chunks=chunks, **opts)
                f.create_dataset("blur", data=blur, chunks=chunks, **opts)
            with h5py.File(path, "r") as f:
                t = time.perf_counter()
                for i, y, x in picks:
                    f["sharp"][i, y:y + 256, x:x + 256]
                    f["blur"][i, y:y + 256, x:x + 256]
                ms = (time.perf_counter() - t) / args.reads * 1000
            out["layouts"][name] = {"ms_per_crop_pair": round(ms, 3),
                                    "compression_ratio": round(raw / path.stat().st_size, 3)}
    base = out["layouts"]["tiles_uncompressed"]["ms_per_crop_pair"]
    for v in out["layouts"].values():
        v["read_time_vs_chosen"] = round(v["ms_per_crop_pair"] / base, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
