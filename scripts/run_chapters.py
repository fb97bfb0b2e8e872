"""Execute the book's chapters with papermill: every chapter, or the ones chosen, into a folder.

For instructors (run the whole course before a term, on CPU or a GPU machine) and for the tests
(``tests/test_book.py`` and ``tests/test_browser.py`` execute every chapter once per session with
this module). Each chapter ``book/NN_name.md`` is read with jupytext, its parameters are injected
by papermill, and the executed notebook is written to ``OUT/NN_name.ipynb``, error cells included,
so a failure can be read in the notebook. ``OUT/summary.json`` records, per chapter, its status,
wall-clock seconds, the parameters used and the load average (timings on a shared machine are only
meaningful with it).

Parameters (``--params``):

* ``ci``: each chapter's front matter ``speechul: ci:`` (small, < 3 min each on 2 CPU cores);
* ``default``: the values in the chapters' ``parameters`` cells (the book's own run);
* a YAML file mapping a chapter stem to its parameters, plus an optional ``default:`` block that
  applies to every chapter; a block may hold ``ci: true`` to start from the front matter, and
  ``skip: REASON`` for a chapter the setting cannot run (it is reported as skipped with the
  reason, not executed and not failed). Only names a chapter declares in its parameters cell
  are injected. Example: ``book/params/ci.yaml`` (``--write-params`` regenerates it from the
  front matter);
* the name of a file in ``book/params/`` without ``.yaml``: one reader setting
  (``speechcommands``, ``librispeech``, ``voxceleb1``, ``paper``).

Usage::

    python scripts/run_chapters.py --params ci --out _build/chapters
    python scripts/run_chapters.py --params speechcommands --out runs/sc --only 02 03 04
    python scripts/run_chapters.py --params ci --out _build/chapters --solutions
    python scripts/run_chapters.py --write-params book/params/ci.yaml

``--solutions`` also runs, after each chapter and in its kernel, the code of every folded exercise
solution followed by the exercise's own check (the tests do; see :func:`with_solutions`).

The exit status is 1 when any chapter failed; the summary table lists each failure's last line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("book_notebooks", Path(__file__).with_name(
    "notebooks.py"))
notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebooks)

# seconds per cell, the book build's own (_config.yml execute.timeout): a hang guard, not a
# budget; chapter 4's grid is one cell and takes ~10 min on a slow 2-core machine.
CELL_TIMEOUT = float(notebooks.config(ROOT)["execute"]["timeout"])
SOLUTION_TAG = "solution"  # the cells --solutions appends
PARAMS_DIR = ROOT / "book" / "params"  # one YAML per reader setting, named by --params NAME
SKIP = "skip"  # a parameter block's key: the reason the setting cannot run that chapter
CI_TIMEOUT = 300  # seconds for one chapter's CI run (3 min budget on 2 cores, with margin)
# Kernels inherit these: quiet progress bars, inline figures (an outer MPLBACKEND=Agg would drop
# them).
KERNEL_ENV = {"SPEECHUL_QUIET": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
# ... and these unless the caller set them (scripts/robustness.py varies them): two threads on a
# shared machine, and claims that fail the run instead of only showing a box (speechul.claims).
KERNEL_DEFAULTS = {"OMP_NUM_THREADS": "2", "SPEECHUL_CLAIMS": "strict"}


@dataclass(frozen=True)
class Outcome:
    """How one chapter ran: ``status`` is ``ok``, ``failed`` or ``skipped``; ``error`` the
    failure's last line or the reason for the skip."""

    chapter: str
    status: str
    seconds: float
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    notebook: str = ""
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    solution_seconds: float = 0.0  # the appended solutions' share of ``seconds`` (--solutions)


def front_matter(chapter: Path) -> dict:
    """The ``speechul:`` block of a chapter's YAML front matter (``ci``, ``timeout``)."""
    text = chapter.read_text()
    if not text.startswith("---\n"):
        raise ValueError(f"{chapter.name} has no YAML front matter")
    return (yaml.safe_load(text.split("---\n", 2)[1]) or {}).get("speechul", {}) or {}


def ci_table(chapters: list[Path]) -> dict[str, dict]:
    """Every chapter's CI parameters, as a parameter file holds them."""
    return {c.stem: dict(front_matter(c).get("ci", {})) for c in chapters}


