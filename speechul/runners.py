"""Where a grid's runs execute: worker processes of this machine or a Ray cluster.

Each runner is a context manager that yields ``submit(fn, *args) -> Future``; the grid
(:func:`speechul.experiments.run`) decides what to submit and when, a runner only where it runs.
Workers find the corpus, originals and Retrains in the shared disk cache, so nothing large
travels to them. No home-made scheduler: the standard library's process pool, or Ray.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ._runtime import cache_dir

__all__ = ["Submit", "pool", "ray", "threads"]

Submit = Callable[..., concurrent.futures.Future]


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's CPU thread count set to ``n`` inside the block.

    CPU float sums depend on how work is split between threads, so a run equals its twin (in
    another process, or a Ray task: workers default to one thread) only at the same count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _with_threads(fn: Any, n: int, *args: Any) -> Any:
    """``fn(*args)`` at ``n`` torch threads: the body of every Ray task."""
    with threads(n):
        return fn(*args)


def _worker_env() -> dict[str, str]:
    """What a worker needs from this process: its cache folder, and quiet progress bars."""
    return {"SPEECHUL_CACHE": str(cache_dir()), "SPEECHUL_QUIET": "1"}


@contextlib.contextmanager
def ray(address: str, n_threads: int, by_value: Iterable[str] = ()) -> Iterator[Submit]:
    """Runs as Ray tasks of ``n_threads`` torch threads each; ``address="local"`` starts (and
    afterwards stops) a local Ray instance, any other value names a cluster.

    ``by_value`` names modules whose functions travel as code rather than as an import: a
    user's module of unlearning methods, which Ray's workers (other processes, perhaps other
    machines) could not import.
    """
    try:
        import ray as ray_module
    except ImportError as err:
        hint = "the Ray runner needs the 'ray' extra: pip install 'speechul[ray]'"
        raise ImportError(hint) from err
    ours = address == "local" and not ray_module.is_initialized()  # one we start, we stop
    ray_module.init(address=None if address == "local" else address, ignore_reinit_error=True,
                    runtime_env={"env_vars": _worker_env()}, include_dashboard=False,
                    log_to_driver=False)
    task = ray_module.remote(_with_threads)
    shipped = [sys.modules[name] for name in by_value]
    for module in shipped:
        ray_module.cloudpickle.register_pickle_by_value(module)
    try:
        yield lambda fn, *args: task.remote(fn, n_threads, *args).future()
    finally:
        for module in shipped:
            ray_module.cloudpickle.unregister_pickle_by_value(module)
        if ours:
            ray_module.shutdown()


def _worker_setup(env: dict[str, str], n_threads: int, parent: int) -> None:
    """Runs once in each pool worker: the parent's cache folder, quiet bars, its thread share,
    and a watch that ends the worker when its parent dies (a killed kernel would otherwise
    leave workers waiting on the task queue for ever).

    ``parent`` is the parent's pid as the parent saw it: a worker still importing when the
    parent died has already been re-parented, and its own ``os.getppid()`` would name the new
    parent, which never dies.
    """
    os.environ.update(env)
    torch.set_num_threads(n_threads)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


@contextlib.contextmanager
def pool(processes: int, n_threads: int) -> Iterator[Submit]:
    """Runs on ``processes`` worker processes of this machine (standard library pool).

    Spawned, not forked: a forked copy of a process whose OpenMP threads already ran can hang.
    Unfinished runs are cancelled when the block ends early.
    """
    workers = concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_setup,
        initargs=(_worker_env(), n_threads, os.getpid()))
    try:
        yield workers.submit
    finally:
        workers.shutdown(wait=True, cancel_futures=True)
