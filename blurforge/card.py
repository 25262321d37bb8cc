"""``blurforge card``: a dataset card (Hugging Face style ``README.md``) with plots and a contact sheet.

Every number comes from the shards themselves: counts and sizes from their attributes, blur strength
as PSNR(blur/<W>, sharp) computed from the pixels (:func:`blurforge.metrics.psnr`), motion, gains
and ghosting from ``meta/<W>``, exposure from ``blur/<W>``'s ``exposure_s``, alignment from
``align/<W>``, and how the data was made (commands, tool versions) from the attributes the tools
recorded. Per-pair ``meta/<W>`` fields this module does not know (newer extract versions add some)
are summarised too, where present. Splits follow the same rule as ``blurforge export``: the split
list naming a shard, else its ``split`` attribute, else ``unsplit``. ``stats.json`` beside the card
holds every figure the card prints.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_write, atomic_write_text
from .errors import BlurforgeError
from .export import LIST_SPLITS, SplitLists, shard_split, write_png
from .metrics import psnr
from .shards import attr_str, decode_attr, open_shard, window_labels

KNOWN_META = {"first", "last", "gains", "motion_px", "ghosting"}
PLOTS = {"psnr": "PSNR(blur, sharp) [dB]", "motion": "largest motion in the window [px/frame]",
         "gain_swing": "flicker gain swing, (max - min) / 2 of the per-frame gains [%]"}


def need_matplotlib():
    """pyplot on the headless Agg backend; a one-line error when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise BlurforgeError("blurforge card draws its plots with matplotlib: pip install 'blurforge[card]'") \
            from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def size_category(n: int) -> str:
    """Hugging Face's size_categories bucket for n examples."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M"


def describe(values) -> dict:
    """count, mean, median, p10, p90, min, max of the finite values (rounded for the card)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"count": 0}
    r = lambda x: round(float(x), 3)  # noqa: E731
    return {"count": int(v.size), "mean": r(v.mean()), "median": r(np.median(v)),
            "p10": r(np.percentile(v, 10)), "p90": r(np.percentile(v, 90)), "min": r(v.min()), "max": r(v.max())}


# ---- reading ---------------------------------------------------------------------------------

def read_shard(path: Path, root: Path, lists: SplitLists, sample: int = 0) -> dict:
    """Everything the card needs from one shard (per-pair arrays kept for the distributions)."""
    from .inspect import sample_indices
    from .split import source_of

    src = source_of(path, root)
    with open_shard(path) as f:
        n = int(f["sharp"].shape[0])
        h, w = int(f["sharp"].shape[1]), int(f["sharp"].shape[2])
        rec = {"path": str(path), "rel": src.rel, "pairs": n, "size": f"{w}x{h}", "source": src.source_name,
               "source_key": src.source_key, "kind": attr_str(f, "kind") or "?",
               "split": shard_split(path, f, lists, "unsplit"),
               "tool_version": attr_str(f, "tool_version", "?"), "fps": None, "windows": {}, "attrs": {}}
        for k in ("fps", "camera_curve", "mains_hz", "window_frames", "source_name", "blur_dir", "sharp_dir",
                  "sequence", "command", "truncated"):
            if k in f.attrs:
                rec["attrs"][k] = decode_attr(f.attrs[k])
        rec["fps"] = rec["attrs"].get("fps")
        idx = np.arange(n) if not sample else np.asarray(sample_indices(n, sample), np.int64)
        sharps = {int(i): f["sharp"][int(i)] for i in idx}
        for lab in window_labels(f):
            ds = f[f"blur/{lab}"]
            d: dict = {"psnr": [psnr(ds[i], sharps[i]) for i in sharps], "pairs": n,
                       "exposure_s": float(ds.attrs["exposure_s"]) if "exposure_s" in ds.attrs else None,
                       "curve": attr_str(ds, "averaging_curve") or rec["attrs"].get("camera_curve") or "?"}
            meta = f.get(f"meta/{lab}")
            if meta is not None:
                if "motion_px" in meta:
                    d["motion"] = meta["motion_px"][()].astype(np.float64)
                if "ghosting" in meta:
                    d["ghosting"] = meta["ghosting"][()].astype(bool)
                if "gains" in meta:
                    g = meta["gains"][()].astype(np.float64)
                    d["gain_swing"] = (g.max(axis=1) - g.min(axis=1)) / 2 * 100 if g.size else np.zeros(0)
                    d["corrected"] = np.any(g != 1.0, axis=1) if g.size else np.zeros(0, bool)
                d["extra"] = {k: meta[k][()] for k in meta if k not in KNOWN_META
                              and hasattr(meta[k], "shape") and meta[k].ndim == 1 and meta[k].shape[0] == n
                              and (meta[k].dtype.kind in "biuf")}
            a = f.get(f"align/{lab}")
            if a is not None and "ok" in a:
                d["align"] = {"ok": a["ok"][()].astype(bool), "motion": attr_str(a, "motion", "?"),
                              "min_score": decode_attr(a.attrs.get("min_score")),
                              "max_shift": decode_attr(a.attrs.get("max_shift")),
                              "tool_version": attr_str(a, "tool_version", "?")}
            rec["windows"][lab] = d
    return rec


