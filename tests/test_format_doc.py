"""data/README.md is a contract: every attribute and dataset of real shards is documented there.

Real shards are made through the CLI as a user would: a synthesised clip extracted (and a damaged
copy of it), the shard aligned, a GoPro-layout tree and a folder pair imported (PNG files written
with OpenCV) and aligned. Each shard is walked completely; every root attribute must be a row of the
doc's root-attribute table with a matching type, every dataset a row of a dataset table with a
matching dtype and shape, and every dataset or group attribute must be named in a table row or
paragraph of the doc that also names that dataset or group (patterns such as ``blur/<W>`` match any
label).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_clip, transcode

from blurforge.cli import main

DOC = Path(__file__).resolve().parents[1] / "data" / "README.md"


# ---- the document --------------------------------------------------------------------------------

def doc_sections(text: str) -> dict[str, str]:
    """Level-2 sections by title; ### subsections stay inside their section."""
    out, title = {}, ""
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        out[title] = out.get(title, "") + line + "\n"
    return out


def doc_blocks(text: str) -> list[str]:
    """Table rows and the sentences of list items and paragraphs: the units that say what a name means."""
    blocks: list[str] = []
    cur: list[str] = []
    for line in text.splitlines() + [""]:
        starts = line.startswith("|") or line.startswith("- ") or line.startswith("#") or not line.strip()
        if starts and cur:
            blocks += re.split(r"(?<=\.)\s+(?=[A-Z])", " ".join(cur))
            cur = []
        if line.startswith("|") or line.startswith("#"):
            blocks.append(line)
        elif line.strip():
            cur.append(line.strip())
    return blocks


def names_in(text: str) -> list[str]:
    """The names in backticks: `blur/<W>`, `meta/<W>/first`, `averaging_curve = "linear"` -> averaging_curve."""
    out = []
    for tok in re.findall(r"`([^`]+)`", text):
        m = re.match(r"[A-Za-z_][\w/<>*]*", tok.strip())
        if m:
            out.append(m.group(0))
    return out


def name_pattern(name: str) -> re.Pattern:
    """``blur/<W>`` and ``blur/*`` match ``blur/<any label>``."""
    parts = ["[^/]+" if p == "*" or re.fullmatch(r"<[^>]+>", p) else re.escape(p) for p in name.split("/")]
    return re.compile("/".join(parts))


def table_rows(section: str) -> list[tuple[list[str], str]]:
    """(names of the first cell, second cell) of every table row below a header."""
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or set(cells[0]) <= set("-: ") or not names_in(cells[0]):
            continue
        rows.append((names_in(cells[0]), cells[1]))
    return rows


def documented(name: str, names) -> bool:
    return any(name_pattern(d).fullmatch(name) for d in names)


@pytest.fixture(scope="module")
def doc():
    text = DOC.read_text()
    sec = doc_sections(text)
    root = {n: typ for names, typ in table_rows(sec["Root attributes"]) for n in names}
    datasets = {n: spec for names, spec in table_rows(sec["Datasets"]) for n in names}
    return {"root": root, "datasets": datasets, "blocks": doc_blocks(text)}


# ---- real shards ---------------------------------------------------------------------------------

