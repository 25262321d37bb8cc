"""``dsanet-train``: the DSANet reference trainer (single process, or many through torchrun).

Paper recipe by default (DSANet, Sensors 2025): Adam, lr 2e-4 cosine-annealed to 1e-6, random
256x256 crops with flips and 90-degree rotations, Kaiming initialisation, multi-scale content loss
plus 0.1 x FFT loss. The paper trains 4000 epochs on two GPUs and does not state its batch size;
our default is 8 crops per GPU (16 on the paper's two GPUs). Every hyper-parameter is a flag, can
come from ``--config FILE.toml`` (or ``.yaml`` with PyYAML installed; flags override it) and is
saved to ``runs/NAME/train.toml``, which ``--config`` reads back.

Distributed: started by ``torchrun`` the trainer reads RANK / WORLD_SIZE / LOCAL_RANK, uses NCCL
on CUDA and Gloo on CPU, each rank draws its own crops (seeded by seed and rank), and validation
splits the validation set over the ranks and all-reduces the sums, so one GPU and many give the
same numbers. ``--batch`` is per process; the global batch is batch x processes x accum.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.distributed as dist

from blurforge.errors import BlurforgeError

from .checkpoint import (
    CheckpointError,
    export_weights,
    friendly,
    greedy_command,
    load_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .data import CropDataset, DataError, PairDataset, ShardIndex, make_loader, parse_windows, to_model_input
from .metrics import MetricSums, psnr, quantize, ssim
from .runtime import cpu_setup

# names resolved lazily so that this module imports before dsanet.model exists / in tests
DSANet = DSANetConfig = MultiScaleLoss = None


def _import_model():
    global DSANet, DSANetConfig, MultiScaleLoss
    if DSANet is None or DSANetConfig is None:
        from .model import DSANet as _N
        from .model import DSANetConfig as _C
        DSANet, DSANetConfig = _N, _C
    if MultiScaleLoss is None:
        from .losses import MultiScaleLoss as _L
        MultiScaleLoss = _L


class TrainingError(BlurforgeError):
    """The run cannot go on (diverged, bad configuration...): one line, exit status 1."""


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainConfig:
    shards: list = dataclasses.field(default_factory=list)
    val_shards: list = dataclasses.field(default_factory=list)
    out: str = "runs/dsanet"
    windows: str = "all"            # training labels and weights: "36,73" or "gopro:2,36:1"
    val_windows: str = "all"        # labels validated (reported per label)
    tiny: bool = False
    model: dict = dataclasses.field(default_factory=dict)   # DSANetConfig overrides
    steps: int = 0                  # 0: derived from epochs
    epochs: float = 4000.0          # paper: 4000 epochs (epoch = one crop per usable sharp pair)
    batch: int = 8                  # crops per process and step
    accum: int = 1                  # gradient accumulation (micro-batches per step)
    crop: int = 256
    lr: float = 2e-4
    lr_min: float = 1e-6
    warmup: int = 0                 # linear warm-up steps before the cosine
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 0.0          # 0: off
    mu: float = 0.1                 # FFT loss weight
    fft: str = "l1"                 # l1 (MIMO-UNet style) | mse (the paper's formula)
    augment: bool = True
    focus: float = 0.0              # fraction of crops placed where |blur - sharp| is largest
    seed: int = 0
    workers: int = 2
    amp: str = "auto"               # auto (bf16 on CUDA, none on CPU) | bf16 | fp16 | none
    channels_last: str = "auto"     # auto (on for CUDA, off for CPU) | on | off
    compile: bool = False
    device: str = "auto"
    val_every: int = 1000
    val_crop: int = 0               # 0: whole images
    val_max: int = 50               # validation pairs per label (evenly spaced); 0: all
    ckpt_every: int = 1000
    log_every: int = 50
    stop_after: int = 0             # stop (as if interrupted) after this step; 0: run to the end
    init_from: str = ""             # start from these weights (fine-tuning); not a resume
    allow_new_shards: bool = False  # resume even though the shard list changed
    overwrite: bool = False         # start afresh in an OUT that already holds a run
    find_unused: bool = False       # DDP find_unused_parameters
    progress: bool = True
    tensorboard: bool = True        # used when the tensorboard package is installed

    def model_config(self):
        _import_model()
        base = DSANetConfig.tiny() if self.tiny else DSANetConfig()
        d = dataclasses.asdict(base)
        unknown = [k for k in self.model if k not in d]
        if unknown:
            raise TrainingError(f"unknown model key(s) {', '.join(unknown)} (valid: {', '.join(d)})")
        d.update(self.model)
        try:
            return DSANetConfig(**d)
        except (TypeError, ValueError) as e:
            raise TrainingError(f"bad model configuration: {e}") from None


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# keys that make a checkpoint incompatible when they change on --resume
RESUME_FIXED = ("crop", "batch", "accum", "seed", "windows", "augment", "focus", "mu", "fft")
# keys a resumed run never takes from the checkpoint (they describe this invocation only)
RUN_ONLY = ("shards", "val_shards", "out", "stop_after", "init_from", "allow_new_shards", "overwrite",
            "progress", "device")


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(d: dict) -> str:
    lines, tables = [], []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, t in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for k, v in t.items():
            if v is not None:
                lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def read_config_file(path) -> dict:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise TrainingError(f"--config {path}: {e.strerror or e}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise TrainingError(f"--config {path}: YAML needs PyYAML (pip install pyyaml); "
                                "or use a .toml file") from None
        try:
            d = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise TrainingError(f"--config {path}: {str(e).splitlines()[0]}") from None
    else:
        import tomllib
        try:
            d = tomllib.loads(text.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise TrainingError(f"--config {path}: not valid TOML ({e})") from None
    if not isinstance(d, dict):
        raise TrainingError(f"--config {path}: expected a table of settings")
    out = {}
    for k, v in d.items():
        key = k.replace("-", "_")
        if key not in FIELDS:
            raise TrainingError(f"--config {path}: unknown setting {k!r}")
        out[key] = v
    return out


def coerce(cfg: TrainConfig) -> TrainConfig:
    """Check types of a config assembled from files and flags."""
    for name, f in FIELDS.items():
        v = getattr(cfg, name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        try:
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise TypeError
            elif isinstance(default, int):
                if isinstance(v, bool) or not isinstance(v, int):
                    if isinstance(v, float) and v.is_integer():
                        v = int(v)
                    else:
                        raise TypeError
            elif isinstance(default, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise TypeError
                v = float(v)
            elif isinstance(default, str):
                if not isinstance(v, str):
                    raise TypeError
            elif isinstance(default, list):
                if isinstance(v, str):
                    v = [v]
                v = [str(x) for x in v]
            elif isinstance(default, dict):
                if not isinstance(v, dict):
                    raise TypeError
        except TypeError:
            raise TrainingError(f"setting {name}: {v!r} is not a {type(default).__name__}") from None
        setattr(cfg, name, v)
    if cfg.amp not in ("auto", "bf16", "fp16", "none"):
        raise TrainingError(f"--amp {cfg.amp}: use auto, bf16, fp16 or none")
    if cfg.channels_last not in ("auto", "on", "off"):
        raise TrainingError(f"--channels-last {cfg.channels_last}: use auto, on or off")
    if cfg.fft not in ("l1", "mse"):
        raise TrainingError(f"--fft {cfg.fft}: use l1 or mse")
    for name in ("batch", "accum", "crop", "log_every", "val_every", "ckpt_every"):
        if getattr(cfg, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.lr <= 0 or cfg.lr_min < 0:
        raise TrainingError("--lr must be > 0 and --lr-min >= 0")
    return cfg


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def expand_shards(items) -> list[str]:
    """Shard arguments -> files: folders give their ``*.h5``, unexpanded globs are expanded."""
    out = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(str(x) for x in p.glob("*.h5"))
            if not found:
                raise DataError(f"{it}: folder holds no .h5 shards")
            out += found
        elif any(ch in str(it) for ch in "*?[") and not p.exists():
            found = sorted(glob.glob(str(it)))
            if not found:
                raise DataError(f"{it}: no shard matches")
            out += found
        else:
            if not p.exists():
                raise DataError(f"{it}: no such file")
            out.append(str(it))
    return out


def lr_factor(step: int, cfg: TrainConfig, total: int) -> float:
    """Multiplier of cfg.lr at ``step``: linear warm-up, then cosine from lr to lr_min."""
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, total - cfg.warmup)
    t = min(1.0, (step - cfg.warmup) / span)
    lo = cfg.lr_min / cfg.lr
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


class Dist:
    """Process-group facts from torchrun's environment (single process when absent)."""

    def __init__(self, device_arg: str):
        cpu_setup()
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = device_arg == "cuda" or device_arg.startswith("cuda") or \
            (device_arg == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device available")
        if want_cuda:
            if device_arg.startswith("cuda:") and self.world == 1:
                self.device = torch.device(device_arg)
            else:
                self.device = torch.device("cuda", self.local_rank % max(1, torch.cuda.device_count()))
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            kwargs = {"device_id": self.device} if backend == "nccl" else {}
            dist.init_process_group(backend=backend, **kwargs)

    @property
    def main(self):
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def all_reduce(self, t, op=dist.ReduceOp.SUM):
        if self.enabled:
            dist.all_reduce(t, op=op)
        return t

    def gather_objects(self, obj):
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def autocast_dtype(cfg: TrainConfig, device: torch.device):
    amp = cfg.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp], amp


