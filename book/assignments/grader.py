"""Autograder of the course assignments.

The instructor runs, for each submission (a ``.ipynb``, or a jupytext ``.md``)::

    SPEECHUL_GRADER_SECRET=... python book/assignments/grader.py new_method submissions/alice.ipynb
    python book/assignments/grader.py audit submissions/bob.ipynb --workdir graded/bob

**Assignment 1** (``new_method``) is graded on the student's *code*, never on numbers the
notebook computes: the grader takes the cells tagged ``method`` (the function
``my_unlearning``), runs it itself in a process of its own (``_run_method.py``: empty cache,
time limit) on three forget requests drawn from ``$SPEECHUL_GRADER_SECRET`` that the notebook
never names, and scores the returned models in its own process against its own Retrain and
fine-tuning (:func:`grade_method`; the rule is in :func:`check_new_method` and
:func:`new_method_score`, and in the assignment's text). Set the secret for real grading: the
default is public.

**Assignment 2** (``audit``) is executed with papermill at a tiny corpus size (the grader
injects ``SIZE``, ``EPOCHS`` and ``RESULTS``; < 2 min on 2 CPU cores), the executed notebook is
kept in the work folder for reading, and the JSON file the notebook's last cell writes is
checked (the grader also audits the models that cell saves, with its own code).

Every check prints PASS or FAIL with the reason; the exit status is 0 only when all pass.
Reference, deliberately wrong and (for assignment 1) cheating and mediocre solutions live in
``book/assignments/solutions/``; ``tests/test_assignments.py`` grades them all in CI, so a
grader that passes everything or nothing, or a cheat, is caught.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jupytext
import nbformat
import papermill

if TYPE_CHECKING:  # torch loads lazily: --colab and --help need none of it
    import torch
    from torch import nn

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
def _kernel_env(cache: Path, env: dict[str, str] = KERNEL_ENV) -> Iterator[None]:
    """The environment the submission's process starts with: ``env`` and its own, empty
    cache folder, so a submission neither reads the instructor's cached models and features
    nor writes into them. The grader's own environment is restored after."""
    saved = dict(os.environ)
    os.environ.update({**env, "SPEECHUL_CACHE": str(cache)})
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
#
# The grader never trusts a number the student's notebook computes. It takes the code of the
# cells tagged ``method`` (the function ``my_unlearning``), runs it itself in a sandbox process
# (``_run_method.py``: empty cache, time limit) on forget requests the student never saw, and
# scores the models that come back in its own process against its own Retrain and fine-tuning.

METHOD_TAG = "method"  # the starter's method cell carries this tag
METHOD_NAME = "my_unlearning"
#: What the module built from the method cells starts with: the starter's own imports, so a
#: cell that runs in the notebook runs in the module.
METHOD_HEADER = ("import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
                 "import speechul as su\n\n")
#: The public request (the notebook's): never one of the hidden ones.
PUBLIC_KEYWORD = "yes"
#: How many hidden requests are scored; each is (keyword, seed): another keyword to forget and
#: another seed for the original model and the batch order.
HIDDEN = 3
#: Environment variable holding the instructor's secret that draws the hidden requests; CI and
#: a grader without it use ``DEFAULT_SECRET`` (public, so set your own for real grading).
SECRET_ENV = "SPEECHUL_GRADER_SECRET"
DEFAULT_SECRET = "speechul-ci"
#: Seconds the sandbox may take for all hidden requests (a real method takes < 1 min at tiny).
METHOD_TIMEOUT = 900
FULL_MARKS = 100.0
#: "Changed below the head": ||theta_body - theta_body,original|| / ||theta_body,original||
#: must reach this (the reference moves the body by ~CAL_BODY; a bias edit with one weight
#: nudged, ~1e-6).
MIN_BODY_CHANGE = 1e-3
#: "A real change on the forget set": the new body under the *original* head must answer the
#: forget clips differently from the original (mean Jensen-Shannon divergence, bits).
MIN_FORGET_SHIFT = 0.01
#: A model this close to fine-tuning's on the same inputs (relative L2 distance of all weights)
#: is fine-tuning, whoever wrote the code: a copy-paste of ``finetune`` lands at ~0.
MIN_DISTANCE_TO_FINETUNE = 1e-3


