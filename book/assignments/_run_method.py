"""Assignment 1's sandbox: run a student's ``my_unlearning`` on the grader's hidden requests.

The grader (``grader.py new_method``) starts this script in a process of its own, with an empty
cache folder and a time limit, because it is the only place the student's code runs: whatever
that code does to ``speechul`` (re-registering ``retrain``, patching ``evaluate``) stays in this
process. This process only *runs* the method; the grader scores the models it saves in its own
process, with its own Retrain and fine-tuning, so a submission cannot grade itself.

Usage (by the grader only)::

    python _run_method.py STUDENT_METHOD.py JOB_FOLDER

``JOB_FOLDER`` holds ``job.json`` (the recipe, the hidden requests) and ``originals.pt`` (the
grader's original model for each request's seed); this script writes ``models.pt`` (one state
dict per request) and ``runs.json`` (cost, divergence, and which built-in code the method ran).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import threading
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAME = "my_unlearning"  # the function the assignment asks for


def builtin_code() -> dict[types.CodeType, str]:
    """The code objects of every built-in unlearning method and of ``su.unlearn.run``.

    Why code objects: a wrapper can reach fine-tuning under any alias (``su.unlearn.finetune``,
    ``METHODS["finetune"]``, ``from speechul.unlearn.methods import finetune as f``, even a copy
    of the function object); every route ends in executing the same code object, so a profiler
    that watches for it sees them all. The private helpers of ``methods.py`` (``_relabel``) are
    included: calling one is calling random labels or the bad teacher.
    """
    import speechul as su
    from speechul.unlearn import core, methods

    found = {fn.__code__: f"su.unlearn.{name}" for name, fn in su.unlearn.METHODS.items()
             if fn.__module__.startswith("speechul.")}
    for name, obj in vars(methods).items():
        if isinstance(obj, types.FunctionType) and obj.__module__ == methods.__name__:
            found.setdefault(obj.__code__, f"speechul.unlearn.methods.{name}")
    found[core.run.__wrapped__.__code__] = "su.unlearn.run"
    return found


def traced(fn: Callable[..., Any], codes: dict[types.CodeType, str],
           called: set[str]) -> Callable[..., Any]:
    """``fn`` with a profiler on while it runs (its threads too) that adds to ``called`` the
    name of every built-in code it executes; a method that switches the profiler off is
    recorded as such. The signature stays ``fn``'s (``functools.wraps``), so
    ``su.unlearn.run`` binds the same hyper-parameters."""

    def watch(frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code in codes:
            called.add(codes[frame.f_code])

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        sys.setprofile(watch)
        threading.setprofile(watch)
        try:
            return fn(*args, **kwargs)
        finally:
            if sys.getprofile() is not watch:
                called.add("sys.setprofile (the grader's trace was switched off)")
            sys.setprofile(None)
            threading.setprofile(None)

    return wrapper


def load_student(path: Path) -> Callable[..., Any]:
    """Import the student's module and return its ``my_unlearning``, refusing one that is not
    a function defined there (``my_unlearning = su.unlearn.finetune`` is a built-in renamed)."""
    spec = importlib.util.spec_from_file_location("student_method", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    fn = getattr(module, NAME, None)
    if not isinstance(fn, types.FunctionType):
        raise LookupError(f"the method cell defines no function {NAME!r} (got {fn!r}): "
                          f"write `def {NAME}(model, forget, retain, *, ...)` in it")
    if fn.__module__ != module.__name__:
        raise LookupError(f"{NAME} is {fn.__module__}.{fn.__qualname__}, not a function written "
                          "in your method cell: write your own method")
    return fn


def run_all(student: Path, job_dir: Path) -> dict[str, Any]:
    """Run the student's method on every hidden request; save the models; return the log."""
    import torch

    import speechul as su

    job = json.loads((job_dir / "job.json").read_text())
    torch.set_num_threads(job["threads"])
    corpus = su.data.load("embedded", task="keyword", size=job["size"])
    recipe = su.train.TrainConfig(**job["recipe"])
    originals = torch.load(job_dir / "originals.pt", map_location=corpus.device,
                           weights_only=True)
    codes, called = builtin_code(), set()
    fn = load_student(student)  # after builtin_code: the student cannot hide them first
    su.unlearn.METHODS[NAME] = traced(fn, codes, called)
    models, runs = [], []
    for request in job["requests"]:
        model = su.train.fresh_model(recipe, corpus.n_classes, corpus.device, 0)
        model.load_state_dict(originals[str(request["original_seed"])])
        split = su.data.forget_split(corpus, "class", classes=[request["keyword"]])
        out = su.unlearn.run(NAME, su.train.Trained(model.eval(), recipe), split,
                             seed=request["seed"])
        models.append({k: v.detach().cpu() for k, v in out.model.state_dict().items()})
        runs.append({"cost": out.cost, "diverged": out.diverged, "seconds": out.seconds})
    torch.save(models, job_dir / "models.pt")
    return {"runs": runs, "called": sorted(called), "error": ""}


def main(argv: list[str]) -> int:
    student, job_dir = Path(argv[0]), Path(argv[1])
    try:
        log = run_all(student, job_dir)
    except Exception as err:  # the student's error, reported to the grader, not a crash
        tail = traceback.format_exc(limit=-3)
        log = {"runs": [], "called": [], "error": f"{type(err).__name__}: {err}\n{tail}"}
    (job_dir / "runs.json").write_text(json.dumps(log, default=repr))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