class MetricsLog:
    """metrics.jsonl (+ TensorBoard when installed); on resume drops records past the resumed step."""

    def __init__(self, out: Path, start_step: int, use_tb: bool):
        self.path = out / "metrics.jsonl"
        if start_step == 0:
            self.path.write_text("")
        elif self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= start_step:
                        keep.append(line)
                except ValueError:
                    continue
            self.path.write_text("".join(x + "\n" for x in keep))
        self.fh = open(self.path, "a", buffering=1)
        self.tb = None
        if use_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step or None)
            except Exception:
                self.tb = None

    def write(self, rec: dict):
        self.fh.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            step = rec["step"]
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{rec.get('kind', 'train')}/{k}", v, step)
            for lab, vals in (rec.get("labels") or {}).items():
                for k, v in vals.items():
                    if k != "count":
                        self.tb.add_scalar(f"val_{lab}/{k}", v, step)

    def close(self):
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


@torch.no_grad()
def validate(net, loader, labels, device, amp_dtype, channels_last=True) -> dict:
    """PSNR/SSIM (restored vs sharp and blurred vs sharp) per label, summed over every rank."""
    was_training = net.training
    net.eval()
    sums = MetricSums(labels, device=device)
    for blur, sharp, lab, _ in loader:
        x = to_model_input(blur, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = net(x)[-1]
        r = quantize(out.float())
        s = sharp.to(device).permute(0, 3, 1, 2).float()
        b = blur.to(device).permute(0, 3, 1, 2).float()
        dt = torch.float64 if device.type == "cpu" else torch.float32
        sums.add(lab.to(device), psnr(r, s, dtype=dt), ssim(r, s, dtype=dt),
                 psnr(b, s, dtype=dt), ssim(b, s, dtype=dt))
    sums.all_reduce()
    net.train(was_training)
    return sums.summary()


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------

def run(cfg: TrainConfig, resume: bool = False, echo=None) -> dict:
    """Train according to ``cfg``; returns a summary dict. Raises BlurforgeError subclasses."""
    _import_model()
    cfg = coerce(cfg)
    dd = Dist(cfg.device)
    try:
        return _run(cfg, resume, dd, echo)
    finally:
        dd.close()


def _run(cfg: TrainConfig, resume: bool, dd: Dist, echo) -> dict:
    from tqdm import tqdm

    device = dd.device
    out = Path(cfg.out)

    def say(msg):
        if dd.main:
            (echo or tqdm.write)(msg)

    shards = expand_shards(cfg.shards)
    val_shards = expand_shards(cfg.val_shards) if cfg.val_shards else []

    # ---- resume: the checkpoint's config is the base; this run's explicit settings override
    state, ckpt_path = None, None
    if not resume and not cfg.overwrite and ((out / "last.pt").exists() or (out / "last.prev.pt").exists()):
        raise TrainingError(f"{out} already holds a run (last.pt); use --resume to continue it, "
                            "--overwrite to start over, or another --out")
    if resume:
        def check(st, path):
            if st.get("config", {}).get("model") is None:
                raise CheckpointError(f"{path}: checkpoint has no model config")
        state, ckpt_path = load_resume(out, check=check, log=say)
        saved = state["config"]
        if ckpt_path.name != "last.pt" and (out / "last.pt").exists():
            dd.barrier()
            if dd.main:   # keep the unreadable file aside so the next save cannot rotate it into last.prev.pt
                os.replace(out / "last.pt", out / "last.corrupt.pt")
                say("note: moved the unreadable last.pt to last.corrupt.pt")
            dd.barrier()
        if "steps" in getattr(cfg, "_explicit", set()) and saved.get("steps") not in (None, cfg.steps):
            say(f"note: --steps changed from {saved.get('steps')} to {cfg.steps}; the cosine schedule is "
                "recomputed for the new length from this step on")
        for k in RESUME_FIXED:
            if k in saved and saved[k] != getattr(cfg, k) and k in getattr(cfg, "_explicit", set()):
                raise CheckpointError(f"{ckpt_path}: checkpoint was trained with {k}={saved[k]!r}, "
                                      f"this run asks for {getattr(cfg, k)!r}; start a new --out "
                                      f"(or --init-from the weights) instead")
        explicit = getattr(cfg, "_explicit", set())
        for k, v in saved.items():
            if k in FIELDS and k not in explicit and k not in RUN_ONLY:
                setattr(cfg, k, v)
        cfg = coerce(cfg)

    mcfg = cfg.model_config()
    labels = list(parse_windows(cfg.windows) or {}) or None
    weights = parse_windows(cfg.windows)
    index = ShardIndex(shards, labels=labels, min_size=cfg.crop)
    fingerprint = index.fingerprint()
    if state is not None:
        if state["config"].get("model") != dataclasses.asdict(mcfg):
            raise CheckpointError(f"{ckpt_path}: checkpoint model config differs from this run's "
                                  f"({state['config'].get('model')} vs {dataclasses.asdict(mcfg)})")
        if state.get("shards_fingerprint") != fingerprint and not cfg.allow_new_shards:
            raise CheckpointError(f"{ckpt_path}: checkpoint was trained on a different shard list "
                                  f"(fingerprint {state.get('shards_fingerprint')} vs {fingerprint}); "
                                  "pass --allow-new-shards to continue on these")

    train_ds = CropDataset(index, crop=cfg.crop, weights=weights, seed=cfg.seed, rank=dd.rank,
                           augment=cfg.augment, focus=cfg.focus)
    global_batch = cfg.batch * cfg.accum * dd.world
    total = cfg.steps or max(1, math.ceil(cfg.epochs * index.num_pairs() / global_batch))

    val_loader, val_labels = None, []
    if val_shards:
        vlabels = list(parse_windows(cfg.val_windows) or {}) or None
        vindex = ShardIndex(val_shards, labels=vlabels, min_size=0)
        vset = PairDataset(vindex, crop=cfg.val_crop or None, max_per_label=cfg.val_max or None)
        if len(vset) == 0:
            raise DataError("validation shards hold no usable pairs")
        val_labels = vindex.labels
        vpart = vset.part(dd.rank, dd.world)
        sizes = {tuple(vset.region(i)[2:]) for i in range(len(vset))}
        vbatch = cfg.batch if (cfg.val_crop and len(sizes) == 1) else 1
        val_loader = torch.utils.data.DataLoader(
            vpart, batch_size=vbatch, shuffle=False, num_workers=min(cfg.workers, 2),
            pin_memory=device.type == "cuda")

    # ---- model, optimiser, schedule
    random.seed(cfg.seed + dd.rank)
    np.random.seed((cfg.seed + 7919 * dd.rank) % 2**32)
    torch.manual_seed(cfg.seed)     # identical initial weights on every rank
    net = DSANet(mcfg)            # Kaiming-normal initialisation (DSANet.reset_parameters)
    if cfg.init_from and state is None:
        from .checkpoint import load_weights
        sd, icfg, _ = load_weights(cfg.init_from)
        if icfg != dataclasses.asdict(mcfg):
            raise CheckpointError(f"--init-from {cfg.init_from}: its model config differs from this run's")
        net.load_state_dict(sd)
    torch.manual_seed(cfg.seed * 1000003 + dd.rank)  # per-rank stream for anything random in training
    use_cl = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")
    mem = torch.channels_last if use_cl else torch.contiguous_format
    net = net.to(device, memory_format=mem)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                           weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, total))
    amp_dtype, amp_name = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    crit = MultiScaleLoss(mu=cfg.mu, fft=cfg.fft)
    if isinstance(crit, torch.nn.Module):
        crit = crit.to(device)

    step, best = 0, -math.inf
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        if state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        best = float(state.get("best_psnr", -math.inf))
        rngs = state.get("rng") or []
        if len(rngs) == dd.world:
            set_rng_state(rngs[dd.rank])
        elif rngs:
            say(f"note: checkpoint was written by {len(rngs)} process(es), this run has {dd.world}; "
                "crops continue per rank, RNG states start fresh")
        say(f"resumed from {ckpt_path} at step {step}")
    for g in opt.param_groups:   # the schedule is a pure function of the step
        g["lr"] = cfg.lr * lr_factor(step, cfg, total)

    raw = net
    model = ddp = net
    if dd.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = ddp = DDP(net, device_ids=[device.index] if device.type == "cuda" else None,
                          find_unused_parameters=cfg.find_unused)
    if cfg.compile:
        model = torch.compile(model)

    # ---- files
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        saved_cfg = {k: v for k, v in dataclasses.asdict(cfg).items()}
        saved_cfg["model"] = dataclasses.asdict(mcfg)
        saved_cfg["steps"] = total
        from .checkpoint import atomic_write
        atomic_write(out / "train.toml", lambda fh: fh.write(to_toml(saved_cfg).encode()))
    dd.barrier()
    mlog = MetricsLog(out, step, cfg.tensorboard) if dd.main else None

    def config_dict():
        d = dataclasses.asdict(cfg)
        d["model"] = dataclasses.asdict(mcfg)
        d["steps"] = total
        return d

    def make_state():
        rngs = dd.gather_objects(rng_state())
        return {"step": step, "model": raw.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": rngs, "config": config_dict(), "shards_fingerprint": fingerprint,
                "shards": [Path(s).name for s in shards], "best_psnr": best, "world_size": dd.world}

    say(f"dsanet-train: {len(index.shards)} shard(s), labels {', '.join(train_ds.labels)} "
        f"({index.num_pairs()} pairs), {total} steps x {global_batch} crops of {cfg.crop}px "
        f"({dd.world} process(es) x {cfg.batch} x accum {cfg.accum}) on {device.type}, amp {amp_name}, "
        f"{sum(p.numel() for p in raw.parameters()) / 1e6:.2f}M params -> {out}")
    if index.skipped_flagged:
        say(f"note: skipped {index.skipped_flagged} pair(s) flagged align/<W>/ok = False")

    loader = make_loader(train_ds, cfg.batch, start_step=step * cfg.accum, workers=cfg.workers,
                         pin_memory=device.type == "cuda")
    it = iter(loader)

    stop_at = min(total, cfg.stop_after) if cfg.stop_after else total
    bar = tqdm(total=total, initial=step, disable=not (dd.main and cfg.progress), unit="step",
               dynamic_ncols=True, file=sys.stderr, smoothing=0.05)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    loss_n = 0
    bad = torch.zeros((), device=device, dtype=torch.int64)       # first non-finite step + 1, or 0
    t_last, crops_since = time.perf_counter(), 0
    last_val = None
    model.train()
    summary = {"diverged": False}

    def check_finite():
        flag = dd.all_reduce(bad.clone(), op=dist.ReduceOp.MAX)
        first = int(flag.item())
        if first:
            msg = (f"loss became NaN or inf at step {first}; stopped. The last good checkpoint is "
                   f"{out / 'last.pt'}" + (" (none written yet)" if not (out / "last.pt").exists() else "") +
                   ". Lower --lr, try --amp none, or --grad-clip 1.0, then --resume.")
            raise TrainingError(msg)

    try:
        while step < stop_at:
            for micro in range(cfg.accum):
                blur, sharp, _ = next(it)
                x = to_model_input(blur, device, use_cl)
                y = to_model_input(sharp, device, use_cl)
                sync_ctx = ddp.no_sync() if (dd.enabled and micro < cfg.accum - 1) else _nullctx()
                with sync_ctx:
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        outs = model(x)
                    outs = [o.float() for o in outs]
                    loss = crit(outs, y)
                    scaler.scale(loss / cfg.accum).backward()
                ld = loss.detach()
                fin = torch.isfinite(ld)
                bad = torch.where((bad == 0) & ~fin, torch.full_like(bad, step + 1), bad)
                loss_sum += torch.where(fin, ld.double(), torch.zeros_like(loss_sum))
                loss_n += 1
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            crops_since += global_batch
            bar.update(1)

            if step % cfg.log_every == 0 or step == stop_at:
                check_finite()
                stats = torch.stack([loss_sum, torch.tensor(float(loss_n), device=device,
                                                            dtype=torch.float64)])
                dd.all_reduce(stats)
                now = time.perf_counter()
                rate = crops_since / max(now - t_last, 1e-9)
                lr_now = opt.param_groups[0]["lr"]
                rec = {"kind": "train", "step": step, "loss": float(stats[0] / max(stats[1], 1)),
                       "lr": lr_now, "crops_per_s": rate, "time": time.time()}
                last_terms = getattr(crit, "last_terms", None)
                if isinstance(last_terms, dict):
                    for k, v in last_terms.items():
                        try:
                            rec[f"loss_{k}"] = float(v)
                        except (TypeError, ValueError):
                            pass
                if mlog:
                    mlog.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr_now:.2e}", crops_s=f"{rate:.1f}",
                                refresh=False)
                loss_sum.zero_()
                loss_n = 0
                t_last, crops_since = now, 0

            is_end = step == stop_at
            if val_loader is not None and (step % cfg.val_every == 0 or step == total):
                check_finite()
                res = validate(raw, val_loader, val_labels, device, amp_dtype, use_cl)
                last_val = res
                a = res.get("all", {})
                improved = a.get("psnr", -math.inf) > best
                if improved:
                    best = a["psnr"]
                if mlog:
                    mlog.write({"kind": "val", "step": step, **{k: v for k, v in a.items()},
                                "labels": {k: v for k, v in res.items() if k != "all"}})
                say(f"step {step}: val PSNR {a.get('psnr', float('nan')):.2f} dB (blurred "
                    f"{a.get('psnr_blur', float('nan')):.2f}), SSIM {a.get('ssim', float('nan')):.4f} "
                    f"(blurred {a.get('ssim_blur', float('nan')):.4f})" + ("  *best*" if improved else ""))
                if improved:
                    st = make_state()
                    if dd.main:
                        save_checkpoint(st, out / "best.pt", keep_prev=False)
            if step % cfg.ckpt_every == 0 or is_end:
                check_finite()
                st = make_state()
                if dd.main:
                    save_checkpoint(st, out / "last.pt")
    except StopIteration:  # pragma: no cover - the sampler is endless
        raise TrainingError("data loader ended unexpectedly") from None
    finally:
        bar.close()
        if mlog:
            mlog.close()
        del it

    summary.update({"step": step, "total_steps": total, "best_psnr": best if best > -math.inf else None,
                    "val": last_val, "out": str(out), "model": raw})
    if step >= total and dd.main:
        export_weights(raw.state_dict(), dataclasses.asdict(mcfg), out,
                       extra={"step": step, "shards_fingerprint": fingerprint, "val": last_val,
                              "trained_with": "dsanet-train"})
        say(f"done: {step} steps; weights -> {out / 'model.safetensors'} (+ config.json)"
            + (f"; best val PSNR {best:.2f} dB -> {out / 'best.pt'}" if best > -math.inf else ""))
    elif dd.main:
        say(f"stopped at step {step} of {total}; continue with --resume --out {out}")
    dd.barrier()
    return summary


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def _parse_model_opts(items) -> dict:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise TrainingError(f"--model-opt {it!r}: use KEY=VALUE")
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out



