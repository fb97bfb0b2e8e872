"""Performance benchmark: cached features vs per-file loading, unlearning cost, book run time.

Measures, in one run and on one machine:

(a) training samples/s of speechul's way (log-mels cached once as one tensor, batched by index,
    ``su.train.fit``) against a naive per-file ``DataLoader`` (soundfile + ``MelSpectrogram`` on
    every item), with the same model, optimiser, batch size, seed and number of samples;
(b) each unlearning method's ``su.unlearn.run`` seconds as a fraction of Retrain's (keyword task,
    10 % sample forgetting);
(c) with ``--book``: the seconds each chapter of ``_toc.yml`` takes under papermill.

Writes ``benchmarks/results/perf-<machine>[-<size>].json`` and re-renders ``BENCHMARKS.md``. A
section not run this time (e.g. the book) is kept from the previous results file of the machine.
This is a benchmark, not a test: it asserts nothing about speed.

Usage::

    python benchmarks/perf.py                   # (a) + (b) at the default corpus size
    python benchmarks/perf.py --book            # ... and (c)
    python benchmarks/perf.py --quick           # tiny corpus, 1 epoch: a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import naive  # noqa: E402 - the benchmark's own helpers, beside this file
import report  # noqa: E402

import speechul as su  # noqa: E402


def log(message: str) -> None:
    print(f"[perf {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- (a) training


def _timed_fit(model: torch.nn.Module, stream, recipe: su.train.TrainConfig,
               desc: str) -> float:
    with su._runtime.Timer() as timer:
        su.train.fit(model, stream, recipe, desc=desc)
    return timer.seconds


def _warm_up(corpus: su.data.Corpus, recipe: su.train.TrainConfig, train: torch.Tensor) -> None:
    """A few steps first, so neither side pays the one-time kernel/primitive set-up."""
    model = su.train.fresh_model(recipe, corpus.n_classes, corpus.device, seed=1)
    few = train[: 4 * recipe.batch_size]
    su.train.fit(model, su.data.Batches(corpus.x, corpus.y, few, recipe.batch_size),
                 dataclasses.replace(recipe, epochs=1), desc="warm-up")


def _feature_pass(corpus: su.data.Corpus) -> tuple[float, torch.Tensor]:
    """Seconds of speechul's one batched log-mel pass over the corpus (what the cache saves)."""
    n = len(corpus)
    with su._runtime.Timer() as timer:
        x = su.features._compute(corpus.source.load_waves, n, su.features.FeatureConfig(),
                                 chunk=512, device=corpus.device)
    return timer.seconds, x


def _max_diff(dataset: naive.PerFileLogMel, x: torch.Tensor, ids: torch.Tensor) -> float:
    """Largest difference between the naive and the cached features on a few clips."""
    picks = range(min(8, len(ids)))
    return max(float((dataset[i][0] - x[int(ids[i])].cpu()).abs().max()) for i in picks)


def _feed_rate(stream) -> float:
    """Samples/s of the input pipeline alone (one pass, no model): its ceiling on any device."""
    with su._runtime.Timer() as timer:
        count = sum(len(y) for _, y in stream)
    return count / timer.seconds


def _race(streams: dict, corpus: su.data.Corpus, recipe: su.train.TrainConfig, repeats: int,
          quiet_wait: float, seed: int) -> dict[str, dict[str, float]]:
    """Alternate the pipelines ``repeats`` times; keep each one's fastest fit and feed.

    Alternating (not all runs of one, then the other) spreads other jobs' load over both.
    """
    best = {name: {"fit": float("inf"), "feed": 0.0} for name in streams}
    for r in range(repeats):
        for name, stream in streams.items():
            log(f"repeat {r + 1}/{repeats}: {name} pipeline")
            report.wait_for_quiet(quiet_wait, log)
            model = su.train.fresh_model(recipe, corpus.n_classes, corpus.device, seed)
            fit = _timed_fit(model, stream(), recipe, name)
            best[name] = {"fit": min(best[name]["fit"], fit),
                          "feed": max(best[name]["feed"], _feed_rate(stream()))}
    return best


