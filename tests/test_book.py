"""The book: structure of every chapter, Colab copies in sync, and every chapter executed.

Static checks (fast, always run) read the chapters listed in ``_toc.yml``: each starts with the
canonical Colab cell (``book/intro.md``), has a ``parameters`` cell whose names cover its CI
parameters, and ends with at least three exercises that all have folded solutions.

Execution (marked ``book``): each chapter goes jupytext -> papermill (CI parameters from the
front matter ``speechul: ci:``) with ``scripts/run_chapters.py``, once per session into a folder
that ``tests/test_browser.py`` builds the rendered book from; an error in any cell, including a
failing check cell, fails the test. After each chapter its folded exercise solutions that hold
code run in the same kernel, each followed by the check its exercise asks the reader to pass,
so a solution that stopped working fails too (they are hidden from the pages). Temporary
chapters prove the harness can fail, injects parameters and runs the solutions; a temporary book
proves ``jupyter-book build`` fails when a chapter raises and that its Colab button opens the
generated notebook.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml
from scriptload import load_script

ROOT = Path(__file__).resolve().parents[1]
runner = load_script("run_chapters")  # shared with tests/test_browser.py
notebooks = runner.notebooks

CHAPTERS = notebooks.chapters(ROOT)
DEFAULT_TIMEOUT = 300  # seconds for one chapter's CI run; the budget is 3 min on 2 CPU cores
ids = [c.stem for c in CHAPTERS]


def _front_matter(chapter: Path) -> dict:
    text = chapter.read_text()
    if not text.startswith("---\n"):
        raise ValueError(f"{chapter.name} has no YAML front matter")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _code_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _existing(chapter: Path) -> Path:
    assert chapter.exists(), f"{chapter.relative_to(ROOT)} is listed in _toc.yml but missing"
    return chapter


# --------------------------------------------------------------------------- static checks


def test_toc_lists_chapters():
    assert CHAPTERS, "_toc.yml lists no chapters"
    assert (ROOT / "book" / "intro.md").exists()


def test_colab_cell_installs_from_the_configured_repository():
    url, branch = notebooks.repository(ROOT)
    cell = notebooks.colab_cell(ROOT)
    assert f"git+{url}@{branch}" in cell, "the Colab cell must install from _config.yml's repo"
    assert 'if "google.colab" in sys.modules:' in cell, "the Colab cell must be Colab-only"
    compile(cell, "colab-cell", "exec")  # valid Python, no notebook magics


def test_config_fails_builds_on_errors_and_links_colab():
    config = notebooks.config(ROOT)
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["execute"]["raise_on_error"] is True
    assert config["execute"]["allow_errors"] is False
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert "book/*.ipynb" in config["exclude_patterns"], "Colab copies must not become pages"
    assert "sphinx_exercise" in config["sphinx"]["extra_extensions"]
    for bib in config["bibtex_bibfiles"]:
        assert (ROOT / bib).exists()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=ids)
def test_chapter_starts_with_the_colab_cell(chapter):
    first = _code_cells(notebooks.notebook(_existing(chapter)))[0]
    expected = notebooks.colab_cell(ROOT)
    assert first.source == expected, (
        f"{chapter.name}: the first code cell must be the canonical Colab cell of book/intro.md "
        f"(label colab-cell), copied verbatim:\n{expected}")
    assert first.metadata.get("tags") == notebooks.COLAB_TAGS


@pytest.mark.parametrize("chapter", CHAPTERS, ids=ids)
def test_chapter_parameters_cover_its_ci_values(chapter, tmp_path):
    nb = notebooks.notebook(_existing(chapter))
    tagged = [c for c in _code_cells(nb) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{chapter.name} needs exactly one cell tagged 'parameters'"
    assert _code_cells(nb)[1] is tagged[0], "the parameters cell comes right after the Colab cell"
    ci = _front_matter(chapter).get("speechul", {}).get("ci")
    assert isinstance(ci, dict) and ci, f"{chapter.name} needs front matter speechul: ci: {{...}}"
    assert nb.metadata["speechul"]["ci"] == ci, "jupytext must keep the CI parameters"
    nbformat.write(nb, tmp_path / "chapter.ipynb")
    declared = set(papermill.inspect_notebook(str(tmp_path / "chapter.ipynb")))
    assert set(ci) <= declared, f"CI parameters not in the parameters cell: {set(ci) - declared}"
    # papermill --help-notebook lists every parameter (it skips lines it cannot parse, e.g. a
    # comment that itself contains "name = value")
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert declared == assigned, f"papermill cannot read {assigned - declared}"


def test_exercise_parser_sees_plain_and_gated_directives():
    text = ("```{exercise} One\n:label: a\n\nText\n```\n\n"
            ":::{exercise-start}\n:label: b\n:::\n\n"
            "```{solution} a\n:class: dropdown\n```\n\n"
            "```{solution-start} b\n:class: dropdown\n```\n")
    found = [(name, arg, opts) for name, arg, opts, _, _ in notebooks.directives(text)]
    assert found == [("exercise", "One", {"label": "a"}), ("exercise", "", {"label": "b"}),
                     ("solution", "a", {"class": "dropdown"}),
                     ("solution", "b", {"class": "dropdown"})]


def _asserts(source: str) -> list[int]:
    """Line numbers of ``assert`` statements in a code cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics; chapters hold none in checked cells
        return []
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=ids)
def test_claims_go_through_speechul_claims(chapter):
    """A chapter states its claims with ``speechul.claims`` (an invariant, or a statistic with
    a margin from the run's own spread) and checks them in a cell whose input is hidden: a bare
    ``assert`` would fit a threshold to one machine and stop a reader's run instead of
    reporting. Exercise solutions (run by the tests after the chapter) may assert."""
    nb = notebooks.notebook(_existing(chapter))
    bare, in_solution = {}, False
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":  # gated solutions: {solution-start} ... {solution-end}
            if "{solution-start}" in cell.source or "{solution-end}" in cell.source:
                in_solution = "{solution-start}" in cell.source.split("{solution-end}")[-1]
        elif not in_solution and (lines := _asserts(cell.source)):
            bare[i] = lines
    assert not bare, f"{chapter.name}: bare asserts in code cells {bare}; use su.claims"
    checks = [c for c in _code_cells(nb) if ".check()" in c.source]
    assert checks, f"{chapter.name} checks no claims (a su.claims.Claims(...).check() cell)"
    for cell in checks:
        assert "hide-input" in cell.metadata.get("tags", []), (
            f"{chapter.name}: a check cell's input is hidden (tag hide-input)")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=ids)
