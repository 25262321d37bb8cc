"""Extract throughput and peak memory at 1080p, against ffmpeg's own decode in the same run.

Prints JSON: frames/s of `extract` (windows 36 and 73 in one pass) and of `ffmpeg -i clip -f null -`
on the same clip (the decode ceiling), their ratio, and the peak RSS of extract on a clip and on one
three times longer (memory must not grow with clip length).

    python bench/extract.py [--size 1920x1080] [--frames 480] [--repeats 5] [--keep DIR]
    python bench/extract.py --keep DIR --repeats 5 --baseline 1e28007

The two are run alternately; the ratio is the median of the per-repeat ratios, with their range
(this shared 2-core machine moves by +-10% from run to run). CPU seconds (user + system) are
reported beside wall time: they move less with other users' load.

``--baseline no-motion`` times the working tree against itself with its motion work (tracking,
gains, local motion) replaced by stubs (identity warps, gains of 1, no motion): exactly what that
work adds. ``--baseline REV`` also times extract as it was at git revision REV (its ``blurforge`` package
exported to a temp folder, with the working tree's compiled kernel copied in so both use it) on
the same clips (``--baseline-on``: the clip, and the 3x longer one, which has more pairs), repeats
alternating ffmpeg / before / after, and reports both ratios to ffmpeg, the time extract added
(after / before - 1, wall and CPU), and a per-stage profile of the per-pair motion work of the
working tree (``track_window``, ``measure_ratios`` + ``fit_gains``, ``FlowMeter.step``) on the
clip's own small frames, with the share of extract's CPU time it accounts for. ``--interpolate
off|auto|K`` sets the working tree's ``extract --interpolate`` (the baseline runs as it was).

``--interp`` is the sub-frame interpolation benchmark: a 1 s clip (960 frames at 960 fps) with the
disc crossing at ``--object-speed`` px/frame at 640 px width (4: 12 px/frame at 1080p; it re-enters
on the left, so every window needs interpolation), extract with ``--interpolate auto`` and ``off``
alternating with ffmpeg's decode: both ratios (wall and CPU), the share of frames averaged, the
shard's ``meta/<W>/interp_*`` per pair (whether every pair was interpolated), and a profile of one
instrumented run: ``interval_fix`` per interval and its parts (flow, source maps, remaps).
``--scalar-lookups`` runs the working tree's averaging with the C kernel's scalar table lookups, as
on a CPU without AVX-512 VBMI (``lookup_kernel`` in the report says which ran).

    python bench/extract.py --interp --keep DIR --repeats 3 [--stride 73] [--object-speed 4]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blurforge.synth import SynthConfig, synthesize  # noqa: E402
from blurforge.video import ffmpeg_exe  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
import blurforge
from blurforge.extract import ExtractOptions, extract_clip
kw = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
kw.setdefault("windows", [36, 73])
scalar = kw.pop("scalar_lookups", False)
try:
    from blurforge import _linear
    if scalar:
        _linear.simd(False)
    lookups = _linear.simd()
except (ImportError, AttributeError):
    lookups = None
if kw.pop("no_motion", False):   # the same extract without its motion work (--baseline no-motion)
    import numpy as np
    import blurforge.extract as ex
    from blurforge.motion import Step, Track
    ex.track_window = lambda g, c: Track(np.tile(np.eye(2, 3), (len(g), 1, 1)), np.ones(len(g), np.float32))
    ex.linear_small = lambda g, lut, video_range: g
    ex.measure_ratios = lambda lin, c, warps, lut: np.ones(len(lin))
    class Still:
        def step(self, *a, **k):
            return Step(0.0, 0.0, None)
    ex.FlowMeter = Still
t = time.perf_counter()
s = extract_clip(sys.argv[1], ExtractOptions(out=Path(sys.argv[2]), overwrite=True, **kw))
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": dt, "frames": s["frames_decoded"], "pairs": s["pairs"], "shard": s.get("shard"),
                  "cpu_seconds": ru.ru_utime + ru.ru_stime, "package": blurforge.__file__,
                  "fused_kernel": __import__("blurforge.averaging").averaging._accumulate_many is not None,
                  "peak_rss_mb": ru.ru_maxrss / 1024, "lookup_kernel": lookups}))
"""

