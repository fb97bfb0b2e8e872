"""``python -m speechul``: run an experiment grid from the shell, or list the methods.

    python -m speechul grid --task keyword,speaker --kind sample --fraction 0.01,0.1 \\
        --methods finetune,scrub --seeds 0,1,2 --out results/ch4
    python -m speechul methods
    python -m speechul grid --import my_methods.py --methods my_method,scrub --out results/mine

``grid`` runs one setting per (task, fraction) and writes ``results.jsonl`` (resumable:
re-running skips finished runs), ``results.csv``, ``summary.csv`` (mean and spread over seeds,
``experiments.summary``) and ``figure.png`` into ``--out``. It calls the same ``experiments.run``
as the chapters. ``--import`` loads a module (a name, or a ``.py`` file) first, so the methods it
registers with ``@su.unlearn.register`` join the grid. Bad arguments are usage errors (exit 2),
not tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import data, experiments, tables, train, unlearn
from ._runtime import keep_freed_memory

__all__ = ["main", "parser"]

TASKS = ("keyword", "speaker")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _methods(text: str) -> tuple[str, ...]:
    names = _names(text)
    if not names:  # "--methods ," would otherwise mean "every method"
        raise argparse.ArgumentTypeError(f"no names in {text!r}")
    return names


def _list_of(convert: type, what: str) -> Callable[[str], tuple]:
    """An argparse type for comma-separated values of ``convert`` (an int or float list)."""

    def parse(text: str) -> tuple:
        try:
            return tuple(convert(part) for part in _names(text))
        except ValueError:
            message = f"expected comma-separated {what}, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None

    return parse


_ints = _list_of(int, "integers")
_floats = _list_of(float, "numbers")


def _tasks(text: str) -> tuple[str, ...]:
    tasks = _names(text)
    bad = [t for t in tasks if t not in TASKS] or ([] if tasks else [text])
    if bad:
        raise argparse.ArgumentTypeError(f"invalid choice: {bad[0]!r} (choose from "
                                         f"{', '.join(TASKS)}; several: keyword,speaker)")
    return tasks


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _import(name: str, top: argparse.ArgumentParser) -> None:
    """Import a module by name or by ``.py`` path; its ``@register`` calls add methods.

    A file's folder goes on ``sys.path`` and the module is imported by its stem, so worker
    processes and Ray tasks of the grid can import it too. A name is also looked up in the
    current folder, as ``python -m`` does, also when run as the ``speechul`` command.
    """
    path = Path(name)
    folder = path.resolve().parent if path.suffix == ".py" else Path.cwd()
    if path.suffix == ".py":
        if not path.is_file():
            top.error(f"argument --import: no such file: {name!r}")
        name = path.stem
    if not any(Path(entry or ".").resolve() == folder for entry in sys.path):
        sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(name)
    except ImportError as err:
        top.error(f"argument --import: cannot import {name!r}: {err}")
    if path.suffix == ".py" and Path(module.__file__ or "").resolve() != path.resolve():
        top.error(f"argument --import: {str(path)!r} is shadowed by the module "
                  f"{name!r} at {module.__file__}; rename the file")


def _with_imports(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE", help="a module or .py file to import first: "
                        "methods it registers can be named in --methods (repeatable)")
    return parser


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m speechul", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    _with_imports(sub.add_parser("methods",
                                 help="list the registered unlearning methods and their defaults"))
    grid = _with_imports(sub.add_parser("grid", help="run one experiment grid and write a table "
                                                     "and a figure"))
    grid.add_argument("--task", type=_tasks, default=("keyword",),
                      help="keyword, speaker or both: keyword,speaker")
    grid.add_argument("--kind", choices=("sample", "class", "speaker"), default="sample")
    grid.add_argument("--fraction", type=_floats, default=(0.1,),
                      help="sample kind: forget fraction(s), e.g. 0.01,0.1")
    grid.add_argument("--classes", type=_names, default=(), help="class kind: e.g. yes,stop")
    grid.add_argument("--speakers", type=_names, default=(), help="speaker kind: speaker names")
    grid.add_argument("--methods", type=_methods, default=None,
                      help="comma-separated (default: all registered); Retrain always runs")
    grid.add_argument("--seeds", type=_ints, default=(0,), help="comma-separated, e.g. 0,1,2")
    grid.add_argument("--dataset", default="embedded")
    grid.add_argument("--size", default="default",
                      help="corpus size: tiny/small/default (a real corpus: a per-class cap)")
    grid.add_argument("--epochs", type=int, default=train.TrainConfig().epochs,
                      help="epochs of the original model and of Retrain")
    grid.add_argument("--hparams", type=_json, default={},
                      help='per-method overrides as JSON, e.g. \'{"scrub": {"epochs": 3}}\'')
    grid.add_argument("--holdout", choices=experiments.HOLDOUTS, default="test",
                      help="score on test clips, or on validation clips to tune without "
                           "looking at the test set (rows are kept apart)")
    grid.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if present)")
    grid.add_argument("--processes", type=_positive, default=1,
                      help="worker processes of this machine (default 1: all in this one)")
    grid.add_argument("--threads", type=_positive, default=None,
                      help="torch CPU threads per run (default: torch's divided among the "
                           "processes); float sums depend on it")
    grid.add_argument("--ray", default=None, metavar="ADDRESS",
                      help="run each (method, seed) as a Ray task: 'local' or a cluster address")
    grid.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    return top


def _settings(args: argparse.Namespace,
              top: argparse.ArgumentParser) -> list[experiments.Setting]:
    """One setting per (task, fraction); class and speaker kinds ignore the fraction."""
    fractions = args.fraction if args.kind == "sample" else (None,)
    if not fractions:
        top.error("argument --fraction: give at least one fraction")
    needs = {"class": ("classes", args.classes), "speaker": ("speakers", args.speakers)}
    if args.kind in needs and not needs[args.kind][1]:
        top.error(f"argument --{needs[args.kind][0]}: a {args.kind!r} request names what to "
                  "forget")
    for kind, (name, given) in needs.items():
        if given and args.kind != kind:  # silently ignored before: a sample request ran instead
            top.error(f"argument --{name}: only a {kind!r} request reads it, this one is "
                      f"--kind {args.kind}; drop --{name} or give --kind {kind}")
    methods = args.methods or tuple(unlearn.METHODS)
    unused = sorted(set(args.hparams) - {*methods, "retrain"})
    if unused:
        top.error(f"argument --hparams: {unused} not in --methods (a typo, or a method left out?)")
    try:
        return [experiments.Setting(
            task=task, kind=args.kind, fraction=fraction, classes=args.classes,
            speakers=args.speakers, methods=methods,
            seeds=args.seeds, dataset=args.dataset,
            size=args.size, recipe=train.TrainConfig(epochs=args.epochs), hparams=args.hparams,
            device=args.device, holdout=args.holdout)
            for task in args.task for fraction in fractions]
    except ValueError as err:
        hint = " (a method of your own: --import its module)" if "unknown method" in str(
            err) else ""
        top.error(f"{err}{hint}")


def _check_out(out: Path, top: argparse.ArgumentParser) -> None:
    """Make ``--out`` and write a probe file there, before anything trains: a read-only or
    invalid folder used to raise a traceback after the first run had trained."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        top.error(f"argument --out: cannot write to {str(out)!r} ({err.strerror or err}); "
                  "give a folder you can write to")


