"""The grader runs a submission's code in a process of its own with its own cache folder (a copy
of the corpus, none of the instructor's models) and stops it when it runs too long, instead of
hanging on it with the instructor's cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from scriptload import load_script

grader = load_script("assignment_grader_sandbox",
                     Path(__file__).resolve().parents[1] / "book" / "assignments" / "grader.py")


@pytest.mark.book  # trains the grader's original (tiny, 20 epochs)
def test_a_method_runs_in_its_own_process_with_a_copy_of_the_corpus_and_a_timeout(tmp_path):
    """Assignment 1 runs the student's code in a process of its own: its cache holds the corpus
    but no model of the instructor's, the grader's environment is untouched, and a method that
    never returns is stopped."""
    spy = tmp_path / "spy.md"
    seen = tmp_path / "seen.json"
    spy.write_text(
        "---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
        "kernelspec: {display_name: Python 3, language: python, name: python3}\n---\n\n"
        "```{code-cell} ipython3\n:tags: [method]\n\nimport json, os, time\n\n"
        "cache = os.environ['SPEECHUL_CACHE']\n"
        f"json.dump({{'cache': cache, 'files': os.listdir(cache)}}, open({str(seen)!r}, 'w'))\n"
        "\n\ndef my_unlearning(model, forget, retain, *, lr: float = 1.0):\n"
        "    time.sleep(600)\n```\n")
    before = dict(os.environ)
    method = grader.write_method(spy, tmp_path / "work")
    log = grader.run_sandboxed(method, tmp_path / "work", grader.hidden_requests()[:1],
                               timeout=60)
    assert "longer than 60 s" in log["error"]
    files = json.loads(seen.read_text())
    assert "models" not in files["files"] and "features" in files["files"]
    assert files["cache"] != os.environ.get("SPEECHUL_CACHE")
    assert not Path(files["cache"]).exists(), "the sandbox's cache is removed after grading"
    assert dict(os.environ) == before, "the grader's own environment is left as it was"


def test_the_sandbox_copy_finds_the_corpus_files(tiny_corpus):
    """The sandbox gets the grading corpus by copying its cache entries, found by the keys
    speechul.synth and speechul.features use; if those keys change, the copy must not silently
    find nothing (each sandbox would then synthesise the corpus again)."""
    assert tiny_corpus.n_classes == 10
    missing = [p for p in grader._corpus_files("tiny") if not p.exists()]
    assert not missing, f"not in the cache: {missing}"
