"""Experiment grids: (setting x method x seed) -> one tidy table, resumable, on worker processes
or Ray if asked (:mod:`speechul.runners`).

The chapters and the command line (``python -m speechul grid ...``) call the same :func:`run`, so
any table in the book can be regenerated from the shell. One run of a method is
:func:`run_one`: it loads the corpus and the original model from their caches, builds the forget
request for the seed, loads (or trains once) the Retrain reference for that request, unlearns
and evaluates. Everything it needs comes from disk caches, which is what lets the same function
run in-process or as a Ray task on another worker. A grid's cell, :class:`Setting`, lives in
:mod:`speechul.setting` and is re-exported here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch import nn

from . import data, metrics, runners, train, unlearn
from ._runtime import atomic_save, cache_dir, checked_load, fingerprint, locked, progress
from .setting import GROUP, HOLDOUTS, REFERENCE, Setting

__all__ = ["Setting", "run", "run_many", "run_one", "reference", "Reference", "summary",
           "corpus_of", "load_run", "reference_path", "scored", "GROUP", "HOLDOUTS"]


def _options(setting: Setting) -> str:
    """``data_options`` as one hashable value: options may hold lists (``words=["yes", "no"]``)."""
    return json.dumps(dict(setting.data_options), sort_keys=True, default=str)


@functools.lru_cache(maxsize=4)
def _corpus(dataset: str, task: str, device: str | None, size: str, options: str) -> data.Corpus:
    # Every loader takes ``size``: the embedded corpus's sizes, and for a real corpus the same
    # names as a per-class cap (``data.REAL_SIZES``), so a setting's corpus is a chapter's.
    return data.load(dataset, task=task, device=device, size=size, **json.loads(options))


def corpus_of(setting: Setting) -> data.Corpus:
    """The corpus a setting's runs use (loaded once per process; the command line checks each
    request against it before anything trains)."""
    return _corpus(setting.dataset, setting.task, setting.device, setting.size,
                   _options(setting))


def load_run(setting: Setting, seed: int) -> tuple[train.Trained, data.Split]:
    """The original model and the forget request for one seed (both from caches when present).

    Loading the original reads and checksums its file: a run does it once and hands the pair
    to :func:`reference` (``loaded=``) rather than loading it again."""
    corpus = corpus_of(setting)
    original_seed = seed if setting.vary_original else setting.original_seed
    original = train.original(corpus, setting.recipe, seed=original_seed)
    split = data.forget_split(corpus, setting.kind, fraction=setting.fraction,
                              classes=setting.classes or None,
                              speakers=setting.speakers or None, seed=seed)
    return original, split


def reference_path(setting: Setting, original: train.Trained, seed: int) -> Path:
    name = fingerprint(setting.reference_key, original.key, seed)
    return cache_dir() / "models" / f"retrain-{name}.pt"


def refuse_diverged(out: unlearn.Unlearned) -> None:
    """A diverged Retrain is no reference: ``unlearn.run`` would hand back the *original*'s
    weights (the last finite ones it has), a model trained on the forget set. Never cache that."""
    if out.diverged:
        raise RuntimeError("Retrain diverged (non-finite loss or weights), so there is no exact "
                           "reference to cache; lower the recipe's learning rate")


class Reference(NamedTuple):
    """A request's Retrain: the model, the seconds its training took, its work in GFLOP."""

    model: nn.Module
    seconds: float
    cost: float


def reference(setting: Setting, seed: int,
              loaded: tuple[train.Trained, data.Split] | None = None) -> Reference:
    """The Retrain model for (setting, seed), its seconds and its cost: trained once, cached.

    ``loaded``: the run's (original, split) from :func:`load_run`, when the caller has them.

    ``cost`` (GFLOP, :mod:`speechul.cost`) is what budgets compare with: it is the same on
    every machine. ``seconds`` are those of the run that trained it (measured like every
    method's: one run, wall-clock), reported only.
    """
    original, split = loaded or load_run(setting, seed)
    corpus = split.corpus
    hp = dict(setting.hparams.get(REFERENCE, {}))
    path = reference_path(setting, original, seed)
    with locked(path):  # of several processes missing it, one trains it, the others load
        saved = checked_load(path)
        model = train.fresh_model(setting.recipe, corpus.n_classes, corpus.device, seed)
        if saved is None:
            out = unlearn.run(REFERENCE, original, split, seed=seed, **hp)
            refuse_diverged(out)
            state = {k: v.detach().cpu() for k, v in out.model.state_dict().items()}
            saved = {"state_dict": state, "seconds": out.seconds, "cost": out.cost}
            atomic_save(saved, path)
    model.load_state_dict(saved["state_dict"])
    return Reference(model.eval(), float(saved["seconds"]), float(saved["cost"]))


