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

**Assignment 2** (``audit``) is graded the same way: the cells tagged ``audit`` (the student's
``audit`` and ``thresholds``) run in the sandbox (``_run_audit.py``) on the grader's own models
of a hidden voice (an original, three Retrains, shadows): :func:`check_audit` gives 60 marks;
the written part (40) is graded by hand with the assignment's rubric.

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

if TYPE_CHECKING:  # torch loads lazily: --colab and --help need none of it
    import torch
    from torch import nn

#: Assignment 2's corpus size and recipe epochs (assignment 1 uses ``METHOD_EPOCHS``).
GRADE_PARAMS = {"SIZE": "tiny", "EPOCHS": 12}
Check = tuple[str, bool, str]  # (name, passed, reason)


def _check(name: str, ok: bool, why: str) -> Check:
    return name, bool(ok), why


@contextlib.contextmanager
def _kernel_env(cache: Path, env: dict[str, str]) -> Iterator[None]:
    """The environment the submission's process starts with: ``env`` and its own cache folder
    (a temporary one holding a copy of the corpus), so a submission neither reads the
    instructor's cached models nor writes into the cache. The grader's own environment is
    restored after."""
    saved = dict(os.environ)
    os.environ.update({**env, "SPEECHUL_CACHE": str(cache)})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


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
#: assignment 1's pass line (the ``score`` check): half the way from the original to the bar
PASS_MARKS = 50.0
#: "Changed below the head": ||theta_body - theta_body,original|| / ||theta_body,original||
#: must reach this. Adam moves every weight by about ``lr`` a step, so a few steps of any real
#: method move the body by ~1e-2; a bias edit with one weight nudged moves it by ~1e-6.
MIN_BODY_CHANGE = 1e-3
#: "A real change on the forget set": the new body under the *original* head must answer the
#: forget clips differently from the original (mean Jensen-Shannon divergence, bits). Lenient
#: on purpose (a timid but real method shifts ~1e-3 or more): it catches changes that do
#: nothing there (~1e-10 for a nudged weight), while MIN_BODY_CHANGE catches tiny ones.
MIN_FORGET_SHIFT = 1e-4
#: A model this close to fine-tuning's on the same inputs (relative L2 distance of all weights)
#: is fine-tuning, whoever wrote the code: a copy-paste of ``finetune`` lands at ~0.
MIN_DISTANCE_TO_FINETUNE = 1e-3


def tagged_cells(submission: Path, tag: str, defines: tuple[str, ...]) -> list[str]:
    """The sources of the submission's cells tagged ``tag`` or, if none is (a notebook editor
    that drops tags), those that define one of the functions ``defines``."""
    cells = [c for c in jupytext.read(submission).cells if c.cell_type == "code"]
    tagged = [c.source for c in cells if tag in c.metadata.get("tags", [])]
    return tagged or [c.source for c in cells if any(f"def {n}(" in c.source for n in defines)]


def write_module(submission: Path, path: Path, tag: str, defines: tuple[str, ...],
                 header: str) -> Path:
    """Write the submission's ``tag`` cells after ``header`` as one module at ``path``.

    Raises:
        ValueError: no such cell, or one that is not plain Python (a %magic or !command).
    """
    cells = tagged_cells(submission, tag, defines)
    if not cells:
        raise ValueError(f"no cell tagged {tag!r} defines {', '.join(defines)}: write your "
                         "code in the starter's YOUR CODE cells (keep their tags)")
    source = header + "\n\n".join(cells) + "\n"
    try:
        compile(source, path.name, "exec")
    except SyntaxError as err:
        raise ValueError(f"the {tag} cells are not plain Python ({err.msg}, line "
                         f"{err.lineno - header.count(chr(10))} of the cells): move %magics, "
                         "!commands and tests elsewhere") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return path


def write_method(submission: Path, workdir: Path) -> Path:
    """Assignment 1's method cells as ``workdir/student_method.py``."""
    return write_module(submission, workdir / "student_method.py", METHOD_TAG, (METHOD_NAME,),
                        METHOD_HEADER)


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


def _corpus_files(size: str) -> list[Path]:
    """The grader's cache entries of the embedded corpus of ``size``: its audio folder and its
    log-mel features (the keys ``speechul.synth.build`` and ``speechul.features.logmel`` use)."""
    from speechul import features, synth
    from speechul._runtime import cache_dir

    key = synth.corpus_key(synth.SIZES[size])
    mels = features.cache_key(key, features.FeatureConfig())
    folder = cache_dir() / "features"
    return [cache_dir() / "embedded" / key, folder / f"{mels}.pt", folder / f"{mels}.pt.sha256"]


