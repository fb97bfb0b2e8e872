"""The course assignments: each grader passes its reference solution and fails the wrong ones.

A grader that passes everything (or nothing) is useless to an instructor, so both directions are
tested on every run at the grader's own tiny size: assignment 1's reference gets full marks, a
wrapper around fine-tuning and a bias edit get 0, a mediocre method something in between;
assignment 2's reference passes every check and a wrong audit fails. The starters are checked
to be every solution minus its solution cells, so the students' notebook and the graded ones
cannot drift apart.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import jupytext
import pytest
from scriptload import load_script

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "book" / "assignments"
grader = load_script("assignment_grader", FOLDER / "grader.py")
notebooks = load_script("book_notebooks", ROOT / "scripts" / "notebooks.py")

STARTERS = {"new_method": "a1_new_method", "audit": "a2_audit"}
# every solution file and its starter: each must be the starter with the YOUR CODE cells filled
SOLUTIONS = {"a1_reference": "a1_new_method", "a1_mediocre": "a1_new_method",
             "a1_cheat_bias": "a1_new_method", "a1_cheat_wrapper": "a1_new_method",
             "a2_reference": "a2_audit", "a2_wrong": "a2_audit"}


def _failed(checks: list) -> dict[str, str]:
    return {name: why for name, ok, why in checks if not ok}


@pytest.mark.parametrize("solution", sorted(SOLUTIONS))
def test_starter_is_the_solution_minus_the_solution_cells(solution):
    mine = jupytext.read(FOLDER / f"{SOLUTIONS[solution]}.md")
    ref = jupytext.read(FOLDER / "solutions" / f"{solution}.md")
    assert len(mine.cells) == len(ref.cells), "starter and solution must have the same cells"
    differ = [i for i, (a, b) in enumerate(zip(mine.cells, ref.cells, strict=True))
              if a.source != b.source]
    assert differ, "the solution must fill in the starter"
    for i in differ:
        assert re.search("YOUR (CODE|ANSWER)", mine.cells[i].source), (
            f"cell {i} differs outside a YOUR CODE (or YOUR ANSWER) cell")
        assert mine.cells[i].metadata == ref.cells[i].metadata, f"cell {i}'s tags changed"
    assert mine.metadata["mystnb"]["execution_mode"] == "off", "the book must not run starters"


@pytest.mark.parametrize("assignment", sorted(STARTERS))
def test_colab_copy_of_the_starter_in_sync(assignment):
    starter = FOLDER / f"{STARTERS[assignment]}.md"
    copy = notebooks.notebook_path(starter)
    assert copy.exists() and copy.read_text() == notebooks.render(starter), (
        f"{copy.name} is stale: python book/assignments/grader.py --colab")
    first = [c for c in jupytext.read(starter).cells if c.cell_type == "code"][0]
    assert first.source == notebooks.colab_cell(ROOT), "starters begin with the Colab cell"


def test_grader_command_line_rejects_unknown_assignments(capsys):
    with pytest.raises(SystemExit):
        grader.main(["nonsense", "x.ipynb"])
    assert "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------- assignment 1
# The grader runs each solution's method itself on its hidden requests; the baselines (one
# original, a Retrain and a fine-tuning per request) are cached in the grader's process, so the
# four gradings below train them once.


def _grade_method(solution: str, tmp_path: Path) -> tuple[float, dict[str, str]]:
    marks, checks = grader.grade_method(FOLDER / "solutions" / f"{solution}.md", tmp_path)
    return marks, _failed(checks)


@pytest.mark.book
def test_method_grader_passes_the_reference(tmp_path):
    """Every gate and the pass line. The marks are not asserted to be 100: on the hidden
    requests the reference and fine-tuning are about equally close to Retrain, and which is
    closer changes with the machine's float sums (a new seed)."""
    marks, failed = _grade_method("a1_reference", tmp_path)
    assert not failed and marks >= grader.PASS_MARKS, f"the reference got {marks}: {failed}"


@pytest.mark.book
def test_method_grader_fails_a_wrapper_around_fine_tuning(tmp_path):
    """One epoch of ``su.unlearn.finetune`` renamed: within budget, below the head, not equal
    to fine-tuning's defaults; only the trace of built-in code catches it."""
    marks, failed = _grade_method("a1_cheat_wrapper", tmp_path)
    assert set(failed) == {"own method", "score"} and marks == 0, failed
    assert "su.unlearn.finetune" in failed["own method"]


@pytest.mark.book
def test_method_grader_fails_a_bias_edit(tmp_path):
    """A huge negative bias on the keyword's logit plus one weight nudged: it forgets on paper,
    and the relative change below the head and the forget-set shift catch it."""
    marks, failed = _grade_method("a1_cheat_bias", tmp_path)
    assert {"below the head", "forget set changed"} <= set(failed) and marks == 0, failed
    assert re.search(r"\d", failed["below the head"]), "the message should give the numbers"


@pytest.mark.book
def test_method_grader_gives_a_mediocre_method_partial_marks(tmp_path):
    """A timid one-pass fine-tune passes every gate and covers part of the way to
    fine-tuning's closeness to Retrain: strictly between the cheats' 0 and full marks."""
    marks, failed = _grade_method("a1_mediocre", tmp_path)
    assert not {name for name in failed if name != "score"}, failed
    assert 0 < marks < grader.FULL_MARKS


def _rows(**changes) -> list[dict]:
    """Made-up measurements of three hidden requests: a method halfway to fine-tuning."""
    row = {"gap": 0.2, "gap_original": 0.3, "gap_finetune": 0.1, "cost_fraction": 0.05,
           "diverged": False, "body_change": 0.02, "forget_shift": 0.1,
           "distance_to_finetune": 0.05}
    return [{**row, **changes} for _ in range(3)]