def test_chapter_ends_with_exercises_and_solutions(chapter):
    text = _existing(chapter).read_text()
    headings = list(re.finditer(r"^## (.*)$", text, re.M))
    assert headings and headings[-1].group(1).startswith("Exercises"), (
        f"{chapter.name} must end with a '## Exercises' section")
    start = headings[-1].start()
    found = notebooks.directives(text)
    exercises = [(opts.get("label"), at) for name, _, opts, at, _ in found if name == "exercise"]
    solutions = {arg: opts for name, arg, opts, _, _ in found if name != "exercise"}
    assert len(exercises) >= 3, f"{chapter.name} has {len(exercises)} exercises, needs >= 3"
    for label, at in exercises:
        assert label, f"{chapter.name}: every exercise needs a :label:"
        assert at > start, f"{chapter.name}: exercise {label} is outside the Exercises section"
        assert label in solutions, f"{chapter.name}: exercise {label} has no solution"
        assert solutions[label].get("class") == "dropdown", f"solution {label}: :class: dropdown"


def _speechul_names(nb: nbformat.NotebookNode) -> dict[str, object]:
    """What a chapter's imports bind to speechul: ``su`` -> the package, ``sisa`` -> a module."""
    names: dict[str, object] = {}
    for cell in _code_cells(nb):
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "speechul":
                        name = alias.asname or "speechul"
                        names[name] = importlib.import_module(alias.name if alias.asname
                                                              else "speechul")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("speechul"):
                module = importlib.import_module(node.module)
                for alias in node.names:  # a function, or a submodule not imported yet
                    names[alias.asname or alias.name] = (
                        getattr(module, alias.name) if hasattr(module, alias.name)
                        else importlib.import_module(f"{node.module}.{alias.name}"))
    return names