# Per Retrain checkpoint (its path and modification time), kept in memory only and never on
# disk, so a change to the metrics can never serve a stale value: its own result row. Every
# method of a (setting, seed) is compared with the same row, and evaluating Retrain once instead
# of once per method saves about a third of a grid's evaluation time.
_REFERENCE_ROWS: dict[tuple, dict[str, float]] = {}


def _stamp(path: Path) -> tuple[str, int]:
    return str(path), path.stat().st_mtime_ns


def _once(store: dict, key: tuple, compute: Callable[[], Any]) -> Any:
    """``store[key]``, computed on first use; bounded, so a long session need not keep them all."""
    if key not in store:
        if len(store) >= 64:
            store.pop(next(iter(store)))
        store[key] = compute()
    return store[key]


def _reference_row(model: nn.Module, split: data.Split, path: Path,
                   holdout: str) -> dict[str, float]:
    return _once(_REFERENCE_ROWS, (*_stamp(path), holdout),
                 lambda: metrics.evaluate(model, split))


def scored(split: data.Split, holdout: str) -> data.Split:
    """The split a run is scored on: with ``holdout="val"`` the validation clips stand in for
    the test clips everywhere a score reads them (accuracy, the attacker's non-members)."""
    if holdout == "test":
        return split
    return dataclasses.replace(split, test=split.val, forgotten_test=split.forgotten_val,
                               kept_test=split.kept_val)


def _registered(todo: Todo) -> runners.Registered:
    """The methods and dataset loaders of ``todo`` that live outside speechul (name -> function).

    A worker imports speechul afresh: what the user registered (a notebook cell, a module of
    their own) would be unknown there, and a notebook's replacement of a built-in would silently
    run the built-in. The runners hand these to every run.
    """
    methods = {m: unlearn.METHODS[m] for _, m, _ in todo if m != REFERENCE}
    loaders = {s.dataset: data.LOADERS[s.dataset] for s, _, _ in todo if s.dataset in data.LOADERS}
    own = [{name: fn for name, fn in found.items() if fn.__module__.split(".")[0] != "speechul"}
           for found in (methods, loaders)]
    return runners.Registered(*own)


def run_one(setting: Setting, method: str, seed: int) -> dict[str, Any]:
    """Unlearn with one method for one seed and evaluate against Retrain: one result row."""
    original, split = load_run(setting, seed)
    ref_model, ref_seconds, ref_cost = reference(setting, seed, (original, split))
    on = scored(split, setting.holdout)
    ref_row = _reference_row(ref_model, on, reference_path(setting, original, seed),
                             setting.holdout)
    if method == REFERENCE:
        model, seconds, work, hp, diverged = ref_model, ref_seconds, ref_cost, {}, False
    else:
        out = unlearn.run(method, original, split, seed=seed, **setting.hparams.get(method, {}))
        model, seconds, work = out.model, out.seconds, out.cost
        hp, diverged = out.hparams, out.diverged
    random_model = train.fresh_model(setting.recipe, split.corpus.n_classes,
                                     split.corpus.device, seed + 10_000)
    # Retrain's row as the reference (the same numbers as passing its model, computed once),
    # plus the one comparison that needs its outputs.
    row = metrics.evaluate(model, on, reference=ref_row, random_model=random_model)
    row["js_to_reference"] = metrics.js_divergence(model, ref_model, split.corpus, split.forget)
    return {**setting.describe(), "method": method, "overrides": setting.overrides(method),
            "seed": seed, **row,
            "cost": work, "retrain_cost": ref_cost, "cost_fraction": work / ref_cost,
            "seconds": seconds, "retrain_seconds": ref_seconds,
            "time_fraction": seconds / ref_seconds, "diverged": diverged,
            "hparams": json.dumps(hp, sort_keys=True, default=str)}


RunId = tuple[str, str, str, int]  # (setting key, method, its variant, seed)


def _run_id(setting: Setting, method: str, seed: int) -> RunId:
    return (setting.key, method, setting.variant(method), seed)


def _row_id(row: dict) -> RunId:
    return (row["setting"], row["method"], row.get("variant", ""), int(row["seed"]))


