"""Autograder of the course assignments: run a submitted notebook, then check what it wrote.

The instructor runs, for each submission (a ``.ipynb``, or a jupytext ``.md``)::

    python book/assignments/grader.py new_method submissions/alice.ipynb
    python book/assignments/grader.py audit submissions/bob.ipynb --workdir graded/bob

The submission is executed with papermill at a tiny corpus size (the grader injects ``SIZE``,
``EPOCHS`` and ``RESULTS``; < 2 min on 2 CPU cores), the executed notebook is kept in the work
folder for reading, and the JSON file the notebook's last cell writes is checked (for the
audit, the grader also audits the models that cell saves, with its own code). Every check
prints PASS or FAIL with the reason; the exit status is 0 only when all pass. Reference and
deliberately wrong solutions live in ``book/assignments/solutions/`` and ``tests/test_assignments
.py`` grades both in CI, so a grader that passes everything or nothing is caught.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import jupytext
import nbformat
import papermill

GRADE_PARAMS = {"SIZE": "tiny", "EPOCHS": 12}  # small enough for < 2 min a submission
KERNEL_ENV = {"SPEECHUL_QUIET": "1", "OMP_NUM_THREADS": "2",
              # figures as PNG outputs (an outer MPLBACKEND=Agg would drop them)
              "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
Check = tuple[str, bool, str]  # (name, passed, reason)


def _check(name: str, ok: bool, why: str) -> Check:
    return name, bool(ok), why


#: Seconds one cell of a submission may run before the grader stops it (a tiny-size run of the
#: whole notebook takes < 2 min; an endless loop must not hold the grading queue).
CELL_TIMEOUT = 600


@contextlib.contextmanager
def _kernel_env(cache: Path) -> Iterator[None]:
    """The environment the submission's kernel starts with: ``KERNEL_ENV`` and its own, empty
    cache folder, so a submission neither reads the instructor's cached models and features
    nor writes into them. The grader's own environment is restored after."""
    saved = dict(os.environ)
    os.environ.update({**KERNEL_ENV, "SPEECHUL_CACHE": str(cache)})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def execute(submission: Path, workdir: Path, *, timeout: int | None = None) -> tuple[Path, str]:
    """Run the submission into ``workdir/executed.ipynb``; return (results path, error line).

    The notebook runs in a kernel process of its own, each cell under ``timeout`` seconds
    (default :data:`CELL_TIMEOUT`), with an empty cache in a temporary folder.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    source, target = workdir / "submission.ipynb", workdir / "executed.ipynb"
    nbformat.write(jupytext.read(submission), source)
    results = workdir / "results.json"
    results.unlink(missing_ok=True)
    timeout = CELL_TIMEOUT if timeout is None else timeout
    with tempfile.TemporaryDirectory(prefix="grader-cache-") as cache, _kernel_env(Path(cache)):
        try:
            papermill.execute_notebook(str(source), str(target), kernel_name="python3",
                                       parameters={**GRADE_PARAMS, "RESULTS": str(results)},
                                       progress_bar=False, cwd=str(workdir),
                                       execution_timeout=timeout)
        except papermill.PapermillExecutionError as err:
            return results, f"{err.ename}: {err.evalue}"
        except TimeoutError:  # nbclient's CellTimeoutError
            return results, f"a cell ran longer than {timeout} s and was stopped"
    return results, ""


# --------------------------------------------------------------------------- assignment 1


def check_new_method(report: dict) -> list[Check]:
    """Assignment 1: a registered, notebook-defined method that forgets, keeps and is cheap."""
    rows, name = report["rows"], report["method"]
    mine, ref, orig = rows[name], rows["retrain"], rows["original"]
    gap = abs(mine["forgotten_test_acc"] - ref["forgotten_test_acc"])
    # Retrain, not the original, sets what the other keywords can keep: at the tiny grading
    # size the two differ by several points and Retrain is the target of unlearning.
    drop = ref["kept_test_acc"] - mine["kept_test_acc"]
    secs = report["seconds"]
    return [
        _check("registered", report["module"] == "__main__",
               f"my_unlearning is defined in {report['module']!r}; define it in the notebook"),
        _check("hyper-parameters", len(report["hparams"]) >= 1,
               "declare at least one keyword-only hyper-parameter (e.g. *, lr=1e-3)"),
        _check("finite", not report["diverged"], "the method diverged (non-finite loss)"),
        _check("forgets", gap <= 0.15,
               f"accuracy on the forgotten keyword's test clips {mine['forgotten_test_acc']:.3f}"
               f" is {gap:.3f} from Retrain's {ref['forgotten_test_acc']:.3f} (allowed 0.15)"),
        _check("keeps", drop <= 0.10,
               f"accuracy on the other keywords {mine['kept_test_acc']:.3f} is {drop:.3f} below"
               f" Retrain's {ref['kept_test_acc']:.3f} (allowed 0.10; the original:"
               f" {orig['kept_test_acc']:.3f})"),
        _check("cheaper", secs[name] < secs["retrain"],
               f"{secs[name]:.1f} s against Retrain's {secs['retrain']:.1f} s"),
        _check("below the head", report["changed_below_head"] > 0,
               "0 parameters changed below the classifier (head): editing only the output "
               "layer hides the keyword, it does not remove it"),
    ]


# --------------------------------------------------------------------------- assignment 2


def _expected_forget(voice: str) -> list[int]:
    """The grader's own forget set for ``voice``: every training clip of it, any keyword."""
    import speechul as su

    corpus = su.data.load("embedded", task="keyword", size=GRADE_PARAMS["SIZE"])
    split = su.data.forget_split(corpus, "speaker", speakers=[voice])
    return sorted(int(i) for i in split.forget.cpu())


