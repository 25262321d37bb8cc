"""Benchmark the DSANet network: size, 720p inference latency, training throughput; prints JSON.

    python bench/model.py                      # CPU, and CUDA too when available
    python bench/model.py --device cuda --repeats 20
    python bench/model.py --tiny --threads 2

Per device and memory format (contiguous "plain" and channels_last): forward ms for one
1x3x720x1280 image (no_grad, eval), and training crops/s for batches of 4 x 256x256 crops (forward,
multi-scale MSE + 0.1 FFT loss, backward, Adam step). CPU runs in float32; CUDA with bf16 autocast
(``--amp``) and ``torch.cuda.synchronize()`` before every clock read. Medians over ``--repeats``
after warm-up, subnormal floats flushed (``dsanet.runtime.cpu_setup``) as in every entry point.
``*_channels_last_over_plain`` are throughput ratios (> 1: channels_last is faster).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch

from dsanet.losses import MultiScaleLoss
from dsanet.model import DSANet, DSANetConfig
from dsanet.runtime import cpu_setup

FORMATS = {"plain": torch.contiguous_format, "channels_last": torch.channels_last}
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device):
    _sync(device)
    return time.perf_counter()


def bench_forward(net, device, fmt, amp, size, warmup, repeats):
    net = net.eval()
    x = torch.rand(1, 3, *size, device=device).contiguous(memory_format=fmt)
    times = []
    with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        for i in range(warmup + repeats):
            if i == warmup and device.type == "cuda":  # cuDNN autotuning's trial workspaces are not the model's
                torch.cuda.reset_peak_memory_stats(device)
            t = _clock(device)
            net(x)
            dt = _clock(device) - t
            if i >= warmup:
                times.append(dt)
    return statistics.median(times) * 1e3


def bench_train(net, device, fmt, amp, batch, crop, warmup, repeats):
    net = net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    crit = MultiScaleLoss(mu=0.1, fft="l1")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    gen = torch.Generator(device="cpu").manual_seed(0)
    blur = torch.rand(batch, 3, crop, crop, generator=gen).to(device).contiguous(memory_format=fmt)
    sharp = torch.rand(batch, 3, crop, crop, generator=gen).to(device).contiguous(memory_format=fmt)
    times = []
    for i in range(warmup + repeats):
        if i == warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = _clock(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            outs = net(blur)
        loss = crit([o.float() for o in outs], sharp)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        dt = _clock(device) - t
        if i >= warmup:
            times.append(dt)
    step = statistics.median(times)
    return step * 1e3, batch / step


def run_device(base, device, args):
    on_gpu = device.type == "cuda"
    amp = AMP[args.amp] if on_gpu else None
    repeats = args.repeats or (20 if on_gpu else 2)
    warmup = 3 if on_gpu else 1
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    res = {"device": torch.cuda.get_device_name(device) if on_gpu else (platform.processor() or "cpu"),
           "threads": None if on_gpu else torch.get_num_threads(),
           "amp": args.amp if on_gpu else "none (float32)", "repeats": repeats, "warmup": warmup}
    for name, fmt in FORMATS.items():
        net = copy.deepcopy(base).to(device, memory_format=fmt)
        fwd = bench_forward(net, device, fmt, amp, (args.height, args.width), warmup, repeats)
        r = {"forward_ms": round(fwd, 2)}
        if on_gpu:
            r["forward_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        step_ms, crops = bench_train(net, device, fmt, amp, args.batch, args.crop, warmup, repeats)
        r.update(train_step_ms=round(step_ms, 1), train_crops_per_s=round(crops, 3))
        if on_gpu:
            r["train_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        res[name] = r
        del net
        print(f"[bench] {device.type} {name}: {r}", file=sys.stderr, flush=True)
    p, c = res["plain"], res["channels_last"]
    res["forward_channels_last_over_plain"] = round(p["forward_ms"] / c["forward_ms"], 3)
    res["train_channels_last_over_plain"] = round(c["train_crops_per_s"] / p["train_crops_per_s"], 3)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto",
                    help="auto (CPU, plus CUDA when available), cpu, cuda, cuda:N")
    ap.add_argument("--repeats", type=int, default=0, help="timed repeats (default 2 on CPU, 20 on CUDA)")
    ap.add_argument("--tiny", action="store_true", help="DSANetConfig.tiny() instead of the paper default")
    ap.add_argument("--amp", choices=list(AMP), default="bf16", help="autocast dtype on CUDA")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    args = ap.parse_args(argv)
    cpu_setup()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    torch.manual_seed(0)
    cfg = DSANetConfig.tiny() if args.tiny else DSANetConfig()
    base = DSANet(cfg)
    n = base.count_parameters()
    out = {"config": "tiny" if args.tiny else "default", "parameters": n, "mb_fp32": round(n * 4 / 1e6, 3),
           "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "forward_input": [1, 3, args.height, args.width],
           "train_batch": [args.batch, 3, args.crop, args.crop],
           "devices": {}}
    for d in devices:
        dev = torch.device(d)
        out["devices"][dev.type if dev.index is None else str(dev)] = run_device(base, dev, args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