NO_MOTION = "no-motion"


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_extract(clip: Path, out: Path, root: Path = ROOT, opts: dict | None = None) -> dict:
    """Run extract in a child process importing ``blurforge`` from ``root`` (the working tree or a
    baseline export): the child runs in ``root`` so nothing else on sys.path shadows it.
    ``opts``: ExtractOptions fields beside windows 36,73 (a baseline may not know newer ones).
    The previous run's output is removed first: replacing a shard unlinks the old one at the rename,
    ~35 ms at 1080p that a first extract does not pay."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(root))
    res = subprocess.run([sys.executable, "-c", CHILD, str(clip), str(out), json.dumps(opts or {})],
                         capture_output=True, text=True, cwd=root, env=env)
    if res.returncode:
        sys.exit(f"extract ({root}) failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    if not Path(r["package"]).resolve().is_relative_to(root.resolve()):
        sys.exit(f"the child imported {r['package']}, not the blurforge under {root}")
    return r


def ffmpeg_null(clip: Path, frames: int) -> tuple[float, float]:
    """(frames/s, CPU seconds) of ffmpeg decoding the clip to nothing."""
    cpu, t = _children_cpu(), time.perf_counter()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(clip), "-f", "null", "-"], check=True)
    return frames / (time.perf_counter() - t), _children_cpu() - cpu


def ffmpeg_null_fps(clip: Path, frames: int) -> float:
    return ffmpeg_null(clip, frames)[0]


def export_revision(rev: str, dest: Path) -> Path:
    """``blurforge`` as of git revision ``rev`` in ``dest``, plus the working tree's compiled kernels."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                             capture_output=True, text=True, check=True).stdout.strip()
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", sha, "blurforge"],
                             capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        sys.exit(f"--baseline {rev}: {(e.stderr or b'').strip() if isinstance(e.stderr, bytes) else e.stderr}")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    for so in [p for k in ("_linear", "_subframe", "_tenengrad") for p in (ROOT / "blurforge").glob(f"{k}*.so")]:
        shutil.copy2(so, dest / "blurforge" / so.name)
    return dest