D = TrainConfig()


@click.command(cls=greedy_command(("--shards", "--val-shards")),
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--shards", multiple=True, metavar="SHARD",
              help="Training shards (.h5 files, folders of them, or quoted globs); repeat the flag, or "
                   "pass several after one flag via the shell (--shards data/*.h5 expands).")
@click.option("--val-shards", multiple=True, metavar="SHARD", help="Held-out shards for validation.")
@click.option("--out", default=D.out, show_default=True, help="Run folder (checkpoints, metrics, weights).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="Settings file (.toml, or .yaml with PyYAML); keys are the long flag names "
                   "(dashes or underscores), model overrides under [model]. Flags given on the "
                   "command line win. Every run saves its full settings to OUT/train.toml.")
@click.option("--windows", default=D.windows, show_default=True,
              help="Window labels to train on and their weights: '36,73', 'gopro:2,36:1,73:1', or 'all'.")
@click.option("--val-windows", default=D.val_windows, show_default=True, help="Labels to validate ('all').")
@click.option("--tiny", is_flag=True, default=False, help="DSANetConfig.tiny(): a small model for CPU runs.")
@click.option("--model-opt", "model_opts", multiple=True, metavar="KEY=VALUE",
              help="Override a DSANetConfig field (value parsed as JSON), e.g. --model-opt scales=2.")