def _resolve(node: ast.expr, names: dict[str, object]) -> tuple[bool, object]:
    """(True, object) for ``su.x.y`` whose root is a speechul name; (False, None) otherwise.
    Raises AttributeError when the chain names something speechul lacks."""
    if isinstance(node, ast.Name):
        return (True, names[node.id]) if node.id in names else (False, None)
    if isinstance(node, ast.Attribute):
        found, parent = _resolve(node.value, names)
        if found:
            return True, getattr(parent, node.attr)
    return False, None


@pytest.mark.parametrize("chapter", CHAPTERS, ids=ids)
def test_fenced_code_names_what_speechul_has(chapter):
    """Code in ``~~~python`` fences (exercise hints and solutions) is shown, not executed, so a
    renamed function or argument would go unnoticed: each block must parse, each speechul
    attribute it uses must exist, and each keyword it passes to a speechul function must be one
    the function takes."""
    names = _speechul_names(notebooks.notebook(_existing(chapter)))
    for block in notebooks.FENCED.findall(chapter.read_text()):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Attribute):
                try:
                    _resolve(node, names)
                except AttributeError as err:
                    pytest.fail(f"{chapter.name}: {ast.unparse(node)}: {err}")
            if isinstance(node, ast.Call):
                found, function = _resolve(node.func, names)
                if not found or not callable(function):
                    continue
                parameters = inspect.signature(function).parameters
                if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                    continue
                unknown = [k.arg for k in node.keywords if k.arg and k.arg not in parameters]
                assert not unknown, f"{chapter.name}: {ast.unparse(node.func)} takes no {unknown}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=ids)
def test_colab_copy_in_sync(chapter):
    target = notebooks.notebook_path(_existing(chapter))
    assert target.exists(), f"missing {target.name}: run python scripts/notebooks.py"
    assert target.read_text() == notebooks.render(chapter), (
        f"{target.name} is stale: run python scripts/notebooks.py")
    nb = nbformat.read(target, as_version=4)
    wants_gpu = nb.metadata.get("speechul", {}).get("gpu", False)
    assert ("accelerator" in nb.metadata) == wants_gpu, (
        "Colab opens a copy on a GPU runtime only when its chapter declares speechul: {gpu: true}")
    assert not any(c.get("outputs") for c in _code_cells(nb)), "Colab copies carry no outputs"


def test_colab_copy_asks_for_a_gpu_only_when_the_chapter_does(tmp_path):
    """A chapter on the embedded corpus opens on a CPU runtime; ``speechul: {gpu: true}`` in its
    front matter makes its Colab copy request a GPU."""
    body = "# A page\n\n```{code-cell} ipython3\nx = 1\n```\n"
    front = "---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
    for gpu in (False, True):
        page = tmp_path / f"page_{gpu}.md"
        page.write_text(front + f"speechul: {{gpu: {str(gpu).lower()}}}\n---\n" + body)
        meta = notebooks.colab_notebook(page).metadata
        assert (meta.get("accelerator") == "GPU") is gpu, meta


# --------------------------------------------------------------------------- execution


def _error_cells(notebook: Path) -> str:
    """The tracebacks an executed notebook recorded, for the failure message."""
    nb = nbformat.read(notebook, as_version=4)
    errors = [o for c in _code_cells(nb) for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(o["traceback"]))[-4000:]
                     for o in errors)


@pytest.fixture(scope="session")
def chapter_runs(tmp_path_factory) -> Path:
    """The session's folder of executed chapters (shared with tests/test_browser.py by path)."""
    return tmp_path_factory.getbasetemp() / "chapter-runs"


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS, ids=ids)
def test_chapter_runs_with_ci_parameters(chapter, chapter_runs):
    """papermill injects the front matter's CI parameters and runs every cell; an error in any
    cell, a failing check cell included, fails the chapter. The executed notebook is kept for
    tests/test_browser.py, which builds the book from it."""
    outcome = runner.execute_once(_existing(chapter), chapter_runs)
    assert outcome.status == "ok", (
        f"{chapter.name} failed: {outcome.error}\n{_error_cells(Path(outcome.notebook))}")
    budget = _front_matter(chapter).get("speechul", {}).get("timeout", DEFAULT_TIMEOUT)
    seconds = outcome.seconds - outcome.solution_seconds  # the solutions are extra, not the page
    assert seconds <= budget, f"{chapter.name} ran over its {budget} s CI budget"