def _med(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def _spread(xs: list[float], nd: int = 3) -> dict:
    return {"median": round(_med(xs), nd), "range": [round(min(xs), nd), round(max(xs), nd)]}


def profile_motion(clip: Path, pairs_spacing: int = 73, windows: tuple[int, ...] = (36, 73)) -> dict:
    """Time the working tree's per-pair motion work on the clip's own small grey frames.

    Decodes with FrameReader and builds the small frames as extract does, then for centres every
    ``pairs_spacing`` frames times ``track_window``, ``linear_small`` + ``measure_ratios`` +
    ``fit_gains``, and one ``FlowMeter.step`` per ``motion.flow_gap`` frames of the window (extract
    measures each step once, windows do not overlap at the default stride). Wall and thread-CPU
    milliseconds; ``per_window_frame``: divided by the largest window's frame count.
    """
    from blurforge import sharpness as sh
    from blurforge.averaging import half_span
    from blurforge.curves import curve_for
    from blurforge.motion import FlowMeter, flow_gap, track_window
    from blurforge.photometric import fit_gains, linear_small, measure_ratios
    from blurforge.video import FrameReader, probe

    info = probe(clip)
    reader = FrameReader(info)
    curve, _ = curve_for("auto", info.transfer)
    greys, ranges = [], []
    t = time.perf_counter()
    for frame in reader:
        _, quarter, _ = sh.grey_pyramid(frame.grey_half(full_range=False))
        greys.append(quarter)
        ranges.append(bool(frame.video_range))
    decode_s = time.perf_counter() - t
    H = max(half_span(w) for w in windows)
    scale = reader.width / greys[0].shape[1]
    flow = FlowMeter()
    stages: dict[str, list[tuple[float, float]]] = {"track_window": [], "measure_ratios+fit_gains": [],
                                                     "flow_steps": []}
    flow_one: list[tuple[float, float]] = []

    def gains(win, video_range, warps):
        lin = [linear_small(g, curve.lut, r) for g, r in zip(win, video_range)]
        return fit_gains(measure_ratios(lin, H, warps, curve.lut), info.fps, None)

    def clock(fn, *a):
        w, c = time.perf_counter(), time.thread_time()
        out = fn(*a)
        return out, (time.perf_counter() - w, time.thread_time() - c)

    centres = list(range(H, len(greys) - H, pairs_spacing))
    for c in centres:
        win = greys[c - H:c + H + 1]
        track, dt = clock(track_window, win, H)
        stages["track_window"].append(dt)
        _, dt = clock(gains, win, ranges[c - H:c + H + 1], track.warps)
        stages["measure_ratios+fit_gains"].append(dt)
        tot = [0.0, 0.0]
        gap = flow_gap(len(win))
        for i in range(gap, len(win), gap):
            _, dt = clock(flow.step, win[i - gap], win[i], track.step(i, gap), scale, gap)
            flow_one.append(dt)
            tot[0] += dt[0]
            tot[1] += dt[1]
        stages["flow_steps"].append(tuple(tot))
    nwin = 2 * H + 1
    out = {"small_frame": list(greys[0].shape[::-1]), "windows_profiled": len(centres), "window_frames": nwin,
           "decode_to_small_fps": round(len(greys) / decode_s, 1), "stages_ms_per_window": {},
           "stages_ms_per_window_frame": {}}
    per_pair = [0.0, 0.0]
    for name, v in stages.items():
        wall, cpu = _med([x[0] for x in v]) * 1e3, _med([x[1] for x in v]) * 1e3
        out["stages_ms_per_window"][name] = {"wall": round(wall, 1), "cpu": round(cpu, 1)}
        out["stages_ms_per_window_frame"][name] = {"wall": round(wall / nwin, 3), "cpu": round(cpu / nwin, 3)}
        per_pair[0] += wall
        per_pair[1] += cpu
    out["flow_step_ms"] = {"wall": round(_med([x[0] for x in flow_one]) * 1e3, 2),
                           "cpu": round(_med([x[1] for x in flow_one]) * 1e3, 2)}
    out["total_ms_per_window"] = {"wall": round(per_pair[0], 1), "cpu": round(per_pair[1], 1)}
    out["total_ms_per_window_frame"] = {"wall": round(per_pair[0] / nwin, 3), "cpu": round(per_pair[1] / nwin, 3)}
    return out


PROFILE_CHILD = """
import collections, json, sys, threading, time
from pathlib import Path
import cv2
import blurforge.extract as ex
import blurforge.interpolate as ip
rec = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])   # calls, inclusive wall, exclusive wall, thread CPU
local = threading.local()
def timed(name, fn):
    def f(*a, **k):
        st = getattr(local, "stack", None)
        if st is None:
            st = local.stack = []
        t0, c0 = time.perf_counter(), time.thread_time()
        st.append(0.0)
        try:
            return fn(*a, **k)
        finally:
            dt, nested = time.perf_counter() - t0, st.pop()
            r = rec[name]
            r[0] += 1; r[1] += dt; r[2] += dt - nested; r[3] += time.thread_time() - c0
            if st:
                st[-1] += dt
    return f
class Cv2:
    def __getattr__(self, n):
        return getattr(cv2, n)
for n in ("remap", "resize", "split", "merge", "scaleAdd", "multiply", "accumulateProduct", "cvtColor"):
    setattr(Cv2, n, staticmethod(timed("cv2." + n, getattr(cv2, n))))
ip.cv2 = Cv2()
for n in ("_flow", "_substeps", "_substeps_fused", "_bands", "_smear", "_half_end", "_changing", "_grey_codes"):
    if hasattr(ip, n):
        setattr(ip, n, timed(n, getattr(ip, n)))
for n in ("sample", "trust", "trust_packed"):
    if hasattr(ip._Side, n):
        setattr(ip._Side, n, timed("_Side." + n, getattr(ip._Side, n)))
fixes = []
inner = timed("interval_fix", ip.interval_fix)
def interval_fix(a, b, box, *args, **kw):
    t = time.perf_counter()
    fix = inner(a, b, box, *args, **kw)
    fixes.append((fix.factor, a.shape[0] * a.shape[1], time.perf_counter() - t))
    return fix
ex.interval_fix = interval_fix
ex._linear_crop = timed("_linear_crop", ex._linear_crop)
ex.SUBFRAME_WORKERS = 1      # one interval at a time: each stage's own cost, not contention
kw = json.loads(sys.argv[3])
t = time.perf_counter()
s = ex.extract_clip(sys.argv[1], ex.ExtractOptions(out=Path(sys.argv[2]), overwrite=True, **kw))
print(json.dumps({"seconds": time.perf_counter() - t, "pairs": s["pairs"], "frames": s["frames_decoded"],
                  "stages": {k: v for k, v in rec.items()}, "fixes": fixes}))
"""


def profile_interp(clip: Path, out: Path, opts: dict) -> dict:
    """One instrumented extract (interpolate auto, one sub-frame thread) in a child: wall time in
    ``interval_fix`` per corrected interval at full resolution, and inside it, exclusive of what
    they call, ``_flow`` (DIS, two per interval), ``_bands`` (the C kernel's passes: trust,
    sub-frames, smear), ``_Side.trust_packed``, ``_substeps_fused`` (their Python around it), or
    without the kernel ``_Side.trust``, ``_substeps``, ``_Side.sample``, ``_smear`` and the OpenCV
    calls they make (``cv2.*``); ``_half_end`` (odd windows' end half intervals), and the rest;
    beside them ``_linear_crop`` (the boxes to linear light)."""
    res = subprocess.run([sys.executable, "-c", PROFILE_CHILD, str(clip), str(out), json.dumps(opts)],
                         capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if res.returncode:
        sys.exit(f"profiled extract failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    fixes = [f for f in r["fixes"]]
    n = len(fixes)
    st = r["stages"]
    total_fix = st.get("interval_fix", [0, 0.0, 0.0, 0.0])[1]
    stages = {k: {"calls": v[0], "ms_per_interval": round(v[2] * 1e3 / max(1, n), 2),
                  "share_of_interval_fix": round(v[2] / total_fix, 3) if total_fix else None}
              for k, v in sorted(st.items(), key=lambda kv: -kv[1][2])}
    stages["interval_fix"]["note"] = "its own work (change mask, crop, factor), outside the calls listed"
    fx = [f[0] for f in fixes]
    return {
        "intervals": n, "profiled_extract_seconds": round(r["seconds"], 2),
        "interval_fix_ms": _spread([f[2] * 1e3 for f in fixes], 1) if n else None,
        "interval_fix_ms_mean": round(total_fix * 1e3 / max(1, n), 1),
        "interval_fix_total_s": round(total_fix, 2),
        "interval_fix_thread_cpu_s": round(st.get("interval_fix", [0, 0, 0, 0.0])[3], 2),
        "interval_fix_share_of_extract_wall": round(total_fix / r["seconds"], 3),
        "factor": _spread(fx, 1) if n else None,
        "box_megapixels": _spread([f[1] / 1e6 for f in fixes], 3) if n else None,
        "stages_exclusive": stages,
    }


def interp_meta(shard: str, windows: list[int]) -> dict:
    """Per window: pairs, intervals corrected per pair (median, range, the least), factor, confidence."""
    import h5py

    out = {}
    with h5py.File(shard, "r") as f:
        for w in windows:
            k = np.asarray(f[f"meta/{w}/interp_intervals"])
            fa = np.asarray(f[f"meta/{w}/interp_factor"])
            co = np.asarray(f[f"meta/{w}/interp_confidence"])
            mo = np.asarray(f[f"meta/{w}/motion_px"])
            out[str(w)] = {"pairs": int(k.size), "every_pair_interpolated": bool(k.size and (k > 0).all()),
                           "interp_intervals_per_pair": _spread(k.tolist(), 1), "least": int(k.min()),
                           "interp_factor": _spread(fa.tolist(), 1), "interp_confidence": _spread(co.tolist()),
                           "motion_px": _spread(mo.tolist(), 2)}
    return out


def interp_bench(args, keep: Path, d: Path) -> dict:
    """``--interp``: the 1 s 1080p clip with a fast object (every window needs interpolation),
    extract with interpolate auto and off, alternating with ffmpeg's decode; their ratios, the
    shard's interp_* fields and a profile of the interpolation."""
    w, h = (int(v) for v in args.size.split("x"))
    frames = args.frames or 960
    tag = f"{w}x{h}-{frames}-s{args.object_speed:g}-crf{args.crf}"
    clip = keep / f"interp-{tag}.mp4"
    t = time.perf_counter()
    if not clip.exists():
        synthesize(clip, SynthConfig(width=w, height=h, fps=960, frames=frames, flicker=0.04, seed=1, crf=args.crf,
                                     object_speed=args.object_speed))
    synth_s = time.perf_counter() - t
    base = {"windows": [36, 73], **({"scalar_lookups": True} if args.scalar_lookups else {})}
    if args.stride:
        base["stride"] = args.stride
    modes = ("auto", "off")
    load_before = os.getloadavg()
    ceilings, ff_cpu, runs = [], [], {m: [] for m in modes}
    for i in range(args.repeats):
        fps, cpu = ffmpeg_null(clip, frames)
        ceilings.append(fps)
        ff_cpu.append(cpu)
        for m in (modes if i % 2 == 0 else modes[::-1]):
            runs[m].append(run_extract(clip, d / f"out_{m}", opts={**base, "interpolate": m}))
    report = {"mode": "interp", "size": args.size, "frames": frames, "fps": 960, "windows": base["windows"],
              "stride": args.stride or "default (the largest window)", "cpus": os.cpu_count(),
              "object_px_per_frame": round(args.object_speed * w / 640, 1),
              "bitrate_mbps": round(clip.stat().st_size * 8 / (frames / 960) / 1e6, 1),
              "ffmpeg_null_fps": _spread(ceilings, 1), "synth_seconds": round(synth_s, 1)}
    for m in modes:
        rs = runs[m]
        report[m] = {"ratio_vs_ffmpeg_null": _spread([x["frames"] / x["seconds"] / c for x, c in zip(rs, ceilings)]),
                     "cpu_ratio_vs_ffmpeg_null": _spread([c / x["cpu_seconds"] for x, c in zip(rs, ff_cpu)]),
                     "extract_fps": _spread([x["frames"] / x["seconds"] for x in rs], 1),
                     "seconds": _spread([x["seconds"] for x in rs], 2),
                     "cpu_seconds": _spread([x["cpu_seconds"] for x in rs], 2),
                     "pairs": rs[0]["pairs"], "frames_averaged_share": round(rs[0]["pairs"] * 73 / rs[0]["frames"], 2),
                     "peak_rss_mb": round(max(x["peak_rss_mb"] for x in rs), 1),
                     "lookup_kernel": rs[0].get("lookup_kernel")}
    report["auto"]["target"], report["off"]["target"] = 0.3, 0.6
    report["auto_over_off_time"] = _spread([a["seconds"] / o["seconds"] for a, o in zip(runs["auto"], runs["off"])])
    report["interp_meta"] = interp_meta(runs["auto"][0]["shard"], base["windows"])
    report["load_average_before_after"] = [round(x, 2) for x in load_before + os.getloadavg()]
    if not args.no_profile:
        report["interp_profile"] = profile_interp(clip, d / "out_prof", {**base, "interpolate": "auto"})
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=None, help="clip length (default 480; 960 with --interp)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--crf", type=int, default=16, help="x264 quality of the synthetic clip")
    ap.add_argument("--keep", default=None, help="keep the clips in this folder (and reuse them)")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="also time extract as of this git revision, alternating with the working tree's "
                         f"({NO_MOTION!r}: the working tree with its motion work stubbed out)")
    ap.add_argument("--baseline-on", default="clip,long",
                    help="clips the before/after comparison runs on: clip, long (3x longer, more pairs) or both")
    ap.add_argument("--interpolate", default=None, help="the working tree's extract --interpolate (default: its own)")
    ap.add_argument("--interp", action="store_true",
                    help="the interpolation benchmark: 1 s clip, fast object, extract --interpolate auto and off")
    ap.add_argument("--object-speed", type=float, default=4.0, help="--interp: px/frame at 640 px width")
    ap.add_argument("--stride", type=int, default=None, help="--interp: extract's stride (default: its own)")
    ap.add_argument("--no-profile", action="store_true", help="--interp: skip the instrumented run")
    ap.add_argument("--scalar-lookups", action="store_true",
                    help="the working tree's averaging with the scalar table lookups (a CPU without AVX-512 VBMI)")
    args = ap.parse_args()
    if args.interp:
        with tempfile.TemporaryDirectory() as d:
            keep = Path(args.keep) if args.keep else Path(d)
            keep.mkdir(parents=True, exist_ok=True)
            print(json.dumps(interp_bench(args, keep, Path(d)), indent=2))
        return
    args.frames = args.frames or 480
    mine = {**({"interpolate": args.interpolate} if args.interpolate else {}),
            **({"scalar_lookups": True} if args.scalar_lookups else {})} or None
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
        base = (ROOT if args.baseline == NO_MOTION else
                export_revision(args.baseline, d / "baseline") if args.baseline else None)
        load_before = os.getloadavg()
        ceilings, ff_cpu, runs, base_runs = alternate(clip, args.frames, args.repeats, d, base, mine)
        ratios = sorted(run["frames"] / run["seconds"] / c for run, c in zip(runs, ceilings))
        ceiling = sorted(ceilings)[len(ceilings) // 2]
        r = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]
        fps = r["frames"] / r["seconds"]
        long_run = run_extract(long, d / "out_long", opts=mine)
        long_ceiling = ffmpeg_null_fps(long, 3 * args.frames)
        report = {
            "size": args.size, "frames": args.frames, "windows": [36, 73], "cpus": os.cpu_count(),
            "interpolate": args.interpolate or "default",
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
            "fused_kernel": r["fused_kernel"], "lookup_kernel": r.get("lookup_kernel"),
            "synth_seconds": round(synth_s, 1),
        }
        if base is not None:
            prof = profile_motion(clip)
            report["before_after"] = {"clip": baseline_report(args.baseline, runs, base_runs, ceilings, ff_cpu, prof)}
            if args.baseline_on == "both" or "long" in args.baseline_on.split(","):
                lc, lf, lr, lb = alternate(long, 3 * args.frames, args.repeats, d, base, mine)
                report["before_after"]["long"] = baseline_report(args.baseline, lr, lb, lc, lf, prof)
            report["profile_after"] = prof
        report["load_average_before_after"] = [round(x, 2) for x in load_before + os.getloadavg()]
        print(json.dumps(report, indent=2))


def alternate(clip: Path, frames: int, repeats: int, d: Path, base: Path | None,
              opts: dict | None = None) -> tuple[list, list, list, list]:
    """Repeats of ffmpeg, then extract (working tree, with ``opts``), or with ``base`` ffmpeg then
    before and after extract in alternating order: (ffmpeg fps, ffmpeg CPU s, after runs, before runs)."""
    ceilings, ff_cpu, runs, base_runs = [], [], [], []
    for i in range(repeats):
        fps, cpu = ffmpeg_null(clip, frames)
        ceilings.append(fps)
        ff_cpu.append(cpu)
        if base is None:
            runs.append(run_extract(clip, d / "out", opts=opts))
            continue
        for which in (("before", "after") if i % 2 == 0 else ("after", "before")):
            if which == "before":
                base_runs.append(run_extract(clip, d / "out_before", base,
                                             {**(opts or {}), "no_motion": True} if base == ROOT else None))
            else:
                runs.append(run_extract(clip, d / "out", opts=opts))
    return ceilings, ff_cpu, runs, base_runs


def baseline_report(rev: str, runs: list, base_runs: list, ceilings: list, ff_cpu: list, prof: dict) -> dict:
    """Before/after figures of ``--baseline`` on one clip (runs[i], base_runs[i] and ceilings[i]
    share repeat i); ratios are ffmpeg's time over extract's (wall or CPU): 1 is the decode ceiling."""
    def side(rs):
        return {"ratio_vs_ffmpeg_null": _spread([x["frames"] / x["seconds"] / c for x, c in zip(rs, ceilings)]),
                "cpu_ratio_vs_ffmpeg_null": _spread([c / x["cpu_seconds"] for x, c in zip(rs, ff_cpu)]),
                "seconds": _spread([x["seconds"] for x in rs], 2),
                "cpu_seconds": _spread([x["cpu_seconds"] for x in rs], 2),
                "pairs": rs[0]["pairs"], "frames_averaged_share": round(rs[0]["pairs"] * 73 / rs[0]["frames"], 2),
                "fused_kernel": rs[0]["fused_kernel"]}

    sha = rev if rev == NO_MOTION else subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                                                      capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "blurforge"], capture_output=True,
                           text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    after_s = _med([x["seconds"] for x in runs])
    after_cpu = _med([x["cpu_seconds"] for x in runs])
    pairs = runs[0]["pairs"]
    frames = runs[0]["frames"]
    # the motion work extract does on this clip (CPU s): per pair track + gains + one flow step per frame pair
    est = pairs * prof["total_ms_per_window"]["cpu"] / 1e3
    return {
        "before": {"rev": sha, **side(base_runs)},
        "after": {"rev": head + ("+dirty" if dirty else ""), **side(runs)},
        "added_time": {
            "wall": _spread([a["seconds"] / b["seconds"] - 1 for a, b in zip(runs, base_runs)]),
            "cpu": _spread([a["cpu_seconds"] / b["cpu_seconds"] - 1 for a, b in zip(runs, base_runs)]),
            "wall_of_medians": round(after_s / _med([x["seconds"] for x in base_runs]) - 1, 3),
        },
        "motion_work_cpu_seconds_estimate": round(est, 2),
        "motion_work_share_of_extract_wall": round(est / after_s, 3),
        "motion_work_share_of_extract_cpu": round(est / after_cpu, 3),
        "motion_work_ms_per_decoded_frame": round(est * 1e3 / frames, 2),
    }


if __name__ == "__main__":
    main()