def method_cells(submission: Path) -> list[str]:
    """The sources of the submission's method cells: those tagged ``method`` or, if none is
    (a notebook editor that drops tags), those that define ``my_unlearning``."""
    cells = [c for c in jupytext.read(submission).cells if c.cell_type == "code"]
    tagged = [c.source for c in cells if METHOD_TAG in c.metadata.get("tags", [])]
    return tagged or [c.source for c in cells if f"def {METHOD_NAME}(" in c.source]


def write_method(submission: Path, workdir: Path) -> Path:
    """Write the method cells as one module, ``workdir/student_method.py``, and return it.

    Raises:
        ValueError: no method cell, or one that is not plain Python (a %magic or !command).
    """
    cells = method_cells(submission)
    if not cells:
        raise ValueError(f"no cell tagged {METHOD_TAG!r} defines {METHOD_NAME}: write your "
                         "method in the starter's YOUR CODE cell (keep its tag)")
    source = METHOD_HEADER + "\n\n".join(cells) + "\n"
    try:
        compile(source, "student_method.py", "exec")
    except SyntaxError as err:
        raise ValueError(f"the method cell is not plain Python ({err.msg}, line {err.lineno}"
                         f" of the cell): move %magics, !commands and tests elsewhere") from None
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "student_method.py"
    path.write_text(source)
    return path


def hidden_requests(secret: str | None = None, n: int = HIDDEN) -> list[dict[str, Any]]:
    """The ``n`` requests the method is scored on: keywords other than the public one, a seed
    for each run's batch order and one for the original model, drawn from the instructor's
    secret (``$SPEECHUL_GRADER_SECRET``). Nothing in the notebook names them, so a method tuned
    to the public request's numbers gains nothing. One original serves all ``n`` (training one
    per request would double the grading time for little more information)."""
    import random

    from speechul.synth import KEYWORDS

    secret = secret or os.environ.get(SECRET_ENV) or DEFAULT_SECRET
    draw = random.Random(f"a1:{secret}")
    original_seed = draw.randrange(1, 10_000)
    keywords = draw.sample([k for k in KEYWORDS if k != PUBLIC_KEYWORD], n)
    return [{"keyword": k, "seed": draw.randrange(1, 10_000), "original_seed": original_seed}
            for k in keywords]


RUNNER = Path(__file__).with_name("_run_method.py")
SANDBOX_ENV = {"SPEECHUL_QUIET": "1", "OMP_NUM_THREADS": "2", "MPLBACKEND": "Agg"}


#: The original's and Retrain's epochs in assignment 1: the book's recipe, so that the budget
#: (a tenth of Retrain's work) means what it means in the chapters: two retain epochs.
METHOD_EPOCHS = 20


def _recipe() -> Any:
    """Assignment 1's recipe (a ``su.train.TrainConfig``) for the original and Retrain."""
    import speechul as su

    return su.train.TrainConfig(epochs=METHOD_EPOCHS)


@functools.cache
def _corpus() -> Any:
    """The grading corpus (tiny ``su.data.Corpus``), loaded once per grader process."""
    import speechul as su

    return su.data.load("embedded", task="keyword", size=GRADE_PARAMS["SIZE"])


@dataclass(frozen=True)
class Baseline:
    """The grader's yardsticks on one hidden request: its original and split, Retrain's row
    and work, fine-tuning's model, and the gaps to Retrain of fine-tuning and of doing nothing."""

    original: Any
    split: Any
    retrain_row: dict
    retrain_cost: float
    finetune: Any
    gap_finetune: float
    gap_original: float