def _cat(ds: list[dict], key: str) -> np.ndarray:
    """One per-pair array of all windows ``ds`` that have ``key``."""
    return np.concatenate([np.asarray(d[key], np.float64) for d in ds if key in d] or [np.zeros(0)])


def _window_order(labels) -> list[str]:
    return sorted(labels, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))


def commands(recs: list[dict], split_cmd: str | None) -> list[dict]:
    """How the shards were made: one entry per distinct command line, with its shards and tool versions."""
    seen: dict[str, dict] = {}

    def add(cmd, version, note=None):
        e = seen.setdefault(cmd, {"command": cmd, "shards": 0, "tool_versions": set(), "notes": {}})
        e["shards"] += 1
        e["tool_versions"].add(version)
        if note:
            e["notes"][note] = e["notes"].get(note, 0) + 1

    for r in recs:
        a = r["attrs"]
        if "command" in a:
            add(str(a["command"]), r["tool_version"])
        elif r["kind"] == "video":
            hz = 2 * float(a.get("mains_hz", 0) or 0)
            wins = ",".join(str(x) for x in a.get("window_frames", list(r["windows"])))
            add(f"blurforge extract CLIPS --windows {wins} --crf {a.get('camera_curve', '?')}"
                + (" --flicker off" if hz == 0 else ""), r["tool_version"],
                f"flicker fitted at {hz:g} Hz" if hz else None)
        elif r["kind"] == "gopro":
            add(f"blurforge import gopro {a.get('source_name', 'GOPRO_Large')}", r["tool_version"])
        elif r["kind"] == "pairs":
            lab = next(iter(r["windows"]), "?")
            add(f"blurforge import pairs {a.get('blur_dir', 'BLUR_DIR')} {a.get('sharp_dir', 'SHARP_DIR')} "
                f"--label {lab}", r["tool_version"])
        aligned = {(d["align"]["motion"], d["align"]["min_score"], d["align"]["max_shift"], d["align"]["tool_version"])
                   for d in r["windows"].values() if "align" in d}
        for motion, ms, mx, ver in sorted(aligned, key=str):
            add(f"blurforge align --motion {motion} --min-score {ms:g} --max-shift {mx:g}"
                if isinstance(ms, (int, float)) and isinstance(mx, (int, float))
                else f"blurforge align --motion {motion}", ver)
    out = [{**e, "tool_versions": sorted(e["tool_versions"])} for e in seen.values()]
    if split_cmd:
        out.append({"command": split_cmd, "shards": len(recs), "tool_versions": [], "notes": {}})
    return out


