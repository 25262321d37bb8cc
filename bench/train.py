"""DSANet training throughput and FLOPs; prints one JSON object.

CPU (always): a demo-sized run (``DSANetConfig.tiny(width=16, residual_init=0)``, 128 px crops,
batch 4, Adam 2e-3 with 100 warm-up steps and a cosine to 1e-5, the recipe of
``scripts/demo_train.sh``) of ``--steps`` (>= 400) real optimizer steps on blurred/sharp crops cut
from scikit-image's bundled photos (blurred by random line kernels), or drawn from ``--shards`` as
the trainer draws them. Reports crops/s over the first
100 and the last 100 steps and ``last_over_first``: with subnormal floats flushed
(``dsanet.runtime.cpu_setup``) it stays near 1; the same run with flushing off is the in-run
baseline (``--no-baseline`` skips it). Rates are given per wall-clock second and per CPU second of
the process: on a machine shared with other work only the latter is free of their load. Also model
FLOPs per crop (forward, and forward + backward) counted by ``torch.utils.flop_counter.FlopCounterMode``.

CUDA (when present): the paper model on 256 px crops, bf16 autocast, channels_last, at batch 16
and 64, eager and ``torch.compile``: crops/s, achieved TFLOP/s (counted training FLOPs x crops/s)
and MFU against the device's dense bf16 peak (table below, or ``--peak-tflops``); and 1280x720
inference ms. The clock is read after ``torch.cuda.synchronize()``; warm-up steps (cuDNN
autotuning, compilation) are not timed.

    python bench/train.py                  # CPU drift run + baseline, CUDA section when present
    python bench/train.py --steps 600 --no-baseline
    python bench/train.py --shards data/ --skip-cuda
    python bench/train.py --skip-cpu --peak-tflops 989
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsanet.losses import MultiScaleLoss  # noqa: E402
from dsanet.model import DSANet, DSANetConfig  # noqa: E402

# dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0}
WINDOW = 100


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def photo_pairs(n: int = 48, size: int = 192, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (blurred, sharp) float pairs in [0, 1], [N, 3, size, size]: crops of scikit-image's bundled
    photos, each blurred by a random straight motion kernel 5-15 px long."""
    import cv2
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(seed)
    sharp, blur = [], []
    for i in range(n):
        img = photos[i % len(photos)]
        y = int(rng.integers(0, img.shape[0] - size + 1))
        x = int(rng.integers(0, img.shape[1] - size + 1))
        s = img[y:y + size, x:x + size].astype(np.float32) / 255.0
        length = int(rng.integers(5, 16))
        k = np.zeros((length, length), np.float32)
        k[length // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        k = cv2.warpAffine(k, rot, (length, length))
        k /= k.sum()
        sharp.append(s)
        blur.append(cv2.filter2D(s, -1, k, borderType=cv2.BORDER_REFLECT))
    to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return to_t(blur), to_t(sharp)


def flops_per_crop(net, crop: int, device, dtype=None, batch: int = 2) -> dict:
    """Forward and forward+backward FLOPs of one crop (FlopCounterMode: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    crit = MultiScaleLoss(mu=0.1, fft="l1")
    x = torch.rand(batch, 3, crop, crop, device=device)
    y = torch.rand(batch, 3, crop, crop, device=device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        with FlopCounterMode(display=False) as fwd:
            with torch.no_grad():
                net(x)
        with FlopCounterMode(display=False) as both:
            loss = crit([o.float() for o in net(x)], y)
            loss.backward()
    net.zero_grad(set_to_none=True)
    return {"forward": fwd.get_total_flops() / batch, "train": both.get_total_flops() / batch}


def cosine(step: int, total: int, warmup: int, lo: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


def shard_batches(paths, crop: int, batch: int, seed: int = 0):
    """Endless (blur, sharp) float batches from shards, as the trainer draws them (half the crops
    where the blur is, flips and rotations)."""
    from blurforge.cliutil import find_shards
    from dsanet.data import CropDataset, ShardIndex, make_loader, to_model_input

    index = ShardIndex([str(p) for p in find_shards(paths, default=None)], min_size=crop)
    ds = CropDataset(index, crop=crop, seed=seed, focus=0.5)
    for blur, sharp, _ in make_loader(ds, batch):
        yield to_model_input(blur, None, False), to_model_input(sharp, None, False)


def photo_batches(crop: int, batch: int, seed: int = 0):
    """Endless random crops of :func:`photo_pairs`."""
    gen = torch.Generator().manual_seed(seed)
    blur, sharp = photo_pairs(seed=seed)
    size = blur.shape[-1]
    while True:
        idx = torch.randint(0, blur.shape[0], (batch,), generator=gen)
        y0, x0 = torch.randint(0, size - crop + 1, (2,), generator=gen).tolist()
        yield blur[idx, :, y0:y0 + crop, x0:x0 + crop], sharp[idx, :, y0:y0 + crop, x0:x0 + crop]


def cpu_drift(steps: int, flush: bool, threads: int, shards=None, seed: int = 0) -> dict:
    """Crops/s over the first and last ``WINDOW`` steps of a demo-sized CPU run (data time excluded)."""
    torch.set_flush_denormal(flush)
    torch.manual_seed(seed)
    crop, batch, lr = 128, 4, 2e-3
    batches = shard_batches(shards, crop, batch, seed) if shards else photo_batches(crop, batch, seed)
    net = DSANet(DSANetConfig.tiny(width=16, residual_init=0.0))
    crit = MultiScaleLoss(mu=0.1, fft="l1")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, steps, 100, 1e-5 / lr))
    wall, cpu = [], []
    for _ in range(steps):
        x, y = next(batches)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = crit(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)

    def rates(times):
        first, last = batch * WINDOW / sum(times[:WINDOW]), batch * WINDOW / sum(times[-WINDOW:])
        return {"first100": round(first, 2), "last100": round(last, 2), "last_over_first": round(last / first, 3)}

    return {"flush_denormal": flush, "data": "shards" if shards else "photo crops", "steps": steps,
            "threads": threads, "final_loss": round(loss.item(), 5),
            "crops_per_s": rates(wall), "crops_per_cpu_s": rates(cpu)}


def cuda_train(net, device, batch: int, crop: int, compile_: bool, warmup: int, steps: int) -> dict:
    fwd = torch.compile(net) if compile_ else net
    crit = MultiScaleLoss(mu=0.1, fft="l1")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs = fwd(x)
        loss = crit([o.float() for o in outs], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = time.perf_counter() - t0
    return {"batch": batch, "compile": compile_, "crops_per_s": round(batch * steps / dt, 1),
            "step_ms": round(dt / steps * 1e3, 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}


def cuda_infer_ms(net, device, compile_: bool, repeats: int = 20) -> float:
    fwd = torch.compile(net) if compile_ else net
    img = torch.rand(1, 3, 720, 1280, device=device).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(repeats + 3):
            sync(device)
            t0 = time.perf_counter()
            fwd(img)
            sync(device)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 2)


def cuda_section(args) -> dict:
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device)
    peak = args.peak_tflops or peak_tflops(name)
    torch.manual_seed(0)
    net = DSANet(DSANetConfig()).to(device, memory_format=torch.channels_last)
    flops = flops_per_crop(net, 256, device, torch.bfloat16)
    res = {"device": name, "model": "paper (DSANetConfig())", "crop": 256, "amp": "bf16",
           "channels_last": True, "peak_bf16_tflops": peak, "flops_per_crop": flops, "train": []}
    for compile_ in (False, True):
        for batch in (16, 64):
            torch.manual_seed(0)
            model = DSANet(DSANetConfig()).to(device, memory_format=torch.channels_last)
            try:
                r = cuda_train(model, device, batch, 256, compile_, args.cuda_warmup + (10 if compile_ else 0),
                               args.cuda_steps)
            except Exception as e:  # a compiler or memory failure is a result too; the other rows still run
                r = {"batch": batch, "compile": compile_, "error": f"{type(e).__name__}: {str(e)[:200]}"}
                res["train"].append(r)
                continue
            r["achieved_tflops"] = round(flops["train"] * r["crops_per_s"] / 1e12, 2)
            r["mfu"] = round(r["achieved_tflops"] / peak, 4) if peak else None
            res["train"].append(r)
            print(f"[bench] {r}", file=sys.stderr, flush=True)
            del model
            torch.cuda.empty_cache()
    net.eval()
    res["infer_720p_ms"] = {"eager": cuda_infer_ms(net, device, False)}
    try:
        res["infer_720p_ms"]["compile"] = cuda_infer_ms(net, device, True)
    except Exception as e:
        res["infer_720p_ms"]["compile"] = f"{type(e).__name__}: {str(e)[:200]}"
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="CPU run length (>= 2 x 100)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1, as each of the demo's processes; 0: torch's default)")
    ap.add_argument("--shards", nargs="*", default=None,
                    help="train the CPU run on these shards (files or folders; e.g. the demo's) instead of photo crops")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run with flush-denormal off")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-cuda", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense bf16 peak, for devices not in the built-in table")
    ap.add_argument("--cuda-steps", type=int, default=20)
    ap.add_argument("--cuda-warmup", type=int, default=5)
    args = ap.parse_args(argv)
    if args.steps < 2 * WINDOW:
        ap.error(f"--steps must be at least {2 * WINDOW}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    out = {"bench": "dsanet training", "torch": torch.__version__, "python": platform.python_version(),
           "cpu": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"}
    if not args.skip_cpu:
        cpu = torch.device("cpu")
        tiny = DSANet(DSANetConfig.tiny(width=16, residual_init=0.0))
        out["cpu_model"] = {"config": "tiny(width=16, residual_init=0)", "parameters": tiny.count_parameters(),
                            "crop": 128, "batch": 4, "flops_per_crop": flops_per_crop(tiny, 128, cpu)}
        runs = [cpu_drift(args.steps, True, threads, args.shards)]
        print(f"[bench] {runs[-1]}", file=sys.stderr, flush=True)
        if not args.no_baseline:
            runs.append(cpu_drift(args.steps, False, threads, args.shards))
            print(f"[bench] {runs[-1]}", file=sys.stderr, flush=True)
        torch.set_flush_denormal(True)
        out["cpu_runs"] = runs
        out["cpu_last_over_first"] = runs[0]["crops_per_s"]["last_over_first"]
        out["cpu_last_over_first_by_cpu_time"] = runs[0]["crops_per_cpu_s"]["last_over_first"]
        out["cpu_train_tflops_per_cpu_s"] = round(out["cpu_model"]["flops_per_crop"]["train"] *
                                                  runs[0]["crops_per_cpu_s"]["first100"] / 1e12, 4)
    if not args.skip_cuda and torch.cuda.is_available():
        out["cuda"] = cuda_section(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
