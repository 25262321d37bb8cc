"""``dsanet-train``: the DSANet reference trainer (single process, or many through torchrun).

Paper recipe by default (DSANet, Sensors 2025): Adam, lr 2e-4 cosine-annealed to 1e-6, random
256x256 crops with flips and 90-degree rotations, Kaiming initialisation, multi-scale content loss
plus 0.1 x FFT loss. The paper trains 4000 epochs on two GPUs and does not state its batch size;
our default is 8 crops per GPU (16 on the paper's two GPUs).

Every setting is a :class:`TrainConfig` field and, generated from it, a click option. ``--config
FILE.toml`` (or ``.yaml`` with PyYAML) feeds click's ``default_map``, so flags on the command line
win; the full settings of a run are saved to ``runs/NAME/train.toml``, which ``--config`` reads back.

The run is a short sequence: :func:`settle` (resume or start), :func:`build` (data, model,
optimiser), :func:`restore`, then :func:`fit` repeating :func:`train_step` with logging,
:func:`validate` and :func:`save`, and :func:`export` at the end.

Distributed: started by ``torchrun`` the trainer reads RANK / WORLD_SIZE / LOCAL_RANK, uses NCCL
on CUDA and Gloo on CPU, each rank draws its own crops (seeded by seed and rank), and validation
splits the validation set over the ranks and all-reduces the sums, so one GPU and many give the
same numbers. ``--batch`` is per process; the global batch is batch x processes x accum.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path

import click
import numpy as np
import tomli_w
import torch
import torch.distributed as dist
from click.core import ParameterSource

from blurforge.atomic import atomic_write_text
from blurforge.cliutil import CONTEXT, expand_globs, find_shards, greedy_command, progress, say
from blurforge.errors import BlurforgeError

from .checkpoint import (
    CheckpointError,
    export_weights,
    friendly,
    load_checkpoint,
    load_resume,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .data import CropDataset, DataError, PairDataset, ShardIndex, make_loader, parse_windows, to_model_input
from .losses import MultiScaleLoss
from .metrics import MetricSums, psnr, quantize, ssim
from .model import DSANet, DSANetConfig
from .runtime import cpu_setup

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class TrainingError(BlurforgeError):
    """The run cannot go on (diverged, bad configuration...): one line, exit status 1."""


# ----------------------------------------------------------------------------------------------
# Settings: one dataclass, from which the click options are made
# ----------------------------------------------------------------------------------------------

def setting(default, help: str | None = None, flag: str | None = None, **click_kw):
    """A :class:`TrainConfig` field that is also a click option (``--name-with-dashes`` unless ``flag``).
    ``default`` may be ``list``/``dict`` (a factory); click keywords (type, is_flag...) pass through."""
    where = {"default_factory": default} if default in (list, dict) else {"default": default}
    return dataclasses.field(**where, metadata={"help": help, "flag": flag, "click": click_kw})


def _model_opts(ctx, param, items) -> dict:
    """``--model-opt KEY=VALUE`` (value parsed as JSON, else a string) -> dict."""
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise click.BadParameter(f"{it!r}: use KEY=VALUE", ctx, param)
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


@dataclasses.dataclass
class TrainConfig:
    shards: list = setting(list, "Training shards (.h5 files, folders searched recursively, quoted globs, or "
                           "@LIST.txt from `blurforge split`); repeat the flag, or pass several after one flag "
                           "(--shards data/*.h5 expands).", multiple=True, metavar="SHARD")
    val_shards: list = setting(list, "Held-out shards for validation (e.g. @data/val.txt).", multiple=True,
                               metavar="SHARD")
    out: str = setting("runs/dsanet", "Run folder (checkpoints, metrics, weights).")
    windows: str = setting("all", "Window labels to train on and their weights: '36,73', 'gopro:2,36:1,73:1', "
                           "or 'all'.")
    val_windows: str = setting("all", "Labels to validate ('all').")
    tiny: bool = setting(False, "DSANetConfig.tiny(): a small model for CPU runs.", is_flag=True)
    model: dict = setting(dict, "Override a DSANetConfig field (value parsed as JSON), e.g. --model-opt scales=2; "
                          "in a --config file: a [model] table.", flag="--model-opt", multiple=True,
                          metavar="KEY=VALUE", callback=_model_opts)
    steps: int = setting(0, "Optimizer steps; 0 = epochs x usable pairs / global batch.", type=click.IntRange(0))
    epochs: float = setting(4000.0, "Length in epochs when --steps is 0 (one crop per usable sharp pair per "
                            "epoch).", type=click.FloatRange(0, min_open=True))
    batch: int = setting(8, "Crops per process per step.", type=click.IntRange(1))
    accum: int = setting(1, "Gradient accumulation: micro-batches per step (global batch = batch x GPUs x "
                         "accum).", type=click.IntRange(1))
    crop: int = setting(256, "Training crop size (pixels).", type=click.IntRange(1))
    lr: float = setting(2e-4, "Initial Adam learning rate.", type=click.FloatRange(0, min_open=True))
    lr_min: float = setting(1e-6, "Final lr of the cosine.", type=click.FloatRange(0))
    warmup: int = setting(0, "Linear warm-up steps.", type=click.IntRange(0))
    beta1: float = setting(0.9)
    beta2: float = setting(0.999)
    weight_decay: float = setting(0.0)
    grad_clip: float = setting(0.0, "Clip the gradient norm to this (0 = off).")
    mu: float = setting(0.1, "Weight of the FFT loss.")
    fft: str = setting("l1", "FFT loss: l1 on real/imag parts (MIMO-UNet), or mse (the paper's formula; with the "
                       "orthonormal FFT it equals the pixel MSE, by Parseval).", type=click.Choice(["l1", "mse"]))
    augment: bool = setting(True, "Random flips and 90-degree rotations.", flag="--augment/--no-augment")
    focus: float = setting(0.0, "Fraction of crops placed where the blur is (best of 8 random windows by mean "
                           "|blur - sharp|); 0 = uniform crops as in the paper.", type=click.FloatRange(0, 1))
    seed: int = setting(0)
    workers: int = setting(2, "Data loader workers per process.", type=click.IntRange(0))
    amp: str = setting("auto", "Mixed precision: auto = bf16 on CUDA, none on CPU; fp16 uses a GradScaler.",
                       type=click.Choice(["auto", "bf16", "fp16", "none"]))
    channels_last: str = setting("auto", "channels_last memory format (auto: on for CUDA, off for CPU).",
                                 type=click.Choice(["auto", "on", "off"]))
    compile: bool = setting(False, "torch.compile the model.", is_flag=True)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    val_every: int = setting(1000, "Validate every N steps.", type=click.IntRange(1))
    val_crop: int = setting(0, "Validate on centre crops of this size (0 = whole images).", type=click.IntRange(0))
    val_max: int = setting(50, "Validation pairs per label, evenly spaced (0 = all).", type=click.IntRange(0))
    export: str = setting("last", "Weights written to OUT/model.safetensors at the end: the last step's, or "
                          "best.pt's (the best validation PSNR, chosen on --val-shards).",
                          type=click.Choice(["last", "best"]))
    ckpt_every: int = setting(1000, "Write OUT/last.pt every N steps (and at the end).", type=click.IntRange(1))
    log_every: int = setting(50, "Log loss/lr/crops-per-second every N steps.", type=click.IntRange(1))
    stop_after: int = setting(0, "Stop after this step as if interrupted (the schedule still spans --steps); "
                              "continue later with --resume.", type=click.IntRange(0))
    init_from: str = setting("", "Start from these weights (.pt or model.safetensors) with a fresh optimizer: "
                             "fine-tuning.", metavar="WEIGHTS")
    allow_new_shards: bool = setting(False, "Let --resume continue on a different shard list.", is_flag=True)
    overwrite: bool = setting(False, "Start a new run in an OUT that already holds one (its checkpoints are "
                              "replaced).", is_flag=True)
    find_unused: bool = setting(False, "DDP find_unused_parameters.", is_flag=True)
    progress: bool = setting(True, "tqdm progress bar.", flag="--progress/--no-progress")
    tensorboard: bool = setting(True, "Also log to OUT/tb when the tensorboard package is installed.",
                                flag="--tensorboard/--no-tensorboard")

    def model_config(self) -> DSANetConfig:
        base = dataclasses.asdict(DSANetConfig.tiny() if self.tiny else DSANetConfig())
        unknown = [k for k in self.model if k not in base]
        if unknown:
            raise TrainingError(f"unknown model key(s) {', '.join(unknown)} (valid: {', '.join(base)})")
        try:
            return DSANetConfig(**{**base, **self.model})
        except (TypeError, ValueError) as e:
            raise TrainingError(f"bad model configuration: {e}") from None


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# keys that make a checkpoint incompatible when they change on --resume
RESUME_FIXED = ("crop", "batch", "accum", "seed", "windows", "augment", "focus", "mu", "fft")
# keys a resumed run never takes from the checkpoint (they describe this invocation only)
RUN_ONLY = ("shards", "val_shards", "out", "stop_after", "init_from", "allow_new_shards", "overwrite",
            "progress", "device")


def settings_options(fn):
    """Decorate ``fn`` with one click option per :class:`TrainConfig` field, in field order."""
    for f in reversed(dataclasses.fields(TrainConfig)):
        meta = f.metadata
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        kw = dict(meta["click"])
        if not kw.get("multiple"):
            kw.setdefault("default", f.default)
            kw.setdefault("show_default", True)
        fn = click.option(flag, f.name, help=meta["help"], **kw)(fn)
    return fn


def read_config_file(path) -> dict:
    """Settings from a .toml (or .yaml) file, keys normalised to field names; unknown keys refused."""
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
        try:
            d = tomllib.loads(text.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise TrainingError(f"--config {path}: not valid TOML ({e})") from None
    if not isinstance(d, dict):
        raise TrainingError(f"--config {path}: expected a table of settings")
    out = {k.replace("-", "_"): v for k, v in d.items()}
    unknown = [k for k in d if k.replace("-", "_") not in FIELDS]
    if unknown:
        raise TrainingError(f"--config {path}: unknown setting {unknown[0]!r}")
    if not isinstance(out.get("model", {}), dict):
        raise TrainingError(f"--config {path}: 'model' must be a table of DSANetConfig fields")
    return out


def _config_callback(ctx, param, value):
    """Eager ``--config``: the file's settings become click's defaults, so command-line flags win."""
    if value is None:
        return None
    try:
        settings = read_config_file(value)
    except TrainingError as e:
        raise click.ClickException(str(e)) from None
    ctx.meta["dsanet.config_model"] = settings.pop("model", {})
    params = {p.name: p for p in ctx.command.params}
    for k, v in settings.items():
        if params[k].multiple and isinstance(v, str):
            settings[k] = v = [v]
        try:
            params[k].type_cast_value(ctx, v)
        except click.BadParameter as e:
            raise click.ClickException(f"--config {value}: {k} = {v!r}: {e.format_message()}") from None
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value


def settings_text(cfg: TrainConfig, mcfg: DSANetConfig, total: int) -> str:
    """The saved ``train.toml``: every setting, the resolved model and the resolved step count."""
    return tomli_w.dumps({**dataclasses.asdict(cfg), "steps": total, "model": dataclasses.asdict(mcfg)})


# ----------------------------------------------------------------------------------------------
# Pieces of a run
# ----------------------------------------------------------------------------------------------

def shard_list(items) -> list[str]:
    return [str(p) for p in find_shards(expand_globs(items), default=None)] if items else []


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
        want_cuda = device_arg.startswith("cuda") or (device_arg == "auto" and torch.cuda.is_available())
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
        keep = []
        if start_step and self.path.exists():
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("step", 0) <= start_step:
                        keep.append(line)
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
    dt = torch.float64 if device.type == "cpu" else torch.float32
    for blur, sharp, lab, _ in loader:
        x = to_model_input(blur, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = net(x)[-1]
        r = quantize(out.float())
        s = sharp.to(device).permute(0, 3, 1, 2).float()
        b = blur.to(device).permute(0, 3, 1, 2).float()
        sums.add(lab.to(device), psnr(r, s, dtype=dt), ssim(r, s, dtype=dt), psnr(b, s, dtype=dt),
                 ssim(b, s, dtype=dt))
    sums.all_reduce()
    net.train(was_training)
    return sums.summary()


@dataclasses.dataclass
class Run:
    """Everything a run holds between steps."""
    cfg: TrainConfig
    mcfg: DSANetConfig
    dd: Dist
    out: Path
    shards: list
    index: ShardIndex
    train_ds: CropDataset
    val_loader: object
    val_labels: list
    total: int
    net: torch.nn.Module            # the bare model (weights saved from here)
    model: torch.nn.Module          # what the step calls: DDP and/or compiled around net
    opt: torch.optim.Optimizer
    sched: object
    scaler: torch.amp.GradScaler
    crit: torch.nn.Module
    amp_dtype: object
    amp_name: str
    channels_last: bool
    step: int = 0
    best: float = -math.inf
    last_val: dict | None = None

    @property
    def device(self):
        return self.dd.device

    @property
    def global_batch(self):
        return self.cfg.batch * self.cfg.accum * self.dd.world


class LossMeter:
    """Loss sums on the device since the last log line, and the first non-finite step (+1; 0: none),
    so the loop never waits for the device except when it logs."""

    def __init__(self, device):
        self.sum = torch.zeros((), device=device, dtype=torch.float64)
        self.n = torch.zeros((), device=device, dtype=torch.float64)
        self.bad = torch.zeros((), device=device, dtype=torch.int64)
        self.t, self.crops = time.perf_counter(), 0

    def add(self, loss: torch.Tensor, step: int):
        fin = torch.isfinite(loss)
        self.bad = torch.where((self.bad == 0) & ~fin, torch.full_like(self.bad, step + 1), self.bad)
        self.sum += torch.where(fin, loss.double(), torch.zeros_like(self.sum))
        self.n += 1


def settle(cfg: TrainConfig, resume: bool, explicit: set, dd: Dist, log):
    """The settings this run uses: ``cfg`` as given, or on ``--resume`` the checkpoint's settings
    overridden by the explicitly given ones. Returns ``(cfg, state or None, checkpoint path)``."""
    out = Path(cfg.out)
    if not resume:
        if not cfg.overwrite and ((out / "last.pt").exists() or (out / "last.prev.pt").exists()):
            raise TrainingError(f"{out} already holds a run (last.pt); use --resume to continue it, "
                                "--overwrite to start over, or another --out")
        return cfg, None, None

    def check(st, path):
        if st.get("config", {}).get("model") is None:
            raise CheckpointError(f"{path}: checkpoint has no model config")
    state, path = load_resume(out, check=check, log=log)
    saved = state["config"]
    if path.name != "last.pt" and (out / "last.pt").exists():
        dd.barrier()
        if dd.main:   # keep the unreadable file aside so the next save cannot rotate it into last.prev.pt
            os.replace(out / "last.pt", out / "last.corrupt.pt")
            log("note: moved the unreadable last.pt to last.corrupt.pt")
        dd.barrier()
    if "steps" in explicit and saved.get("steps") not in (None, cfg.steps):
        log(f"note: --steps changed from {saved.get('steps')} to {cfg.steps}; the cosine schedule is "
            "recomputed for the new length from this step on")
    for k in RESUME_FIXED:
        if k in explicit and k in saved and saved[k] != getattr(cfg, k):
            raise CheckpointError(f"{path}: checkpoint was trained with {k}={saved[k]!r}, this run asks for "
                                  f"{getattr(cfg, k)!r}; start a new --out (or --init-from the weights) instead")
    taken = {k: v for k, v in saved.items() if k in FIELDS and k not in explicit and k not in RUN_ONLY}
    return dataclasses.replace(cfg, **taken), state, path


def build(cfg: TrainConfig, dd: Dist, log) -> Run:
    """Data, model (Kaiming initialisation, or ``--init-from``), optimiser, schedule and loss."""
    device = dd.device
    shards, val_shards = shard_list(cfg.shards), shard_list(cfg.val_shards)
    mcfg = cfg.model_config()
    weights = parse_windows(cfg.windows)
    index = ShardIndex(shards, labels=list(weights or {}) or None, min_size=cfg.crop)
    train_ds = CropDataset(index, crop=cfg.crop, weights=weights, seed=cfg.seed, rank=dd.rank,
                           augment=cfg.augment, focus=cfg.focus)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * index.num_pairs() / (cfg.batch * cfg.accum * dd.world)))
    val_loader, val_labels = None, []
    if val_shards:
        vindex = ShardIndex(val_shards, labels=list(parse_windows(cfg.val_windows) or {}) or None, min_size=0)
        vset = PairDataset(vindex, crop=cfg.val_crop or None, max_per_label=cfg.val_max or None)
        if len(vset) == 0:
            raise DataError("validation shards hold no usable pairs")
        val_labels = vindex.labels
        sizes = {tuple(vset.region(i)[2:]) for i in range(len(vset))}
        val_loader = torch.utils.data.DataLoader(
            vset.part(dd.rank, dd.world), batch_size=cfg.batch if (cfg.val_crop and len(sizes) == 1) else 1,
            shuffle=False, num_workers=min(cfg.workers, 2), pin_memory=device.type == "cuda")

    random.seed(cfg.seed + dd.rank)
    np.random.seed((cfg.seed + 7919 * dd.rank) % 2**32)
    torch.manual_seed(cfg.seed)     # identical initial weights on every rank
    net = DSANet(mcfg)
    if cfg.init_from:
        sd, icfg, _ = load_weights(cfg.init_from)
        if icfg != dataclasses.asdict(mcfg):
            raise CheckpointError(f"--init-from {cfg.init_from}: its model config differs from this run's")
        net.load_state_dict(sd)
    torch.manual_seed(cfg.seed * 1000003 + dd.rank)  # per-rank stream for anything random in training
    use_cl = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")
    net = net.to(device, memory_format=torch.channels_last if use_cl else torch.contiguous_format)
    model = net
    if dd.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=cfg.find_unused)
    if cfg.compile:
        model = torch.compile(model)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, total))
    amp_dtype, amp_name = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    crit = MultiScaleLoss(mu=cfg.mu, fft=cfg.fft).to(device)
    return Run(cfg=cfg, mcfg=mcfg, dd=dd, out=Path(cfg.out), shards=shards, index=index, train_ds=train_ds,
               val_loader=val_loader, val_labels=val_labels, total=total, net=net, model=model, opt=opt,
               sched=sched, scaler=scaler, crit=crit, amp_dtype=amp_dtype, amp_name=amp_name, channels_last=use_cl)


def restore(r: Run, state: dict, path: Path, log):
    """Continue from a checkpoint: same model, shards, optimiser, schedule, step and RNG streams."""
    if state["config"].get("model") != dataclasses.asdict(r.mcfg):
        raise CheckpointError(f"{path}: checkpoint model config differs from this run's "
                              f"({state['config'].get('model')} vs {dataclasses.asdict(r.mcfg)})")
    fingerprint = r.index.fingerprint()
    if state.get("shards_fingerprint") != fingerprint and not r.cfg.allow_new_shards:
        raise CheckpointError(f"{path}: checkpoint was trained on a different shard list (fingerprint "
                              f"{state.get('shards_fingerprint')} vs {fingerprint}); pass --allow-new-shards "
                              "to continue on these")
    r.net.load_state_dict(state["model"])
    r.opt.load_state_dict(state["optimizer"])
    if state.get("scheduler"):
        r.sched.load_state_dict(state["scheduler"])
    if state.get("scaler") and r.scaler.is_enabled():
        r.scaler.load_state_dict(state["scaler"])
    r.step = int(state["step"])
    r.best = float(state.get("best_psnr", -math.inf))
    rngs = state.get("rng") or []
    if len(rngs) == r.dd.world:
        set_rng_state(rngs[r.dd.rank])
    elif rngs:
        log(f"note: checkpoint was written by {len(rngs)} process(es), this run has {r.dd.world}; "
            "crops continue per rank, RNG states start fresh")
    log(f"resumed from {path} at step {r.step}")


def train_step(r: Run, batches, meter: LossMeter):
    """One optimiser step over ``cfg.accum`` micro-batches (gradients synchronised on the last)."""
    cfg = r.cfg
    for micro in range(cfg.accum):
        blur, sharp, _ = next(batches)
        x = to_model_input(blur, r.device, r.channels_last)
        y = to_model_input(sharp, r.device, r.channels_last)
        defer_sync = r.dd.enabled and micro < cfg.accum - 1
        ddp = getattr(r.model, "_orig_mod", r.model)
        with ddp.no_sync() if defer_sync else contextlib.nullcontext():
            with torch.autocast(r.device.type, dtype=r.amp_dtype, enabled=r.amp_dtype is not None):
                outs = r.model(x)
            loss = r.crit([o.float() for o in outs], y)
            r.scaler.scale(loss / cfg.accum).backward()
        meter.add(loss.detach(), r.step)
    if cfg.grad_clip > 0:
        r.scaler.unscale_(r.opt)
        torch.nn.utils.clip_grad_norm_(r.net.parameters(), cfg.grad_clip)
    r.scaler.step(r.opt)
    r.scaler.update()
    r.opt.zero_grad(set_to_none=True)
    r.sched.step()
    r.step += 1
    meter.crops += r.global_batch


def check_finite(r: Run, meter: LossMeter):
    """Stop the run (every rank) if any loss so far was NaN or inf; the last good checkpoint stays."""
    first = int(r.dd.all_reduce(meter.bad.clone(), op=dist.ReduceOp.MAX).item())
    if first:
        last = r.out / "last.pt"
        raise TrainingError(f"loss became NaN or inf at step {first}; stopped. The last good checkpoint is {last}"
                            + ("" if last.exists() else " (none written yet)")
                            + ". Lower --lr, try --amp none, or --grad-clip 1.0, then --resume.")


def log_train(r: Run, meter: LossMeter, mlog, bar):
    stats = r.dd.all_reduce(torch.stack([meter.sum, meter.n]))
    now = time.perf_counter()
    rate = meter.crops / max(now - meter.t, 1e-9)
    lr = r.opt.param_groups[0]["lr"]
    rec = {"kind": "train", "step": r.step, "loss": float(stats[0] / stats[1].clamp_min(1)), "lr": lr,
           "crops_per_s": rate, "time": time.time()}
    for k, v in (getattr(r.crit, "last_terms", None) or {}).items():
        with contextlib.suppress(TypeError, ValueError):
            rec[f"loss_{k}"] = float(v)
    if mlog:
        mlog.write(rec)
    bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}", crops_s=f"{rate:.1f}", refresh=False)
    meter.sum.zero_()
    meter.n.zero_()
    meter.t, meter.crops = now, 0


def run_validation(r: Run, mlog, log):
    """Validate, log, and keep ``best.pt`` when the PSNR over all labels improved."""
    res = validate(r.net, r.val_loader, r.val_labels, r.device, r.amp_dtype, r.channels_last)
    r.last_val = res
    a = res.get("all", {})
    improved = a.get("psnr", -math.inf) > r.best
    if improved:
        r.best = a["psnr"]
    if mlog:
        mlog.write({"kind": "val", "step": r.step, **a, "labels": {k: v for k, v in res.items() if k != "all"}})
    nan = float("nan")
    log(f"step {r.step}: val PSNR {a.get('psnr', nan):.2f} dB (blurred {a.get('psnr_blur', nan):.2f}), "
        f"SSIM {a.get('ssim', nan):.4f} (blurred {a.get('ssim_blur', nan):.4f})" + ("  *best*" if improved else ""))
    if improved:
        save(r, "best.pt", keep_prev=False)


def save(r: Run, name: str, keep_prev: bool = True):
    """Write a full checkpoint (RNG states of every rank gathered; rank 0 writes, atomically)."""
    rngs = r.dd.gather_objects(rng_state())
    if not r.dd.main:
        return
    config = {**dataclasses.asdict(r.cfg), "model": dataclasses.asdict(r.mcfg), "steps": r.total}
    state = {"step": r.step, "model": r.net.state_dict(), "optimizer": r.opt.state_dict(),
             "scheduler": r.sched.state_dict(), "scaler": r.scaler.state_dict() if r.scaler.is_enabled() else None,
             "rng": rngs, "config": config, "shards_fingerprint": r.index.fingerprint(),
             "shards": [Path(s).name for s in r.shards], "best_psnr": r.best, "world_size": r.dd.world}
    save_checkpoint(state, r.out / name, keep_prev=keep_prev)


def export(r: Run, log):
    """``model.safetensors`` + ``config.json`` for dsanet-deblur / dsanet-eval: the last step's weights,
    or with ``--export best`` those of ``best.pt``."""
    weights, step, val = r.net.state_dict(), r.step, r.last_val
    if r.cfg.export == "best":
        if r.best == -math.inf or not (r.out / "best.pt").exists():
            raise TrainingError("--export best: no validation ran (give --val-shards and a --val-every "
                                "below --steps)")
        state = load_checkpoint(r.out / "best.pt")
        weights, step, val = state["model"], state["step"], {"all": {"psnr": state["best_psnr"]}}
    export_weights(weights, dataclasses.asdict(r.mcfg), r.out,
                   extra={"step": step, "shards_fingerprint": r.index.fingerprint(), "val": val,
                          "trained_with": "dsanet-train"})
    best = f"; best val PSNR {r.best:.2f} dB -> {r.out / 'best.pt'}" if r.best > -math.inf else ""
    what = f"step {step}'s (best validation)" if r.cfg.export == "best" else "final"
    log(f"done: {r.step} steps; {what} weights -> {r.out / 'model.safetensors'} (+ config.json){best}")


def fit(r: Run, log):
    """Train from ``r.step`` to the end (or ``--stop-after``), logging, validating and saving on schedule."""
    cfg = r.cfg
    if r.dd.main:
        r.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(r.out / "train.toml", settings_text(cfg, r.mcfg, r.total))
    r.dd.barrier()
    log(f"dsanet-train: {len(r.index.shards)} shard(s), labels {', '.join(r.train_ds.labels)} "
        f"({r.index.num_pairs()} pairs), {r.total} steps x {r.global_batch} crops of {cfg.crop}px "
        f"({r.dd.world} process(es) x {cfg.batch} x accum {cfg.accum}) on {r.device.type}, amp {r.amp_name}, "
        f"{sum(p.numel() for p in r.net.parameters()) / 1e6:.2f}M params -> {r.out}")
    if r.index.skipped_flagged:
        log(f"note: skipped {r.index.skipped_flagged} pair(s) flagged align/<W>/ok = False")
    for g in r.opt.param_groups:   # the schedule is a pure function of the step
        g["lr"] = cfg.lr * lr_factor(r.step, cfg, r.total)
    mlog = MetricsLog(r.out, r.step, cfg.tensorboard) if r.dd.main else None
    loader = make_loader(r.train_ds, cfg.batch, start_step=r.step * cfg.accum, workers=cfg.workers,
                         pin_memory=r.device.type == "cuda")
    stop_at = min(r.total, cfg.stop_after) if cfg.stop_after else r.total
    meter = LossMeter(r.device)
    r.model.train()
    try:
        with progress(r.total, "train", quiet=not (r.dd.main and cfg.progress), unit="step") as bar:
            bar.update(r.step)
            batches = iter(loader)
            while r.step < stop_at:
                train_step(r, batches, meter)
                bar.update(1)
                if r.step % cfg.log_every == 0 or r.step == stop_at:
                    check_finite(r, meter)
                    log_train(r, meter, mlog, bar)
                if r.val_loader is not None and (r.step % cfg.val_every == 0 or r.step == r.total):
                    check_finite(r, meter)
                    run_validation(r, mlog, log)
                if r.step % cfg.ckpt_every == 0 or r.step == stop_at:
                    check_finite(r, meter)
                    save(r, "last.pt")
    finally:
        if mlog:
            mlog.close()


def run(cfg: TrainConfig, resume: bool = False, explicit=()) -> dict:
    """Train according to ``cfg``; ``explicit`` names the settings the user gave (on ``--resume`` the
    others come from the checkpoint). Returns a summary; raises BlurforgeError subclasses."""
    dd = Dist(cfg.device)

    def log(msg):
        if dd.main:
            say(msg, err=True)

    try:
        cfg, state, path = settle(cfg, resume, set(explicit), dd, log)
        r = build(cfg, dd, log)
        if state is not None:
            restore(r, state, path, log)
        fit(r, log)
        if r.step >= r.total:
            if dd.main:
                export(r, log)
        else:
            log(f"stopped at step {r.step} of {r.total}; continue with --resume --out {r.out}")
        dd.barrier()
        return {"step": r.step, "total_steps": r.total, "best_psnr": r.best if r.best > -math.inf else None,
                "val": r.last_val, "out": str(r.out), "model": r.net}
    finally:
        dd.close()


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT_MAP)


@click.command(cls=greedy_command(("--shards", "--val-shards")), context_settings=CONTEXT)
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_config_callback,
              help="Settings file (.toml, or .yaml with PyYAML); keys are the long flag names "
                   "(dashes or underscores), model overrides under [model]. Flags given on the "
                   "command line win. Every run saves its full settings to OUT/train.toml.")
@settings_options
@click.option("--resume", is_flag=True, help="Continue the run in OUT from last.pt (last.prev.pt if "
                                             "last.pt is unreadable).")
@click.pass_context
@friendly
def main(ctx, resume, **kw):
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
    explicit = {k for k in kw if ctx.get_parameter_source(k) in GIVEN}
    file_model = ctx.meta.get("dsanet.config_model", {})
    if file_model:
        explicit.add("model")
    cfg = TrainConfig(**{**kw, "shards": list(kw["shards"]), "val_shards": list(kw["val_shards"]),
                         "model": {**file_model, **kw["model"]}})
    if not cfg.shards and resume and (Path(cfg.out) / "train.toml").exists():
        prev = read_config_file(Path(cfg.out) / "train.toml")
        cfg.shards = prev.get("shards", [])
        cfg.val_shards = cfg.val_shards or prev.get("val_shards", [])
    if not cfg.shards:
        raise DataError("no shards given: use --shards data/*.h5 (or a folder of shards)")
    return run(cfg, resume=resume, explicit=explicit)


if __name__ == "__main__":
    main()
