"""Which decoder to stream with: frames/s of our FrameReader (PyAV in process: decoded frames with
their luma plane, and with every frame also converted to RGB), an ffmpeg rgb24 pipe (what
FrameReader used before), imageio-ffmpeg's read_frames and cv2.VideoCapture (+ BGR->RGB), each
as a ratio to `ffmpeg -i clip -f null -` (the decode ceiling) on the same clip in the same run.

    python bench/decode.py [--size 1920x1080] [--frames 300] [--crf 16]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import imageio_ffmpeg  # noqa: E402
import numpy as np  # noqa: E402

from blurforge.synth import SynthConfig, synthesize  # noqa: E402
from blurforge.video import FrameReader, ffmpeg_exe, probe  # noqa: E402


def timed(fn) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def ours_luma(clip):
    return sum(1 for f in FrameReader(probe(clip)) if f.grey_half() is not None)


def ours_rgb(clip):
    return sum(1 for f in FrameReader(probe(clip)) if f.rgb() is not None)


def ffmpeg_pipe(clip):
    info = probe(clip)
    nbytes = info.width * info.height * 3
    proc = subprocess.Popen([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(clip), "-f", "rawvideo",
                             "-pix_fmt", "rgb24", "-"], stdout=subprocess.PIPE, bufsize=0)
    n = 0
    while True:
        buf = np.empty(nbytes, np.uint8)
        view, got = memoryview(buf), 0
        while got < nbytes:
            k = proc.stdout.readinto(view[got:])
            if not k:
                break
            got += k
        if got < nbytes:
            proc.wait()
            return n
        n += 1


def imageio(clip):
    gen = imageio_ffmpeg.read_frames(str(clip), pix_fmt="rgb24")
    next(gen)
    return sum(1 for _ in gen)


def opencv(clip):
    cap, n = cv2.VideoCapture(str(clip)), 0
    while True:
        ok, f = cap.read()
        if not ok:
            return n
        cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
        n += 1


def null(clip):
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(clip), "-f", "null", "-"], check=True)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--crf", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d) / "clip.mp4"
        synthesize(clip, SynthConfig(width=w, height=h, frames=args.frames, seed=1, crf=args.crf))
        out = {"size": args.size, "frames": args.frames, "crf": args.crf}
        fps = {}
        for name, fn in (("ffmpeg_null", null), ("blurforge_reader_luma", ours_luma),
                         ("blurforge_reader_rgb", ours_rgb), ("ffmpeg_rgb24_pipe", ffmpeg_pipe),
                         ("imageio_ffmpeg", imageio), ("cv2_videocapture", opencv)):
            times = sorted(timed(lambda fn=fn: fn(clip))[0] for _ in range(args.repeats))
            fps[name] = args.frames / times[len(times) // 2]
        out["fps"] = {k: round(v, 1) for k, v in fps.items()}
        out["ratio_vs_ffmpeg_null"] = {k: round(v / fps["ffmpeg_null"], 3) for k, v in fps.items()}
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
