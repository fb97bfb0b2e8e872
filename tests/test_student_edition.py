"""The student edition (``scripts/notebooks.py --student``): every chapter and assignment starter,
with no solution left in it.

A solution that leaks into the students' notebooks spoils an exercise for a whole class, so each
chapter's student copy is checked for the solution directives, for every line of solution code,
and for the cells the reference solutions of the assignments fill in. The exercises themselves,
the Colab cell and the parameters cell must survive.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest
from scriptload import load_script

ROOT = Path(__file__).resolve().parents[1]
notebooks = load_script("book_notebooks", ROOT / "scripts" / "notebooks.py")
CHAPTERS = [c for c in notebooks.chapters(ROOT) if c.exists()]
SOLUTIONS = ROOT / "book" / "assignments" / "solutions"


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    """The student edition, written once for this module's tests."""
    out = tmp_path_factory.mktemp("student")
    assert notebooks.main(["--student", str(out)]) == 0
    return out


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(cell.source for cell in nb.cells)


def _only_in_solutions(text: str) -> set[str]:
    """Code lines that only the solutions hold, found with the exercise parser (an independent
    reading of the directives from the one the edition strips them with)."""
    bodies = [body for name, _, _, _, body in notebooks.directives(text) if name == "solution"]
    outside = text
    for body in bodies:
        outside = outside.replace(body, "")
    own = {line.strip() for body in bodies for line in body.splitlines()
           if len(line.strip()) >= 12 and not line.strip().startswith(("#", "`", "~", ":"))}
    return own - {line.strip() for line in outside.splitlines()}


def _student(edition: Path, source: Path) -> nbformat.NotebookNode:
    return nbformat.read(edition / notebooks.notebook_path(source.relative_to(ROOT)), 4)


def test_strip_solutions_removes_plain_and_gated_directives():
    text = ("Intro.\n\n```{exercise} One\n:label: a\n\nAsk.\n\n~~~python\nassert ok\n~~~\n```\n\n"
            "```{solution} a\n:class: dropdown\n\n~~~python\nanswer_plain = 1\n~~~\n```\n\n"
            ":::{solution-start} b\n:class: dropdown\n:::\n\n"
            "```{code-cell} ipython3\nanswer_gated = 2\n```\n\nWhy.\n\n"
            ":::{solution-end}\n:::\n\nAfter.\n")
    stripped = notebooks.strip_solutions(text)
    assert "answer_plain" not in stripped and "answer_gated" not in stripped
    assert "solution" not in stripped and "Why." not in stripped
    assert "Intro." in stripped and "After." in stripped and "assert ok" in stripped
    assert notebooks.solution_lines(text) >= {"answer_plain = 1", "answer_gated = 2"}


def test_every_chapter_and_starter_has_a_student_copy(edition):
    written = sorted(p.relative_to(edition) for p in edition.rglob("*.ipynb"))
    expected = sorted(notebooks.notebook_path(s.relative_to(ROOT))
                      for s in notebooks.student_sources(ROOT))
    assert written == expected
    assert CHAPTERS and all(notebooks.notebook_path(c.relative_to(ROOT)) in written
                            for c in CHAPTERS)
    assert not any("solutions" in p.parts for p in written), "reference solutions leaked"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_student_chapter_has_exercises_but_no_solutions(edition, chapter):
    text = chapter.read_text()
    student = _student(edition, chapter)
    shown = _text(student)
    assert "{solution" not in shown, f"{chapter.name}: a solution directive survived"
    leaked = sorted(_only_in_solutions(text) & {line.strip() for line in shown.splitlines()})
    assert not leaked, f"{chapter.name}: solution code in the student copy: {leaked[:3]}"
    assert not any(notebooks.SOLUTION_TAG in c.metadata.get("tags", []) for c in student.cells)
    asked = [n for n, *_ in notebooks.directives(text) if n == "exercise"]
    assert shown.count("{exercise") == len(asked), f"{chapter.name}: exercises went missing"
    full = notebooks.colab_notebook(chapter)
    assert student.cells[0].source == full.cells[0].source  # the Colab cell (or a heading)
    code = [c for c in student.cells if c.cell_type == "code"]
    assert code[0].source == notebooks.colab_cell(ROOT), "the Colab cell must stay first"
    assert "parameters" in code[1].metadata.get("tags", []), "the parameters cell must stay"
    assert student.metadata.get("accelerator") == full.metadata.get("accelerator")


@pytest.mark.parametrize("reference", sorted(SOLUTIONS.glob("*_reference.md")),
                         ids=lambda p: p.stem)
def test_student_starters_hold_none_of_the_reference_solutions(edition, reference):
    """What a reference adds to its starter (the YOUR CODE cells, filled) is not in the copy."""
    starter = next(s for s in notebooks.student_sources(ROOT)
                   if s.parent.name == "assignments" and s.stem.startswith(reference.stem[:2]))
    filled = [b.source for a, b in zip(jupytext.read(starter).cells,
                                       jupytext.read(reference).cells, strict=True)
              if a.source != b.source]
    assert filled, f"{reference.name} fills in nothing"
    given = {line.strip() for line in starter.read_text().splitlines()}  # the skeleton's own
    answer = {line.strip() for source in filled for line in source.splitlines()
              if len(line.strip()) >= 12 and not line.strip().startswith("#")} - given
    assert answer, f"{reference.name} adds no code of its own"
    shown = {line.strip() for line in _text(_student(edition, starter)).splitlines()}
    assert not answer & shown, f"{reference.name} leaked into {starter.name}: {answer & shown}"
