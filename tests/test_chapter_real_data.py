"""A chapter pointed at a real corpus that is not there fails with speechul's clear message.

Students on Colab switch chapters to Speech Commands with one parameter. When the data is missing
(no download yet, wrong folder), the failed notebook must say what is missing and how to get it:
the ``FileNotFoundError`` of ``speechul.datasets``, raised before any library is asked to read
files, not a ``TypeError`` from a parameter that does not apply or a deep torchaudio traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "02_training.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error_outputs(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


@pytest.mark.book
def test_chapter_without_speech_commands_says_how_to_get_it(tmp_path, monkeypatch):
    assert CHAPTER.exists(), f"{CHAPTER.relative_to(ROOT)} is missing"
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("SPEECHUL_DATA", str(empty))  # the kernel inherits the environment
    source, executed = tmp_path / "chapter.ipynb", tmp_path / "chapter-out.ipynb"
    jupytext.write(jupytext.read(CHAPTER), source)
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(source), str(executed), kernel_name="python3",
                                   cwd=str(CHAPTER.parent), execution_timeout=300,
                                   progress_bar=False,
                                   parameters={"DATASET": "speechcommands", "SIZE": "tiny",
                                               "DATA_OPTIONS": {"parts": "per_speaker"},
                                               "EPOCHS": 1, "SEED": 0})
    assert failure.value.ename == "FileNotFoundError", (
        f"expected speechul's FileNotFoundError, got {failure.value.ename}: "
        f"{failure.value.evalue}")

    errors = _error_outputs(papermill.iorw.load_notebook_node(str(executed)))
    assert len(errors) == 1, "exactly one cell should fail: the one that loads the data"
    error = errors[0]
    message = error["evalue"]
    assert "Speech Commands v0.01 not found" in message
    assert str(empty) in message, "the message names the folder it looked in"
    assert "download=True" in message and "download.tensorflow.org" in message, (
        "the message says how to get the data")
    trace = ANSI.sub("", "\n".join(error["traceback"]))
    assert "torchaudio" not in trace, "raised by speechul before torchaudio was asked for files"
    assert "speechul/datasets.py" in trace


@pytest.mark.book
def test_chapter_refuses_a_setting_it_cannot_run_at_its_top(tmp_path):
    """A keyword chapter on a speaker-only corpus stops in the cell after its parameters, with
    what to use instead, before any data is looked for."""
    source, executed = tmp_path / "chapter.ipynb", tmp_path / "chapter-out.ipynb"
    jupytext.write(jupytext.read(CHAPTER), source)
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(source), str(executed), kernel_name="python3",
                                   cwd=str(CHAPTER.parent), execution_timeout=300,
                                   progress_bar=False, parameters={"DATASET": "librispeech"})
    assert failure.value.ename == "SettingRefused"
    assert "DATASET='speechcommands'" in failure.value.evalue
    nb = papermill.iorw.load_notebook_node(str(executed))
    code = [c for c in nb.cells if c.cell_type == "code"]
    failed = [i for i, c in enumerate(code) if any(o.get("output_type") == "error"
                                                   for o in c.get("outputs", []))]
    at = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    injected = int("injected-parameters" in code[at + 1].metadata.get("tags", []))
    assert failed == [at + 1 + injected], "the cell right after the parameters refuses it"
