"""Assignment 1 (``new_method``): the student's unlearning method, run by the grader on hidden
requests and scored against its own Retrain and fine-tuning (see ``grader.py``).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads lazily: --colab and --help need none of it
    import torch
    from torch import nn

from _grading import (
    DEFAULT_SECRET,
    GRADE_PARAMS,
    METHOD_HEADER,
    SANDBOX_ENV,
    SECRET_ENV,
    Check,
    _check,
    _run_in_sandbox,
    write_module,
)

# The grader never trusts a number the student's notebook computes. It takes the code of the
# cells tagged ``method`` (the function ``my_unlearning``), runs it itself in a sandbox process
# (``_run_method.py``: empty cache, time limit) on forget requests the student never saw, and
# scores the models that come back in its own process against its own Retrain and fine-tuning.

METHOD_TAG = "method"  # the starter's method cell carries this tag
METHOD_NAME = "my_unlearning"
#: The public request (the notebook's): never one of the hidden ones.
PUBLIC_KEYWORD = "yes"
#: How many hidden requests are scored; each is (keyword, seed): another keyword to forget and
#: another seed for the original model and the batch order.
HIDDEN = 3
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