def _report(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"


def _toy_chapter(path: Path, body: str) -> Path:
    """A minimal chapter in the book's format: front matter, Colab cell, parameters, ``body``."""
    fence = "```"
    path.write_text(
        "---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
        "kernelspec: {display_name: Python 3, language: python, name: python3}\n"
        "speechul:\n  ci: {SIZE: \"tiny\"}\n---\n\n# Toy\n\n"
        f"{fence}{{code-cell}} ipython3\n:tags: [remove-cell]\n\n{notebooks.colab_cell(ROOT)}\n"
        f"{fence}\n\n{fence}{{code-cell}} ipython3\n:tags: [parameters]\n\nSIZE = \"default\"\n"
        f"{fence}\n\n{fence}{{code-cell}} ipython3\n{body}\n{fence}\n")
    return path


@pytest.mark.book
def test_harness_injects_ci_parameters(tmp_path):
    chapter = _toy_chapter(tmp_path / "toy.md", 'assert SIZE == "tiny", SIZE')
    outcome = runner.execute_once(chapter, tmp_path / "out", cell_timeout=120)
    assert outcome.status == "ok", outcome.error
    assert outcome.parameters == {"SIZE": "tiny"}


@pytest.mark.book
def test_harness_fails_a_chapter_that_raises(tmp_path):
    chapter = _toy_chapter(tmp_path / "broken.md", 'raise RuntimeError("deliberately broken")')
    outcome = runner.execute_once(chapter, tmp_path / "out", cell_timeout=120)
    assert outcome.status == "failed"
    assert "deliberately broken" in outcome.error
    assert "deliberately broken" in _error_cells(Path(outcome.notebook))


_EXERCISES = (
    "\n## Exercises\n\n```{exercise} Doubling (coding)\n:label: ex-double\n\nWrite `double`:\n\n"
    "~~~python\nassert double(SIZE) == SIZE * 2\n~~~\n```\n\n"
    "```{solution} ex-double\n:class: dropdown\n\n~~~python\nSOLUTION\n~~~\n\nWhy.\n```\n\n"
    "```{exercise} Talk\n:label: ex-talk\n\nNo code.\n```\n\n"
    "```{solution} ex-talk\n:class: dropdown\n\nWords only.\n```\n")


def test_solution_code_is_the_solution_then_the_exercise_check():
    text = _EXERCISES.replace("SOLUTION", "def double(x):\n    return x + x")
    assert notebooks.solution_code(text) == [
        ("ex-double", "def double(x):\n    return x + x\n\nassert double(SIZE) == SIZE * 2\n")]


@pytest.mark.book
@pytest.mark.parametrize("solution, fails", [("def double(x):\n    return x + x", False),
                                             ("def double(x):\n    return x", True)])
def test_harness_runs_the_coded_solutions(tmp_path, solution, fails):
    """A wrong folded solution (or a check it no longer passes) fails the chapter and the
    error names the exercise; the page itself would not show the appended cells."""
    chapter = _toy_chapter(tmp_path / "toy.md", "x = 1")
    chapter.write_text(chapter.read_text() + _EXERCISES.replace("SOLUTION", solution))
    outcome = runner.execute_once(chapter, tmp_path / "out", cell_timeout=120)
    assert outcome.status == ("failed" if fails else "ok"), outcome.error
    if fails:
        assert outcome.error.startswith("solution of exercise ex-double: AssertionError")
    cells = nbformat.read(outcome.notebook, as_version=4).cells
    assert [c.metadata.get("solution_of") for c in cells][-1] == "ex-double"
    assert "remove-cell" in cells[-1].metadata.tags
    assert 0 < outcome.solution_seconds <= outcome.seconds


@pytest.mark.book
def test_batch_command_reports_failures(tmp_path):
    """The instructors' command: a parameter file, a summary table and exit 1 on a failure."""
    good = _toy_chapter(tmp_path / "good.md", 'assert SIZE == "small", SIZE')
    bad = _toy_chapter(tmp_path / "bad.md", 'raise RuntimeError("deliberately broken")')
    params = tmp_path / "params.yaml"
    params.write_text("default: {SIZE: small, NOT_DECLARED: 1}\n")
    table = runner.load_params(str(params), [good, bad])
    assert table == {"good": {"SIZE": "small", "NOT_DECLARED": 1}, "bad": table["bad"]}
    outcomes = runner.run_all([good, bad], tmp_path / "out", table, 120, quiet=True)
    assert [o.status for o in outcomes] == ["ok", "failed"]
    assert outcomes[0].parameters == {"SIZE": "small"}, "only declared names are injected"
    summary = runner.table(outcomes)
    assert "FAILED: bad" in summary and "deliberately broken" in summary
    assert (tmp_path / "out" / "summary.json").exists()
    with pytest.raises(SystemExit):
        runner.main(["--params", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)])