def _check_requests(settings: list[experiments.Setting], top: argparse.ArgumentParser) -> None:
    """Build every setting's forget request for every seed on its corpus (loaded, as the run
    will load it, from the cache): a mistyped class or speaker, an empty forget set or a
    missing corpus is a usage error now, not after the original model has trained."""
    for setting in settings:
        try:
            corpus = experiments.corpus_of(setting)
            for seed in setting.seeds:
                data.forget_split(corpus, setting.kind, fraction=setting.fraction,
                                  classes=setting.classes or None,
                                  speakers=setting.speakers or None, seed=seed)
        except (ValueError, FileNotFoundError) as err:
            top.error(str(err))


def _grid(args: argparse.Namespace, top: argparse.ArgumentParser) -> int:
    from . import plots

    settings = _settings(args, top)
    if args.ray is None and str(args.device).startswith("cuda") and not torch.cuda.is_available():
        top.error(f"argument --device: {args.device!r} asked for, but torch sees no CUDA GPU "
                  "here (on a Ray cluster with GPUs, add --ray ADDRESS)")
    _check_out(args.out, top)
    _check_requests(settings, top)
    try:
        table = experiments.run_many(settings, results=args.out / "results.jsonl",
                                     ray_address=args.ray, processes=args.processes,
                                     threads=args.threads)
    except (ValueError, FileNotFoundError) as err:  # an unknown class or speaker, found when
        top.error(str(err))                           # the corpus loads; a real corpus missing
    table.to_csv(args.out / "results.csv", index=False)
    summary = experiments.summary(table)
    summary.to_csv(args.out / "summary.csv", index=False)
    figure = plots.gap_vs_time_by_request(table)  # one panel per task and fraction
    figure.savefig(args.out / "figure.png", dpi=120, bbox_inches="tight")
    print(tables.render(table))  # methods x key metrics; summary.csv has the long format
    diverged = table[table["diverged"].astype(bool)]
    if len(diverged):
        runs = ", ".join(f"{m} (seed {s})" for m, s in zip(diverged.method, diverged.seed,
                                                             strict=True))
        print(f"\nWARNING: {len(diverged)} of {len(table)} runs diverged and report their last "
              f"finite weights, not an unlearned model: {runs}")
    print(f"\nwrote {args.out}/results.csv, summary.csv, figure.png")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()  # this process trains: faster CPU steps, same numbers
    top = parser()
    args = top.parse_args(argv)
    for name in args.imports:
        _import(name, top)
    if args.command == "methods":
        for name in unlearn.METHODS:
            print(f"{name:16s} {unlearn.defaults(name)}")
        return 0
    return _grid(args, top)


if __name__ == "__main__":
    sys.exit(main())
