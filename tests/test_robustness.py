"""scripts/robustness.py: the perturbation matrix's variants, caches and table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("robustness", ROOT / "scripts" / "robustness.py")
robustness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(robustness)


def test_each_variant_sets_what_it_stands_for():
    assert robustness.variant_env("threads1") == {"OMP_NUM_THREADS": "1"}
    assert robustness.variant_env("bf16") == {"SPEECHUL_CPU_BF16": "1"}
    assert robustness.variant_env("seed+7") == {"SPEECHUL_SEED_OFFSET": "7"}
    for bad in ("threads", "seed+", "seed+x", "fp16"):
        with pytest.raises(ValueError, match="unknown variant"):
            robustness.variant_env(bad)


def test_a_variant_shares_the_corpus_but_not_the_models(tmp_path):
    shared = tmp_path / "shared"
    (shared / "models").mkdir(parents=True)
    (shared / "models" / "original-x.pt").write_text("another variant's model")
    cache = robustness.variant_cache(tmp_path / "threads1", shared)
    for name in robustness.SHARED:
        assert (cache / name).resolve() == (shared / name).resolve()
    assert not (cache / "models").exists()
    assert robustness.variant_cache(tmp_path / "threads1", shared) == cache  # idempotent


def test_the_matrix_names_the_failed_claim():
    results = {"threads1": [{"chapter": "04_x", "status": "ok", "seconds": 12.0}],
               "seed+7": [{"chapter": "04_x", "status": "failed", "seconds": 3.0,
                           "error": "ClaimFailed: Chapter 4: 1 of 9 claims did not hold:\n"
                                    "- a claim [numbers]"}]}
    table = robustness.matrix(results)
    assert "| 04_x | ok (12 s) | FAILED: ClaimFailed: Chapter 4: 1 of 9 claims" in table
    row = next(line for line in table.splitlines() if line.startswith("| 04_x"))
    assert row.endswith("- a claim [numbers] |"), "a multi-line error stays in its table row"
    assert "1/2 cells ok." in table


def test_a_variant_cache_is_absolute(tmp_path, monkeypatch):
    """Each chapter's kernel runs in its own folder: a relative cache path would put the models
    (and a second corpus) in a folder of its own under it, beside no shared corpus."""
    seen = {}
    monkeypatch.setattr(robustness.subprocess, "run",
                        lambda command, env, **kw: seen.update(env=env))
    monkeypatch.chdir(tmp_path)
    robustness.run_variant("threads1", Path("out"), "ci", ["01"], tmp_path / "shared")
    assert Path(seen["env"]["SPEECHUL_CACHE"]).is_absolute()