def _split_command(root: Path) -> str | None:
    for sp in LIST_SPLITS:
        p = root / f"{sp}.txt"
        if p.is_file():
            for line in p.read_text().splitlines():
                if line.startswith("# made by: "):
                    return line[len("# made by: "):].split("  (blurforge")[0].strip()
    return None


def _count(items) -> dict:
    out: dict = {}
    for k, v in items:
        out[k] = out.get(k, 0) + v
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


def collect(root, sample: int = 0, progress=None) -> tuple[dict, list[dict]]:
    """All figures of the card for the shards under ``root``: (stats, per-shard records)."""
    from .cliutil import find_shards

    root = Path(root)
    if not root.is_dir():
        raise BlurforgeError(f"{root}: no such folder")
    lists = SplitLists()
    recs = []
    for p in find_shards([root], default=None):
        recs.append(read_shard(p, root, lists, sample))
        if progress:
            progress(1)
    labels = _window_order({lab for r in recs for lab in r["windows"]})
    splits = [sp for sp in (*LIST_SPLITS, "unsplit") if any(r["split"] == sp for r in recs)]
    splits += sorted({r["split"] for r in recs} - set(splits))
    st: dict = {"tool": f"blurforge {__version__}", "root": str(root), "shards": len(recs),
                "pairs": sum(r["pairs"] for r in recs), "sources": len({r["source_key"] for r in recs}),
                "windows": labels, "sample_per_shard": sample or None}
    st["splits"] = {sp: {"shards": sum(r["split"] == sp for r in recs),
                         "pairs": sum(r["pairs"] for r in recs if r["split"] == sp),
                         "sources": len({r["source_key"] for r in recs if r["split"] == sp}),
                         "pairs_per_window": {lab: sum(r["pairs"] for r in recs if r["split"] == sp
                                                       and lab in r["windows"]) for lab in labels}}
                    for sp in splits}
    st["per_source"] = {}
    for r in recs:
        s = st["per_source"].setdefault(r["source_key"], {"name": r["source"], "shards": 0, "pairs": 0,
                                                          "splits": set(), "kind": r["kind"]})
        s["shards"] += 1
        s["pairs"] += r["pairs"]
        s["splits"].add(r["split"])
    for s in st["per_source"].values():
        s["splits"] = sorted(s["splits"])
    st["kinds"] = _count((r["kind"], 1) for r in recs)
    st["resolutions"] = _count((r["size"], r["pairs"]) for r in recs)
    st["frame_rates"] = _count((f"{r['fps']:g}" if r["fps"] else "n/a (imported)", r["pairs"]) for r in recs)
    st["camera_curves"] = _count((d["curve"], r["pairs"]) for r in recs for d in r["windows"].values())
    st["tool_versions"] = sorted({r["tool_version"] for r in recs})
    st["commands"] = commands(recs, _split_command(root))
    st["per_window"] = {}
    for lab in labels:
        ds = [r["windows"][lab] for r in recs if lab in r["windows"]]
        ps = np.asarray([v for d in ds for v in d["psnr"]], np.float64)
        w: dict = {"pairs": sum(d["pairs"] for d in ds), "psnr_db": describe(ps),
                   "psnr_identical": int(np.isinf(ps).sum()), "motion_px_per_frame": describe(_cat(ds, "motion")),
                   "exposure_ms": _count((round(1000 * d["exposure_s"], 3), d["pairs"]) for d in ds
                                         if d["exposure_s"] is not None)}
        gh = [d["ghosting"] for d in ds if "ghosting" in d]
        if gh:
            gh = np.concatenate(gh)
            w["ghosting"] = {"pairs": int(gh.sum()), "of": int(gh.size)}
        cor = [d["corrected"] for d in ds if "corrected" in d]
        if cor:
            cor = np.concatenate(cor)
            w["flicker"] = {"corrected_pairs": int(cor.sum()), "of": int(cor.size),
                            "gain_swing_pct": describe(_cat(ds, "gain_swing"))}
        al = [d["align"] for d in ds if "align" in d]
        if al:
            ok = np.concatenate([a["ok"] for a in al])
            w["alignment"] = {"aligned_pairs": int(ok.size), "rejected": int((~ok).sum()),
                              "motion": sorted({a["motion"] for a in al})}
        extra: dict = {}
        for name in sorted({k for d in ds for k in d.get("extra", {})}):
            vals = np.concatenate([np.asarray(d["extra"][name]) for d in ds if name in d.get("extra", {})])
            extra[name] = ({"true": int(vals.astype(bool).sum()), "of": int(vals.size)} if vals.dtype.kind == "b"
                           else describe(vals))
        if extra:
            w["other_meta"] = extra
        st["per_window"][lab] = w
    return st, recs