@click.option("--steps", type=int, default=D.steps, show_default=True,
              help="Optimizer steps; 0 = epochs x usable pairs / global batch.")
@click.option("--epochs", type=float, default=D.epochs, show_default=True,
              help="Length in epochs when --steps is 0 (one crop per usable sharp pair per epoch).")
@click.option("--batch", type=int, default=D.batch, show_default=True, help="Crops per process per step.")
@click.option("--accum", type=int, default=D.accum, show_default=True,
              help="Gradient accumulation: micro-batches per step (global batch = batch x GPUs x accum).")
@click.option("--crop", type=int, default=D.crop, show_default=True, help="Training crop size (pixels).")
@click.option("--lr", type=float, default=D.lr, show_default=True, help="Initial Adam learning rate.")
@click.option("--lr-min", type=float, default=D.lr_min, show_default=True, help="Final lr of the cosine.")
@click.option("--warmup", type=int, default=D.warmup, show_default=True, help="Linear warm-up steps.")
@click.option("--beta1", type=float, default=D.beta1, show_default=True)
@click.option("--beta2", type=float, default=D.beta2, show_default=True)
@click.option("--weight-decay", type=float, default=D.weight_decay, show_default=True)
@click.option("--grad-clip", type=float, default=D.grad_clip, show_default=True,
              help="Clip the gradient norm to this (0 = off).")