def _with_corpus(cache: Path) -> Path:
    """``cache`` with a copy of the grading corpus's files (audio and features, no model): the
    sandbox then loads the corpus instead of synthesising it again, and a copy is all the
    student's code can touch. Entries not found are left out (the sandbox rebuilds them)."""
    import shutil

    from speechul._runtime import cache_dir

    for path in _corpus_files(GRADE_PARAMS["SIZE"]):
        target = cache / path.relative_to(cache_dir())
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target, ignore=shutil.ignore_patterns("*.lock"))
        elif path.is_file():
            shutil.copy2(path, target)
    return cache


def _run_in_sandbox(runner: Path, module: Path, log_path: Path, timeout: int,
                    too_long: str) -> dict[str, Any]:
    """Run ``runner MODULE JOB_FOLDER`` in a process of its own, with a cache holding only a copy
    of the corpus and ``timeout`` seconds; return the log it wrote at ``log_path`` (its
    ``error`` says what went wrong), or ``{"error": ...}`` when it was stopped or wrote none."""
    import subprocess

    command = [sys.executable, str(runner), str(module), str(log_path.parent)]
    with tempfile.TemporaryDirectory(prefix="grader-cache-") as cache, \
            _kernel_env(_with_corpus(Path(cache)), SANDBOX_ENV):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": too_long}
    if not log_path.exists():
        return {"error": f"the sandbox wrote no log: {done.stderr[-2000:]}"}
    return json.loads(log_path.read_text())


def run_sandboxed(method: Path, workdir: Path, requests: list[dict[str, Any]], *,
                  timeout: int = METHOD_TIMEOUT) -> dict[str, Any]:
    """Run the student's method on ``requests`` in a process of its own (``_run_method.py``),
    with a cache holding only a copy of the corpus, and ``timeout`` seconds; return its log,
    with ``models`` (one state dict per request) when it ran, or ``error`` saying why not."""
    import torch

    job_dir = workdir / "job"
    for stale in ("runs.json", "models.pt"):  # an earlier grading's, in a reused workdir
        (job_dir / stale).unlink(missing_ok=True)
    _write_job(job_dir, requests)
    log = _run_in_sandbox(RUNNER, method, job_dir / "runs.json", timeout,
                          f"the method ran longer than {timeout} s on {len(requests)} requests "
                          "and was stopped: it must be far cheaper than Retrain")
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


#: The bar for full marks is never less than this share of the original's gap: where
#: fine-tuning closes less of it (at the tiny size it has only a few steps), this is the bar.
MIN_BAR = 0.25


def new_method_score(rows: list[dict[str, float]], gates: list[Check]) -> tuple[float, str]:
    """The marks (0 to ``FULL_MARKS``) and why. The rule, stated in the assignment:

    0 if any gate fails. Otherwise, with G the mean over the hidden requests of the method's
    ``gap_mean`` to the grader's Retrain (the book's metric: forget, retain and test accuracy
    and MIA efficacy), G_0 that of doing nothing (the original) and G_ft that of fine-tuning
    (``su.unlearn.finetune``, its defaults), the bar is B = min(G_ft, (1 - MIN_BAR) G_0) and
    the marks ``FULL_MARKS * clip((G_0 - G) / (G_0 - B), 0, 1)``. Doing nothing earns 0,
    matching fine-tuning's closeness to Retrain (or beating it) full marks, and a method in
    between the share of the way it covers. Means over requests, not a request each, so one
    unlucky request costs a share, not everything; the ``MIN_BAR`` floor keeps full marks from
    being cheap when fine-tuning itself barely moves.
    """
    g, g0, gft = (_mean(rows, k) for k in ("gap", "gap_original", "gap_finetune"))
    failed = [name for name, ok, _ in gates if not ok]
    if failed:
        return 0.0, f"0: gate(s) {failed} failed"
    bar = min(gft, (1 - MIN_BAR) * g0)
    fraction = min(max((g0 - g) / max(g0 - bar, 1e-9), 0.0), 1.0)
    return FULL_MARKS * fraction, (
        f"mean gap to Retrain {g:.3f} over {len(rows)} hidden requests; doing nothing "
        f"{g0:.3f} (0 marks), full marks at {bar:.3f} (fine-tuning: {gft:.3f})")


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
    return marks, [*gates, _check("score", marks >= PASS_MARKS,
                                  f"{marks:.0f}/100 (pass: {PASS_MARKS:.0f}): {why}")]