@pytest.mark.parametrize(("change", "gate"), [
    ({"cost_fraction": 0.2}, "within budget"), ({"body_change": 1e-6}, "below the head"),
    ({"forget_shift": 0.0}, "forget set changed"), ({"diverged": True}, "finite"),
    ({"distance_to_finetune": 0.0}, "not fine-tuning")])
def test_method_score_is_zero_when_a_gate_fails(change, gate):
    rows = _rows(**change)
    gates = grader.check_new_method(rows, called=[])
    assert {name for name, ok, _ in gates if not ok} == {gate}
    assert grader.new_method_score(rows, gates)[0] == 0


def test_method_score_is_the_share_of_the_way_to_fine_tuning():
    gates = grader.check_new_method(_rows(), called=[])
    assert all(ok for _, ok, _ in gates)
    assert grader.new_method_score(_rows(), gates)[0] == pytest.approx(50)
    assert grader.new_method_score(_rows(gap=0.05), gates)[0] == grader.FULL_MARKS
    assert grader.new_method_score(_rows(gap=0.4), gates)[0] == 0
    # fine-tuning barely moves (0.29 of 0.3): the bar is a quarter of the way, 0.225
    weak = _rows(gap=0.2625, gap_finetune=0.29)
    assert grader.new_method_score(weak, gates)[0] == pytest.approx(50)
    called = grader.check_new_method(_rows(), called=["su.unlearn.finetune"])
    assert not dict((n, ok) for n, ok, _ in called)["own method"]


def test_hidden_requests_are_not_the_public_one_and_follow_the_secret():
    requests = grader.hidden_requests("one secret")
    assert requests == grader.hidden_requests("one secret")
    assert requests != grader.hidden_requests("another secret")
    assert grader.PUBLIC_KEYWORD not in {r["keyword"] for r in requests}
    assert len({r["keyword"] for r in requests}) == grader.HIDDEN


def test_method_cell_becomes_a_module_and_refuses_magics(tmp_path):
    path = grader.write_method(FOLDER / "solutions" / "a1_reference.md", tmp_path)
    assert "def my_unlearning(" in path.read_text() and "import speechul as su" in path.read_text()
    broken = tmp_path / "magic.md"
    text = (FOLDER / "solutions" / "a1_reference.md").read_text()
    broken.write_text(text.replace("def second_choice", "%timeit 1\n\n\ndef second_choice"))
    with pytest.raises(ValueError, match="not plain Python"):
        grader.write_method(broken, tmp_path)
    with pytest.raises(ValueError, match="no cell tagged"):
        grader.write_method(FOLDER / "a2_audit.md", tmp_path)


def test_trace_sees_a_built_in_method_under_any_alias():
    """The wrapper check watches code objects, not names: an alias, a registry look-up and a
    rebuilt function object all run finetune's code. The calls fail at once (no model), which
    is enough: the trace records the call when its frame starts."""
    import types

    import speechul as su

    runner = load_script("a1_run_method", FOLDER / "_run_method.py")
    copy = types.FunctionType(su.unlearn.finetune.__code__, {}, "copy")
    copy.__kwdefaults__ = su.unlearn.finetune.__kwdefaults__
    for route in (su.unlearn.finetune, su.unlearn.METHODS["finetune"], copy):
        called: set[str] = set()
        with pytest.raises(Exception):  # noqa: B017 - any error: finetune got no model
            runner.traced(lambda m, f, r, route=route: route(m, f, r),
                          runner.builtin_code(), called)(None, None, None)
        assert called == {"su.unlearn.finetune"}


# --------------------------------------------------------------------------- assignment 2


@pytest.mark.book
def test_audit_grader_passes_the_reference(tmp_path):
    marks, checks = grader.grade_audit(FOLDER / "solutions" / "a2_reference.md", tmp_path)
    assert not _failed(checks) and marks == 5 * grader.CHECK_MARKS, _failed(checks)


@pytest.mark.book
def test_audit_grader_fails_a_wrong_audit(tmp_path):
    """The loss attack in place of both tests, thresholds typed in."""
    marks, checks = grader.grade_audit(FOLDER / "solutions" / "a2_wrong.md", tmp_path)
    assert {"both tests", "from the floor"} <= set(_failed(checks))
    assert marks <= 3 * grader.CHECK_MARKS


def _log(limits: dict, wider: dict) -> dict:
    """A made-up sandbox log: two Retrains near 0.5, a third at 0.55, the original at 0.9."""
    stat = lambda v: {"membership": v, "lira": v}  # noqa: E731
    return {"stats": {"retrain_a": stat(0.5), "retrain_b": stat(0.6), "retrain_c": stat(0.55),
                      "original": stat(0.9)},
            "limits": limits, "wider": wider, "ran": ["lira", "membership"], "error": ""}


def test_audit_checks_follow_the_floor():
    stat = lambda v: {"membership": v, "lira": v}  # noqa: E731
    assert not _failed(grader.check_audit(_log(stat(0.7), stat(0.9))))
    assert set(_failed(grader.check_audit(_log(stat(0.7), stat(0.7))))) == {"from the floor"}
    tight = _failed(grader.check_audit(_log(stat(0.4), stat(0.9))))
    assert {"from the floor", "Retrain passes"} <= set(tight)
    assert "original fails" in _failed(grader.check_audit(_log(stat(0.95), stat(1.2))))
    one_test = {**_log(stat(0.7), stat(0.9)), "ran": ["membership"]}
    assert set(_failed(grader.check_audit(one_test))) == {"both tests"}
    assert set(_failed(grader.check_audit(_log(stat(math.nan), stat(0.9))))) == {"runs"}