def cli(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def write_png(path: Path, rgb: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def smooth(rng, h=80, w=96):
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """{name: path} of shards as extract, align and import write them."""
    d = tmp_path_factory.mktemp("formatdoc")
    out = {}
    clip = make_clip(d / "clip.mp4", frames=120, flicker=0.04, seed=5)
    code, text = cli("extract", clip, "--windows", "9,16", "--stride", "20", "--out", d / "video", "--quiet")
    assert code == 0, text
    out["extracted"] = shutil.copy(d / "video" / "clip.h5", d / "extracted.h5")
    code, text = cli("align", d / "video", "--quiet")
    assert code == 0, text
    out["aligned"] = d / "video" / "clip.h5"

    mkv = transcode(clip, d / "cut.mkv", "-c", "copy")
    damaged = d / "damaged.mkv"
    damaged.write_bytes(mkv.read_bytes()[:int(mkv.stat().st_size * 0.6)])
    code, text = cli("extract", damaged, "--windows", "9", "--stride", "12", "--out", d / "damaged", "--quiet")
    assert code != 0 and "kept" in text, text
    out["truncated"] = d / "damaged" / "damaged.h5"

    rng = np.random.default_rng(0)
    seq = d / "GOPRO_Large" / "train" / "GOPR0001_00_00"
    for i in (1, 2):
        sharp = smooth(rng)
        write_png(seq / "sharp" / f"{i:06d}.png", sharp)
        write_png(seq / "blur" / f"{i:06d}.png", cv2.blur(sharp, (5, 1)))
        write_png(seq / "blur_gamma" / f"{i:06d}.png", cv2.blur(sharp, (7, 1)))
    code, text = cli("import", "gopro", d / "GOPRO_Large", "--out", d / "gopro", "--quiet")
    assert code == 0, text
    out["gopro"] = shutil.copy(d / "gopro" / "gopro-train-GOPR0001_00_00.h5", d / "gopro.h5")
    code, text = cli("align", d / "gopro", "--quiet")
    assert code == 0, text
    out["gopro_aligned"] = d / "gopro" / "gopro-train-GOPR0001_00_00.h5"

    for i in range(3):
        sharp = smooth(rng)
        write_png(d / "pairs" / "sharp" / "scene" / f"f{i:03d}.png", sharp)
        write_png(d / "pairs" / "blur" / "scene" / f"f{i:03d}.png", cv2.blur(sharp, (1, 5)))
    code, text = cli("import", "pairs", d / "pairs" / "blur", d / "pairs" / "sharp", "--label", "mine",
                     "--split", "test", "--out", d / "pairs_out", "--quiet")
    assert code == 0, text
    out["pairs"] = shutil.copy(d / "pairs_out" / "mine.h5", d / "pairs.h5")
    code, text = cli("align", d / "pairs_out", "--quiet")
    assert code == 0, text
    out["pairs_aligned"] = d / "pairs_out" / "mine.h5"
    return out


def walk(path):
    """(root attrs {name: value}, datasets {path: (dtype, shape)}, object attrs [(object path, name)])."""
    datasets, attrs = {}, []
    with h5py.File(path, "r") as f:
        root = {k: f.attrs[k] for k in f.attrs}
        n, h, w = int(f.attrs["num_pairs"]), int(f.attrs["height"]), int(f.attrs["width"])

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                datasets[name] = (obj.dtype, obj.shape)
            attrs.extend((name, k) for k in obj.attrs)
        f.visititems(visit)
    return root, datasets, attrs, (n, h, w)


# ---- the checks ----------------------------------------------------------------------------------

ROOT_TYPES = {
    "str": lambda v: isinstance(v, (str, bytes)),
    "int": lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)),
    "float": lambda v: isinstance(v, (float, np.floating)),
    "bool": lambda v: isinstance(v, (bool, np.bool_)),
    "str[]": lambda v: isinstance(v, np.ndarray) and v.ndim == 1 and all(isinstance(x, (str, bytes)) for x in v),
    "int[]": lambda v: isinstance(v, np.ndarray) and v.ndim == 1 and np.issubdtype(v.dtype, np.integer),
    "int[2]": lambda v: isinstance(v, np.ndarray) and v.shape == (2,) and np.issubdtype(v.dtype, np.integer),
}


def dtype_matches(word: str, dtype: np.dtype) -> bool:
    if word == "str":
        return h5py.check_string_dtype(dtype) is not None
    return dtype == np.dtype(word)


def shape_matches(spec: str, shape: tuple, n: int, h: int, w: int) -> bool:
    dims = [d.strip() for d in spec.split(",")]
    known = {"N": n, "H": h, "W": w}
    return len(dims) == len(shape) and all(
        (int(d) == s) if d.isdigit() else (known.get(d, s) == s) for d, s in zip(dims, shape))


def attr_problems(obj: str, name: str, blocks: list[str]) -> bool:
    """True when no row or paragraph names both ``name`` and the object (pattern) it belongs to."""
    return not any(name in names_in(b) and documented(obj, names_in(b)) for b in blocks)


