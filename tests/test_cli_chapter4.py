"""The shell reproduces chapter 4's table: ``python -m speechul grid`` in a subprocess gives the
summary that ``experiments.run`` + ``experiments.summary`` give in-process, and bad arguments
are usage errors (exit 2, one line on stderr), never tracebacks."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from speechul import experiments, train

# Chapter 4's grid (both tasks, two fractions), shrunk: tiny corpus, 2 epochs, 2 methods, 1 seed.
TASKS, FRACTIONS, METHODS = ("keyword", "speaker"), (0.05, 0.1), ("finetune", "ssd")
ARGV = ["grid", "--task", ",".join(TASKS), "--fraction", ",".join(map(str, FRACTIONS)),
        "--methods", ",".join(METHODS), "--seeds", "0", "--size", "tiny", "--epochs", "2",
        "--device", "cpu"]
# Wall-clock measurements differ between two runs of the same computation; all else must not.
TIMES = {"seconds", "time_fraction", "retrain_seconds"}


def _shell(args: list[str], cache: str, out: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPEECHUL_CACHE": cache, "SPEECHUL_QUIET": "1", "MPLBACKEND": "Agg"}
    extra = ["--out", str(out)] if out is not None else []
    return subprocess.run([sys.executable, "-m", "speechul", *args, *extra], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def shell_summary(cache_path, tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    out = tmp_path_factory.mktemp("ch4")
    # Two one-thread worker processes (chapter 4's default on 2 cores), compared with one-thread
    # runs in this process: the same float sums.
    workers = ["--processes", "2", "--threads", "1"]
    done = _shell([*ARGV, *workers], cache_path, out)
    assert done.returncode == 0, done.stderr[-3000:]
    (out / "stdout.txt").write_text(done.stdout)
    return pd.read_csv(out / "summary.csv"), out


def test_the_terminal_shows_the_chapters_compact_table(shell_summary):
    """One line per method and request, the gap and work beside the accuracies, not a long-format
    wall of one line per method and metric."""
    _, out = shell_summary
    shown = (out / "stdout.txt").read_text()
    assert shown.count("gap") >= len(TASKS) * len(FRACTIONS) and "c (%)" in shown
    lines = shown.splitlines()
    for method in ("retrain", *METHODS):
        rows = [line for line in lines if line.startswith(method)]
        assert len(rows) == len(TASKS) * len(FRACTIONS), rows


def _in_process() -> pd.DataFrame:
    base = experiments.Setting(kind="sample", methods=METHODS, seeds=(0,), size="tiny",
                               recipe=train.TrainConfig(epochs=2), device="cpu")
    settings = [dataclasses.replace(base, task=t, fraction=f) for t in TASKS for f in FRACTIONS]
    return experiments.summary(experiments.run_many(settings, threads=1))


def test_shell_summary_equals_in_process_summary(shell_summary):
    shell, out = shell_summary
    here = _in_process()
    key = ["task", "kind", "forget", "method", "metric"]
    assert shell[key].astype(str).values.tolist() == here[key].astype(str).values.tolist()
    assert set(shell.method) == {"retrain", *METHODS} and set(shell.task) == set(TASKS)
    exact = ~here.metric.isin(TIMES)
    pd.testing.assert_frame_equal(shell[exact.values].reset_index(drop=True),
                                  here[exact].reset_index(drop=True), check_exact=True,
                                  check_dtype=False)
    timed = here[~exact]
    assert (timed["mean"] > 0).all() and (shell[~exact.values]["mean"] > 0).all()
    assert (out / "figure.png").stat().st_size > 1000


def test_rerun_resumes_without_new_runs(shell_summary, cache_path):
    shell, out = shell_summary
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(TASKS) * len(FRACTIONS) * (1 + len(METHODS))
    # Every row is on disk: nothing runs, same table. The thread count is part of a row's key
    # (float sums depend on it), so the rerun keeps the first run's one thread per run.
    done = _shell([*ARGV, "--threads", "1"], cache_path, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "results.jsonl").read_text().splitlines() == lines
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), shell)


@pytest.mark.parametrize("argv, message", [
    (["grid", "--task", "keyword,emotion"], "invalid choice: 'emotion'"),
    (["grid", "--fraction", "0.1,lots"], "comma-separated numbers"),
    (["grid", "--size", "tiny", "--fraction", "1.5", "--epochs", "1", "--methods", "finetune"],
     "fraction must be in (0, 1)"),
    (["grid", "--hparams", "{not json"], "not valid JSON"),
    (["grid", "--hparams", "[1, 2]"], "expected a JSON object"),
    (["grid", "--hparams", '{"scrub": {"epoch": 3}}'], "has no hyper-parameter ['epoch']"),
    (["grid", "--hparams", '{"scrub": {"lr": -1}}'], "lr must be positive"),
    (["grid", "--hparams", '{"scrub": {"max_steps": 5}}'],
     "scrub: max_steps must be an int in [0, epochs=3]"),
    (["grid", "--epochs", "0"], "must be positive"),
    (["grid", "--threads", "0"], "expected a positive integer"),
    (["grid", "--processes", "-1"], "expected a positive integer"),
    (["grid", "--size", "huge", "--methods", "finetune"], "huge"),
    (["grid", "--seeds", ""], "at least one seed"),
])
def test_bad_arguments_exit_2_without_traceback(argv, message, cache_path, tmp_path):
    done = _shell(argv, cache_path, tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
