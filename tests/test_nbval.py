"""``pytest --nbval-lax`` on the chapters: the check an instructor runs after editing one.

``scripts/nbval_notebooks.py`` writes each chapter with its CI parameters injected (by papermill,
not executed) and runs nbval on it. The fast test reads a written notebook; the ``book`` tests
run the instructors' command itself as a subprocess: on chapter 1, the cheapest chapter (about
15 s on 2 cores from an empty cache, where chapter 6, the other 8 s chapter of the runner, trains
a model first: 100 s), so the path cannot rot; and on an edited copy of it whose extra check is
wrong, which must fail and name the failing cell.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from scriptload import load_script

ROOT = Path(__file__).resolve().parents[1]
nbval = load_script("nbval_notebooks")
CHEAPEST = ROOT / "book" / "01_data.md"
CLAIM = 'assert SIZE == "default", "claim: this chapter runs on the default corpus"'


def _code(notebook: Path) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]


def _command(args: list[str]) -> subprocess.CompletedProcess:
    """The instructors' command, as they type it (pytest runs in a subprocess of it)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "nbval_notebooks.py"), *args],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=600)


def _edited(chapter: Path, target: Path, cell: str) -> Path:
    """A copy of ``chapter`` with ``cell`` added right after its parameters cell, as an
    instructor would add a check (early, so ``-x`` stops the run within seconds)."""
    params = re.compile(r"^```\{code-cell\} ipython3\n:tags: \[parameters\]\n.*?^```\n",
                        re.S | re.M)
    text, found = params.subn(lambda m: f"{m.group(0)}\n```{{code-cell}} ipython3\n{cell}\n```\n",
                              chapter.read_text(), count=1)
    assert found, f"{chapter.name} has no parameters cell"
    target.write_text(text)
    return target


def test_written_notebook_holds_the_ci_parameters_unexecuted(tmp_path):
    """Right after the parameters cell comes papermill's injected cell, with only the names the
    chapter declares; nothing is executed (nbval runs it)."""
    [written] = nbval.write([CHEAPEST], tmp_path, {"01_data": {"SIZE": "tiny", "UNDECLARED": 1}})
    code = _code(written)
    tags = [c.metadata.get("tags", []) for c in code]
    at = next(i for i, t in enumerate(tags) if "parameters" in t)
    assert "injected-parameters" in tags[at + 1]
    assert 'SIZE = "tiny"' in code[at + 1].source and "UNDECLARED" not in code[at + 1].source
    assert not any(c.outputs or c.execution_count for c in code), "written, not executed"
    assert nbval.runner.ci_table([CHEAPEST]) == {"01_data": {"SIZE": "tiny"}}


def test_pytest_command_validates_only_the_given_notebooks(tmp_path):
    """Explicit paths: the project's testpaths (the unit tests) are not collected with them."""
    command = nbval.pytest_command([tmp_path / "01_data.ipynb"], ["-x"])
    assert command[1:4] == ["-m", "pytest", "--nbval-lax"]
    assert command[-2:] == ["-x", str(tmp_path / "01_data.ipynb")]
    assert nbval.kernel_env({"PYTHONPATH": "elsewhere"})["PYTHONPATH"].split(os.pathsep) == [
        str(ROOT), "elsewhere"], "the kernel imports this checkout's speechul first"


@pytest.mark.book
def test_nbval_passes_the_cheapest_chapter_with_ci_parameters(tmp_path):
    done = _command(["--only", "01", "--out", str(tmp_path)])
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert re.search(r"\b\d+ passed\b", done.stdout) and "failed" not in done.stdout, report
    assert len(_code(tmp_path / "01_data.ipynb")) > 10, "every code cell was a test"


@pytest.mark.book
def test_nbval_fails_an_edited_chapter_with_a_wrong_claim(tmp_path):
    """An edited chapter whose new check is wrong under its CI parameters fails, and the report
    names the cell (nbval's ``::Cell N``, N counting code cells) and shows its source."""
    edited = _edited(CHEAPEST, tmp_path / CHEAPEST.name, CLAIM)
    out = tmp_path / "nbval"
    done = _command([str(edited), "--out", str(out), "--", "-x"])
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode != 0, report
    number = next(i for i, c in enumerate(_code(out / "01_data.ipynb")) if c.source == CLAIM)
    assert f"01_data.ipynb::Cell {number}" in done.stdout, report
    assert "claim: this chapter runs on the default corpus" in done.stdout, report


def test_instructors_are_given_the_command():
    """README's Contributing and the instructor guide name the command ``make nbval`` runs."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^nbval:.*\n\t.*scripts/nbval_notebooks\.py", makefile, re.M)
    for page in (ROOT / "README.md", ROOT / "book" / "instructor_guide.md"):
        text = page.read_text()
        assert "make nbval ONLY=" in text and "scripts/nbval_notebooks.py --only" in text, page


def test_solutions_option_appends_the_coded_solutions():
    """``--solutions`` validates the folded solutions too, as extra cells after the chapter."""
    chapter = ROOT / "book" / "03_forgetting.md"
    nb = nbval.parameterised(chapter, {}, solutions=True)
    labels = [label for label, _ in nbval.notebooks.solution_code(chapter.read_text())]
    assert labels and [c.metadata.get("solution_of") for c in nb.cells][-len(labels):] == labels
