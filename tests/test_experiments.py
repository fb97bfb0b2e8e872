"""Experiment grids: tidy rows, resume without redoing work, Ray gives the sequential results,
and the command line reproduces a table; bad arguments are usage errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import speechul as su
from speechul import cli, data, experiments, plots, train

RECIPE = train.TrainConfig(epochs=3)  # what `--epochs 3` on the command line builds
SETTING = experiments.Setting(task="keyword", kind="sample", fraction=0.1, size="tiny",
                              methods=("finetune", "gradient_ascent"), seeds=(0, 1),
                              recipe=RECIPE, device="cpu")
METRICS = ["forget_acc", "retain_acc", "test_acc", "mia_auc", "gap_mean"]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[pd.DataFrame, object]:
    path = tmp_path_factory.mktemp("grid") / "results.jsonl"
    return experiments.run(SETTING, results=path), path


def test_one_row_per_method_and_seed(table):
    frame, _ = table
    assert list(zip(frame["method"], frame["seed"], strict=True)) == [
        ("retrain", 0), ("retrain", 1), ("finetune", 0), ("finetune", 1),
        ("gradient_ascent", 0), ("gradient_ascent", 1)]
    retrain = frame[frame.method == "retrain"]
    assert (retrain["gap_mean"] == 0).all()  # Retrain is its own reference
    assert (frame["seconds"] > 0).all() and frame[METRICS].notna().all().all()


def test_resume_skips_finished_runs(table, monkeypatch):
    frame, path = table
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    path.write_text("\n".join(lines[:4]) + "\n")  # as if interrupted after four runs
    calls = []
    real = experiments.run_one
    monkeypatch.setattr(experiments, "run_one", lambda s, m, seed: calls.append((m, seed))
                        or real(s, m, seed))
    again = experiments.run(SETTING, results=path)
    assert sorted(calls) == sorted({(r["method"], r["seed"]) for r in map(json.loads, lines[4:])})
    pd.testing.assert_frame_equal(again[METRICS], frame[METRICS])


def test_unknown_method_rejected_with_known_list():
    with pytest.raises(ValueError, match="unknown method.*known"):
        experiments.Setting(methods=("forget_everything",))


def test_ray_matches_sequential(table, tmp_path):
    import ray  # part of the test install: never skipped

    frame, _ = table
    try:
        remote = experiments.run(SETTING, results=tmp_path / "ray.jsonl", ray_address="local")
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(remote[METRICS], frame[METRICS], atol=1e-6, rtol=0)


def test_cli_reproduces_the_table(table, tmp_path, capsys):
    frame, _ = table
    code = cli.main(["grid", "--size", "tiny", "--epochs", "3", "--methods",
                     "finetune,gradient_ascent", "--seeds", "0,1", "--device", "cpu",
                     "--hparams", json.dumps({}), "--out", str(tmp_path)])
    assert code == 0
    shell = pd.read_csv(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(shell[METRICS], frame[METRICS], atol=1e-9, rtol=0)
    assert (tmp_path / "figure.png").stat().st_size > 1000
    assert "summary.csv" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["grid", "--methods", "nope"], "unknown method"),
    (["grid", "--seeds", "a,b"], "comma-separated integers"),
    (["grid", "--task", "emotion"], "invalid choice: 'emotion'"),
    (["grid", "--size", "tiny", "--kind", "class", "--classes", "maybe", "--epochs", "1",
      "--methods", "finetune"], "unknown keyword 'maybe'"),
    (["launch"], "invalid choice"),
    (["grid", "--device", "bogus"], "unknown device 'bogus'"),
    (["grid", "--fraction", "1.5"], "fraction must be in (0, 1)"),
    (["grid", "--hparams", '{"finetune": {"epochs": 1.5}}'], "epochs must be a whole number"),
    (["grid", "--methods", ","], "no names in ','"),  # not "every method"
    (["grid", "--kind", "class"], "argument --classes: a 'class' request names what"),
    (["grid", "--methods", "finetune", "--hparams", '{"scrub": {"epochs": 3}}'],
     "['scrub'] not in --methods"),
    (["grid", "--holdout", "train"], "argument --holdout: invalid choice: 'train'"),
])
def test_bad_arguments_are_usage_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--out", str(tmp_path)] if argv[0] == "grid" else argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_tuning_a_method_reruns_that_method_alone(table, tmp_path, monkeypatch):
    """Another method's hyper-parameters change neither the request's key nor Retrain's: a
    tuned variant resumes every other run and trains only itself; both variants then stand
    side by side in the table, the summary and the figure, never averaged together."""
    frame, path = table
    results = tmp_path / "results.jsonl"
    shutil.copy(path, results)
    tuned = dataclasses.replace(SETTING, hparams={"finetune": {"epochs": 1}}, seeds=(0,))
    assert tuned.key == SETTING.key and tuned.reference_key == SETTING.reference_key
    calls = []
    real = experiments.unlearn.run
    monkeypatch.setattr(experiments.unlearn, "run", lambda m, *a, **k: calls.append(m)
                        or real(m, *a, **k))
    rows = experiments.run(tuned, results=results)
    assert calls == ["finetune"]
    before = frame[(frame.method == "retrain") & (frame.seed == 0)][METRICS].reset_index(drop=True)
    after = rows[rows.method == "retrain"][METRICS].reset_index(drop=True)
    pd.testing.assert_frame_equal(after, before)
    finetune = rows[rows.method == "finetune"].iloc[0]
    assert finetune.overrides == '{"epochs": 1}' and json.loads(finetune.hparams)["epochs"] == 1

    both = experiments.run_many([SETTING, tuned], results=results)  # the union: seed 1 too
    assert calls == ["finetune", "finetune"]
    assert sorted(both[both.method == "finetune"].overrides) == ['{"epochs": 1}'] * 2 + ["{}"] * 2
    counts = experiments.summary(both).query("method == 'finetune' and metric == 'gap_mean'")
    assert sorted(counts.overrides) == ['{"epochs": 1}', "{}"] and (counts.n == 2).all()
    labels = list(plots.results._stats(both, "gap_mean").index)
    assert labels == ["retrain", "finetune", "gradient_ascent", 'finetune {"epochs": 1}']


def test_tuning_scores_on_validation_clips_and_keeps_the_rows_apart(table, tmp_path):
    """holdout="val": the same Retrain (not retrained), every test-named score computed on the
    validation clips, and rows under their own key, so a tuning run and the reported table
    never resume from, or average with, each other."""
    frame, path = table
    results = tmp_path / "results.jsonl"
    shutil.copy(path, results)
    tuning = dataclasses.replace(SETTING, holdout="val", seeds=(0,))
    assert tuning.reference_key == SETTING.reference_key and tuning.key != SETTING.key
    rows = experiments.run(tuning, results=results).set_index("method")
    assert (rows.holdout == "val").all() and (frame.holdout == "test").all()
    assert (rows.test_acc == rows.val_acc).all()  # the validation clips stand in for test
    test = frame[frame.seed == 0].set_index("method")
    pd.testing.assert_series_equal(rows.retain_acc, test.retain_acc)  # same models
    assert (rows.test_acc != test.test_acc).any() and rows.loc["retrain", "gap_mean"] == 0
    both = experiments.summary(pd.concat([frame, rows.reset_index()]))
    assert len(both.query("method == 'finetune' and metric == 'gap_mean'")) == 2
    with pytest.raises(ValueError, match=r"holdout must be one of \['test', 'val'\]"):
        dataclasses.replace(SETTING, holdout="train")


def test_a_changed_method_runs_again_and_a_torn_last_line_is_skipped(table, tmp_path,
                                                                      monkeypatch):
    """A row is reused only for the same hyper-parameters (defaults included) and the same
    method code: developing a method means editing it and re-running the grid. A results file
    cut mid-line by a kill loses that line's run only; a bad line elsewhere names itself."""
    _, path = table
    results = tmp_path / "results.jsonl"
    shutil.copy(path, results)
    calls = []
    real = experiments.unlearn.run
    monkeypatch.setattr(experiments.unlearn, "run", lambda m, *a, **k: calls.append(m)
                        or real(m, *a, **k))
    experiments.run(SETTING, results=results)
    assert calls == [], "nothing changed: every run resumes"
    finetune = experiments.unlearn.METHODS["finetune"]

    def one_epoch_finetune(model, forget, retain, *, epochs: int = 1, lr: float = 3e-3):
        return finetune(model, forget, retain, epochs=epochs, lr=lr)

    monkeypatch.setitem(experiments.unlearn.METHODS, "finetune", one_epoch_finetune)
    rows = experiments.run(SETTING, results=results)
    assert calls == ["finetune", "finetune"], "a new default reruns that method, both seeds"
    assert {json.loads(h)["epochs"] for h in rows[rows.method == "finetune"].hparams} == {1}

    results.write_text(results.read_text() + '{"setting": "0123", "meth')  # killed mid-write
    with pytest.warns(RuntimeWarning, match=r"results.jsonl:\d+: an unfinished last line"):
        again = experiments.run(SETTING, results=results)
    assert calls == ["finetune", "finetune"] and len(again) == len(rows)
    lines = results.read_text().splitlines()
    results.write_text("\n".join(["not json", *lines[:-1]]) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:1 is not a result row"):
        experiments.run(SETTING, results=results)


def test_the_summary_counts_diverged_runs(table):
    """A diverged run keeps its last finite weights (a method without snapshots: the
    original's), which can look competitive; the summary says how many runs diverged."""
    frame, _ = table
    marked = frame.assign(diverged=(frame.method == "finetune") & (frame.seed == 0))
    share = experiments.summary(marked).query("metric == 'diverged'").set_index("method")["mean"]
    assert share.to_dict() == {"retrain": 0.0, "finetune": 0.5, "gradient_ascent": 0.0}


def test_hyper_parameters_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match=r"no hyper-parameter \['epoch'\]"):
        experiments.Setting(hparams={"scrub": {"epoch": 3}})
    with pytest.raises(ValueError, match="must be positive"):
        experiments.Setting(hparams={"finetune": {"lr": 0}})