def test_shipped_ci_parameter_file_matches_the_front_matter():
    shipped = yaml.safe_load((ROOT / "book" / "params" / "ci.yaml").read_text())
    existing = [c for c in CHAPTERS if c.exists()]
    assert shipped == runner.ci_table(existing), (
        "book/params/ci.yaml is stale: python scripts/run_chapters.py --write-params "
        "book/params/ci.yaml")


def _jupyter_book() -> str:
    found = Path(sys.executable).with_name("jupyter-book")
    return str(found) if found.exists() else shutil.which("jupyter-book") or "jupyter-book"


def _toy_book(root: Path, body: str) -> subprocess.CompletedProcess:
    """Build a one-chapter book with the real _config.yml and return the build process."""
    (root / "book").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    shutil.copy(ROOT / "book" / "intro.md", root / "book" / "intro.md")
    shutil.copy(ROOT / "book" / "references.bib", root / "book" / "references.bib")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n"
                                   "chapters:\n  - file: book/toy\n")
    chapter = _toy_chapter(root / "book" / "toy.md", body)
    notebooks.notebook_path(chapter).write_text(notebooks.render(chapter))
    env = {**os.environ, "SPEECHUL_QUIET": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run([_jupyter_book(), "build", str(root), "--all"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.book
def test_book_build_links_colab_to_the_notebook(tmp_path):
    done = _toy_book(tmp_path, 'print("fine" * 2)')
    assert done.returncode == 0, _report(done)
    page = (tmp_path / "_build" / "html" / "book" / "toy.html").read_text()
    url, branch = notebooks.repository(ROOT)
    github = url.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{github}/blob/{branch}/book/toy.ipynb"
    assert colab in page, "the Colab button must open the generated .ipynb"
    assert "finefine" in page, "the chapter was executed"
    assert "google.colab" not in page, "the Colab cell is removed from the page"
    assert not (tmp_path / "_build" / "html" / "book" / "toy.ipynb.html").exists()


@pytest.mark.book
def test_book_build_fails_when_a_chapter_raises(tmp_path):
    done = _toy_book(tmp_path, 'raise RuntimeError("deliberately broken")')
    assert done.returncode != 0, "jupyter-book build must fail when a chapter raises"
    assert "deliberately broken" in done.stdout + done.stderr


def test_student_edition_recipe_strips_solutions():
    """book/instructor_guide.md builds the student edition by flipping one line with sed."""
    text = (ROOT / "_config.yml").read_text()
    assert text.count("hide_solutions: false") == 1, "the guide's sed needs exactly one such line"
    student = yaml.safe_load(text.replace("hide_solutions: false", "hide_solutions: true"))
    assert student["sphinx"]["config"]["hide_solutions"] is True
    guide = (ROOT / "book" / "instructor_guide.md").read_text()
    assert "sed 's/hide_solutions: false/hide_solutions: true/' _config.yml" in guide
