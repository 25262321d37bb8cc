"""Extract throughput and peak memory at 1080p, against ffmpeg's own decode in the same run.

Prints JSON: frames/s of `extract` (windows 36 and 73 in one pass) and of `ffmpeg -i clip -f null -`
on the same clip (the decode ceiling), their ratio, and the peak RSS of extract on a clip and on one
three times longer (memory must not grow with clip length).

    python bench/extract.py [--size 1920x1080] [--frames 480] [--repeats 5] [--keep DIR]

The two are run alternately; the ratio is the median of the per-repeat ratios, with their range
(this shared 2-core machine moves by +-10% from run to run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blurforge.synth import SynthConfig, synthesize  # noqa: E402
from blurforge.video import ffmpeg_exe  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
from blurforge.extract import ExtractOptions, extract_clip
t = time.perf_counter()
s = extract_clip(sys.argv[1], ExtractOptions(windows=[36, 73], out=Path(sys.argv[2]), overwrite=True))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "frames": s["frames_decoded"], "pairs": s["pairs"],
                  "fused_kernel": __import__("blurforge.averaging").averaging._accumulate is not None,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_extract(clip: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(clip), str(out)], capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def ffmpeg_null_fps(clip: Path, frames: int) -> float:
    t = time.perf_counter()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(clip), "-f", "null", "-"], check=True)
    return frames / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--crf", type=int, default=16, help="x264 quality of the synthetic clip")
    ap.add_argument("--keep", default=None, help="keep the clips in this folder (and reuse them)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        keep = Path(args.keep) if args.keep else d
        keep.mkdir(parents=True, exist_ok=True)
        tag = f"{w}x{h}-{args.frames}-crf{args.crf}"
        clip, long = keep / f"clip-{tag}.mp4", keep / f"long-{tag}.mp4"
        t = time.perf_counter()
        for path, n in ((clip, args.frames), (long, 3 * args.frames)):
            if not path.exists():
                synthesize(path, SynthConfig(width=w, height=h, frames=n, flicker=0.04, seed=1, crf=args.crf))
        synth_s = time.perf_counter() - t
        ceilings, runs = [], []
        for _ in range(args.repeats):
            ceilings.append(ffmpeg_null_fps(clip, args.frames))
            runs.append(run_extract(clip, d / "out"))
        ratios = sorted(run["frames"] / run["seconds"] / c for run, c in zip(runs, ceilings))
        ceiling = sorted(ceilings)[len(ceilings) // 2]
        r = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]
        fps = r["frames"] / r["seconds"]
        long_run = run_extract(long, d / "out_long")
        long_ceiling = ffmpeg_null_fps(long, 3 * args.frames)
        print(json.dumps({
            "size": args.size, "frames": args.frames, "windows": [36, 73], "cpus": os.cpu_count(),
            "bitrate_mbps": round(clip.stat().st_size * 8 / (args.frames / 960) / 1e6, 1),
            "extract_fps": round(fps, 1), "ffmpeg_null_fps": round(ceiling, 1),
            "ratio_vs_ffmpeg_null": round(ratios[len(ratios) // 2], 3),
            "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)], "pairs": r["pairs"],
            "peak_rss_mb": round(r["peak_rss_mb"], 1),
            "peak_rss_mb_3x_longer": round(long_run["peak_rss_mb"], 1),
            "rss_ratio_3x_vs_1x": round(long_run["peak_rss_mb"] / r["peak_rss_mb"], 3),
            "extract_fps_3x_longer": round(long_run["frames"] / long_run["seconds"], 1),
            "ratio_vs_ffmpeg_null_3x_longer": round(long_run["frames"] / long_run["seconds"] / long_ceiling, 3),
            "pairs_3x_longer": long_run["pairs"],
            "frames_averaged_share_3x_longer": round(long_run["pairs"] * 73 / long_run["frames"], 2),
            "frames_averaged_share": round(r["pairs"] * 73 / r["frames"], 2),
            "fused_kernel": r["fused_kernel"],
            "synth_seconds": round(synth_s, 1),
        }, indent=2))


if __name__ == "__main__":
    main()
