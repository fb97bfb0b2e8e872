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
This file is the command line; the graders are ``_grade_method.py`` (assignment 1) and
``_grade_audit.py`` (assignment 2), and ``_grading.py`` holds what they share (the tagged cells
written as a module, the sandbox).
Reference, deliberately wrong and (for assignment 1) cheating and mediocre solutions live in
``book/assignments/solutions/``; ``tests/test_assignments.py`` grades them all in CI, so a
grader that passes everything or nothing, or a cheat, is caught.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# The two assignments' graders and what they share are the modules beside this one; this file is
# the command line (torch loads lazily: --colab and --help need none of it).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grade_audit import (  # noqa: E402,F401
    CHECK_MARKS,
    WRITTEN_MARKS,
    check_audit,
    grade_audit,
    hidden_voice,
    run_audit_sandboxed,
)
from _grade_method import (  # noqa: E402,F401
    FULL_MARKS,
    HIDDEN,
    PASS_MARKS,
    PUBLIC_KEYWORD,
    check_new_method,
    grade_method,
    hidden_requests,
    new_method_score,
    run_sandboxed,
    write_method,
)
from _grading import Check, _corpus_files  # noqa: E402,F401

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
