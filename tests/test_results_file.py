"""The results file of a grid survives a kill mid-write: the torn fragment is cut off the file
when it is read, so the next row starts on a line of its own and no later run is lost."""

from __future__ import annotations

import json
import os

import pytest

from speechul import experiments


def _row(seed: int) -> dict:
    return {"setting": "abc", "method": "finetune", "variant": "", "seed": seed, "x": 1.0}


def test_a_torn_last_line_is_cut_off_and_the_next_row_survives(tmp_path):
    results = tmp_path / "results.jsonl"
    experiments._append(results, _row(0))
    with open(results, "a") as handle:
        handle.write('{"setting": "abc", "meth')  # killed mid-write
    with pytest.warns(RuntimeWarning, match="unfinished last line"):
        assert len(experiments._read(results)) == 1
    assert results.read_text() == json.dumps(_row(0)) + "\n", "the fragment is cut off the file"
    experiments._append(results, _row(1))
    rows = experiments._read(results)  # raised "results.jsonl:2 is not a result row" before
    assert sorted(seed for _, _, _, seed in rows) == [0, 1]


def test_a_whole_last_row_without_its_newline_is_kept_and_ended(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(_row(0)))  # the row written, its newline not
    assert len(experiments._read(results)) == 1
    experiments._append(results, _row(1))
    assert len(experiments._read(results)) == 2


def test_a_row_is_one_write_of_a_whole_line(tmp_path, monkeypatch):
    """One ``os.write`` of the whole line on an append-only file: a kill leaves either the row
    or a fragment at the end, never a row interleaved with another writer's."""
    writes = []
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real(fd, data))
    row = {**_row(0), "big": "y" * 100_000}  # larger than any text-file buffer
    experiments._append(tmp_path / "results.jsonl", row)
    assert writes == [(json.dumps(row) + "\n").encode()]