def load_params(spec: str, chapters: list[Path]) -> dict[str, dict]:
    """Chapter stem -> parameters for ``spec`` (``ci``, ``default`` or a YAML file path)."""
    if spec == "ci":
        return ci_table(chapters)
    if spec == "default":
        return {c.stem: {} for c in chapters}
    path = Path(spec)
    if not path.exists() and (PARAMS_DIR / f"{spec}.yaml").is_file():
        path = PARAMS_DIR / f"{spec}.yaml"
    if not path.exists():
        named = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ValueError(f"--params must be 'ci', 'default', one of {named} (book/params/) or "
                         f"an existing YAML file, got {spec!r}")
    table = yaml.safe_load(path.read_text()) or {}
    stems = {c.stem for c in chapters}
    unknown = sorted(set(table) - stems - {"default"})
    if unknown:
        raise KeyError(f"{path}: unknown chapters {unknown}; valid: ['default', *{sorted(stems)}]")
    base = table.get("default") or {}
    out = {}
    for chapter in chapters:
        merged = {**base, **(table.get(chapter.stem) or {})}
        start = front_matter(chapter).get("ci", {}) if merged.pop("ci", False) else {}
        out[chapter.stem] = {**start, **merged}
    return out


def select(chapters: list[Path], only: list[str] | None) -> list[Path]:
    """The chapters whose stem starts with one of ``only`` (``03`` or ``03_forgetting``)."""
    if not only:
        return chapters
    chosen = [c for c in chapters if any(c.stem.startswith(o) for o in only)]
    missing = [o for o in only if not any(c.stem.startswith(o) for c in chapters)]
    if missing:
        raise KeyError(f"no chapter matches {missing}; chapters: {[c.stem for c in chapters]}")
    return chosen


def _declared(nb: nbformat.NotebookNode, scratch: Path) -> set[str]:
    nbformat.write(nb, scratch)
    return set(papermill.inspect_notebook(str(scratch)))


def with_solutions(nb: nbformat.NotebookNode, chapter: Path) -> nbformat.NotebookNode:
    """``nb`` with one cell per coded exercise solution appended (solution, then the exercise's
    check), tagged ``remove-cell`` so a book built from the executed notebook does not show
    them: run in the chapter's kernel, they prove the folded solutions still work."""
    for label, code in notebooks.solution_code(chapter.read_text()):
        nb.cells.append(nbformat.v4.new_code_cell(
            f"# the solution of exercise {label}\n{code}",
            metadata={"tags": ["remove-cell", SOLUTION_TAG], "solution_of": label}))
    return nb


def _failure(err: Exception, nb: nbformat.NotebookNode) -> str:
    """The last line of a chapter's failure, naming the exercise when a solution failed."""
    if not isinstance(err, papermill.PapermillExecutionError):
        return traceback.format_exception_only(err)[-1].strip()
    # papermill's cell_index counts the error banner cells it adds: find the cell by its code
    label = next((c.metadata.get("solution_of") for c in nb.cells if c.source == err.source),
                 None)
    return (f"solution of exercise {label}: " if label else "") + f"{err.ename}: {err.evalue}"


def _solution_seconds(target: Path) -> float:
    """Seconds the appended solution cells took (papermill times every cell)."""
    if not target.exists():
        return 0.0
    cells = nbformat.read(target, as_version=4).cells
    return round(sum(c.metadata.get("papermill", {}).get("duration") or 0.0 for c in cells
                     if SOLUTION_TAG in c.metadata.get("tags", [])), 3)


def execute(chapter: Path, out: Path, parameters: dict[str, Any],
            cell_timeout: float = CELL_TIMEOUT, solutions: bool = False) -> Outcome:
    """Run one chapter (``.md`` or ``.ipynb``) into ``out/<stem>.ipynb``; never raises on a
    failing chapter: the outcome says ``failed`` and the notebook keeps the traceback.

    Only the names the chapter declares in its ``parameters`` cell are injected, so one
    ``default:`` block can serve chapters with different parameters. ``solutions`` appends
    the exercises' coded solutions (:func:`with_solutions`); ``seconds`` then includes them
    and ``solution_seconds`` says how much of it they took.
    """
    out.mkdir(parents=True, exist_ok=True)
    source = out / f".{chapter.stem}.source.ipynb"
    target = out / f"{chapter.stem}.ipynb"
    nb = notebooks.notebook(chapter)
    if solutions:
        with_solutions(nb, chapter)
    declared = _declared(nb, source)  # writes the source papermill runs
    given = {k: v for k, v in parameters.items() if k in declared}
    os.environ.update(KERNEL_ENV)
    for name, value in KERNEL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    start, error = time.perf_counter(), ""
    try:
        papermill.execute_notebook(str(source), str(target), parameters=given,
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   execution_timeout=cell_timeout, cwd=str(out))
    except Exception as err:  # noqa: BLE001 - any failure of the chapter is reported, not raised
        error = _failure(err, nb)
    finally:
        source.unlink(missing_ok=True)
    return Outcome(chapter.stem, "failed" if error else "ok",
                   round(time.perf_counter() - start, 1), given, error, str(target),
                   tuple(round(x, 2) for x in os.getloadavg()),
                   _solution_seconds(target) if solutions else 0.0)