AUDIT_KEYS = ("forget_acc", "test_acc", "mia_auc", "relearn_acc")
AUDIT_TOLERANCE = 0.07  # about one clip of the held-out relearning clips at the tiny size


def _audit(model, corpus, split, seed: int) -> dict[str, float]:
    """The audit the assignment specifies (YOUR CODE (2)), as the grader computes it."""
    import speechul as su

    row = su.evaluate(model, split, seed=seed)
    n = min(16, len(split.forget) // 2)
    curve = su.audits.relearn(model, corpus, split.forget, retain=split.retain, n_relearn=n,
                              n_retain=n, seed=seed)
    return {"forget_acc": row["forget_acc"], "test_acc": row["test_acc"],
            "mia_auc": row["mia_auc"], "relearn_acc": float(curve.heldout_acc.iloc[1:].mean())}


def _regraded_rows(report: dict, models_path: Path) -> dict[str, dict[str, float]]:
    """The grader's own audit rows: its own original and Retrain, and the submission's saved
    models for the methods, all on the grader's own forget request."""
    import torch

    import speechul as su

    torch.set_num_threads(int(KERNEL_ENV["OMP_NUM_THREADS"]))  # the kernel's float sums
    seed = report["seed"]
    corpus = su.data.load("embedded", task="keyword", size=GRADE_PARAMS["SIZE"])
    recipe = su.train.TrainConfig(epochs=GRADE_PARAMS["EPOCHS"])
    original = su.train.original(corpus, recipe, seed=seed)
    split = su.data.forget_split(corpus, "speaker", speakers=[report["voice"]])
    models = {"original": original.model,
              "retrain": su.unlearn.run("retrain", original, split, seed=seed).model}
    saved = torch.load(models_path, map_location=corpus.device, weights_only=True)
    for method in (r["method"] for r in report["rows"]):
        if method not in models:
            models[method] = su.train.fresh_model(recipe, corpus.n_classes, corpus.device, seed)
            models[method].load_state_dict(saved[method])
            models[method].eval()
    return {m: _audit(model, corpus, split, seed) for m, model in models.items()}


def _valid_rows(rows: list[dict]) -> str:
    """'' when every row has the four audit metrics in [0, 1], else what is wrong."""
    for row in rows:
        for key in AUDIT_KEYS:
            value = row.get(key)
            if not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
                return f"{row.get('method')}: {key} = {value!r}, need a number in [0, 1]"
    return ""


def _mismatches(rows: list[dict], regraded: dict[str, dict[str, float]]) -> list[str]:
    """'method key: theirs vs ours' for every audit number further than the tolerance."""
    return [f"{r['method']} {k}: {r[k]:.3f} vs {regraded[r['method']][k]:.3f}"
            for r in rows for k in AUDIT_KEYS
            if abs(r[k] - regraded[r["method"]][k]) > AUDIT_TOLERANCE]


def check_audit(report: dict, models_path: Path | None = None) -> list[Check]:
    """Assignment 2: the right request, a complete audit table, numbers the grader reproduces on
    the same models (``models_path``, saved by the last cell), and conclusions that follow the
    grader's audit. Without ``models_path`` the conclusions are checked against the table."""
    import pandas as pd

    import speechul as su

    expected = _expected_forget(report["voice"])
    got = set(report["forget"])
    missing, extra = len(set(expected) - got), len(got - set(expected))
    rows = pd.DataFrame(report["rows"])
    methods = [m for m in rows.get("method", []) if m not in ("original", "retrain")]
    bad = _valid_rows(report["rows"])
    checks = [
        _check("request", report["kind"] == "speaker" and not missing and not extra,
               f"kind {report['kind']!r} (need 'speaker'); {missing} of the voice's "
               f"{len(expected)} training clips missing, {extra} other clips included"),
        _check("table", "retrain" in set(rows.get("method", [])) and len(methods) >= 2
               and not bad, bad or f"need rows for retrain and >= 2 methods, got {methods}"),
    ]
    if not checks[-1][1] or not checks[0][1]:
        return checks
    if models_path is not None:
        regraded = _regraded_rows(report, models_path)
        wrong = _mismatches(report["rows"], regraded)
        checks.append(_check("audit", not wrong, f"numbers the grader's audit of the same models "
                             f"does not reproduce (allowed {AUDIT_TOLERANCE}): {wrong}"))
        rows = pd.DataFrame([{"method": m, **row} for m, row in regraded.items()])
    table = su.audits.verdicts(rows[rows.method != "original"])
    truth = {m: "forgotten" if len(set(table.loc[m, "passed"].split("/"))) == 1
             else "not forgotten" for m in methods}
    wrong = {m: report["conclusions"].get(m) for m in methods
             if report["conclusions"].get(m) != truth[m]}
    checks.append(_check("conclusions", not wrong,
                         f"these disagree with the audits {truth}: {wrong}"))
    return checks


# assignment -> check(report, path of the results file)
ASSIGNMENTS: dict[str, Callable[[dict, Path], list[Check]]] = {
    "new_method": lambda report, results: check_new_method(report),
    "audit": lambda report, results: check_audit(report, Path(f"{results}.models.pt")),
}


def grade(assignment: str, submission: Path, workdir: Path) -> list[Check]:
    """Run and check one submission; the list of (check, passed, reason)."""
    if assignment not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {assignment!r}; known: {sorted(ASSIGNMENTS)}")
    results, error = execute(submission, workdir)
    if error:
        return [_check("runs", False, f"the notebook raised {error} (see {workdir}"
                       "/executed.ipynb)")]
    if not results.exists():
        return [_check("runs", False, f"the notebook wrote no {results.name}: keep the last cell")]
    checks = [_check("runs", True, "")]
    try:
        checks += ASSIGNMENTS[assignment](json.loads(results.read_text()), results)
    except (KeyError, TypeError, ValueError, FileNotFoundError, RuntimeError) as err:
        checks.append(_check("results", False, f"the results file is incomplete: {err!r}"))
    return checks


STARTERS = ("a1_new_method", "a2_audit")


def write_colab_copies() -> list[Path]:
    """(Re)write each starter's Colab copy beside it, as scripts/notebooks.py does chapters."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("book_notebooks",
                                                  root / "scripts" / "notebooks.py")
    notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(notebooks)
    written = []
    for name in STARTERS:
        starter = Path(__file__).with_name(f"{name}.md")
        notebooks.notebook_path(starter).write_text(notebooks.render(starter))
        written.append(notebooks.notebook_path(starter))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", nargs="?", choices=sorted(ASSIGNMENTS))
    parser.add_argument("submission", nargs="?", type=Path,
                        help="the student's .ipynb (or jupytext .md)")
    parser.add_argument("--workdir", type=Path, help="keeps the executed notebook (default: temp)")
    parser.add_argument("--colab", action="store_true",
                        help="(re)write the starters' Colab copies (.ipynb) and exit")
    args = parser.parse_args(argv)
    if args.colab:
        for path in write_colab_copies():
            print(f"wrote {path}")
        return 0
    if args.assignment is None or args.submission is None:
        parser.error("give an assignment and a submission (or --colab)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="speechul-grade-"))
    checks = grade(args.assignment, args.submission, workdir)
    for name, ok, why in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<18} {'' if ok else why}")
    passed = sum(ok for _, ok, _ in checks)
    print(f"{passed}/{len(checks)} checks passed ({args.submission})")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
