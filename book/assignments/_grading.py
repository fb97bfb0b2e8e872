"""What both assignments' graders share: the submission's tagged cells written as a module,
and the sandbox (a process of its own, a cache holding only a copy of the grading corpus).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jupytext

if TYPE_CHECKING:  # torch loads lazily: --colab and --help need none of it
    pass

#: Assignment 2's corpus size and recipe epochs (assignment 1 uses ``METHOD_EPOCHS``).
GRADE_PARAMS = {"SIZE": "tiny", "EPOCHS": 12}
Check = tuple[str, bool, str]  # (name, passed, reason)


def _check(name: str, ok: bool, why: str) -> Check:
    return name, bool(ok), why


@contextlib.contextmanager
def _kernel_env(cache: Path, env: dict[str, str]) -> Iterator[None]:
    """The environment the submission's process starts with: ``env`` and its own cache folder
    (a temporary one holding a copy of the corpus), so a submission neither reads the
    instructor's cached models nor writes into the cache. The grader's own environment is
    restored after."""
    saved = dict(os.environ)
    os.environ.update({**env, "SPEECHUL_CACHE": str(cache)})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


#: What a module built from a submission's cells starts with: the starter's own imports, so a
#: cell that runs in the notebook runs in the module.
METHOD_HEADER = ("import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
                 "import speechul as su\n\n")
#: Environment variable holding the instructor's secret that draws the hidden requests; CI and
#: a grader without it use ``DEFAULT_SECRET`` (public, so set your own for real grading).
SECRET_ENV = "SPEECHUL_GRADER_SECRET"
DEFAULT_SECRET = "speechul-ci"


def tagged_cells(submission: Path, tag: str, defines: tuple[str, ...]) -> list[str]:
    """The sources of the submission's cells tagged ``tag`` or, if none is (a notebook editor
    that drops tags), those that define one of the functions ``defines``."""
    cells = [c for c in jupytext.read(submission).cells if c.cell_type == "code"]
    tagged = [c.source for c in cells if tag in c.metadata.get("tags", [])]
    return tagged or [c.source for c in cells if any(f"def {n}(" in c.source for n in defines)]


def write_module(submission: Path, path: Path, tag: str, defines: tuple[str, ...],
                 header: str) -> Path:
    """Write the submission's ``tag`` cells after ``header`` as one module at ``path``.

    Raises:
        ValueError: no such cell, or one that is not plain Python (a %magic or !command).
    """
    cells = tagged_cells(submission, tag, defines)
    if not cells:
        raise ValueError(f"no cell tagged {tag!r} defines {', '.join(defines)}: write your "
                         "code in the starter's YOUR CODE cells (keep their tags)")
    source = header + "\n\n".join(cells) + "\n"
    try:
        compile(source, path.name, "exec")
    except SyntaxError as err:
        raise ValueError(f"the {tag} cells are not plain Python ({err.msg}, line "
                         f"{err.lineno - header.count(chr(10))} of the cells): move %magics, "
                         "!commands and tests elsewhere") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return path


SANDBOX_ENV = {"SPEECHUL_QUIET": "1", "OMP_NUM_THREADS": "2", "MPLBACKEND": "Agg"}


def _corpus_files(size: str) -> list[Path]:
    """The grader's cache entries of the embedded corpus of ``size``: its audio folder and its
    log-mel features (the keys ``speechul.synth.build`` and ``speechul.features.logmel`` use)."""
    from speechul import features, synth
    from speechul._runtime import cache_dir

    key = synth.corpus_key(synth.SIZES[size])
    mels = features.cache_key(key, features.FeatureConfig())
    folder = cache_dir() / "features"
    return [cache_dir() / "embedded" / key, folder / f"{mels}.pt", folder / f"{mels}.pt.sha256"]


def _with_corpus(cache: Path) -> Path:
    """``cache`` with a copy of the grading corpus's files (audio and features, no model): the
    sandbox then loads the corpus instead of synthesising it again, and a copy is all the
    student's code can touch. Entries not found are left out (the sandbox rebuilds them)."""
    import shutil

    from speechul._runtime import cache_dir

    for path in _corpus_files(GRADE_PARAMS["SIZE"]):
        target = cache / path.relative_to(cache_dir())
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target, ignore=shutil.ignore_patterns("*.lock"))
        elif path.is_file():
            shutil.copy2(path, target)
    return cache


def _run_in_sandbox(runner: Path, module: Path, log_path: Path, timeout: int,
                    too_long: str) -> dict[str, Any]:
    """Run ``runner MODULE JOB_FOLDER`` in a process of its own, with a cache holding only a copy
    of the corpus and ``timeout`` seconds; return the log it wrote at ``log_path`` (its
    ``error`` says what went wrong), or ``{"error": ...}`` when it was stopped or wrote none."""
    import subprocess

    command = [sys.executable, str(runner), str(module), str(log_path.parent)]
    with tempfile.TemporaryDirectory(prefix="grader-cache-") as cache, \
            _kernel_env(_with_corpus(Path(cache)), SANDBOX_ENV):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": too_long}
    if not log_path.exists():
        return {"error": f"the sandbox wrote no log: {done.stderr[-2000:]}"}
    return json.loads(log_path.read_text())
