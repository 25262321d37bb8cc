"""DSANet compute throughput: training crops/s and 1280x720 inference latency.

Training: full steps (forward over all scales, multi-scale loss, backward, Adam) on random crops
that already sit on the device, so the number is the model's, not the loader's (see
bench/loader.py for that). Inference: one 1280x720 image, median over repeats. On CUDA the clock
is read only after ``torch.cuda.synchronize()``; warm-up steps (cuDNN autotuning, compilation)
are excluded. Prints one JSON object.

    python bench/train.py                      # paper model (DSANetConfig()), CUDA if present
    python bench/train.py --tiny               # DSANetConfig.tiny(): small enough for CPU
    python bench/train.py --amp bf16 --compile --batch 16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsanet.losses import MultiScaleLoss  # noqa: E402
from dsanet.model import DSANet, DSANetConfig  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="DSANetConfig.tiny() instead of the paper model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None, help="crops per step (default 8 on CUDA, 2 on CPU)")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 30 CUDA / 5 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5 CUDA / 1 CPU)")
    ap.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto")
    ap.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--infer-repeats", type=int, default=None, help="default 20 CUDA / 3 CPU")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    args = ap.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    batch = args.batch or (8 if cuda else 2)
    steps = args.steps or (30 if cuda else 5)
    warm = args.warmup if args.warmup is not None else (5 if cuda else 1)
    repeats = args.infer_repeats or (20 if cuda else 3)
    amp = args.amp if args.amp != "auto" else ("bf16" if cuda and torch.cuda.is_bf16_supported() else "none")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]
    cl = args.channels_last == "on" or (args.channels_last == "auto" and cuda)
    mem = torch.channels_last if cl else torch.contiguous_format
    if cuda:
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(0)
    cfg = DSANetConfig.tiny() if args.tiny else DSANetConfig()
    net = DSANet(cfg).to(device, memory_format=mem)
    fwd = torch.compile(net) if args.compile else net
    res = {"bench": "dsanet compute", "model": "tiny" if args.tiny else "paper",
           "params": sum(p.numel() for p in net.parameters()), "device": torch.cuda.get_device_name(device)
           if cuda else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)",
           "amp": amp, "channels_last": cl, "compile": args.compile, "torch": torch.__version__,
           "python": platform.python_version()}

    if not args.skip_train:
        crit = MultiScaleLoss(mu=0.1, fft="l1")
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        x = torch.rand(batch, 3, args.crop, args.crop, device=device).contiguous(memory_format=mem)
        y = torch.rand(batch, 3, args.crop, args.crop, device=device).contiguous(memory_format=mem)

        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outs = fwd(x)
            loss = crit([o.float() for o in outs], y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)

        for _ in range(warm):
            step()
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        dt = time.perf_counter() - t0
        res.update({"train_batch": batch, "train_crop": args.crop, "train_steps": steps,
                    "train_s_per_step": round(dt / steps, 4), "train_crops_per_s": round(batch * steps / dt, 1)})
        if cuda:
            res["train_peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)

    if not args.skip_infer:
        net.eval()
        img = torch.rand(1, 3, 720, 1280, device=device).contiguous(memory_format=mem)
        times = []
        with torch.inference_mode():
            for i in range(repeats + (3 if cuda else 1)):
                sync(device)
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    fwd(img)
                sync(device)
                if i >= (3 if cuda else 1):
                    times.append((time.perf_counter() - t0) * 1000)
        res.update({"infer_size": "1280x720", "infer_ms_median": round(statistics.median(times), 2),
                    "infer_ms_min": round(min(times), 2), "infer_repeats": repeats})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
