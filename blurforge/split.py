"""``blurforge split``: train/val/test lists of shards that never share a source.

Shards are grouped before anything is drawn: shards of the same source (the same ``source_sha256``:
one clip extracted twice, or copied under another name; import shards, which have no checksum, by
their ``kind``, ``source_name`` and GoPro ``sequence``) are one group, and with ``group_by`` a
regular expression on the source name merges the groups whose names give the same match (one
scene filmed in several clips). Whole groups are then drawn into test and val until their share of
*pairs* is as close as it gets to the fractions asked; the rest is train. The draw is a shuffle of
the groups by ``seed``, so a seed gives the same lists on any machine.

The lists (``train.txt``, ``val.txt``, ``test.txt`` in the data folder) hold one shard path a
line, relative to that folder, after ``#`` comment lines that say how they were made; every
command that takes shards reads them as ``@data/train.txt`` (:func:`blurforge.cliutil.read_list`).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_write_text
from .errors import BlurforgeError
from .shards import attr_str, open_shard, read_header

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class ShardSource:
    """What a shard says about where it came from."""
    path: Path          # as found
    rel: str            # relative to the data folder, POSIX separators
    pairs: int
    source_key: str     # same key = same source (never split apart)
    source_name: str    # what --group-by is matched against


def source_of(path: Path, root: Path) -> ShardSource:
    """Read a shard's identity: ``source_sha256`` for video shards, else the import's names."""
    with open_shard(path) as f:
        head = read_header(f)
        if not head.complete:
            raise BlurforgeError(f"{path}: incomplete shard (its writer did not finish); remove or redo it")
        kind = attr_str(f, "kind")
        sha = attr_str(f, "source_sha256")
        name = attr_str(f, "source_name")
        seq = attr_str(f, "sequence")
        blur_dir = attr_str(f, "blur_dir")
    rel = path.relative_to(root).as_posix()
    if sha:
        key = f"sha256:{sha}"
    elif seq:                               # GoPro: one sequence = one scene
        key = f"{kind}:{name}/{seq}"
    elif blur_dir or name:                  # folder pairs: one imported folder
        key = f"{kind}:{blur_dir or name}"
    else:
        key = f"file:{rel}"
    return ShardSource(path, rel, head.num_pairs, key, seq or name or Path(rel).stem)


class _Union:
    """Union-find over shard indices: sources and --group-by matches merge groups."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int):
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def group_shards(shards: list[ShardSource], group_by: str | None = None) -> tuple[list[list[int]], int]:
    """Groups of shard indices that must stay in one split; and how many shards ``group_by`` did not
    match (they are grouped by their source only)."""
    pattern = None
    if group_by:
        try:
            pattern = re.compile(group_by)
        except re.error as e:
            raise BlurforgeError(f"--group-by {group_by!r}: not a regular expression ({e})") from None
    uf = _Union(len(shards))
    first: dict[str, int] = {}
    unmatched = 0
    for i, s in enumerate(shards):
        keys = [s.source_key]
        if pattern is not None:
            m = pattern.search(s.source_name)
            if m is None:
                unmatched += 1
            else:
                keys.append("group:" + (next((g for g in m.groups() if g is not None), None) or m.group(0)))
        for k in keys:
            uf.join(i, first.setdefault(k, i))
    groups: dict[int, list[int]] = {}
    for i in range(len(shards)):
        groups.setdefault(uf.find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: min(shards[i].rel for i in g)), unmatched


def assign(sizes: list[int], fractions: dict[str, float], seed: int) -> list[str]:
    """Split name per group: groups shuffled by ``seed``; test then val take each group that brings
    their pair count closer to ``fraction * total`` (at least one group each when their fraction is
    above 0 and a group is left for train); the rest is train."""
    n = len(sizes)
    order = np.random.default_rng(seed).permutation(n).tolist()
    total = sum(sizes)
    out = ["train"] * n
    left = list(order)
    for name in ("test", "val"):
        frac = fractions.get(name, 0.0)
        if frac <= 0:
            continue
        target, have, taken = frac * total, 0, []
        for g in left:
            if abs(have + sizes[g] - target) < abs(have - target):
                have += sizes[g]
                taken.append(g)
        if not taken and len(left) > 1:          # every group overshoots: the one that overshoots least
            taken = [min(left, key=lambda g: (sizes[g], left.index(g)))]
        if len(taken) == len(left) and taken:    # never leave train empty
            taken = taken[:-1]
        for g in taken:
            out[g] = name
        left = [g for g in left if g not in taken]
    return out


def split_dataset(data_dir, val: float, test: float, seed: int = 0, group_by: str | None = None,
                  write: bool = True, command: str | None = None) -> dict:
    """Split every shard under ``data_dir`` into train/val/test lists written beside them.

    Returns a JSON-ready summary: per split its shards, pairs, groups and share of pairs.
    """
    from .cliutil import find_shards

    root = Path(data_dir)
    if not root.is_dir():
        raise BlurforgeError(f"{root}: no such folder")
    for name, v in (("--val", val), ("--test", test)):
        if not 0 <= v < 1:
            raise BlurforgeError(f"{name} {v:g}: a fraction of the pairs, in [0, 1)")
    if val + test >= 1:
        raise BlurforgeError(f"--val {val:g} + --test {test:g} leaves nothing to train on")
    shards = [source_of(p, root) for p in find_shards([root], default=None)]
    groups, unmatched = group_shards(shards, group_by)
    sizes = [sum(shards[i].pairs for i in g) for g in groups]
    names = assign(sizes, {"val": val, "test": test}, seed)
    total = sum(sizes)
    summary: dict = {"data_dir": str(root), "seed": seed, "group_by": group_by, "fractions_of": "pairs",
                     "asked": {"val": val, "test": test}, "shards": len(shards), "pairs": total,
                     "groups": len(groups), "group_by_unmatched": unmatched, "splits": {}}
    lists = {}
    for sp in SPLITS:
        members = sorted(shards[i].rel for g, nm in zip(groups, names) if nm == sp for i in g)
        pairs = sum(sz for sz, nm in zip(sizes, names) if nm == sp)
        summary["splits"][sp] = {"list": str(root / f"{sp}.txt"), "shards": len(members), "pairs": pairs,
                                 "groups": names.count(sp),
                                 "fraction": round(pairs / total, 4) if total else 0.0}
        lists[sp] = members
    if write:
        cmd = command or (f"blurforge split {root} --val {val:g} --test {test:g} --seed {seed}"
                          + (f" --group-by '{group_by}'" if group_by else ""))
        for sp in SPLITS:
            s = summary["splits"][sp]
            head = (f"# {sp}: {s['shards']} shard(s), {s['pairs']} of {total} pairs, {s['groups']} source group(s)\n"
                    f"# made by: {cmd}  (blurforge {__version__}); paths relative to this folder\n")
            atomic_write_text(root / f"{sp}.txt", head + "".join(f"{m}\n" for m in lists[sp]))
    summary["lists"] = lists
    return summary