# --------------------------------------------------------------------------- assignment 2
#
# The student designs an audit (which statistics of chapter 6's membership test and of LiRA)
# and a rule that turns a measured noise floor (two Retrains) into thresholds. The grader runs
# both functions in the sandbox (``_run_audit.py``) on its own models of a hidden voice: a
# third Retrain must pass, the original must fail, and the thresholds must follow the floor.

AUDIT_TAG = "audit"
AUDIT_HEADER = METHOD_HEADER + ("import numpy as np\nimport pandas as pd\n\n"
                                "from speechul import audits, forget_me\n\n")
AUDIT_STATS = ("membership", "lira")
AUDIT_SHADOWS = 4  # LiRA's shadow models at the grading size (each is one tiny training)
AUDIT_TIMEOUT = 900
AUDIT_RUNNER = Path(__file__).with_name("_run_audit.py")
CHECK_MARKS = 12.0  # each of the five autograded checks; the written part is 40, by hand
WRITTEN_MARKS = 40.0
PUBLIC_SPEAKER = 0  # the starter's SPEAKER: never the hidden voice


def hidden_voice(secret: str | None = None) -> dict[str, Any]:
    """The voice and seed the audit is graded on, drawn from the instructor's secret."""
    import random

    import speechul as su

    secret = secret or os.environ.get(SECRET_ENV) or DEFAULT_SECRET
    draw = random.Random(f"a2:{secret}")
    names = _audit_corpus().names("speaker")
    voice = draw.choice([n for i, n in enumerate(names) if i != PUBLIC_SPEAKER])
    seed = draw.randrange(1, 10_000)
    return {"voice": voice, "seed": seed, "other": su.noise.OTHER}


@functools.cache
def _audit_corpus() -> Any:
    import speechul as su

    return su.data.load("embedded", task="keyword", size=GRADE_PARAMS["SIZE"])


@functools.cache
def audit_job(voice: str, seed: int, other: int) -> tuple[dict[str, dict], dict, list[int]]:
    """The grader's models of one "forget me" request: the original, three Retrains (seeds
    ``seed + k * other``), the shadows' tensors and the voice's fresh clips; cached per process."""
    import torch

    import speechul as su

    torch.set_num_threads(int(SANDBOX_ENV["OMP_NUM_THREADS"]))
    corpus, recipe = _audit_corpus(), su.train.TrainConfig(epochs=GRADE_PARAMS["EPOCHS"])
    original = su.train.original(corpus, recipe, seed=seed)
    split = su.data.forget_split(corpus, "speaker", speakers=[voice])
    models = {"original": original.model}
    for k, name in enumerate(("retrain_a", "retrain_b", "retrain_c")):
        models[name] = su.unlearn.run("retrain", original, split, seed=seed + k * other).model
    shadow = su.audits.shadows(corpus, recipe, n=AUDIT_SHADOWS, seed=seed)
    held = torch.cat([corpus.indices("val"), corpus.indices("test")])
    speaker = corpus.names("speaker").index(voice)
    fresh = held[corpus.labels["speaker"][held] == speaker]
    states = {n: {k: v.detach().cpu() for k, v in m.state_dict().items()}
              for n, m in models.items()}
    tensors = {"keep": shadow.keep, "scores": shadow.scores, "pool": shadow.pool}
    return states, tensors, [int(i) for i in fresh.cpu()]


def run_audit_sandboxed(module: Path, workdir: Path, request: dict[str, Any], *,
                        timeout: int = AUDIT_TIMEOUT) -> dict[str, Any]:
    """Run the student's audit on the grader's models in the sandbox; its log or ``error``."""
    import dataclasses

    import torch

    import speechul as su

    states, tensors, fresh = audit_job(request["voice"], request["seed"], request["other"])
    job_dir = workdir / "audit-job"
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "audit.json").unlink(missing_ok=True)  # an earlier grading's
    torch.save(states, job_dir / "models.pt")
    torch.save(tensors, job_dir / "shadow.pt")
    recipe = dataclasses.asdict(su.train.TrainConfig(epochs=GRADE_PARAMS["EPOCHS"]))
    (job_dir / "job.json").write_text(json.dumps({
        "size": GRADE_PARAMS["SIZE"], "recipe": recipe, "voice": request["voice"],
        "fresh": fresh, "threads": int(SANDBOX_ENV["OMP_NUM_THREADS"])}))
    return _run_in_sandbox(AUDIT_RUNNER, module, job_dir / "audit.json", timeout,
                           f"the audit ran longer than {timeout} s and was stopped")