@functools.cache
def baseline(keyword: str, seed: int, original_seed: int) -> Baseline:
    """Retrain and fine-tuning (its defaults) on one request, computed by the grader; cached per
    process, so grading many submissions in one process trains them once."""
    import torch

    import speechul as su

    torch.set_num_threads(int(SANDBOX_ENV["OMP_NUM_THREADS"]))
    corpus = _corpus()
    original = su.train.original(corpus, _recipe(), seed=original_seed)
    split = su.data.forget_split(corpus, "class", classes=[keyword])
    retrain = su.unlearn.run("retrain", original, split, seed=seed)
    finetune = su.unlearn.run("finetune", original, split, seed=seed)
    ref = su.evaluate(retrain.model, split, seed=seed)
    gap = lambda model: su.evaluate(model, split, reference=ref, seed=seed)["gap_mean"]  # noqa: E731
    return Baseline(original, split, ref, retrain.cost, finetune.model, gap(finetune.model),
                    gap(original.model))


def _write_job(job_dir: Path, requests: list[dict[str, Any]]) -> None:
    """What the sandbox reads: the requests, the recipe, and the grader's original models."""
    import dataclasses

    import torch

    import speechul as su

    job_dir.mkdir(parents=True, exist_ok=True)
    seeds = {r["original_seed"] for r in requests}
    originals = {str(s): su.train.original(_corpus(), _recipe(), seed=s).model.state_dict()
                 for s in seeds}
    torch.save(originals, job_dir / "originals.pt")
    job = {"size": GRADE_PARAMS["SIZE"], "recipe": dataclasses.asdict(_recipe()),
           "threads": int(SANDBOX_ENV["OMP_NUM_THREADS"]), "requests": requests}
    (job_dir / "job.json").write_text(json.dumps(job))


def _with_corpus(cache: Path) -> Path:
    """``cache`` with a copy of the grader's corpus files (audio and features, not models):
    the sandbox then loads the corpus instead of synthesising it again, and a copy is all the
    student's code can touch."""
    import shutil

    from speechul._runtime import cache_dir

    for folder in ("embedded", "features"):
        if (cache_dir() / folder).is_dir():
            shutil.copytree(cache_dir() / folder, cache / folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.lock"))
    return cache


def run_sandboxed(method: Path, workdir: Path, requests: list[dict[str, Any]], *,
                  timeout: int = METHOD_TIMEOUT) -> dict[str, Any]:
    """Run the student's method on ``requests`` in a process of its own (``_run_method.py``),
    with an empty cache and ``timeout`` seconds; return its log, with ``models`` (one state
    dict per request) when it ran, or ``error`` saying why not."""
    import subprocess

    import torch

    job_dir = workdir / "job"
    _write_job(job_dir, requests)
    command = [sys.executable, str(RUNNER), str(method), str(job_dir)]
    with tempfile.TemporaryDirectory(prefix="grader-cache-") as cache, \
            _kernel_env(_with_corpus(Path(cache)), SANDBOX_ENV):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"the method ran longer than {timeout} s on {len(requests)} "
                             "requests and was stopped: it must be far cheaper than Retrain"}
    log_path = job_dir / "runs.json"
    if not log_path.exists():
        return {"error": f"the sandbox wrote no log: {done.stderr[-2000:]}"}
    log = json.loads(log_path.read_text())
    if not log["error"]:
        log["models"] = torch.load(job_dir / "models.pt", weights_only=True)
    return log


def _body(model: nn.Module) -> torch.Tensor:
    """Every parameter below the classifier (not ``head.*``), as one flat vector."""
    import torch

    return torch.cat([p.detach().flatten() for k, p in model.named_parameters()
                      if not k.startswith("head.")])


def body_change(model: nn.Module, original: nn.Module) -> float:
    """Relative L2 change of the parameters below the head: 0 for a head-only edit."""
    before = _body(original)
    return float((_body(model) - before).norm() / before.norm())


