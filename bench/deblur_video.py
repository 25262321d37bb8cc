"""What ``dsanet-deblur`` costs on a video besides the network: frames/s of ``restore_video`` with an
identity model (decode, RGB both ways, H.264 encode, audio copy) against ``ffmpeg -i clip -c:v
libx264 -crf 16`` (decode + encode, no RGB) on the same clip in the same run, and the RGB PSNR of
the round trip against the source as the ffmpeg CLI decodes it.

    python bench/deblur_video.py [--size 1280x720] [--frames 90]
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from blurforge.metrics import psnr  # noqa: E402
from blurforge.video import ffmpeg_exe, reuse_freed_memory  # noqa: E402
from dsanet.infer import restore_video  # noqa: E402


class Identity(torch.nn.Module):
    def forward(self, x):
        return [x]


def ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", *map(str, args)], check=True)


def rgb_frames(path, w, h) -> np.ndarray:
    raw = subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--frames", type=int, default=90)
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    reuse_freed_memory()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = d / "clip.mp4"
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=30,gblur=sigma=1.5", "-f", "lavfi", "-i",
               f"sine=duration={args.frames / 30}", "-frames:v", args.frames, "-c:v", "libx264", "-crf", 16,
               "-c:a", "aac", "-shortest", "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace",
               "bt709", src)
        t = time.perf_counter()
        ffmpeg("-i", src, "-c:v", "libx264", "-crf", 16, "-c:a", "copy", d / "cli.mp4")
        cli = time.perf_counter() - t
        restore_video(Identity(), src, d / "warm.mp4", torch.device("cpu"))
        t = time.perf_counter()
        n = restore_video(Identity(), src, d / "out.mp4", torch.device("cpu"))
        ours = time.perf_counter() - t
        a, b = rgb_frames(src, w, h), rgb_frames(d / "out.mp4", w, h)
        print(json.dumps({
            "size": args.size, "frames": n,
            "restore_video_identity_fps": round(n / ours, 1),
            "ffmpeg_transcode_fps": round(args.frames / cli, 1),
            "ratio": round(cli / ours, 2),
            "round_trip_psnr_db": round(float(psnr(a, b)), 2),
        }))


if __name__ == "__main__":
    main()