ALL = ["extracted", "aligned", "truncated", "gopro", "gopro_aligned", "pairs", "pairs_aligned"]


@pytest.mark.parametrize("kind", ALL)
def test_every_root_attribute_is_documented_with_its_type(shards, doc, kind):
    root, _, _, _ = walk(shards[kind])
    missing = [k for k in root if k not in doc["root"]]
    assert not missing, f"{kind}: root attributes not in data/README.md: {missing}"
    wrong = [(k, doc["root"][k], type(v).__name__) for k, v in root.items()
             if not ROOT_TYPES[doc["root"][k]](v)]
    assert not wrong, f"{kind}: root attributes of another type than documented: {wrong}"


@pytest.mark.parametrize("kind", ALL)
def test_every_dataset_is_documented_with_its_dtype_and_shape(shards, doc, kind):
    _, datasets, _, (n, h, w) = walk(shards[kind])
    for name, (dtype, shape) in datasets.items():
        rows = [spec for d, spec in doc["datasets"].items() if name_pattern(d).fullmatch(name)]
        assert rows, f"{kind}: dataset {name} is not in data/README.md"
        m = re.fullmatch(r"(\w+) \[([^\]]+)\]", rows[0])
        assert m, f"data/README.md: cannot read the dtype and shape {rows[0]!r} of {name}"
        assert dtype_matches(m.group(1), dtype), f"{kind}: {name} is {dtype}, documented {rows[0]}"
        assert shape_matches(m.group(2), shape, n, h, w), f"{kind}: {name} has shape {shape}, documented {rows[0]}"


@pytest.mark.parametrize("kind", ALL)
def test_every_dataset_and_group_attribute_is_documented(shards, doc, kind):
    _, _, attrs, _ = walk(shards[kind])
    missing = sorted({(obj, k) for obj, k in attrs if attr_problems(obj, k, doc["blocks"])})
    assert not missing, f"{kind}: attributes not documented beside their dataset/group: {missing}"


def test_the_walk_sees_what_each_writer_adds(shards):
    """The checks above cover real content: each kind of shard brings the names it should."""
    seen = {kind: walk(p) for kind, p in shards.items()}
    root_names = {k for r, _, _, _ in seen.values() for k in r}
    assert {"stopped_at", "window_frames", "truncated", "mains_hz", "split", "sequence", "blur_dir",
            "sharp_dir"} <= root_names
    ds_names = {k for _, d, _, _ in seen.values() for k in d}
    assert {"aligned/9", "align/16/margin", "meta/16/gains", "meta/sharpness", "camera_curve", "blur/gopro",
            "blur/gopro_gamma", "meta/name", "meta/sharp_name", "aligned/mine"} <= ds_names
    attr_names = {a for _, _, at, _ in seen.values() for a in at}
    assert {("blur/9", "weights"), ("aligned/16", "exposure_s"), ("align/9", "levels"), ("sharp", "sha256"),
            ("blur/gopro", "source_folder"), ("aligned/gopro_gamma", "averaging_curve")} <= attr_names
    root, _, _, _ = seen["extracted"]
    assert int(root["stopped_at"]) == -1 and list(root["window_frames"]) == [9, 16]
    root, _, _, _ = seen["truncated"]
    assert bool(root["truncated"]) and int(root["stopped_at"]) == int(root["frames_decoded"]) < 120
    with h5py.File(shards["truncated"], "r") as f:
        assert f["meta/9/last"][:].max() < int(root["stopped_at"])


def test_the_checks_catch_an_undocumented_name(doc):
    assert "stopped_at" in doc["root"] and "not_in_the_doc" not in doc["root"]
    assert documented("blur/73", doc["datasets"]) and documented("align/gopro/warp", doc["datasets"])
    assert not documented("blur/73/extra", doc["datasets"]) and not documented("secret", doc["datasets"])
    assert not attr_problems("blur/73", "exposure_frames", doc["blocks"])
    assert attr_problems("blur/73", "motion", doc["blocks"])            # an align/<W> attribute, not blur's
    assert attr_problems("sharp", "exposure_frames", doc["blocks"])
