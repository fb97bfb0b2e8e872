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
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

from ._runtime import cache_dir, keep_freed_memory

__all__ = ["Registered", "Submit", "pool", "ray", "threads"]

Submit = Callable[..., concurrent.futures.Future]


class Registered(NamedTuple):
    """Unlearning methods and dataset loaders (name -> function) that a worker would not know.

    A worker imports speechul afresh; what the user registered in their own session travels
    to the workers and is registered there before it runs (:func:`_register`).
    """

    methods: dict[str, Callable[..., Any]]
    loaders: dict[str, Callable[..., Any]]

    def functions(self) -> list[tuple[str, str, Callable[..., Any]]]:
        """(kind, name, function) of every entry."""
        return [("method", n, fn) for n, fn in self.methods.items()] + [
            ("dataset", n, fn) for n, fn in self.loaders.items()]


_NOTHING = Registered({}, {})  # read, never written


def _register(registered: Registered) -> None:
    """In a worker: register the parent's own methods and loaders."""
    from . import data, unlearn

    unlearn.METHODS.update(registered.methods)
    data.LOADERS.update(registered.loaders)


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


def _with_threads(fn: Any, n: int, registered: Registered, *args: Any) -> Any:
    """``fn(*args)`` at ``n`` torch threads: the body of every Ray task."""
    keep_freed_memory()  # idempotent; a Ray worker process imports speechul without it
    with threads(n):
        _register(registered)
        return fn(*args)


def _worker_env() -> dict[str, str]:
    """What a worker needs from this process: its cache folder, and quiet progress bars."""
    return {"SPEECHUL_CACHE": str(cache_dir()), "SPEECHUL_QUIET": "1"}


@contextlib.contextmanager
def ray(address: str, n_threads: int, registered: Registered = _NOTHING) -> Iterator[Submit]:
    """Runs as Ray tasks of ``n_threads`` torch threads each; ``address="local"`` starts (and
    afterwards stops) a local Ray instance, any other value names a cluster.

    The modules that define ``registered`` functions travel as code, not as an import: Ray's
    workers (other processes, perhaps other machines) could not import a user's module.
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
    # (cloudpickle already sends the functions of a notebook's __main__ by value)
    names = {fn.__module__ for _, _, fn in registered.functions()} - {"__main__"}
    shipped = [sys.modules[name] for name in sorted(names)]
    for module in shipped:
        ray_module.cloudpickle.register_pickle_by_value(module)
    try:
        yield lambda fn, *args: task.remote(fn, n_threads, registered, *args).future()
    finally:
        for module in shipped:
            ray_module.cloudpickle.unregister_pickle_by_value(module)
        if ours:
            ray_module.shutdown()


def _worker_setup(env: dict[str, str], n_threads: int, parent: int,
                  registered: Registered = _NOTHING) -> None:
    """Runs once in each pool worker: the parent's cache folder, quiet bars, its thread share,
    the user's own methods and loaders, and a watch that ends the worker when its parent dies
    (a killed kernel would otherwise leave workers waiting on the task queue for ever).

    ``parent`` is the parent's pid as the parent saw it: a worker still importing when the
    parent died has already been re-parented, and its own ``os.getppid()`` would name the new
    parent, which never dies.
    """
    os.environ.update(env)
    keep_freed_memory()  # a worker only trains: faster CPU steps, same numbers
    torch.set_num_threads(n_threads)
    _register(registered)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _check_importable(registered: Registered) -> None:
    """Fail before anything runs if a worker process could not import a registered function.

    Functions travel to pool workers by reference (module and name). A worker re-imports a
    script's main module, but a notebook's or an interactive session's has no file to import.
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    for kind, name, fn in registered.functions():
        if fn.__module__ == "__main__" and not main_file:
            raise ValueError(
                f"{kind} {name!r} is defined in this notebook or session, which worker "
                "processes cannot import: move it into a .py module and import it from there, "
                "or run with processes=1 (or on Ray)")


@contextlib.contextmanager
def pool(processes: int, n_threads: int,
         registered: Registered = _NOTHING) -> Iterator[Submit]:
    """Runs on ``processes`` worker processes of this machine (standard library pool).

    Spawned, not forked: a forked copy of a process whose OpenMP threads already ran can hang.
    Unfinished runs are cancelled when the block ends early.
    """
    _check_importable(registered)
    workers = concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_setup,
        initargs=(_worker_env(), n_threads, os.getpid(), registered))
    try:
        yield workers.submit
    finally:
        workers.shutdown(wait=True, cancel_futures=True)