def test_one_thread_workers_match_one_thread_in_process(tmp_path, monkeypatch):
    """Ray tasks and worker processes at a chosen thread count compute what an in-process run
    at that count computes, training included (each side has its own cache)."""
    import ray

    setting = dataclasses.replace(SETTING, recipe=train.TrainConfig(epochs=2), seeds=(0,))
    before = torch.get_num_threads()
    # Fresh caches: a model another test trained at another thread count must not be reused.
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path / "here"))
    here = experiments.run(setting, threads=1)
    assert torch.get_num_threads() == before, "the thread count must be restored"
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path / "ray"))
    try:
        remote = experiments.run(setting, ray_address="local", threads=1)
    finally:
        ray.shutdown()
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path / "pool"))
    pooled = experiments.run(setting, processes=2)  # one thread each: the default share
    assert torch.get_num_threads() == before
    for side in ("here", "ray", "pool"):
        assert list((tmp_path / side / "models").glob("retrain-*.pt")), f"{side}: no own Retrain"
    pd.testing.assert_frame_equal(remote[METRICS], here[METRICS], check_exact=True)
    pd.testing.assert_frame_equal(pooled[METRICS], here[METRICS], check_exact=True)
    assert list(pooled.method) == list(here.method)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        experiments.run(setting, processes=0)



