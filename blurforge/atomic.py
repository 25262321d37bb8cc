"""The one atomic-write helper: shards, aligned shards, checkpoints, weights and reports all use it.

A file is written under a hidden temporary name in the destination folder, flushed to disk, renamed
over the destination, and the folder is synced so the rename itself survives a crash. A reader sees
the old file or the complete new one, never half of one; a failure leaves no temporary behind.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def tmp_path_for(path: str | os.PathLike) -> Path:
    """The hidden temporary name ``path`` is written under (``.NAME.tmp-PID``, same folder)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_file(path: str | os.PathLike):
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def fsync_dir(folder: str | os.PathLike):
    """Persist a rename in ``folder`` (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, tmp: str | os.PathLike | None = None):
    """Yield a temporary path to write; on a clean exit it replaces ``path`` (fsync, rename, fsync
    the folder), on an exception it is removed. The writer must have closed the file by then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tmp) if tmp is not None else tmp_path_for(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


class Writeback:
    """Moves a file's written pages to disk while the file is still being written (``poke`` after
    each large write), on a thread of its own, so the fsync that ``atomic_path`` does at the end
    finds little left and the writer does not sit idle on the disk (a 1080p shard: 0.38 s of the
    extract's end waiting on fsync without it). Best effort: errors are left to that final fsync."""

    def __init__(self, path: str | os.PathLike):
        self._wake, self._stop = threading.Event(), False
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError:
            self._fd = None
            return
        self._thread = threading.Thread(target=self._run, name="writeback", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)

    def poke(self):
        self._wake.set()

    def stop(self):
        """Wait for a flush in progress and let go of the file."""
        if self._fd is None:
            return
        self._stop = True
        self._wake.set()
        self._thread.join()
        os.close(self._fd)
        self._fd = None


def atomic_write(path: str | os.PathLike, write_fn) -> Path:
    """Write ``path`` atomically: ``write_fn(fileobj)`` fills a binary temporary file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            write_fn(fh)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()))
