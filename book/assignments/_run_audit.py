"""Assignment 2's sandbox: run a student's ``audit`` and ``thresholds`` on the grader's models.

Like ``_run_method.py``, the only process where the student's code runs (an empty cache, a time
limit): it audits the grader's models and returns plain numbers; the grader decides.

Usage (by the grader only)::

    python _run_audit.py STUDENT_AUDIT.py JOB_FOLDER

``JOB_FOLDER`` holds ``job.json`` (the recipe, the voice), ``models.pt`` (name -> state dict:
``original``, ``retrain_a``, ``retrain_b``, ``retrain_c``) and ``shadow.pt`` (the shadows'
tensors); this script writes ``audit.json``: each model's statistics, the thresholds from
Retrains a and b, the thresholds from a floor ``WIDER`` times as wide, and which tests ran.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import traceback
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _run_method import traced  # noqa: E402 - the same code-object trace as assignment 1

WIDER = 3.0  # the second floor: Retrain b moved this many times as far from Retrain a


def test_code() -> dict[types.CodeType, str]:
    """The code of chapter 6's test and of LiRA, whichever entry point the audit uses."""
    from speechul import audits, forget_me

    return {forget_me._speaker_scores.__code__: "membership",
            audits.lira_scores.__code__: "lira"}


def load_student(path: Path) -> tuple[Any, Any]:
    """The student's ``audit`` and ``thresholds``, functions written in their cells."""
    spec = importlib.util.spec_from_file_location("student_audit", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    found = [getattr(module, name, None) for name in ("audit", "thresholds")]
    for name, fn in zip(("audit", "thresholds"), found, strict=True):
        if not isinstance(fn, types.FunctionType):
            raise LookupError(f"the audit cells define no function {name!r}: write "
                              f"`def {name}(...)` in its YOUR CODE cell")
    return found[0], found[1]


def widened(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Retrain b moved ``WIDER`` times as far from Retrain a: a wider noise floor."""
    return {k: a[k] + WIDER * (b[k] - a[k]) for k in a}


def run_all(student: Path, job_dir: Path) -> dict[str, Any]:
    """Audit every model with the student's audit; thresholds from the two floors."""
    import torch

    import speechul as su
    from speechul.audits import Shadows

    job = json.loads((job_dir / "job.json").read_text())
    torch.set_num_threads(job["threads"])
    corpus = su.data.load("embedded", task="keyword", size=job["size"])
    recipe = su.train.TrainConfig(**job["recipe"])
    split = su.data.forget_split(corpus, "speaker", speakers=[job["voice"]])
    fresh = torch.tensor(job["fresh"], device=corpus.device)
    shadow = Shadows(**torch.load(job_dir / "shadow.pt", weights_only=True))
    states = torch.load(job_dir / "models.pt", map_location=corpus.device, weights_only=True)
    codes, ran = test_code(), set()
    audit, thresholds = load_student(student)
    audit = traced(audit, codes, ran)
    stats = {}
    for name, state in states.items():
        model = su.train.fresh_model(recipe, corpus.n_classes, corpus.device, 0)
        model.load_state_dict(state)
        stats[name] = {k: float(v) for k, v in audit(model.eval(), corpus, split, fresh,
                                                       shadow).items()}
    a, b = stats["retrain_a"], stats["retrain_b"]
    return {"stats": stats, "limits": thresholds(dict(a), dict(b)),
            "wider": thresholds(dict(a), widened(a, b)), "ran": sorted(ran), "error": ""}


def main(argv: list[str]) -> int:
    student, job_dir = Path(argv[0]), Path(argv[1])
    try:
        log = run_all(student, job_dir)
    except Exception as err:  # the student's error, reported to the grader, not a crash
        tail = traceback.format_exc(limit=-3)
        log = {"error": f"{type(err).__name__}: {err}\n{tail}"}
    (job_dir / "audit.json").write_text(json.dumps(log, default=repr))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