# ---- plots -----------------------------------------------------------------------------------

def _save(fig, path: Path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def plot_all(st: dict, recs: list[dict], out: Path) -> dict[str, str]:
    """PNG plots into ``out``: histograms per window of PSNR, motion and gain swing; pairs per split."""
    plt = need_matplotlib()
    files = {}
    for key, xlabel in PLOTS.items():
        series = {}
        for lab in st["windows"]:
            v = [np.asarray(r["windows"][lab][key], np.float64) if key != "psnr"
                 else np.asarray(r["windows"][lab]["psnr"], np.float64)
                 for r in recs if lab in r["windows"] and key in r["windows"][lab]]
            v = np.concatenate(v) if v else np.zeros(0)
            v = v[np.isfinite(v)]
            if v.size:
                series[lab] = v
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        lo = min(float(s.min()) for s in series.values())
        hi = max(float(s.max()) for s in series.values())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        for lab, v in series.items():
            ax.hist(v, bins=bins, alpha=0.6, label=f"window {lab} ({v.size} pairs)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"{key}.png"
        _save(fig, out / name)
        plt.close(fig)
        files[key] = name
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    names = list(st["splits"])
    bottom = np.zeros(len(names))
    for lab in st["windows"]:
        vals = np.array([st["splits"][sp]["pairs_per_window"][lab] for sp in names], float)
        ax.bar(names, vals, bottom=bottom, label=f"window {lab}")
        bottom += vals
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out / "splits.png")
    plt.close(fig)
    files["splits"] = "splits.png"
    return files


# ---- the card --------------------------------------------------------------------------------

def _table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _d(d: dict, unit: str = "") -> list:
    if not d.get("count"):
        return ["-"] * 5
    return [f"{d['median']:g}{unit}", f"{d['p10']:g}{unit}", f"{d['p90']:g}{unit}", f"{d['min']:g}{unit}",
            f"{d['max']:g}{unit}"]


def render(st: dict, plots: dict, sheet: str | None, name: str, license_: str) -> str:
    """The card's Markdown, front matter first."""
    wins = st["windows"]
    front = ["---", f"license: {license_}", f"pretty_name: {json.dumps(name)}", "task_categories:",
             "- image-to-image", "tags:", "- image-deblurring", "- motion-blur", "- high-speed-video",
             "- blurforge", "size_categories:", f"- {size_category(st['pairs'])}", "---", ""]
    L = front + [f"# {name}", ""]
    L += [f"Paired sharp / motion-blurred images for training and evaluating deblurring networks: "
          f"**{st['pairs']} pairs** from **{st['sources']} source(s)** in {st['shards']} HDF5 shard(s), "
          f"blur windows {', '.join(wins)}. Each blurred image is an average of consecutive high-speed frames in "
          f"linear light, exactly centred on its sharp frame (video shards), or imported from an existing "
          f"dataset. Made with blurforge {', '.join(st['tool_versions'])}; this card by {st['tool']}, every number "
          f"below computed from the shards themselves.", ""]
    L += ["## Layout", "",
          "One HDF5 shard per clip (format: blurforge's `data/README.md`): `sharp` and `blur/<W>` uint8 "
          "`[N, H, W, 3]` RGB, per-pair metadata under `meta/<W>/`, alignment under `aligned/<W>` and "
          "`align/<W>`. Split lists `train.txt`, `val.txt`, `test.txt` (one shard a line) are read by every "
          "tool as `@train.txt`; no source is in two splits.", "",
          "```python", "from blurforge.shards import label_source, open_shard",
          "with open_shard(\"clip.h5\") as f:", "    src = label_source(f, \"" + (wins[0] if wins else "73") + "\")",
          "    for i in src.usable():", "        sharp, blur = f[\"sharp\"][i], f[src.dataset][i]", "```", "",
          "`blurforge export SHARDS --format gopro|pairs --out DIR` writes GoPro-style or BasicSR paired PNG "
          "folders for other trainers.", ""]
    rows = [[sp, d["shards"], d["sources"], d["pairs"]] + [d["pairs_per_window"][w] for w in wins]
            for sp, d in st["splits"].items()]
    L += ["## Splits", "", _table(["split", "shards", "sources", "pairs"] + [f"window {w}" for w in wins], rows), ""]
    if "splits" in plots:
        L += [f"![pairs per split]({plots['splits']})", ""]
    src_rows = sorted(st["per_source"].items(), key=lambda kv: -kv[1]["pairs"])
    L += ["## Sources", "", _table(["source", "kind", "shards", "pairs", "split"],
                                   [[s["name"], s["kind"], s["shards"], s["pairs"], ", ".join(s["splits"])]
                                    for _, s in src_rows[:50]])]
    if len(src_rows) > 50:
        L += ["", f"... and {len(src_rows) - 50} more sources (`stats.json` has them all)."]
    L += ["", "## Capture", "",
          _table(["resolution", "pairs"], list(st["resolutions"].items())), "",
          _table(["frame rate (fps)", "pairs"], list(st["frame_rates"].items())), "",
          _table(["camera curve (blur averaged through)", "pair-windows"], list(st["camera_curves"].items())), ""]
    L += ["## Blur", "",
          "PSNR(blur, sharp) in dB on RGB uint8 codes (lower = stronger blur)"
          + (f", from {st['sample_per_shard']} evenly spaced pairs per shard" if st["sample_per_shard"] else
             ", every pair") + "; motion is the largest frame-to-frame motion inside each window "
          "(`meta/<W>/motion_px`); exposure is `W / fps` (`blur/<W>` attribute `exposure_s`).", ""]
    rows = []
    for w in wins:
        d = st["per_window"][w]
        rows.append([w, d["pairs"], "PSNR dB"] + _d(d["psnr_db"]))
        rows.append([w, d["pairs"], "motion px/frame"] + _d(d["motion_px_per_frame"]))
    L += [_table(["window", "pairs", "quantity", "median", "p10", "p90", "min", "max"], rows), ""]
    ident = {w: st["per_window"][w]["psnr_identical"] for w in wins if st["per_window"][w]["psnr_identical"]}
    if ident:
        L += ["Pairs whose blur equals the sharp image (no PSNR): "
              + ", ".join(f"window {w}: {n}" for w, n in ident.items()) + ".", ""]
    exp_rows = [[w, f"{ms:g} ms", n] for w in wins for ms, n in st["per_window"][w]["exposure_ms"].items()]
    if exp_rows:
        L += [_table(["window", "exposure", "pairs"], exp_rows), ""]
    for key, alt in (("psnr", "PSNR histogram"), ("motion", "motion histogram")):
        if key in plots:
            L += [f"![{alt}]({plots[key]})", ""]
    L += ["## Flicker, ghosting, alignment", ""]
    rows = []
    for w in wins:
        d = st["per_window"][w]
        fl = d.get("flicker")
        gh = d.get("ghosting")
        al = d.get("alignment")
        rows.append([w, f"{fl['corrected_pairs']} / {fl['of']}" if fl else "-",
                     f"{fl['gain_swing_pct']['median']:g}% / {fl['gain_swing_pct']['max']:g}%"
                     if fl and fl["gain_swing_pct"].get("count") else "-",
                     f"{gh['pairs']} / {gh['of']}" if gh else "-",
                     f"{al['rejected']} / {al['aligned_pairs']} ({', '.join(al['motion'])})" if al else "not aligned"])
    L += [_table(["window", "flicker-corrected pairs", "gain swing median / max", "ghosting (motion > 1 px/frame)",
                  "alignment rejected"], rows), "",
          "Flicker-corrected: pairs whose per-frame gains (`meta/<W>/gains`, divided out before averaging) are "
          "not all 1; the swing is half their range. Ghosting: the window moved more than 1 px between frames, "
          "so the average may show steps instead of a smooth streak. Rejected pairs (`align/<W>/ok = False`) "
          "stay in the shards and are skipped by readers.", ""]
    if "gain_swing" in plots:
        L += [f"![gain swing histogram]({plots['gain_swing']})", ""]
    other = {w: st["per_window"][w]["other_meta"] for w in wins if "other_meta" in st["per_window"][w]}
    if other:
        rows = []
        for w, fields in other.items():
            for k, v in fields.items():
                rows.append([w, f"`meta/{w}/{k}`", f"{v['true']} of {v['of']} true" if "true" in v
                             else " / ".join(_d(v)) if v.get("count") else "-"])
        L += ["Other per-pair fields (median / p10 / p90 / min / max, or how many are true):", "",
              _table(["window", "field", "values"], rows), ""]
    L += ["## How it was made", "", "Reconstructed from the attributes each tool wrote into the shards "
          "(the clip list itself is not recorded):", ""]
    for c in st["commands"]:
        ver = f" (blurforge {', '.join(c['tool_versions'])})" if c["tool_versions"] else ""
        notes = "; ".join(f"{k}: {v} shard(s)" for k, v in sorted(c["notes"].items()))
        L += [f"- `{c['command']}` - {c['shards']} shard(s){ver}" + (f"; {notes}" if notes else "")]
    L += [""]
    if sheet:
        L += ["## Examples", "", "Rows of sharp | blur per window | difference heat map per window:", "",
              f"![contact sheet]({sheet})", ""]
    return "\n".join(L)


def write_card(root, out, name: str | None = None, license_: str = "other", sample: int = 0,
               sheet_rows: int = 6, progress=None) -> dict:
    """Write ``README.md``, ``stats.json``, the plots and ``contact_sheet.png`` into ``out``."""
    from .inspect import contact_sheet

    need_matplotlib()
    out = Path(out)
    st, recs = collect(root, sample, progress)
    if not recs:
        raise BlurforgeError(f"{root}: no shards")
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_all(st, recs, out)
    sheet = None
    if sheet_rows > 0 and st["pairs"]:
        step = max(1, math.ceil(len(recs) / sheet_rows))
        picks = [Path(r["path"]) for r in recs[::step] if r["pairs"]][:sheet_rows]
        write_png(out / "contact_sheet.png", contact_sheet(picks, rows_per_shard=1, tile=192, max_rows=sheet_rows))
        sheet = "contact_sheet.png"
    name = name or Path(root).resolve().name
    atomic_write_text(out / "README.md", render(st, plots, sheet, name, license_) + "\n")
    st["files"] = ["README.md", "stats.json", *plots.values(), *([sheet] if sheet else [])]
    atomic_write_text(out / "stats.json", json.dumps(st, indent=2, default=_jsonable) + "\n")
    return st


def _jsonable(o):
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    if isinstance(o, set):
        return sorted(o)
    raise TypeError(type(o).__name__)
