"""Validate the chapters with ``pytest --nbval-lax``, as an instructor who edits one expects.

A chapter is MyST markdown (``book/NN_name.md``) whose claims are ``assert`` cells; its Colab copy
runs the book's own (long) parameters. This script writes each chapter as a notebook with its CI
parameters injected by papermill but *not executed* (jupytext read, papermill's
``injected-parameters`` cell after the ``parameters`` cell, exactly as
``scripts/run_chapters.py`` does before it executes), into a git-ignored folder, then runs
``pytest --nbval-lax`` on those notebooks: every cell is a test, and a cell that raises (a failing
claim included) fails. Outputs are not compared (``-lax``): numbers differ across machines.

The kernel is this Python's (``--nbval-current-env``) with the repository on ``PYTHONPATH``, so a
chapter imports this checkout's ``speechul`` even when an editable install points elsewhere (a
git worktree); models are cached under ``SPEECHUL_CACHE`` as in every run.

Usage::

    python scripts/nbval_notebooks.py                    # every chapter, CI parameters
    python scripts/nbval_notebooks.py --only 04          # one chapter (or several: 03 08)
    python scripts/nbval_notebooks.py my_copy.md -- -x   # a chapter file; -x: stop at a failure
    python scripts/nbval_notebooks.py --write-only       # only write _build/nbval/*.ipynb

``make nbval`` (``make nbval ONLY=04``) runs the first form. Arguments after ``--`` go to pytest.
The exit status is pytest's: 0 when every cell of every chosen chapter passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "nbval"  # git-ignored (_build/)


def _load_runner():
    """``scripts/run_chapters.py`` as a module: its parameter reading, chapter selection and
    kernel environment are the ones this script must agree with, so they are reused, not copied.
    Kept in ``sys.modules`` under the name the tests use, so both share one module."""
    if "run_chapters" in sys.modules:
        return sys.modules["run_chapters"]
    spec = importlib.util.spec_from_file_location(
        "run_chapters", Path(__file__).with_name("run_chapters.py"))
    module = sys.modules["run_chapters"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
notebooks = runner.notebooks


def parameterised(chapter: Path, parameters: dict[str, Any],
                  solutions: bool = False) -> nbformat.NotebookNode:
    """``chapter`` as papermill would run it, unexecuted: only the names its ``parameters`` cell
    declares are injected (as ``run_chapters.execute`` does), so one table serves all chapters.
    ``solutions`` appends the coded exercise solutions and their checks as extra cells."""
    nb = notebooks.notebook(chapter)
    if solutions:
        runner.with_solutions(nb, chapter)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / f"{chapter.stem}.ipynb"
        declared = runner._declared(nb, source)  # writes the notebook papermill would read
        nb = load_notebook_node(str(source))  # read as papermill does (cell tags, its metadata)
    given = {k: v for k, v in parameters.items() if k in declared}
    return parameterize_notebook(nb, given, kernel_name="python3", language="python")


def write(chapters: list[Path], out: Path, params: dict[str, dict],
          solutions: bool = False) -> list[Path]:
    """Write each chapter's parameterised notebook to ``out/<stem>.ipynb``; the paths, in order.
    Stale notebooks of other chapters are left alone: pytest is given these paths only."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in chapters:
        target = out / f"{chapter.stem}.ipynb"
        nbformat.write(parameterised(chapter, params.get(chapter.stem, {}), solutions), target)
        written.append(target)
    return written


def kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment pytest (and so the kernel nbval starts) runs in: the runner's kernel
    settings (quiet bars, two threads, inline figures) and this checkout first on
    ``PYTHONPATH``, so the chapters test the code beside them."""
    env = dict(os.environ if base is None else base)
    env.update(runner.KERNEL_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def pytest_command(paths: list[Path], extra: list[str] | None = None,
                   cell_timeout: float = runner.CELL_TIMEOUT) -> list[str]:
    """``pytest --nbval-lax`` on ``paths``: explicit paths, so the project's ``testpaths`` (the
    unit tests) are not collected; the cell timeout is the book build's hang guard."""
    return [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
            f"--nbval-cell-timeout={cell_timeout:g}", f"--timeout={cell_timeout:g}",
            "-p", "no:cacheprovider", *(extra or []), *map(str, paths)]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="chapter files (.md) to validate instead of the book's chapters")
    parser.add_argument("--only", nargs="+", help="chapter numbers or stems, e.g. 03 08_auditing")
    parser.add_argument("--params", default="ci", help="ci | default | FILE.yaml (default: ci)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT.relative_to(ROOT)}")
    parser.add_argument("--solutions", action="store_true",
                        help="also validate the exercises' coded solutions (extra cells)")
    parser.add_argument("--write-only", action="store_true", help="write the notebooks, no pytest")
    args = parser.parse_args(argv)
    if args.files and args.only:
        parser.error("give chapter files or --only, not both")
    try:
        chapters = [f.resolve() for f in args.files] or runner.select(
            [c for c in notebooks.chapters(ROOT) if c.exists()], args.only)
        params = runner.load_params(args.params, chapters)
    except (KeyError, ValueError, OSError) as err:
        parser.error(str(err))
    paths = write(chapters, args.out.resolve(), params, args.solutions)  # pytest runs in ROOT
    if args.write_only:
        print("\n".join(str(p) for p in paths))
        return 0
    return subprocess.run(pytest_command(paths, extra), cwd=ROOT, env=kernel_env()).returncode


if __name__ == "__main__":
    sys.exit(main())