def forget_shift(model: nn.Module, original: nn.Module, split: Any) -> float:
    """Mean JS divergence (bits) on the forget clips between the original and the new *body*
    under the original's head: what the change below the head does to the forgotten class.
    A bias edit with a few weights nudged scores ~0 here however it moves the output."""
    import copy

    import speechul as su

    probe = copy.deepcopy(model)
    probe.head.load_state_dict(original.head.state_dict())
    return su.metrics.js_divergence(probe, original, split.corpus, split.forget)


def distance(model: nn.Module, other: nn.Module) -> float:
    """Relative L2 distance between two models' weights (0: the same model)."""
    import torch

    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    return float((flat(model) - flat(other)).norm() / flat(other).norm())


def measure(state: dict, run: dict, request: dict[str, Any]) -> dict[str, float]:
    """The grader's numbers for the model the sandbox returned on one hidden request."""
    import speechul as su

    base = baseline(request["keyword"], request["seed"], request["original_seed"])
    model = su.train.fresh_model(_recipe(), base.split.corpus.n_classes,
                                 base.split.corpus.device, 0)
    model.load_state_dict(state)  # a RuntimeError names a changed architecture
    model.eval()
    row = su.evaluate(model, base.split, reference=base.retrain_row, seed=request["seed"])
    return {"keyword": request["keyword"], "gap": row["gap_mean"],
            "gap_finetune": base.gap_finetune, "gap_original": base.gap_original,
            "forget_acc": row["forget_acc"], "kept_test_acc": row["kept_test_acc"],
            "cost_fraction": run["cost"] / base.retrain_cost, "diverged": run["diverged"],
            "body_change": body_change(model, base.original.model),
            "forget_shift": forget_shift(model, base.original.model, base.split),
            "distance_to_finetune": distance(model, base.finetune)}


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def check_new_method(rows: list[dict[str, float]], called: list[str]) -> list[Check]:
    """The gates of assignment 1, on the grader's own numbers (``measure``) for every hidden
    request and the built-in code the method executed (``called``). Any gate failed: 0 marks."""
    from speechul.claims import BUDGET, within_budget

    worst = lambda key: min(r[key] for r in rows)  # noqa: E731
    cost = max(r["cost_fraction"] for r in rows)
    return [
        _check("own method", not called, f"it runs built-in method code {called}: a wrapper "
               "around a registered method is not a new method; write the loss and loop"),
        _check("not fine-tuning", worst("distance_to_finetune") >= MIN_DISTANCE_TO_FINETUNE,
               f"its model is {worst('distance_to_finetune'):.1e} (relative) from what "
               f"su.unlearn.finetune makes of the same inputs (need >= "
               f"{MIN_DISTANCE_TO_FINETUNE:g}): fine-tuning copied is not a new method"),
        _check("finite", not any(r["diverged"] for r in rows),
               "it diverged (non-finite loss or weights) on a hidden request: lower its lr"),
        _check("within budget", within_budget(cost, BUDGET),
               f"it did {cost:.3f} of Retrain's work (FLOPs, speechul.cost) on a hidden request;"
               f" the budget is {BUDGET:g}: fewer epochs or steps"),
        _check("below the head", worst("body_change") >= MIN_BODY_CHANGE,
               f"the parameters below the classifier moved by {worst('body_change'):.1e} "
               f"(relative; need >= {MIN_BODY_CHANGE:g}): editing the output layer hides the "
               "keyword, it does not remove it"),
        _check("forget set changed", worst("forget_shift") >= MIN_FORGET_SHIFT,
               f"under the original head, the new body answers the forget clips "
               f"{worst('forget_shift'):.3f} bits (JS) from the original (need >= "
               f"{MIN_FORGET_SHIFT:g}): the change below the head must matter there"),
    ]