def bench_training(corpus: su.data.Corpus, recipe: su.train.TrainConfig, epochs: int,
                   workers: int, repeats: int, seed: int = 0,
                   max_clips: int | None = None, quiet_wait: float = 0.0) -> dict:
    """(a): the same training run fed two ways; best of ``repeats`` alternating runs each.

    ``max_clips`` uses only the first training clips (smoke runs); ``quiet_wait``: seconds to
    wait, at most, for other jobs to pause before each timed run.
    """
    train = corpus.indices("train")[:max_clips]
    recipe = dataclasses.replace(recipe, epochs=epochs)
    samples = len(train) * epochs
    feature_seconds, recomputed = _feature_pass(corpus)
    with tempfile.TemporaryDirectory(prefix="speechul-perf-wavs-") as tmp:
        log(f"writing {len(train)} training clips as WAV files to {tmp}")
        with su._runtime.Timer() as write:
            paths = naive.write_wavs(corpus, train, Path(tmp))
        labels = corpus.y[train]
        diff = _max_diff(naive.PerFileLogMel(paths, labels), recomputed, train)
        _warm_up(corpus, recipe, train)
        streams = {
            "cached": lambda: su.data.Batches(corpus.x, corpus.y, train, recipe.batch_size,
                                              seed=seed),
            "naive": lambda: naive.loader(paths, labels, recipe.batch_size, corpus.device,
                                          workers, seed)}
        best = _race(streams, corpus, recipe, repeats, quiet_wait, seed)
    side = {name: {"seconds": b["fit"], "samples_per_s": samples / b["fit"],
                   "seconds_per_epoch": b["fit"] / epochs, "input_only_samples_per_s": b["feed"]}
            for name, b in best.items()}
    side["naive"].update(workers=workers, wav_write_seconds=write.seconds)
    speedup = side["cached"]["samples_per_s"] / side["naive"]["samples_per_s"]
    log(f"cached {side['cached']['samples_per_s']:.0f} samples/s, naive "
        f"{side['naive']['samples_per_s']:.0f} samples/s: {speedup:.1f}x")
    return {"clips": len(train), "corpus_clips": len(corpus), "epochs": epochs,
            "samples": samples, "batch_size": recipe.batch_size, "repeats": repeats,
            "cached": side["cached"], "naive": side["naive"], "speedup": speedup,
            "feature_pass_seconds": feature_seconds, "max_feature_diff": diff}


# --------------------------------------------------------------------------- (b) unlearning