def _repair(results: Path) -> None:
    """End the file on a whole line: a kill mid-write leaves a fragment without its newline,
    onto which the next row would be glued (and that row lost on the next read). A fragment is
    cut off the file, with a warning (its run runs again); a whole row missing only its newline
    gets it."""
    with open(results, "rb+") as handle:
        blob = handle.read()
        if not blob or blob.endswith(b"\n"):
            return
        start = blob.rfind(b"\n") + 1  # where the unfinished last line begins
        try:
            json.loads(blob[start:])
        except ValueError:
            number = blob.count(b"\n") + 1
            warnings.warn(f"{results}:{number}: an unfinished last line (an interrupted write) "
                          "is cut off the file; its run runs again", RuntimeWarning, stacklevel=4)
            handle.truncate(start)
        else:
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def _read(results: Path | None) -> dict[RunId, dict]:
    """Finished rows of a results file, keyed by :func:`_run_id`. A torn last line (the run in
    flight when the process was killed) is cut off the file with a warning (:func:`_repair`); a
    bad line elsewhere is an error that names the file and line, before anything runs."""
    if results is None or not results.exists():
        return {}
    _repair(results)
    rows = []
    for number, line in enumerate(results.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{results}:{number} is not a result row ({err}); remove that "
                             "line to resume") from None
    return {_row_id(r): r for r in rows}


def _append(results: Path | None, row: dict) -> None:
    """One line per finished run, flushed at once: an interruption loses only the run in flight.

    The whole line goes out in one ``os.write`` on an append-only descriptor (a text file's
    buffer would split a long row into several writes), so a kill leaves the row or a
    fragment that :func:`_repair` cuts off, never half a row followed by the next one.
    """
    if results is None:
        return
    results.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, default=float) + "\n").encode()
    fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):  # a full disk: say so rather than leave a fragment silently
            raise OSError(f"{results}: only {written} of {len(line)} bytes of a row were "
                          "written (disk full?); free space and run again to resume")
        os.fsync(fd)
    finally:
        os.close(fd)


def _prepare(setting: Setting, seed: int) -> None:
    """Train (or find in the cache) the original and Retrain of one (setting, seed)."""
    reference(setting, seed)


Todo = list[tuple[Setting, str, int]]
Submit = runners.Submit


def _scheduled(submit: Submit, todo: Todo) -> Iterator[dict]:
    """The runs on workers, through ``submit(fn, *args) -> Future``: originals missing from the
    cache are trained first, once each. Then each (setting, seed)'s Retrain; its methods are
    submitted as soon as it is in the cache, so references and methods of different requests
    overlap. Rows come back in the order they finish."""
    originals = {_original_key(s, seed): (s, seed) for s, _, seed in todo}
    for future in [submit(_cache_original, s, seed) for s, seed in originals.values()]:
        future.result()
    by_request: dict[tuple[str, int], Todo] = {}
    for setting, method, seed in todo:
        by_request.setdefault((setting.key, seed), []).append((setting, method, seed))
    waiting = {submit(_prepare, runs[0][0], runs[0][2]): key for key, runs in by_request.items()}
    running: set[concurrent.futures.Future] = set()
    while waiting or running:
        finished, _ = concurrent.futures.wait([*waiting, *running],
                                              return_when=concurrent.futures.FIRST_COMPLETED)
        for future in finished:
            if future in waiting:
                future.result()  # a failed Retrain raises here
                running |= {submit(run_one, *run) for run in by_request[waiting.pop(future)]}
            else:
                running.remove(future)
                yield future.result()


def _on(runner: contextlib.AbstractContextManager[Submit], todo: Todo) -> Iterator[dict]:
    """The runs through a runner of :mod:`speechul.runners`, open while rows are read."""
    with runner as submit:
        yield from _scheduled(submit, todo)


def _cache_original(setting: Setting, seed: int) -> None:
    """Train (or find) the original; returns nothing, so no model or corpus travels back."""
    load_run(setting, seed)


def _original_key(setting: Setting, seed: int) -> tuple:
    """What identifies the original model a run of (setting, seed) starts from."""
    return (setting.dataset, setting.task, setting.size, setting.device, setting.recipe,
            _options(setting),
            seed if setting.vary_original else setting.original_seed)


