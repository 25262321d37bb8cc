"""Where many clips (or shards) are processed at once: a local pool of spawned processes, or dask.

:func:`run_tasks` runs ``fn(item)`` for every item and yields ``(item, result, error)`` as each
finishes, behind a progress bar over the items. Both executors share its rules:

* a failed item (any exception, or a worker process that died: a crash, the out-of-memory
  killer) is retried ``retries`` times, then reported as a one-line error; the others go on;
* each worker decodes with ``cores // workers`` threads (``video.set_decode_threads``), so that
  workers x threads <= cores; the work itself does not depend on the thread count (decoding is
  exact), so results are bit-identical whatever runs them.

``local``: ``jobs`` spawned processes (not forked: a forked child inherits OpenCV's and torch's
thread pools in an unusable state), each its own one-process pool so that a dead worker is charged
to the item it was running and is replaced. ``dask``: dask.distributed (``pip install
'blurforge[dask]'``), on a ``LocalCluster`` of ``jobs`` one-thread worker processes, or on the
cluster whose scheduler is at ``scheduler`` (dask-jobqueue, the Kubernetes operator, ``dask
scheduler``/``dask worker``); there, every worker must see the same paths (a shared file system).
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool

from .cliutil import progress
from .errors import BlurforgeError

EXECUTORS = ("local", "dask")
RETRIES = 2
INSTALL_DASK = "pip install 'blurforge[dask]'"


def cores() -> int:
    """Cores this process may run on (the affinity mask: a Slurm or container allocation)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _message(exc: BaseException) -> str:
    """One line for a failure: a BlurforgeError's own message, otherwise the exception's type too."""
    if isinstance(exc, BlurforgeError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return "its worker process died (a crash, or killed for memory)"
    if type(exc).__name__ == "KilledWorker":
        return "its worker process died on every try (a crash, or killed for memory)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _set_threads(n: int):
    from .video import set_decode_threads

    set_decode_threads(n)


def _dask_task(fn, item, slots):
    """Runs on a dask worker: set the decode threads for the workers sharing this host, then work.
    ``slots``: tasks that run at once per host ({host: n}); a host not listed (a worker that joined
    later) counts its own threads."""
    from distributed import get_worker

    n = None
    try:
        w = get_worker()
        host = w.address.split("://")[-1].rsplit(":", 1)[0]
        n = slots.get(host) or w.state.nthreads
    except (ValueError, AttributeError):
        pass
    _set_threads(max(1, cores() // max(1, n or 1)))
    return fn(item)


def run_tasks(fn: Callable, items: list, executor: str = "local", jobs: int = 1, scheduler: str | None = None,
              desc: str = "", quiet: bool = False, unit: str = "it", retries: int = RETRIES) -> Iterator[tuple]:
    """Run ``fn(item)`` for every item; yield ``(item, result, None)`` or ``(item, None, error)`` in the
    order they finish (error: one line, after ``retries`` retries). ``fn`` must be importable (module
    level) and its items and results picklable. ``executor``: ``local`` (``jobs`` processes) or
    ``dask`` (a LocalCluster of ``jobs`` workers, or the cluster at ``scheduler``)."""
    items = list(items)
    if executor not in EXECUTORS:
        raise BlurforgeError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise BlurforgeError("--scheduler needs --executor dask")
    if jobs < 1:
        raise BlurforgeError("--jobs must be at least 1")
    if not items:
        return
    run = _run_dask(fn, items, jobs, scheduler, retries) if executor == "dask" else \
        _run_local(fn, items, min(jobs, len(items)), retries)
    with progress(len(items), desc, quiet, unit) as bar, contextlib.closing(run):
        for done in run:
            bar.update(1)
            yield done


# ---- local: one-process pools ----------------------------------------------------------------

def _run_local(fn, items, jobs, retries):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    threads = max(1, cores() // jobs)
    pools: list = [None] * jobs
    free = list(range(jobs))
    todo = collections.deque(range(len(items)))
    tries = [0] * len(items)
    running: dict = {}
    try:
        while todo or running:
            while todo and free:
                slot, i = free.pop(), todo.popleft()
                if pools[slot] is None:
                    pools[slot] = cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_set_threads,
                                                         initargs=(threads,))
                running[pools[slot].submit(fn, items[i])] = slot, i
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                slot, i = running.pop(fut)
                free.append(slot)
                exc = fut.exception()
                if exc is None:
                    yield items[i], fut.result(), None
                    continue
                if isinstance(exc, BrokenProcessPool):
                    pools[slot].shutdown(wait=False)
                    pools[slot] = None  # a fresh process for the next item
                tries[i] += 1
                if tries[i] <= retries:
                    todo.append(i)
                else:
                    yield items[i], None, _message(exc)
    finally:
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


# ---- dask ------------------------------------------------------------------------------------

@contextlib.contextmanager
def dask_client(jobs: int, scheduler: str | None):
    """A dask.distributed Client: on the cluster at ``scheduler``, else on a new LocalCluster of
    ``jobs`` one-thread worker processes (on 127.0.0.1, no dashboard), closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BlurforgeError(f"--executor dask needs dask.distributed: {INSTALL_DASK}") from None
    import logging

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as e:
            raise BlurforgeError(f"cannot reach the dask scheduler at {scheduler}: {e}") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        yield client


def _slots(client) -> dict[str, int]:
    """Threads (tasks at once) of all workers on each host of the cluster."""
    out: dict[str, int] = collections.Counter()
    for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
        out[addr.split("://")[-1].rsplit(":", 1)[0]] += int(w.get("nthreads", 1))
    return dict(out)


def _run_dask(fn, items, jobs, scheduler, retries):
    with dask_client(jobs, scheduler) as client:  # first: it says how to install dask if it is missing
        from distributed import as_completed

        slots = _slots(client)
        futures = {client.submit(_dask_task, fn, it, slots, retries=retries, pure=False): it for it in items}
        try:
            for fut in as_completed(futures):
                item = futures[fut]
                if fut.status == "finished":
                    yield item, fut.result(), None
                else:
                    exc = fut.exception()
                    yield item, None, _message(exc) if exc is not None else f"task {fut.status}"
        finally:
            client.cancel(list(futures))