def test_a_cached_retrain_keeps_its_cost_and_rows_compare_work(table):
    """Budgets compare work: a row's cost fraction is its GFLOP over its Retrain's, and
    fine-tuning's two epochs on the retain set are exactly 2/epochs of Retrain's work."""
    original, split = experiments.load_run(SETTING, 0)
    saved = experiments.checked_load(experiments.reference_path(SETTING, original, 0))
    ref = experiments.reference(SETTING, 0)
    assert (ref.cost, ref.seconds) == (saved["cost"], saved["seconds"]) and ref.cost > 0
    rows = experiments.run(SETTING)
    assert (rows.cost_fraction == rows.cost / rows.retrain_cost).all()
    finetune = rows[(rows.method == "finetune") & (rows.seed == 0)].iloc[0]
    epochs = su.unlearn.defaults("finetune")["epochs"]
    assert finetune.cost_fraction == pytest.approx(epochs / RECIPE.epochs, rel=1e-9)
    retrain = rows[(rows.method == "retrain") & (rows.seed == 0)].iloc[0]
    assert retrain.cost == ref.cost and retrain.cost_fraction == 1.0


_ORPHAN = """
import os, sys, time
from speechul import runners
if __name__ == "__main__":
    import concurrent.futures as cf, multiprocessing as mp
    pool = cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"),
                                  initializer=runners._worker_setup,
                                  initargs=({}, 1, os.getpid()))
    futures = [pool.submit(time.sleep, 0.5) for _ in range(2)]
    if sys.argv[2] == "after tasks":  # else the parent dies while its workers still import
        for f in futures:
            f.result()
    with open(sys.argv[1], "w") as out:
        out.write(" ".join(str(p) for p in pool._processes))
    os._exit(0)  # the parent dies without shutting its pool down (a killed kernel)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs and is one of our pool's workers (a zombie has exited; a reused
    pid belongs to some other program, never to be killed by this test)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")),
                 "X")
    return state not in ("Z", "X") and b"multiprocessing" in command


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("when", ["after tasks", "while starting"])
def test_pool_workers_end_with_their_parent(tmp_path, when):
    script, pid_file = tmp_path / "orphan.py", tmp_path / "pids"
    script.write_text(_ORPHAN)
    with open(tmp_path / "stderr", "w") as err:  # a file: a pipe would wait for the workers
        subprocess.run([sys.executable, str(script), str(pid_file), when], timeout=120,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    assert pid_file.exists(), (tmp_path / "stderr").read_text()[-2000:]
    pids = [int(p) for p in pid_file.read_text().split()]
    deadline = time.monotonic() + 30  # a worker may still be importing torch
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if _alive(p)]
    for pid in left:  # do not leave them behind when the check fails
        os.kill(pid, signal.SIGKILL)
    assert pids and not left, f"pool workers {left} outlived their parent"


def test_a_diverged_retrain_is_refused_not_cached(tmp_path, monkeypatch):
    """unlearn.run hands back the original's weights when a method diverges before any finite
    epoch; for Retrain that would make the model trained on the forget set the reference."""
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path))
    setting = dataclasses.replace(SETTING, seeds=(0,))
    original, _ = experiments.load_run(setting, 0)

    def diverging(method, trained, split, **kwargs):
        return experiments.unlearn.Unlearned(trained.model, method, {}, 0.1, diverged=True)

    monkeypatch.setattr(experiments.unlearn, "run", diverging)
    with pytest.raises(RuntimeError, match="Retrain diverged"):
        experiments.reference(setting, 0)
    assert not experiments.reference_path(setting, original, 0).exists()


def test_list_valued_data_options_reach_the_loader(monkeypatch):
    """Options such as Speech Commands' ``words=["yes", "no"]`` are lists: the corpus cache and
    the scheduler key on them, so they must hash (a tuple of items did not)."""
    seen = {}

    def listed(size="default", cache=None, words=("yes",)):
        seen["words"] = words
        return data.LOADERS["embedded"](size, cache=cache)

    monkeypatch.setitem(data.LOADERS, "listed", listed)
    setting = dataclasses.replace(SETTING, dataset="listed", seeds=(0,),
                                  data_options={"words": ["yes", "no"]})
    _, split = experiments.load_run(setting, 0)
    assert seen["words"] == ["yes", "no"] and len(split.forget) > 0
    assert hash(experiments._original_key(setting, 0))


def test_a_missing_gpu_or_corpus_is_a_usage_error(tmp_path, capsys, monkeypatch):
    """Found before anything trains: --device cuda with no GPU; a real corpus not downloaded."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("SPEECHUL_DATA", str(tmp_path / "no-data"))
    for argv, message in [(["--device", "cuda"], "sees no CUDA GPU"),
                          (["--dataset", "speechcommands", "--size", "tiny"], "not found")]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["grid", *argv, "--methods", "finetune", "--out", str(tmp_path)])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_the_same_request_twice_runs_the_union_of_its_methods_and_seeds(table, monkeypatch):
    """Two settings that differ only in methods or seeds name one request: both lists run
    (here every run is already in the results file, so nothing trains)."""
    _, path = table
    monkeypatch.setattr(experiments, "run_one", lambda *a: pytest.fail("should resume"))
    twice = [dataclasses.replace(SETTING, methods=("finetune",), seeds=(0,)),
             dataclasses.replace(SETTING, methods=("gradient_ascent",), seeds=(1,))]
    merged = experiments.run_many(twice, results=path)
    assert sorted(set(zip(merged.method, merged.seed, strict=True))) == [
        (m, seed) for m in ("finetune", "gradient_ascent", "retrain") for seed in (0, 1)]