def run(setting: Setting, *, results: str | os.PathLike | None = None,
        ray_address: str | None = None, processes: int = 1,
        threads: int | None = None) -> pd.DataFrame:
    """Run every (method, seed) of ``setting`` plus Retrain; return the tidy table.

    Args:
        results: a JSON-lines file; finished runs found there are not redone (resume), new ones
            are appended as they finish.
        ray_address: ``None`` runs on this machine; ``"local"`` starts a local Ray instance; any
            other value is a Ray cluster address. The cache folder must be shared with workers.
        processes: without Ray, runs go to this many worker processes of this machine (1: all
            in this process). One single-thread process per core pays on many-core machines;
            on two cores it may or may not beat one two-thread process (it depends on the
            processor: time both), and concurrent runs slow each other, which skews the
            reported time fractions (the GFLOP costs are unaffected). Call it
            from a notebook, the shell command or under
            ``if __name__ == "__main__":`` (workers are spawned and import the main module).
            Methods and datasets of your own run there too if their functions are in a module
            they can import (not a notebook cell: :func:`run` says so before training).
        threads: torch CPU threads per run (default: this process's, divided among the
            worker processes); on Ray, give each task its share of a worker machine's cores.
            CPU float sums depend on the thread count, so a table is bitwise repeatable at a
            fixed one, whichever runner ran it.
    """
    return run_many([setting], results=results, ray_address=ray_address, processes=processes,
                    threads=threads)


def _plan(settings: list[Setting]) -> Todo:
    """Every (setting, method, seed) to report, Retrain first in each request. The same request
    given twice with other methods or seeds runs every method on the union of both seeds,
    instead of silently keeping the first; a method tuned differently in two settings of one
    request runs as two variants (their ``overrides`` differ), each once."""
    requests: dict[str, tuple[list[int], dict[tuple[str, str], Setting]]] = {}
    for s in settings:
        seeds, variants = requests.setdefault(s.key, ([], {}))
        seeds.extend(seed for seed in s.seeds if seed not in seeds)
        for method in (REFERENCE, *s.methods):
            variants.setdefault((method, s.overrides(method)), s)
    return [(s, method, seed) for seeds, variants in requests.values()
            for (method, _), s in variants.items() for seed in seeds]


def run_many(settings: Iterable[Setting], *, results: str | os.PathLike | None = None,
             ray_address: str | None = None, processes: int = 1,
             threads: int | None = None) -> pd.DataFrame:
    """:func:`run` for several settings (e.g. tasks x forget fractions), one table.

    All settings share one results file: rows are keyed by setting, so resuming works too.
    """
    settings = list(settings)
    if not settings:
        raise ValueError("give at least one setting")
    path = None if results is None else Path(results)
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    threads = threads or max(1, torch.get_num_threads() // processes)
    with runners.threads(threads):  # row keys hold the thread count the runs will use
        return _run_planned(settings, path, ray_address, processes, threads)


def _run_planned(settings: list[Setting], path: Path | None, ray_address: str | None,
                 processes: int, threads: int) -> pd.DataFrame:
    """:func:`run_many`'s body, at the runs' thread count."""
    done = _read(path)
    planned = _plan(settings)
    todo = [run for run in planned if _run_id(*run) not in done]
    if ray_address is not None and todo:
        rows: Iterator[dict] = _on(runners.ray(ray_address, threads, _registered(todo)), todo)
    elif processes > 1 and len(todo) > 1:
        rows = _on(runners.pool(processes, threads, _registered(todo)), todo)
    else:
        rows = (run_one(*run) for run in todo)
    # A run's variant is named here, where the methods' code is: a Ray worker on another
    # machine may not be able to read a method's source.
    variants = {(s.key, m, s.overrides(m)): s.variant(m) for s, m, _ in planned}
    for row in progress(rows, total=len(todo), desc="grid"):
        row = {**row, "variant": variants[(row["setting"], row["method"], row["overrides"])]}
        done[_row_id(row)] = row
        _append(path, row)
    return pd.DataFrame([done[_run_id(*run)] for run in planned])


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds per request and method (``metrics.summarize`` by
    :data:`GROUP`): the table the chapters print and ``python -m speechul grid`` writes. Its
    ``diverged`` metric is the share of runs that diverged (their rows hold the last finite
    weights, for a method without snapshots the original's: never read such a mean alone)."""
    table = pd.DataFrame(table)
    if "diverged" in table.columns:
        table = table.assign(diverged=table["diverged"].astype(float))
    return metrics.summarize(table, by=GROUP)
