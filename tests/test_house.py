"""``import speechul`` and ``unlearn.run`` leave the caller's process as they found it: no
allocator tuning, no plotting or notebook libraries, no global random state touched. The tuning
of the C allocator is an explicit call (the command line and the worker processes make it)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechul import cli, data, runners, unlearn

_PROBE = """
import ctypes, json, random, sys
libc = []
real = ctypes.CDLL
class Spy(real):
    def __init__(self, name, *args, **kwargs):
        if name and "libc.so" in str(name):
            libc.append(str(name))
        super().__init__(name, *args, **kwargs)
ctypes.CDLL = Spy
random.seed(7)
if sys.argv[1] == "import":
    import speechul
heavy = sorted(m for m in ("matplotlib", "ipywidgets", "IPython") if m in sys.modules)
print(json.dumps({"next": random.random(), "heavy": heavy, "libc": libc}))
"""


def _probe(mode: str) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}, timeout=300,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_leaves_the_process_alone():
    plain, imported = _probe("plain"), _probe("import")
    assert imported["heavy"] == [], "plots and widgets load on first use only"
    assert imported["libc"] == [], "import must not tune the C allocator (mallopt)"
    assert imported["next"] == plain["next"], "import must not draw from or seed `random`"


def test_plots_and_widgets_still_load_on_first_use():
    import speechul as su

    assert callable(su.plots.gap_vs_time_by_request) and su.widgets.__name__ == "speechul.widgets"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        su.nothing  # noqa: B018


def test_the_command_line_tunes_the_allocator(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["methods"]) == 0
    assert calls == [1]


def test_pool_workers_tune_the_allocator(monkeypatch):
    calls = []
    monkeypatch.setattr(runners, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(runners.threading, "Thread", lambda **kw: type(
        "T", (), {"start": lambda self: None})())
    runners._worker_setup({}, torch.get_num_threads(), 0)
    assert calls == [1]


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_unlearning_leaves_the_callers_random_streams_alone(tiny_original, tiny_corpus):
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    for seed in (11, 12):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        expected = _draws()
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        unlearn.run("finetune", tiny_original, split, seed=3, epochs=1)
        assert _draws() == expected


def test_unlearning_is_still_repeatable_under_its_own_seed(tiny_original, tiny_corpus):
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    runs = []
    for caller in (1, 2):  # whatever the caller's streams hold
        random.seed(caller), np.random.seed(caller), torch.manual_seed(caller)
        runs.append(unlearn.run("random_labels", tiny_original, split, seed=3, epochs=1).model)
    a, b = (m.state_dict() for m in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
