"""A researcher's own unlearning method and dataset, registered outside the package, run
everywhere a grid runs: in this process, on worker processes, as Ray tasks and from the command
line; one that workers could never import (a notebook cell's) is refused before anything
trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pandas as pd
import pytest

from speechul import cli, data, experiments, train, unlearn

MODULE = "speechul_test_user_methods"
# A method of the user's (fine-tuning with a learning rate of its own, so its rows differ from
# the built-in's) and a dataset (the embedded tiny corpus under a name of the user's).
SOURCE = '''
import speechul as su


def user_corpus(size="tiny", cache=None):
    """A user's corpus: one function returning a Source, added to LOADERS."""
    return su.data.LOADERS["embedded"](size, cache=cache)


su.data.LOADERS["user_corpus"] = user_corpus


@su.unlearn.register
def user_finetune(model, forget, retain, *, epochs: int = 1, lr: float = 2e-3):
    """Fine-tune on the retained clips (a user's method, registered from outside speechul)."""
    return su.unlearn.methods.finetune(model, forget, retain, epochs=epochs, lr=lr)
'''
SETTING = dict(task="keyword", kind="sample", fraction=0.1, size="tiny", dataset="user_corpus",
               methods=("user_finetune",), seeds=(0,), device="cpu")
METRICS = ["forget_acc", "retain_acc", "test_acc", "mia_auc", "gap_mean"]
# Run as `python -c`: like a notebook's kernel, the main module has no file a spawned worker
# could re-import, so only the function's own module can tell a worker what it is.
SCRIPT = textwrap.dedent(f'''
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import {MODULE}  # registers user_finetune and user_corpus here only
    from speechul import experiments, train
    setting = experiments.Setting(**json.loads(sys.argv[2]), recipe=train.TrainConfig(epochs=2))
    kwargs = {{"here": {{}}, "pool": {{"processes": 2}}, "ray": {{"ray_address": "local"}}}}
    rows = {{side: experiments.run(setting, threads=1, **kw).to_dict("records")
            for side, kw in kwargs.items()}}
    print(json.dumps(rows))
''')


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    path = tmp_path / f"{MODULE}.py"
    path.write_text(SOURCE)
    return path


def test_a_users_method_runs_on_worker_processes_and_ray_as_in_process(user_module, tmp_path):
    setting = {k: list(v) if isinstance(v, tuple) else v for k, v in SETTING.items()}
    env = {"SPEECHUL_CACHE": str(tmp_path / "cache"), "SPEECHUL_QUIET": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(user_module.parent),
                           json.dumps(setting)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {side: pd.DataFrame(r) for side, r in json.loads(done.stdout.splitlines()[-1]).items()}
    here = rows["here"]
    assert list(here.method) == ["retrain", "user_finetune"]
    assert set(here.dataset) == {"user_corpus"}
    assert json.loads(here.hparams.iloc[1]) == {"epochs": 1, "lr": 2e-3}
    for side in ("pool", "ray"):
        pd.testing.assert_frame_equal(rows[side][METRICS], here[METRICS], check_exact=True)


@pytest.mark.parametrize("kind", ["method", "dataset"])
def test_a_notebooks_own_function_is_refused_for_worker_processes(kind, tmp_path, monkeypatch):
    def notebook_function(*args, epochs: int = 1):
        raise AssertionError("never called")

    notebook_function.__module__ = "__main__"  # as a notebook cell's function is
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))  # no file
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path))
    registry = unlearn.METHODS if kind == "method" else data.LOADERS
    monkeypatch.setitem(registry, "notebook_function", notebook_function)
    chosen = {"methods": ("notebook_function",)} if kind == "method" else {
        "methods": ("finetune",), "dataset": "notebook_function"}
    setting = experiments.Setting(**{**SETTING, **chosen}, recipe=train.TrainConfig(epochs=1))
    with pytest.raises(ValueError, match=f"{kind} 'notebook_function' is defined in this notebook"):
        experiments.run(setting, processes=2)
    assert not (tmp_path / "models").exists(), "refused only after training"


def test_the_command_line_imports_a_methods_file(user_module, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the file's folder is added for the run
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path / "cache"))
    try:
        assert cli.main(["methods", "--import", str(user_module)]) == 0
        assert "user_finetune" in capsys.readouterr().out
        code = cli.main(["grid", "--import", str(user_module), "--dataset", "user_corpus",
                         "--size", "tiny", "--epochs", "2", "--methods", "user_finetune",
                         "--device", "cpu",
                         "--out", str(tmp_path / "out")])
    finally:
        unlearn.METHODS.pop("user_finetune", None)
        data.LOADERS.pop("user_corpus", None)
        sys.modules.pop(MODULE, None)
    assert code == 0
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table.method) == ["retrain", "user_finetune"]
    assert set(table.dataset) == {"user_corpus"}


def test_a_module_name_is_found_in_the_current_folder(user_module, monkeypatch, capsys):
    """As with ``python -m``, also when the ``speechul`` command's folder heads sys.path."""
    monkeypatch.chdir(user_module.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p) != Path.cwd()])
    try:
        assert cli.main(["methods", "--import", MODULE]) == 0
    finally:
        unlearn.METHODS.pop("user_finetune", None)
        data.LOADERS.pop("user_corpus", None)
        sys.modules.pop(MODULE, None)
    assert "user_finetune" in capsys.readouterr().out


@pytest.mark.parametrize("name, message", [
    ("no_such_module_xyz", "cannot import 'no_such_module_xyz'"),
    ("missing/methods.py", "no such file: 'missing/methods.py'"),
    ("json.py", "is shadowed by the module 'json'"),
])
def test_a_bad_import_is_a_usage_error(name, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    if name == "json.py":  # a file named like a module that is already imported
        (tmp_path / name).write_text("")
        name = str(tmp_path / name)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["grid", "--import", name, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_method_names_the_import_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["grid", "--methods", "user_finetune", "--out", str(tmp_path)])
    assert "--import its module" in capsys.readouterr().err
