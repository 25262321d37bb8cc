"""Checkpoints and exported weights: atomic writes, clear one-line errors, loading for inference.

A training checkpoint (``runs/NAME/last.pt``, ``best.pt``) is a ``torch.save`` dict::

    format="dsanet-checkpoint", version=1, step, model (state_dict), optimizer, scheduler,
    scaler (fp16 GradScaler or None), rng (per rank: python, numpy, torch, cuda), config
    (the full training config; config["model"] is the DSANetConfig as a dict),
    shards_fingerprint, best_psnr, world_size, torch_version, created

It loads with ``torch.load(..., weights_only=True)``: nothing in it runs code when read.

Every file is written through ``blurforge.atomic`` (temporary name in the same folder, fsync,
rename, fsync of the folder): a crash or kill at any moment leaves either the old or the new file,
never a torn one. Before ``last.pt`` is replaced, the current one
is hard-linked (copied where links are impossible) to ``last.prev.pt``, so one older good
checkpoint always exists; :func:`load_resume` falls back to it when ``last.pt`` is unreadable
(and to ``best.pt`` after that).

Exported weights (for ``dsanet-deblur``/``dsanet-eval``): ``model.safetensors`` (the state_dict)
and ``config.json`` beside it (``{"format": "dsanet-weights", "model": {...DSANetConfig...}, ...}``).
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from blurforge.atomic import atomic_path, atomic_write
from blurforge.cliutil import friendly as one_line_errors
from blurforge.errors import BlurforgeError

FORMAT = "dsanet-checkpoint"
VERSION = 1
WEIGHTS_FORMAT = "dsanet-weights"


class CheckpointError(BlurforgeError):
    """A checkpoint or weights file that cannot be used (one-line message)."""


def friendly(fn):
    """blurforge's one-line-error wrapper (``blurforge.cliutil.friendly``), plus out-of-memory advice."""
    @functools.wraps(fn)
    def with_oom_advice(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise BlurforgeError("out of GPU memory: lower --batch / --crop, or use --tile "
                                 "for inference") from None
    return one_line_errors(with_oom_advice)


def _keep_previous(path: Path, prev: Path):
    """Make ``prev`` a copy of the current ``path`` (hard link where possible), atomically."""
    if not path.exists():
        return
    with atomic_path(prev) as tmp:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copy2(path, tmp)


def save_checkpoint(state: dict, path, keep_prev: bool = True) -> Path:
    """Write a training checkpoint; for ``last.pt`` the current file becomes ``last.prev.pt`` first."""
    path = Path(path)
    state = dict(state)
    state.setdefault("format", FORMAT)
    state.setdefault("version", VERSION)
    state.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    state.setdefault("torch_version", str(torch.__version__))
    if keep_prev:
        _keep_previous(path, prev_path(path))
    return atomic_write(path, lambda fh: torch.save(state, fh))


def prev_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


# ----------------------------------------------------------------------------------------------
# RNG state (restorable under weights_only loading: plain ints, lists and tensors only)
# ----------------------------------------------------------------------------------------------

def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "key": torch.from_numpy(np.asarray(np_state[1], np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict):
    if not state:
        return
    py = state.get("python")
    if py is not None:
        random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state.get("numpy")
    if npst is not None:
        np.random.set_state((npst["name"], npst["key"].numpy().astype(np.uint32), npst["pos"],
                             npst["has_gauss"], npst["cached"]))
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([c.cpu() for c in cuda])


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    msg = msg[0] if msg else type(e).__name__
    return msg[:160]


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read and sanity-check a training checkpoint; CheckpointError (one line) if it is not one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    import zipfile
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated: not a torch.save "
                              "zip archive)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torn zip, pickle error, wrong file type...
        text = str(e)
        if "Weights only load failed" in text:
            detail = next((ln.strip() for ln in text.splitlines() if "Unpickler error" in ln), "")
            raise CheckpointError(f"{path}: holds Python objects beyond plain tensors/data, not loaded "
                                  f"for safety ({detail[:160]})") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated: {_short(e)})") \
            from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dsanet training checkpoint")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')} is newer than this tool")
    for key in ("model", "step", "config"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint is missing '{key}'")
    return state


def load_resume(out_dir, check=None, log=print):
    """Load ``last.pt`` from ``out_dir`` or, if it is unusable, ``last.prev.pt``, then ``best.pt``
    (a full checkpoint too, from an earlier step).

    ``check(state, path)`` may raise CheckpointError for a mismatched checkpoint. Returns
    ``(state, path)``; raises CheckpointError naming every reason when neither works.
    """
    out_dir = Path(out_dir)
    last = out_dir / "last.pt"
    reasons = []
    cands = [last, prev_path(last), out_dir / "best.pt"]
    for k, cand in enumerate(cands):
        if not cand.exists():
            if cand != cands[-1]:
                reasons.append(f"{cand}: missing")
            continue
        try:
            state = load_checkpoint(cand)
            if check is not None:
                check(state, cand)
        except CheckpointError as e:
            reasons.append(str(e))
            if k + 1 < len(cands):
                log(f"warning: {e}; trying {cands[k + 1].name}")
            continue
        return state, cand
    raise CheckpointError("cannot resume: " + "; ".join(reasons))


# ----------------------------------------------------------------------------------------------
# Exported weights and model loading for inference
# ----------------------------------------------------------------------------------------------

def export_weights(state_dict: dict, model_config: dict, out_dir, extra: dict | None = None):
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir`` (both atomically)."""
    from safetensors.torch import save as st_save

    out_dir = Path(out_dir)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    blob = st_save(tensors, metadata={"format": WEIGHTS_FORMAT})
    atomic_write(out_dir / "model.safetensors", lambda fh: fh.write(blob))
    cfg = {"format": WEIGHTS_FORMAT, "model": model_config, **(extra or {})}
    text = json.dumps(cfg, indent=2, sort_keys=False) + "\n"
    atomic_write(out_dir / "config.json", lambda fh: fh.write(text.encode()))
    return out_dir / "model.safetensors", out_dir / "config.json"


def load_weights(path) -> tuple[dict, dict, dict]:
    """``(state_dict, model_config, info)`` from a training ``.pt`` checkpoint, or from a
    ``.safetensors`` file with ``config.json`` beside it (or a folder holding both)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        cfg_path = path.with_name("config.json")
        if not cfg_path.exists():
            raise CheckpointError(f"{path}: config.json is missing beside it (it holds the model config)")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{cfg_path}: not readable JSON ({_short(e)})") from None
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise CheckpointError(f"{cfg_path}: no 'model' section (not a dsanet config.json)")
        try:
            sd = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_short(e)})") from None
        return sd, cfg["model"], {"source": str(path), **{k: v for k, v in cfg.items() if k != "model"}}
    state = load_checkpoint(path)
    model_cfg = state["config"].get("model") if isinstance(state["config"], dict) else None
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{path}: checkpoint has no model config")
    return state["model"], model_cfg, {"source": str(path), "step": int(state["step"])}


def build_model(path, device="cpu"):
    """Instantiate DSANet from a checkpoint or exported weights; clear error on any mismatch."""
    from dsanet.model import DSANet, DSANetConfig

    sd, model_cfg, info = load_weights(path)
    try:
        cfg = DSANetConfig(**model_cfg)
    except TypeError as e:
        raise CheckpointError(f"{path}: model config does not fit this DSANet ({_short(e)})") from None
    net = DSANet(cfg)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise CheckpointError(f"{path}: weights do not match the model config "
                              f"({(lines[1] if len(lines) > 1 else lines[0]).strip()[:160]})") from None
    net.eval().to(device)
    return net, cfg, info