@click.option("--mu", type=float, default=D.mu, show_default=True, help="Weight of the FFT loss.")
@click.option("--fft", type=click.Choice(["l1", "mse"]), default=D.fft, show_default=True,
              help="FFT loss: l1 on real/imag parts (MIMO-UNet), or mse (the paper's formula; with "
                   "the orthonormal FFT it equals the pixel MSE, by Parseval).")
@click.option("--augment/--no-augment", default=D.augment, show_default=True,
              help="Random flips and 90-degree rotations.")
@click.option("--focus", type=float, default=D.focus, show_default=True,
              help="Fraction of crops placed where the blur is (best of 8 random windows by mean "
                   "|blur - sharp|); 0 = uniform crops as in the paper.")
@click.option("--seed", type=int, default=D.seed, show_default=True)
@click.option("--workers", type=int, default=D.workers, show_default=True, help="Data loader workers per process.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "none"]), default=D.amp, show_default=True,
              help="Mixed precision: auto = bf16 on CUDA, none on CPU; fp16 uses a GradScaler.")
@click.option("--channels-last", type=click.Choice(["auto", "on", "off"]), default=D.channels_last,
              show_default=True, help="channels_last memory format (auto: on for CUDA, off for CPU).")
@click.option("--compile", is_flag=True, default=D.compile, help="torch.compile the model.")
@click.option("--device", default=D.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--val-every", type=int, default=D.val_every, show_default=True, help="Validate every N steps.")
@click.option("--val-crop", type=int, default=D.val_crop, show_default=True,
              help="Validate on centre crops of this size (0 = whole images).")
@click.option("--val-max", type=int, default=D.val_max, show_default=True,
              help="Validation pairs per label, evenly spaced (0 = all).")
@click.option("--ckpt-every", type=int, default=D.ckpt_every, show_default=True,
              help="Write OUT/last.pt every N steps (and at the end).")
@click.option("--log-every", type=int, default=D.log_every, show_default=True,
              help="Log loss/lr/crops-per-second every N steps.")
@click.option("--stop-after", type=int, default=D.stop_after, show_default=True,
              help="Stop after this step as if interrupted (the schedule still spans --steps); "
                   "continue later with --resume.")
@click.option("--resume", is_flag=True, help="Continue the run in OUT from last.pt (last.prev.pt if "
                                             "last.pt is unreadable).")
@click.option("--init-from", default=D.init_from, metavar="WEIGHTS",
              help="Start from these weights (.pt or model.safetensors) with a fresh optimizer: fine-tuning.")
@click.option("--allow-new-shards", is_flag=True, default=D.allow_new_shards,
              help="Let --resume continue on a different shard list.")
@click.option("--overwrite", is_flag=True, default=D.overwrite,
              help="Start a new run in an OUT that already holds one (its checkpoints are replaced).")
@click.option("--find-unused", is_flag=True, default=D.find_unused, help="DDP find_unused_parameters.")
@click.option("--progress/--no-progress", default=D.progress, show_default=True, help="tqdm progress bar.")
@click.option("--tensorboard/--no-tensorboard", default=D.tensorboard, show_default=True,
              help="Also log to OUT/tb when the tensorboard package is installed.")
@click.pass_context
@friendly
def main(ctx, config_file, model_opts, resume, **kw):
    """Train DSANet on blurforge shards.

    \b
    Examples:
      dsanet-train --shards data/*.h5 --val-shards val/*.h5 --out runs/base
      dsanet-train --shards data/ --tiny --crop 128 --batch 4 --steps 2000 --out runs/cpu
      dsanet-train --resume --out runs/base          # continue an interrupted run
      dsanet-train --config runs/base/train.toml --out runs/again --lr 1e-4

    Paper recipe by default: Adam, lr 2e-4 cosine-annealed to 1e-6, 256x256 crops with flips and
    90-degree rotations, Kaiming initialisation, multi-scale MSE + 0.1 x FFT loss, 4000 epochs.

    \b
    Several GPUs / machines (torchrun; --batch is per GPU):
      torchrun --standalone --nproc_per_node 4 -m dsanet.train --shards data/*.h5 --batch 4 --out runs/x4
      torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
               --rdzv_id dsanet1 -m dsanet.train --shards data/*.h5 --batch 2 --out runs/x16
    (the same command on every node; OUT must be on a shared filesystem for --resume).

    \b
    Scaling: global batch = --batch x GPUs x --accum; the reference is 16 (8 per GPU on the
    paper's 2 GPUs). Keep it at 16 (e.g. 1 GPU: --batch 16, or --batch 8 --accum 2; 4 GPUs:
    --batch 4) and lr and steps stay as they are. If you raise it k-fold instead, steps fall k-fold
    by themselves with --epochs (fix them yourself with --steps) and raise --lr by sqrt(k) with
    a --warmup of ~1000 steps (Adam); lower it by sqrt(k) when you shrink the batch.

    Outputs in OUT: train.toml (all settings), metrics.jsonl, last.pt / last.prev.pt / best.pt
    (by validation PSNR), and at the end model.safetensors + config.json for dsanet-deblur.
    --resume continues from last.pt (last.prev.pt if last.pt is unreadable) with the same
    crops, RNG states, optimizer and schedule. Validation reports PSNR and SSIM of restored vs
    sharp and of blurred vs sharp per window label, on RGB uint8 without border crop (SSIM as
    scikit-image computes it, see dsanet-eval). A NaN/inf loss stops the run (exit 1) and
    keeps the last good checkpoint.
    """
    from click.core import ParameterSource

    explicit = {k for k in kw if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)}
    if model_opts:
        explicit.add("model")
    settings = read_config_file(config_file) if config_file else {}
    cfg = TrainConfig()
    for k, v in settings.items():
        setattr(cfg, k, v)
    for k in explicit:
        if k in kw:
            setattr(cfg, k, list(kw[k]) if isinstance(kw[k], tuple) else kw[k])
    if model_opts:
        cfg.model = {**(cfg.model or {}), **_parse_model_opts(model_opts)}
    cfg._explicit = explicit | set(settings)
    if not cfg.shards:
        if resume:
            prev = Path(cfg.out) / "train.toml"
            if prev.exists():
                cfg.shards = read_config_file(prev).get("shards", [])
                if not cfg.val_shards:
                    cfg.val_shards = read_config_file(prev).get("val_shards", [])
        if not cfg.shards:
            raise DataError("no shards given: use --shards data/*.h5 (or a folder of shards)")
    summary = run(cfg, resume=resume, echo=lambda m: click.echo(m, err=True))
    return summary


if __name__ == "__main__":
    main()
