"""Cached artefacts under concurrency and kills: one process builds, the others wait and load;
a reader racing a writer never sees a false "damaged"; temp files left by a kill are removed;
a missing checksum is named as missing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from speechul import _runtime, train

_HOLD = """
import sys, time
from pathlib import Path
from speechul._runtime import locked
log = Path(sys.argv[1])
with locked(Path(sys.argv[2])):
    with open(log, "a") as f: f.write("start\\n")
    time.sleep(0.6)
    with open(log, "a") as f: f.write("end\\n")
"""


def test_the_lock_keeps_two_processes_apart(tmp_path):
    log, target = tmp_path / "log", tmp_path / "artefact.pt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", _HOLD, str(log), str(target)], env=env)
             for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert log.read_text().split() == ["start", "end", "start", "end"]


def test_two_builders_of_one_original_train_it_once(tiny_corpus, tmp_path, monkeypatch):
    """The second caller waits for the first and loads its checkpoint instead of training."""
    calls = []
    real = train.train_on

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)  # the window in which the other caller found no checkpoint before
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_on", slow)
    recipe = train.TrainConfig(epochs=1, batch_size=32)
    got = []
    threads = [threading.Thread(target=lambda: got.append(
        train.original(tiny_corpus, recipe, seed=5, cache=tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 2
    a, b = (g.model.state_dict() for g in got)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_reader_racing_a_writer_never_sees_a_false_damage(tmp_path, monkeypatch):
    """A load between the writer's two steps (the file and its checksum) waits for the writer,
    then finds the new file whole; before, it saw the new file with the old checksum."""
    path = tmp_path / "artefact.pt"
    _runtime.atomic_save({"v": torch.zeros(3)}, path)
    box: dict = {}
    real = os.replace

    def replace_then_read(src, dst):
        real(src, dst)
        if "reader" not in box:
            box["reader"] = threading.Thread(
                target=lambda: box.setdefault("result", _runtime.checked_load(path)))
            box["reader"].start()
            time.sleep(0.3)  # the reader runs now, before the writer's next step

    monkeypatch.setattr(os, "replace", replace_then_read)
    _runtime.atomic_save({"v": torch.ones(3)}, path)
    box["reader"].join(timeout=10)
    assert box["result"] is not None, "the racing reader saw a false 'damaged'"
    assert torch.equal(box["result"]["v"], torch.ones(3))


def test_stale_temp_files_are_removed_fresh_ones_kept(tmp_path):
    path = tmp_path / "artefact.pt"
    stale, fresh = tmp_path / "artefact.ptabc.tmp", tmp_path / "artefact.ptdef.tmp"
    stale.write_bytes(b"half a checkpoint")
    fresh.write_bytes(b"another process writing now")
    old = time.time() - 2 * _runtime.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    _runtime.atomic_save({"v": 1}, path)
    assert not stale.exists() and fresh.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp" and p != fresh]


def test_a_missing_checksum_is_named_missing(tmp_path):
    path = tmp_path / "artefact.pt"
    _runtime.atomic_save({"v": 1}, path)
    Path(str(path) + ".sha256").unlink()
    with pytest.warns(UserWarning, match="no checksum file") as record:
        assert _runtime.checked_load(path) is None
    assert not any("mismatch" in str(w.message) for w in record)