def execute_once(chapter: Path, out: Path, parameters: dict[str, Any] | None = None,
                 cell_timeout: float | None = None, solutions: bool = True) -> Outcome:
    """:func:`execute` unless ``out`` already holds this chapter's outcome (then read it).

    The tests call this from several modules with one session folder, so each chapter runs
    once per session. Defaults: the chapter's CI parameters and its front matter ``timeout``,
    with the coded solutions run after the chapter.
    """
    record = out / f".{chapter.stem}.outcome.json"
    if record.exists():
        saved = json.loads(record.read_text())
        return Outcome(**{**saved, "load_average": tuple(saved["load_average"])})
    meta = front_matter(chapter)
    params = meta.get("ci", {}) if parameters is None else parameters
    outcome = execute(chapter, out, params, cell_timeout or meta.get("timeout", CI_TIMEOUT),
                      solutions)
    record.write_text(json.dumps(asdict(outcome)))
    return outcome


def run_all(chapters: list[Path], out: Path, params: dict[str, dict],
            cell_timeout: float = CELL_TIMEOUT, quiet: bool = False,
            solutions: bool = False) -> list[Outcome]:
    """Execute ``chapters`` one after the other (a progress bar), then write the summary."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    bar = tqdm(chapters, desc="chapters", unit="chapter", disable=quiet or None)
    for chapter in bar:
        bar.set_postfix_str(chapter.stem)
        given = params.get(chapter.stem, {})
        if given.get(SKIP):
            outcomes.append(Outcome(chapter.stem, "skipped", 0.0, given, str(given[SKIP])))
            continue
        outcomes.append(execute(chapter, out, given, cell_timeout, solutions))
    (out / "summary.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    """A plain-text summary: one line per chapter, failures with their last error line."""
    lines = [f"{'chapter':<24} {'status':<7} {'seconds':>8}  load   error"]
    for o in outcomes:
        why = f"({o.error})" if o.status == "skipped" else o.error
        lines.append(f"{o.chapter:<24} {o.status:<7} {o.seconds:>8.1f}  "
                     f"{o.load_average[0]:<5.2f}  {why}")
    failed = [o.chapter for o in outcomes if o.status == "failed"]
    skipped = [o.chapter for o in outcomes if o.status == "skipped"]
    total = sum(o.seconds for o in outcomes)
    ran = len(outcomes) - len(skipped)
    lines.append(f"{ran - len(failed)}/{ran} chapters ran in {total:.0f} s"
                 + (f"; skipped: {', '.join(skipped)}" if skipped else "")
                 + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="ci", help="ci | default | FILE.yaml (default: ci)")
    parser.add_argument("--out", type=Path, help="folder for the executed notebooks")
    parser.add_argument("--only", nargs="+", help="chapter numbers or stems, e.g. 03 08_auditing")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT, help="seconds")
    parser.add_argument("--write-params", type=Path, help="write the CI parameter file and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--solutions", action="store_true",
                        help="also run the exercises' coded solutions after each chapter")
    args = parser.parse_args(argv)
    chapters = [c for c in notebooks.chapters(ROOT) if c.exists()]
    if args.write_params:
        header = ("# Every chapter's CI parameters (front matter speechul: ci:), for\n"
                  "# python scripts/run_chapters.py --params THIS_FILE. Generated by\n"
                  "# python scripts/run_chapters.py --write-params book/params/ci.yaml\n")
        body = yaml.safe_dump(ci_table(chapters), default_flow_style=None, sort_keys=True)
        args.write_params.parent.mkdir(parents=True, exist_ok=True)
        args.write_params.write_text(header + body)
        return 0
    if args.out is None:
        parser.error("--out is required (a folder for the executed notebooks)")
    try:
        chosen = select(chapters, args.only)
        params = load_params(args.params, chapters)  # a file's other chapters are not unknown
    except (KeyError, ValueError) as err:
        parser.error(str(err))
    outcomes = run_all(chosen, args.out, params, args.cell_timeout, args.quiet, args.solutions)
    print(table(outcomes))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
