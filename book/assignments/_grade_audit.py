"""Assignment 2 (``audit``): the student's audit and thresholds, run by the grader on its own
models of a hidden voice (see ``grader.py``).
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any

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
