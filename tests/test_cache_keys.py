"""Cache keys hold the package's own source: numbers made by old code are never served.

A results row or a trained model is reused only by the code that made it. Before, a row was
reused when the method function's own source matched, so an edit to the training loop, a metric
or the features served the old numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from speechul import _runtime, experiments, train

PRINT_DIGESTS = ("import speechul, speechul._runtime as r; print(speechul.__file__); "
                 "print(r.source_digest(), r.source_digest('features'), r.source_digest('synth'))")


def _digests(tree: Path) -> list[str]:
    """(package, features, synth) digests of the copy of speechul in ``tree`` (a new process)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", PRINT_DIGESTS], cwd=tree, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[0].startswith(str(tree)), f"imported {out[0]}, not the copy in {tree}"
    return out[1:]


def test_an_edit_to_a_module_changes_the_digests_that_read_it(tmp_path):
    shutil.copytree(Path(_runtime.__file__).parent, tmp_path / "speechul",
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = _digests(tmp_path)
    with open(tmp_path / "speechul" / "metrics.py", "a") as f:
        f.write("\n# an edit\n")
    edited = _digests(tmp_path)
    assert edited[0] != before[0], "an edit to metrics.py must change the package digest"
    assert edited[1:] == before[1:], "the features and corpus keys read their own module only"
    with open(tmp_path / "speechul" / "features.py", "a") as f:
        f.write("\n# an edit\n")
    assert _digests(tmp_path)[1] != before[1], "an edit to features.py must change its key"


def test_models_and_results_rows_are_keyed_by_the_package_source(tiny_corpus, tmp_path,
                                                                 monkeypatch):
    recipe = train.TrainConfig(epochs=1, batch_size=32)
    setting = experiments.Setting(task="keyword", size="tiny", recipe=recipe)
    key = setting.key
    first = train.original(tiny_corpus, recipe, cache=tmp_path)
    monkeypatch.setattr(_runtime, "source_digest", lambda *modules: "edited-source")
    assert setting.key != key, "a results row made by other code must not be resumed"
    again = train.original(tiny_corpus, recipe, cache=tmp_path)
    assert again.key != first.key, "a model trained by other code must not be loaded"
