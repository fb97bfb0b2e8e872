"""The course assignments: each grader passes its reference solution and fails the wrong one.

A grader that passes everything (or nothing) is useless to an instructor, so both directions are
tested on every run, each at the grader's own tiny size (papermill, < 2 min a notebook). The
starters are checked to be the reference minus the solution cells, so the students' notebook
and the graded one cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pandas as pd
import pytest
from scriptload import load_script

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "book" / "assignments"
grader = load_script("assignment_grader", FOLDER / "grader.py")
notebooks = load_script("book_notebooks", ROOT / "scripts" / "notebooks.py")

# assignment -> (starter, reference, wrong solution, the check the wrong one must fail)
CASES = {
    "new_method": ("a1_new_method", "a1_reference", "a1_wrong", "forgets"),
    "audit": ("a2_audit", "a2_reference", "a2_wrong", "request"),
}


def _failed(checks: list) -> dict[str, str]:
    return {name: why for name, ok, why in checks if not ok}


@pytest.mark.parametrize("assignment", sorted(CASES))
def test_starter_is_the_reference_minus_the_solution(assignment):
    starter, reference, _, _ = CASES[assignment]
    mine = jupytext.read(FOLDER / f"{starter}.md")
    ref = jupytext.read(FOLDER / "solutions" / f"{reference}.md")
    assert len(mine.cells) == len(ref.cells), "starter and reference must have the same cells"
    differ = [i for i, (a, b) in enumerate(zip(mine.cells, ref.cells, strict=True))
              if a.source != b.source]
    assert differ, "the reference must fill in the starter"
    for i in differ:
        assert "YOUR CODE" in mine.cells[i].source, f"cell {i} differs outside a YOUR CODE cell"
    assert mine.metadata["mystnb"]["execution_mode"] == "off", "the book must not run starters"


@pytest.mark.book
@pytest.mark.parametrize("assignment", sorted(CASES))
def test_grader_passes_the_reference(assignment, tmp_path):
    reference = FOLDER / "solutions" / f"{CASES[assignment][1]}.md"
    checks = grader.grade(assignment, reference, tmp_path)
    assert not _failed(checks), f"the reference fails: {_failed(checks)}"
    assert len(checks) >= 3


@pytest.mark.book
@pytest.mark.parametrize("assignment", sorted(CASES))
def test_grader_fails_the_wrong_solution(assignment, tmp_path):
    _, _, wrong, check = CASES[assignment]
    failed = _failed(grader.grade(assignment, FOLDER / "solutions" / f"{wrong}.md", tmp_path))
    assert check in failed, f"the wrong solution should fail {check!r}, failed {failed}"
    assert re.search(r"\d", failed[check]), "the message should give the numbers"


@pytest.mark.book
def test_grader_reports_a_notebook_that_raises(tmp_path):
    broken = tmp_path / "broken.md"
    text = (FOLDER / "a1_new_method.md").read_text()
    broken.write_text(text)  # the starter as is: no method registered, the run cell raises
    checks = grader.grade("new_method", broken, tmp_path / "work")
    assert _failed(checks).keys() == {"runs"}
    assert "register a method named my_unlearning" in _failed(checks)["runs"]


@pytest.mark.parametrize("assignment", sorted(CASES))
def test_colab_copy_of_the_starter_in_sync(assignment):
    starter = FOLDER / f"{CASES[assignment][0]}.md"
    copy = notebooks.notebook_path(starter)
    assert copy.exists() and copy.read_text() == notebooks.render(starter), (
        f"{copy.name} is stale: python book/assignments/grader.py --colab")
    first = [c for c in jupytext.read(starter).cells if c.cell_type == "code"][0]
    assert first.source == notebooks.colab_cell(ROOT), "starters begin with the Colab cell"


def test_grader_command_line_rejects_unknown_assignments(capsys):
    with pytest.raises(SystemExit):
        grader.main(["nonsense", "x.ipynb"])
    assert "invalid choice" in capsys.readouterr().err


def test_audit_checks_conclusions_against_the_verdicts(tiny_corpus):
    """Unit test of the 'conclusions' check on a made-up table: one method indistinguishable
    from Retrain (forgotten), one far from it (not forgotten)."""
    voice = tiny_corpus.names("speaker")[0]
    row = {"forget_acc": 0.4, "test_acc": 0.6, "mia_auc": 0.5, "relearn_acc": 0.3}
    far = {"forget_acc": 0.9, "test_acc": 0.6, "mia_auc": 0.7, "relearn_acc": 0.8}
    report = {"voice": voice, "kind": "speaker", "forget": grader._expected_forget(voice),
              "rows": [{"method": "retrain", **row}, {"method": "twin", **row},
                       {"method": "far", **far}],
              "conclusions": {"twin": "forgotten", "far": "not forgotten"}}
    assert not _failed(grader.check_audit(report))
    report["conclusions"] = {"twin": "forgotten", "far": "forgotten"}
    assert "far" in _failed(grader.check_audit(report))["conclusions"]


def test_new_method_must_change_more_than_the_output_layer():
    """Masking the keyword's logit (a huge negative bias) forgets, keeps and is cheap; the check
    on parameters below the classifier is what fails it."""
    rows = {m: {"forgotten_test_acc": 0.0, "kept_test_acc": 0.9}
            for m in ("my_unlearning", "retrain", "original")}
    report = {"method": "my_unlearning", "module": "__main__", "hparams": {"bias": -1e4},
              "diverged": False, "changed_below_head": 0, "rows": rows,
              "seconds": {"my_unlearning": 0.01, "retrain": 5.0}}
    assert set(_failed(grader.check_new_method(report))) == {"below the head"}
    report["changed_below_head"] = 12
    assert not _failed(grader.check_new_method(report))


@pytest.mark.book
def test_audit_numbers_are_checked_on_the_saved_models(tmp_path):
    """Made-up audit numbers (every method 'equal to Retrain') fail: the grader audits the saved
    models itself; the numbers of the specified audit pass, and conclusions follow the grader's."""
    import torch

    import speechul as su

    corpus = su.data.load("embedded", task="keyword", size=grader.GRADE_PARAMS["SIZE"])
    original = su.train.original(corpus, su.train.TrainConfig(epochs=grader.GRADE_PARAMS["EPOCHS"]))
    voice = corpus.names("speaker")[0]
    split = su.data.forget_split(corpus, "speaker", speakers=[voice])
    models = {"original": original.model}
    for method in ("retrain", "finetune", "gradient_ascent"):
        models[method] = su.unlearn.run(method, original, split, seed=0).model
    path = tmp_path / "results.json.models.pt"
    torch.save({m: model.state_dict() for m, model in models.items()}, path)
    made_up = {"forget_acc": 0.5, "test_acc": 0.5, "mia_auc": 0.5, "relearn_acc": 0.5}
    report = {"voice": voice, "kind": "speaker", "seed": 0,
              "forget": grader._expected_forget(voice),
              "rows": [{"method": m, **made_up} for m in models],
              "conclusions": {"finetune": "forgotten", "gradient_ascent": "forgotten"}}
    assert "audit" in _failed(grader.check_audit(report, path))
    honest = {m: grader._audit(model, corpus, split, 0) for m, model in models.items()}
    report["rows"] = [{"method": m, **row} for m, row in honest.items()]
    table = su.audits.verdicts(pd.DataFrame(report["rows"]).query("method != 'original'"))
    report["conclusions"] = {
        m: "forgotten" if len(set(table.loc[m, "passed"].split("/"))) == 1 else "not forgotten"
        for m in ("finetune", "gradient_ascent")}
    assert not _failed(grader.check_audit(report, path))