def check_methods(methods: list[str] | None) -> None:
    """Fail before any timing starts when a requested method does not exist."""
    from speechul import unlearn

    unknown = sorted(set(methods or ()) - set(unlearn.METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {sorted(unlearn.METHODS)}")


def bench_unlearning(corpus: su.data.Corpus, recipe: su.train.TrainConfig, fraction: float = 0.1,
                     seed: int = 0, methods: list[str] | None = None,
                     max_epochs: int | None = None, repeats: int = 1,
                     quiet_wait: float = 0.0) -> dict:
    """(b): registered methods on one sample-forgetting request, timed by ``run``.

    Default hyper-parameters, except that ``max_epochs`` (smoke runs) caps a method's ``epochs``.
    Retrain always runs: it is the denominator. Each of ``repeats`` rounds runs every method once
    (same seed, so the same work); the fastest run of each counts, as the others were slowed by
    other jobs. ``quiet_wait``: seconds to wait, at most, for other jobs to pause before a run.
    """
    from speechul import unlearn  # imported here: (a) and (c) do not need it

    log(f"original {corpus.task} model ({recipe.epochs} epochs; cached after the first run)")
    original = su.train.original(corpus, recipe, seed=seed)
    split = su.data.forget_split(corpus, "sample", fraction=fraction, seed=seed)
    check_methods(methods)
    names = ["retrain", *sorted(set(methods or unlearn.METHODS) - {"retrain"})]
    rows = {name: {"runs": [], "diverged": False} for name in names}
    for r in range(repeats):
        for name in su._runtime.progress(names, desc=f"methods, round {r + 1}"):
            log(f"round {r + 1}/{repeats}: unlearning with {name}")
            hparams = {}
            if max_epochs and unlearn.defaults(name).get("epochs", 0) > max_epochs:
                hparams["epochs"] = max_epochs
            report.wait_for_quiet(quiet_wait, log)
            out = unlearn.run(name, original, split, seed=seed, **hparams)
            row = rows[name]
            row["runs"].append(out.seconds)
            row["cost"] = out.cost  # GFLOP: the same in every round and on every machine
            row["diverged"] = row["diverged"] or out.diverged
            row["hparams"] = out.hparams
    for row in rows.values():
        row["seconds"] = min(row["runs"])
        row["fraction_of_retrain"] = row["seconds"] / min(rows["retrain"]["runs"])
        row["work_fraction"] = row["cost"] / rows["retrain"]["cost"]
    return {"task": corpus.task, "kind": "sample", "fraction": fraction,
            "forget": len(split.forget), "retain": len(split.retain),
            "recipe": dataclasses.asdict(recipe), "original_seconds": original.seconds,
            "repeats": repeats, "methods": rows}


# --------------------------------------------------------------------------- (c) the book


def _chapters() -> list[Path]:
    """The chapters of ``_toc.yml``, read by the same code that writes the Colab copies."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebooks",
                                                  report.ROOT / "scripts" / "notebooks.py")
    notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(notebooks)
    return notebooks.chapters(report.ROOT)


def _run_chapter(chapter: Path, folder: Path, timeout: int) -> dict:
    import jupytext
    import papermill

    source = folder / f"{chapter.stem}.ipynb"
    jupytext.write(jupytext.read(chapter), source)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(source), str(folder / f"{chapter.stem}-out.ipynb"),
                                   kernel_name="python3", cwd=str(chapter.parent),
                                   execution_timeout=timeout, progress_bar=False)
        ok, error = True, ""
    except Exception as err:  # noqa: BLE001 - a failed chapter is recorded, not fatal
        ok, error = False, f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}"
    return {"seconds": time.perf_counter() - start, "ok": ok, "error": error}


def bench_book(timeout: int = 1800) -> dict:
    """(c): each existing chapter executed with its default parameters, in toc order.

    From an empty cache (a fresh ``SPEECHUL_CACHE`` for the chapters' kernels), as a reader's
    first run of the whole book: later chapters reuse what earlier ones cached, nothing else.
    """
    rows = {}
    before = os.environ.get("SPEECHUL_CACHE")
    with tempfile.TemporaryDirectory(prefix="speechul-perf-book-") as tmp:
        os.environ["SPEECHUL_CACHE"] = str(Path(tmp) / "cache")
        try:
            for chapter in _chapters():
                name = chapter.relative_to(report.ROOT).as_posix()
                if not chapter.exists():
                    log(f"{name}: listed in _toc.yml but missing; skipped")
                    continue
                log(f"executing {name}")
                rows[name] = _run_chapter(chapter, Path(tmp), timeout)
                log(f"{name}: {rows[name]['seconds']:.0f} s, "
                    f"{'ok' if rows[name]['ok'] else 'FAILED: ' + rows[name]['error']}")
        finally:
            if before is None:
                os.environ.pop("SPEECHUL_CACHE", None)
            else:
                os.environ["SPEECHUL_CACHE"] = before
    return {"chapters": rows, "total_seconds": sum(r["seconds"] for r in rows.values())}


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="default", help="embedded corpus size (default: default)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if present)")
    p.add_argument("--quick", action="store_true",
                   help="tiny corpus, 128 clips and 1 epoch in (a), 1-epoch models and "
                        "methods: a smoke run")
    p.add_argument("--epochs", type=int, default=2, help="training epochs timed in (a)")
    p.add_argument("--max-clips", type=int, default=None,
                   help="use at most this many training clips in (a) (default: all)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per pipeline in (a) and per method in (b); the fastest counts")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="on a shared machine: before each timed run, wait up to this many seconds "
                        "for other jobs to pause (default 0: do not wait)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="torch CPU threads")
    book = p.add_mutually_exclusive_group()
    book.add_argument("--book", action="store_true", help="also execute every chapter (long)")
    book.add_argument("--skip-book", action="store_true", help="do not execute the book (default)")
    p.add_argument("--skip-training", action="store_true",
                   help="skip (a) (keep the previous results of this machine)")
    p.add_argument("--skip-unlearning", action="store_true",
                   help="skip (b) (keep the previous results of this machine)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods timed in (b) (default: all registered; retrain always runs)")
    p.add_argument("--out", type=Path, default=report.RESULTS, help="results folder")
    p.add_argument("--markdown", type=Path, default=report.MARKDOWN,
                   help="the Markdown file rendered from the results folder")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.epochs, args.max_clips = "tiny", 1, args.max_clips or 128
    return args


def _section(skip: bool, previous: dict | None, measure) -> dict | None:
    """Run one section (stamped with its date, argv and load), or keep the previous one."""
    if skip:
        return previous
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = {"date": report.now(), "argv": sys.argv[1:], **measure()}
    out["load_average_1m"] = [load, os.getloadavg()[0] if load is not None else None]
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if not args.skip_unlearning:
        check_methods(args.methods)
    torch.set_num_threads(args.threads)
    device = su.default_device(args.device)
    slug = report.machine_slug(device) + ("" if args.size == "default" else f"-{args.size}")
    path = args.out / f"perf-{slug}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    result = {"kind": "perf", "date": report.now(), "argv": sys.argv[1:] if argv is None else argv,
              "corpus": f"embedded-{args.size}", "machine": report.machine(device)}
    log(f"loading the embedded {args.size} corpus on {device}")
    corpus = su.data.load("embedded", task="keyword", size=args.size, device=device)
    recipe = su.train.TrainConfig(epochs=1) if args.quick else su.train.TrainConfig()
    result["training"] = _section(args.skip_training, previous.get("training"), lambda: (
        bench_training(corpus, recipe, args.epochs, args.workers, args.repeats,
                       max_clips=args.max_clips, quiet_wait=args.quiet_wait)))
    result["unlearning"] = _section(args.skip_unlearning, previous.get("unlearning"), lambda: (
        bench_unlearning(corpus, recipe, methods=args.methods, repeats=args.repeats,
                         max_epochs=1 if args.quick else None, quiet_wait=args.quiet_wait)))
    result["book"] = _section(not args.book, previous.get("book"), bench_book)
    report.write_json(result, path)
    log(f"wrote {path}")
    report.update_markdown(args.out, args.markdown)
    return result


if __name__ == "__main__":
    main()
