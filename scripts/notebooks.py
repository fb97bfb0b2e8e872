"""Colab copies of the chapters, and the facts about the book that tests check.

Colab opens notebooks, not MyST markdown, so every chapter ``book/NN_name.md`` gets a generated
twin ``book/NN_name.ipynb`` (committed, no outputs). It sits beside its source on purpose:
sphinx-book-theme's Colab button links to ``<page>.ipynb`` when that file exists beside the page,
so the button opens the notebook and the repository URL stays in ``_config.yml`` alone. The book
build ignores the copies (``exclude_patterns``); ``tests/test_book.py`` checks they are in sync.

The twin opens on Colab's CPU runtime: every chapter runs on the embedded corpus on a CPU, and
a reader should not wait for a GPU it does not need. A chapter that needs one declares
``speechul: {gpu: true}`` in its front matter and its twin asks Colab for a GPU runtime. The
first cell (the same in every chapter, defined once in ``book/intro.md`` under the
``colab-cell`` label) installs speechul from the repository when, and only when, it runs inside
Colab, and tells a CPU runtime's reader how to switch for the real corpora.

Usage::

    python scripts/notebooks.py           # (re)write every chapter's .ipynb
    python scripts/notebooks.py --check   # exit 1 if any copy is missing or stale
    python scripts/notebooks.py --student OUTDIR   # the student edition (below)

The **student edition** (``--student OUTDIR``) writes the same Colab copies of every chapter and
of the assignment starters (``book/assignments/*.md``) under ``OUTDIR`` (same relative paths,
``OUTDIR/book/03_forgetting.ipynb``) with the solutions taken out: every ``{solution}`` directive
(plain, or gated ``{solution-start}`` ... ``{solution-end}`` with its code cells), every cell
tagged ``solution``, and every hidden (``remove-cell``) cell that holds a solution's code. The
exercises and the checks they ask students to pass stay. ``book/assignments/solutions/`` is never
copied. ``tests/test_student_edition.py`` checks that no solution text survives.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]

COLAB_METADATA = {"colab": {"provenance": []}}  # a CPU runtime
# Colab opens a notebook with these keys on a GPU runtime (its own GPU notebooks carry the same).
GPU_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}
COLAB_TAGS = ["remove-cell"]  # the Colab cell does nothing outside Colab: keep it off the pages


def config(root: Path = ROOT) -> dict:
    """``_config.yml`` as a dict."""
    return yaml.safe_load((root / "_config.yml").read_text())


def repository(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) of the repository, as named once in ``_config.yml``."""
    repo = config(root)["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def _toc_entries(node: dict | list) -> list[str]:
    """Every ``file:`` of a jb-book toc subtree, in reading order."""
    items = node if isinstance(node, list) else [node]
    files = []
    for item in items:
        if "file" in item:
            files.append(item["file"])
        for key in ("chapters", "parts", "sections"):
            if key in item:
                files.extend(_toc_entries(item[key]))
    return files


def chapters(root: Path = ROOT) -> list[Path]:
    """The notebook chapters listed in ``_toc.yml`` (``book/NN_name``), as ``.md`` paths.

    Plain pages (the root page, references, course pages) are not notebooks and are left out.
    A listed chapter that does not exist yet is returned anyway: callers report it.
    """
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    if toc.get("format") != "jb-book":
        raise ValueError(f"_toc.yml must have format: jb-book, got {toc.get('format')!r}")
    out = []
    for entry in _toc_entries({k: v for k, v in toc.items() if k in ("chapters", "parts")}):
        path = root / entry
        if not re.fullmatch(r"\d\d_\w+", Path(entry).stem):
            continue
        out.append(path if path.suffix else path.with_suffix(".md"))
    return out


def colab_cell(root: Path = ROOT) -> str:
    """The canonical first cell: the first ```python block after ``(colab-cell)=`` in intro.md."""
    text = (root / "book" / "intro.md").read_text()
    found = re.search(r"^\(colab-cell\)=$.*?^```python\n(.*?)\n```$", text, re.S | re.M)
    if found is None:
        raise ValueError("book/intro.md has no ```python block after the '(colab-cell)=' label")
    return found.group(1)


def notebook_path(chapter: Path) -> Path:
    """Where a chapter's Colab copy lives: beside it, same name, ``.ipynb``."""
    return chapter.with_suffix(".ipynb")


def notebook(chapter: Path) -> nbformat.NotebookNode:
    """The chapter as a notebook, exactly as jupytext reads it (front matter -> metadata)."""
    return jupytext.read(chapter)


def colab_notebook(chapter: Path) -> nbformat.NotebookNode:
    """The Colab copy: no jupytext metadata, a GPU runtime only where the chapter's front matter
    asks for one (``speechul: {gpu: true}``), stable cell ids."""
    nb = notebook(chapter)
    nb.metadata.pop("jupytext", None)
    wants_gpu = bool(nb.metadata.get("speechul", {}).get("gpu", False))
    nb.metadata.update(GPU_METADATA if wants_gpu else COLAB_METADATA)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # deterministic: regenerating an unchanged chapter is a no-op
    return nb


def render(chapter: Path) -> str:
    """The Colab copy's file content."""
    return nbformat.writes(colab_notebook(chapter)) + "\n"


_DIRECTIVE = re.compile(r"^(`{3,}|:{3,})\{(exercise|solution)(-start)?\}[ \t]*(.*)$", re.M)
FENCED = re.compile(r"^~~~python\n(.*?)^~~~$", re.S | re.M)  # code shown in an exercise


def _body(text: str, match: re.Match) -> str:
    """A directive's content: up to its closing fence, or its ``{name}-end`` for the gated
    form (``exercise-start`` ... ``exercise-end``, whose content may hold code cells)."""
    rest = text[match.end():]
    if match.group(3):
        end = re.search(r"^(`{3,}|:{3,})\{" + match.group(2) + r"-end\}", rest, re.M)
    else:
        end = re.search(r"^" + re.escape(match.group(1)) + r"[ \t]*$", rest, re.M)
    return rest[:end.start()] if end else rest


def directives(text: str) -> list[tuple[str, str, dict[str, str], int, str]]:
    """(name, argument, options, offset, body) of every exercise/solution directive."""
    out = []
    for match in _DIRECTIVE.finditer(text):
        options = {}
        for line in text[match.end() + 1:].splitlines():
            option = re.match(r"^:([\w-]+):\s*(.*)$", line)
            if not option:
                break
            options[option.group(1)] = option.group(2).strip()
        out.append((match.group(2), match.group(4).strip(), options, match.start(),
                    _body(text, match)))
    return out


def solution_code(text: str) -> list[tuple[str, str]]:
    """(label, code) for every solution that holds ``~~~python`` code: the solution's blocks,
    then the exercise's own (the check it asks the reader to pass). Run after the chapter, in
    its kernel, they prove the solutions work (``run_chapters.py --solutions``)."""
    found = directives(text)
    asked = {opts.get("label"): body for name, _, opts, _, body in found if name == "exercise"}
    out = []
    for name, label, _, _, body in found:
        blocks = FENCED.findall(body)
        if name == "solution" and blocks:
            out.append((label, "\n".join(blocks + FENCED.findall(asked.get(label, "")))))
    return out


SOLUTION_TAG = "solution"  # a cell with this tag is a solution (run_chapters.py --solutions)
_GATED_END = r"^(`{3,}|:{3,})\{solution-end\}[^\n]*\n\1[ \t]*$"


def _solution_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of every solution directive, fences and gated code cells included."""
    spans = []
    for match in _DIRECTIVE.finditer(text):
        if match.group(2) != "solution" or (spans and match.start() < spans[-1][1]):
            continue
        rest = text[match.end():]
        if match.group(3):  # gated: up to the closing fence of its {solution-end}
            end = re.search(_GATED_END, rest, re.M)
        else:
            end = re.search(r"^" + re.escape(match.group(1)) + r"[ \t]*$", rest, re.M)
        spans.append((match.start(), match.end() + (end.end() if end else len(rest))))
    return spans


def strip_solutions(text: str) -> str:
    """A MyST chapter's text without its solution directives (exercises untouched)."""
    out, pos = [], 0
    for start, end in _solution_spans(text):
        out.append(text[pos:start].rstrip("\n") + "\n")
        pos = end
    return "".join(out) + text[pos:]


def solution_lines(text: str) -> set[str]:
    """The lines only solutions hold (fenced blocks and gated code cells), stripped: lines
    that also appear outside every solution, blank lines, comments and lines too short to
    identify anything are left out."""
    lines, pos, outside = set(), 0, []
    for start, end in _solution_spans(text):
        outside.append(text[pos:start])
        pos = end
        for line in text[start:end].splitlines():
            line = line.strip()
            if len(line) >= 12 and not line.startswith(("#", "```", "~~~", ":")):
                lines.add(line)
    outside.append(text[pos:])
    return lines - {line.strip() for line in "".join(outside).splitlines()}


def _reveals(cell: nbformat.NotebookNode, lines: set[str]) -> bool:
    """True for a cell tagged ``solution``, or hidden (``remove-cell``) with solution code."""
    tags = cell.metadata.get("tags", [])
    if SOLUTION_TAG in tags:
        return True
    return "remove-cell" in tags and any(line.strip() in lines
                                         for line in cell.source.splitlines())


def student_notebook(chapter: Path) -> nbformat.NotebookNode:
    """The Colab copy of ``chapter`` without solutions (the student edition)."""
    text = chapter.read_text()
    lines = solution_lines(text)
    nb = jupytext.reads(strip_solutions(text), fmt="md:myst")
    nb.cells = [c for c in nb.cells if not _reveals(c, lines)]
    nb.metadata.pop("jupytext", None)
    nb.metadata.update(COLAB_METADATA)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def student_sources(root: Path = ROOT) -> list[Path]:
    """What the student edition holds: every chapter, then the assignment starters (never the
    reference solutions under ``book/assignments/solutions/``)."""
    starters = sorted((root / "book" / "assignments").glob("*.md"))
    return [c for c in chapters(root) if c.exists()] + starters


def write_student_edition(outdir: Path, root: Path = ROOT) -> list[Path]:
    """Write the student edition's notebooks under ``outdir``; return their paths."""
    written = []
    for source in student_sources(root):
        target = outdir / notebook_path(source.relative_to(root))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(nbformat.writes(student_notebook(source)) + "\n")
        written.append(target)
    return written


def stale(root: Path = ROOT) -> list[Path]:
    """Existing chapters whose Colab copy is missing or differs from a fresh rendering."""
    out = []
    for chapter in chapters(root):
        target = notebook_path(chapter)
        if chapter.exists() and (not target.exists() or target.read_text() != render(chapter)):
            out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale copies")
    parser.add_argument("--root", type=Path, default=ROOT, help="the book's root folder")
    parser.add_argument("--student", type=Path, metavar="OUTDIR",
                        help="write the student edition (no solutions) under OUTDIR and exit")
    args = parser.parse_args(argv)
    if args.student is not None:
        for path in write_student_edition(args.student, args.root):
            print(f"wrote {path}")
        return 0
    todo = stale(args.root)
    if args.check:
        for path in todo:
            print(f"stale: {path.relative_to(args.root)} (run python scripts/notebooks.py)")
        return 1 if todo else 0
    for path in todo:
        path.write_text(render(path.with_suffix(".md")))
        print(f"wrote {path.relative_to(args.root)}")
    missing = [c for c in chapters(args.root) if not c.exists()]
    for chapter in missing:
        print(f"skipped {chapter.relative_to(args.root)}: listed in _toc.yml but missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