def _finite_stats(log: dict[str, Any]) -> str:
    """'' when every model's audit and both thresholds hold a finite number per statistic."""
    tables = {**log["stats"], "thresholds": log["limits"], "wider thresholds": log["wider"]}
    for name, table in tables.items():
        for key in AUDIT_STATS:
            value = table.get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"{name}: {key} = {value!r}, need a finite number"
    return ""


def passes(stats: dict[str, float], limits: dict[str, float]) -> bool:
    """The assignment's fixed rule: every statistic at most its threshold."""
    return all(stats[k] <= limits[k] for k in AUDIT_STATS)


def _follows_floor(log: dict[str, Any]) -> list[str]:
    """What is wrong with the thresholds as a function of the floor (empty: nothing)."""
    a, b = log["stats"]["retrain_a"], log["stats"]["retrain_b"]
    limits, wider = log["limits"], log["wider"]
    wrong = [f"{k}: {limits[k]:.3f} is below a Retrain's {max(a[k], b[k]):.3f}"
             for k in AUDIT_STATS if limits[k] < max(a[k], b[k])]
    wrong += [f"{k}: {wider[k]:.3f} with a 3x wider floor, not above {limits[k]:.3f}"
              for k in AUDIT_STATS if abs(a[k] - b[k]) > 1e-9 and wider[k] <= limits[k]]
    return wrong


def check_audit(log: dict[str, Any]) -> list[Check]:
    """Assignment 2's five autograded checks on the sandbox's log (stats and thresholds)."""
    bad = _finite_stats(log)
    checks = [_check("runs", not bad, bad)]
    if bad:
        return checks
    stats, limits, floor = log["stats"], log["limits"], _follows_floor(log)
    fmt = lambda d: {k: round(d[k], 3) for k in AUDIT_STATS}  # noqa: E731
    return [*checks,
            _check("both tests", set(log["ran"]) == set(AUDIT_STATS),
                   f"the audit ran {log['ran']}, need chapter 6's membership test "
                   "(forget_me.speaker_membership) and LiRA (audits.lira)"),
            _check("from the floor", not floor, f"thresholds {fmt(limits)}: {floor}"),
            _check("Retrain passes", passes(stats["retrain_c"], limits),
                   f"a third Retrain {fmt(stats['retrain_c'])} fails thresholds {fmt(limits)}:"
                   " they are tighter than the noise floor"),
            _check("original fails", not passes(stats["original"], limits),
                   f"the original {fmt(stats['original'])} passes thresholds {fmt(limits)}: "
                   "the audit cannot see a model that never forgot")]


def grade_audit(submission: Path, workdir: Path, *,
                request: dict[str, Any] | None = None) -> tuple[float, list[Check]]:
    """Grade assignment 2's autograded part: (marks out of 60, checks). The written part (40
    marks) is graded by hand with the rubric in the assignment."""
    request = request or hidden_voice()
    try:
        module = write_module(submission, workdir / "student_audit.py", AUDIT_TAG,
                              ("audit", "thresholds"), AUDIT_HEADER)
    except ValueError as err:
        return 0.0, [_check("runs", False, str(err))]
    log = run_audit_sandboxed(module, workdir, request)
    if log["error"]:
        return 0.0, [_check("runs", False, f"your audit raised: {log['error']}")]
    checks = check_audit(log)
    (workdir / "audit.json").write_text(json.dumps(log, indent=1))  # for the instructor
    return CHECK_MARKS * sum(ok for _, ok, _ in checks), checks


#: assignment -> grade(submission, workdir) -> (marks, checks); the grader runs the student's
#: code itself in both.
GRADERS: dict[str, Callable[[Path, Path], tuple[float, list[Check]]]] = {
    "new_method": grade_method,
    "audit": grade_audit,
}


def grade(assignment: str, submission: Path, workdir: Path) -> list[Check]:
    """Grade one submission; the list of (check, passed, reason)."""
    if assignment not in GRADERS:
        raise KeyError(f"unknown assignment {assignment!r}; known: {sorted(GRADERS)}")
    return GRADERS[assignment](submission, workdir)[1]


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
    parser.add_argument("assignment", nargs="?", choices=sorted(GRADERS))
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
    marks, checks = GRADERS[args.assignment](args.submission, workdir)
    for name, ok, why in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<18} {'' if ok else why}")
    passed = sum(ok for _, ok, _ in checks)
    print(f"{passed}/{len(checks)} checks passed ({args.submission})")
    out_of = FULL_MARKS if args.assignment == "new_method" else 5 * CHECK_MARKS
    written = f" + the written part (/{WRITTEN_MARKS:.0f}, by hand)" if out_of < FULL_MARKS else ""
    print(f"marks: {marks:.0f}/{out_of:.0f}{written}")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