def test_a_class_request_has_one_key_whatever_its_fraction():
    """The command line passes fraction=None for class requests, the Python default is 0.1:
    both must name the same request (one Retrain in the cache, one resumable row set)."""
    api = experiments.Setting(kind="class", classes=("yes",), size="tiny")
    shell = experiments.Setting(kind="class", classes=("yes",), size="tiny", fraction=None)
    assert api.fraction is None and api.key == shell.key
    assert api.reference_key == shell.reference_key
    word = experiments.Setting(kind="class", classes="yes", size="tiny")  # one word, not letters
    assert word.classes == ("yes",) and word.key == api.key
    assert dataclasses.replace(SETTING, fraction=0.2).key != SETTING.key  # samples: it counts


def test_a_class_request_tunes_on_its_validation_clips(tmp_path):
    """holdout="val" on a class request: the forgotten and kept classes' test accuracies (what
    chapter 5's target reads) come from their validation clips, Retrain's row too."""
    tuning = experiments.Setting(kind="class", classes=("yes",), size="tiny", recipe=RECIPE,
                                 methods=("finetune",), device="cpu", holdout="val")
    rows = experiments.run(tuning, results=tmp_path / "results.jsonl").set_index("method")
    for part in ("kept", "forgotten"):
        assert (rows[f"{part}_test_acc"] == rows[f"{part}_val_acc"]).all(), part
    assert rows.loc["retrain", "gap_mean"] == 0 and rows.loc["retrain", "forgotten_test_acc"] == 0


def test_the_command_line_warns_of_diverged_runs(table, tmp_path, capsys, monkeypatch):
    frame, _ = table
    marked = frame.assign(diverged=(frame.method == "finetune") & (frame.seed == 1))
    monkeypatch.setattr(experiments, "run_many", lambda *a, **k: marked)
    assert cli.main(["grid", "--size", "tiny", "--methods", "finetune,gradient_ascent",
                     "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert "WARNING: 1 of 6 runs diverged" in capsys.readouterr().out
