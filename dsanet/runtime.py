"""Device, precision and CPU set-up shared by every dsanet entry point (train, eval, deblur, bench)."""
from __future__ import annotations

import contextlib

import torch

from blurforge.errors import BlurforgeError


def cpu_setup():
    """Flush subnormal floats to zero. Zero-initialised residual branches and a decaying learning
    rate fill weights and gradients with subnormals, which take slow microcode paths on x86 CPUs:
    without this a small DSANet's CPU training fell from ~35 to ~9 crops/s after ~250 steps."""
    torch.set_flush_denormal(True)


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; CPU set-up applied either way
    (data loading and the CPU side of CUDA runs benefit too)."""
    cpu_setup()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BlurforgeError(f"--device {name}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BlurforgeError(f"--device {name}: no CUDA device available")
    return dev


def autocast_for(device: torch.device, half: bool):
    """fp16 autocast on CUDA, bf16 on CPU when ``half``; a no-op context otherwise."""
    if not half:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)