def new_method_score(rows: list[dict[str, float]], gates: list[Check]) -> tuple[float, str]:
    """The marks (0 to ``FULL_MARKS``) and why. The rule, stated in the assignment:

    0 if any gate fails. Otherwise, with G the mean over the hidden requests of the method's
    ``gap_mean`` to the grader's Retrain (the book's metric: forget, retain and test accuracy
    and MIA efficacy), G_0 that of doing nothing (the original) and G_ft that of fine-tuning
    (``su.unlearn.finetune``, its defaults): ``FULL_MARKS * clip((G_0 - G) / (G_0 - G_ft), 0,
    1)``. Doing nothing earns 0, fine-tuning's closeness to Retrain (or better) full marks,
    and a method between them the fraction of the way it covers. Means over requests, not a
    request each, so one unlucky request costs a share, not everything.
    """
    g, g0, gft = (_mean(rows, k) for k in ("gap", "gap_original", "gap_finetune"))
    failed = [name for name, ok, _ in gates if not ok]
    if failed:
        return 0.0, f"0: gate(s) {failed} failed"
    fraction = min(max((g0 - g) / max(g0 - gft, 1e-9), 0.0), 1.0)
    return FULL_MARKS * fraction, (
        f"mean gap to Retrain {g:.3f} over {len(rows)} hidden requests; doing nothing "
        f"{g0:.3f} (0 marks), fine-tuning {gft:.3f} (full marks)")


def grade_method(submission: Path, workdir: Path, *,
                 requests: list[dict[str, Any]] | None = None) -> tuple[float, list[Check]]:
    """Grade assignment 1: (marks, checks). The method runs in the sandbox on the hidden
    ``requests`` (default: :func:`hidden_requests`); every number comes from the grader."""
    requests = requests or hidden_requests()
    try:
        method = write_method(submission, workdir)
    except ValueError as err:
        return 0.0, [_check("runs", False, str(err))]
    log = run_sandboxed(method, workdir, requests)
    if log["error"]:
        return 0.0, [_check("runs", False, f"your method raised on a hidden request: "
                            f"{log['error']}")]
    try:
        rows = [measure(s, r, q) for s, r, q in zip(log["models"], log["runs"], requests,
                                                    strict=True)]
    except RuntimeError as err:
        return 0.0, [_check("runs", False, f"the returned model is not the original's "
                            f"architecture: {err}")]
    (workdir / "measured.json").write_text(json.dumps(rows, indent=1))  # for the instructor
    gates = [_check("runs", True, ""), *check_new_method(rows, log["called"])]
    marks, why = new_method_score(rows, gates)
    return marks, [*gates, _check("score", marks >= FULL_MARKS, f"{marks:.0f}/100: {why}")]


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


# notebook assignments: assignment -> check(report, path of the results file)
ASSIGNMENTS: dict[str, Callable[[dict, Path], list[Check]]] = {
    "audit": lambda report, results: check_audit(report, Path(f"{results}.models.pt")),
}
#: Assignments graded by running the student's code in the grader (not the notebook):
#: assignment -> grade(submission, workdir) -> (marks, checks).
GRADERS: dict[str, Callable[[Path, Path], tuple[float, list[Check]]]] = {
    "new_method": grade_method,
}


def grade_notebook(assignment: str, submission: Path, workdir: Path) -> list[Check]:
    """Run a notebook assignment's submission with papermill and check what it wrote."""
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


def grade(assignment: str, submission: Path, workdir: Path) -> list[Check]:
    """Grade one submission; the list of (check, passed, reason)."""
    if assignment in GRADERS:
        return GRADERS[assignment](submission, workdir)[1]
    if assignment not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {assignment!r}; known: "
                       f"{sorted({*ASSIGNMENTS, *GRADERS})}")
    return grade_notebook(assignment, submission, workdir)


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
    parser.add_argument("assignment", nargs="?", choices=sorted({*ASSIGNMENTS, *GRADERS}))
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
    marks = None
    if args.assignment in GRADERS:
        marks, checks = GRADERS[args.assignment](args.submission, workdir)
    else:
        checks = grade(args.assignment, args.submission, workdir)
    for name, ok, why in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<18} {'' if ok else why}")
    passed = sum(ok for _, ok, _ in checks)
    print(f"{passed}/{len(checks)} checks passed ({args.submission})")
    if marks is not None:
        print(f"marks: {marks:.0f}/{FULL_MARKS:.0f}")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
