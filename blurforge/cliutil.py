"""What every command line of the project shares (``blurforge`` and the ``dsanet-*`` commands).

One-line errors, progress bars that messages are written through, shard discovery, and the failure
report (the process pools themselves are in :mod:`blurforge.engine`). This module imports no stage
module, so any CLI can import it.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from .errors import BlurforgeError

DEFAULT_DATA = Path("data")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def friendly(fn):
    """Turn BlurforgeError (and environment errors) into one line on stderr and exit status 1;
    Ctrl-C into "interrupted" and 130. Never a traceback for something a user can cause."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BlurforgeError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            raise click.ClickException(f"{e.strerror or e}{where}") from None
    return wrapper


_BAR = None


def progress(total: int | None, desc: str, quiet: bool = False, unit: str = "it"):
    """A tqdm bar on stderr (off when quiet or stderr is not a terminal). While it is open,
    :func:`warn` and :func:`say` write through it, so messages never land inside the bar's line."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=True if quiet else None, leave=False,
               dynamic_ncols=True)
    return _Tracked(bar)


class _Tracked:
    """Context manager around a tqdm bar that registers it as the current one."""

    def __init__(self, bar):
        self.bar = bar

    def __enter__(self):
        global _BAR
        self._prev, _BAR = _BAR, self.bar
        return self.bar.__enter__()

    def __exit__(self, *exc):
        global _BAR
        _BAR = self._prev
        return self.bar.__exit__(*exc)


def say(msg: str, err: bool = False):
    """Print a line, through the open progress bar if there is one."""
    if _BAR is not None and not _BAR.disable:
        _BAR.write(msg, file=sys.stderr if err else sys.stdout)
    else:
        click.echo(msg, err=err)


def warn(msg: str):
    say(f"warning: {msg}", err=True)


def read_list(path: str | Path, allow_empty: bool = False, _seen: tuple = ()) -> list[str]:
    """The entries of a shard list file (``@LIST.txt``; ``blurforge split`` writes them): one path a
    line, relative to the list's folder (absolute paths kept); blank lines and ``#`` comments are
    ignored; a line ``@OTHER.txt`` includes another list. A missing list is an error, and so is an
    empty one unless ``allow_empty``."""
    path = Path(path)
    key = path.resolve()
    if key in _seen:
        raise BlurforgeError(f"@{path}: the list includes itself")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BlurforgeError(f"@{path}: no such list file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BlurforgeError(f"@{path}: not a readable list file ({getattr(e, 'strerror', None) or e})") from None
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            out += read_list(path.parent / line[1:], True, _seen + (key,))
        else:
            out.append(line if Path(line).is_absolute() else str(path.parent / line))
    if not out and not allow_empty:
        raise BlurforgeError(f"@{path}: lists no shards")
    return out


def expand_lists(items) -> list[str]:
    """Replace every ``@LIST.txt`` item by the paths it lists (:func:`read_list`); others pass as given."""
    out: list[str] = []
    for it in map(str, items or ()):
        out += read_list(it[1:]) if it.startswith("@") else [it]
    return out


def find_shards(paths, default: Path | None = DEFAULT_DATA, missing_ok: bool = False) -> list[Path]:
    """Shard files from files, folders and ``@LIST.txt`` files: a folder means every ``*.h5`` below it
    (recursively, hidden temporaries left out), a list its entries (:func:`read_list`). No paths:
    every shard under ``default`` (``data/``). Duplicates are dropped, order kept. ``missing_ok``:
    name files that do not exist anyway (verify reports them)."""
    paths = expand_lists(paths)
    if not paths:
        if default is None or not Path(default).is_dir():
            raise BlurforgeError(f"no shards given and no {default}/ folder here")
        paths = [default]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.h5")
                           if not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not found:
                raise BlurforgeError(f"{p}: no shards (*.h5) in this folder")
            out += found
        elif p.is_file() or missing_ok:
            out.append(p)
        else:
            raise BlurforgeError(f"{p}: no such file or folder")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".mts", ".m2ts", ".mxf", ".webm", ".3gp", ".cine",
                  ".insv", ".lrv")


def find_clips(paths) -> list[str]:
    """Clips from files and folders for ``extract``/``probe``: a file is a clip; a folder that holds
    numbered PNG/TIFF frames is one clip (an image sequence); any other folder is searched
    recursively (hidden entries left out) for videos (by extension: ``VIDEO_SUFFIXES``) and frame
    folders. A folder with neither is an error; duplicates are dropped, order kept."""
    from .sequence import is_sequence

    out: list[str] = []
    for item in expand_globs(paths):
        p = Path(item)
        if not p.is_dir() or is_sequence(p):
            out.append(item)
            continue
        found = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for d in list(dirs):
                if is_sequence(Path(root, d)):  # a clip of its own: not searched further
                    found.append(str(Path(root, d)))
                    dirs.remove(d)
            found += [str(Path(root, f)) for f in files
                      if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
        found.sort()
        if not found:
            raise BlurforgeError(f"{p}: no videos ({', '.join(VIDEO_SUFFIXES[:5])}, ...) or frame folders in it")
        out += found
    seen: set = set()
    return [c for c in out if not (Path(c).resolve() in seen or seen.add(Path(c).resolve()))]


def report_failures(failures: list[str]):
    """Every failure but the last on its own ``Error:`` line, then the last as the exit message."""
    if failures:
        for msg in failures[:-1]:
            click.echo(f"Error: {msg}", err=True)
        raise BlurforgeError(failures[-1])


def expand_globs(items) -> list[str]:
    """Expand ``@LIST.txt`` files (:func:`expand_lists`) and quoted glob patterns (``'data/*.h5'``) the
    shell left alone; other items pass as given. A pattern that matches nothing is an error, as it
    would be for a missing file."""
    import glob

    out = []
    for it in expand_lists(items):
        if any(ch in it for ch in "*?[") and not Path(it).exists():
            found = sorted(glob.glob(it, recursive=True))
            if not found:
                raise BlurforgeError(f"{it}: no file matches")
            out += found
        else:
            out.append(it)
    return out


def spread_multi(args: list[str], names) -> list[str]:
    """Let ``--shards a.h5 b.h5 c.h5`` (what a shell glob expands to) mean three ``--shards``:
    tokens that follow one of ``names`` and do not start with ``-`` are given that flag again."""
    out, cur, have = [], None, False
    for a in args:
        if cur is not None and not a.startswith("-"):
            out += [cur, a] if have else [a]
            have = True
            continue
        cur = None
        if a in names:
            cur, have = a, False
        elif any(a.startswith(n + "=") for n in names):
            cur, have = a.split("=", 1)[0], True
        out.append(a)
    return out


def greedy_command(names):
    """A click.Command class whose multiple options ``names`` take every following non-flag token."""
    class Greedy(click.Command):
        def parse_args(self, ctx, args):
            return super().parse_args(ctx, spread_multi(list(args), tuple(names)))

    return Greedy
