"""Claims as statistics (speechul.claims) and the numerics every cache key holds."""

from __future__ import annotations

import math

import pytest
import torch

import speechul as su
from speechul import _runtime, claims, train


def test_below_needs_the_difference_beyond_its_own_spread():
    c = claims.Claims("t")
    assert c.below([1.0, 1.1, 0.9], [3.0, 3.2, 2.9], "a clear gap")
    assert not c.below([3.0, 3.2, 2.9], [1.0, 1.1, 0.9], "swapped: must fail")
    # A mean difference smaller than 2 SE of the paired differences is not a finding.
    assert not c.below([1.0, 2.0, 1.0], [1.5, 1.0, 2.0], "noise")
    assert [x.holds for x in c.items] == [True, False, False]


def test_one_seed_is_shown_as_not_checked_never_as_holding():
    c = claims.Claims("t")
    c.below([1.0], [100.0], "one seed has no spread to judge by")
    c.close([1.0, 2.0], [1.0, 2.0], "two neither")
    assert [x.kind for x in c.items] == ["not checked", "not checked"]
    assert "| - | not checked |" in c._repr_markdown_()
    assert claims.mean_se([2.0]) == (2.0, math.inf)
    assert not claims.Claims("t", min_n=1).below([1.0], [100.0], "judged: SE is infinite")


def test_close_allows_the_floor_plus_the_spread():
    c = claims.Claims("t")
    assert c.close([1.0, 1.2, 1.1], [1.05, 1.15, 1.1], "same within noise")
    assert not c.close([1.0, 1.01, 0.99], [2.0, 2.01, 1.99], "far apart")
    assert c.close([1.0, 1.01, 0.99], [2.0, 2.01, 1.99], "within a floor of 1.1", floor=1.1)


def test_at_most_and_the_budget():
    c = claims.Claims("t")
    assert c.at_most([0.05, 0.06, 0.04], 0.1, "under")
    assert not c.at_most([0.5, 0.6, 0.55], 0.1, "over")
    assert claims.within_budget(2 / 20) and not claims.within_budget(0.1001)


def test_strict_mode_raises_with_the_numbers_and_report_mode_goes_on(monkeypatch, capsys):
    c = claims.Claims("Chapter X")
    c.invariant(True, "holds")
    c.below([3.0, 3.1, 3.2], [1.0, 1.1, 1.2], "A is below B")
    monkeypatch.setenv("SPEECHUL_CLAIMS", "report")
    c.check()  # shows, does not raise
    monkeypatch.setenv("SPEECHUL_CLAIMS", "strict")
    with pytest.raises(claims.ClaimFailed, match="(?s)1 of 2 claims.*A is below B"):
        c.check()
    monkeypatch.setenv("SPEECHUL_CLAIMS", "loud")
    with pytest.raises(ValueError, match="SPEECHUL_CLAIMS"):
        claims.mode()


def test_the_seed_offset_shifts_every_draw(tiny_corpus, monkeypatch):
    monkeypatch.setenv("SPEECHUL_SEED_OFFSET", "0")
    plain = su.data.forget_split(tiny_corpus, "sample", fraction=0.2, seed=0).forget
    init = train.fresh_model(train.TrainConfig(), 10, torch.device("cpu"), 0).head.weight
    monkeypatch.setenv("SPEECHUL_SEED_OFFSET", "3")
    moved = su.data.forget_split(tiny_corpus, "sample", fraction=0.2, seed=0).forget
    moved_init = train.fresh_model(train.TrainConfig(), 10, torch.device("cpu"), 0).head.weight
    same = su.data.forget_split(tiny_corpus, "sample", fraction=0.2, seed=0).forget
    assert not torch.equal(plain, moved) and torch.equal(moved, same)
    assert not torch.equal(init, moved_init)
    monkeypatch.setenv("SPEECHUL_SEED_OFFSET", "x")
    with pytest.raises(ValueError, match="SEED_OFFSET"):
        _runtime.seed_offset()


def test_numerics_that_change_a_model_change_its_cache_key(monkeypatch):
    cpu = torch.device("cpu")
    keys = set()
    for threads, bf16, offset in ((1, "0", "0"), (2, "0", "0"), (2, "1", "0"), (2, "0", "1")):
        monkeypatch.setenv("SPEECHUL_CPU_BF16", bf16)
        monkeypatch.setenv("SPEECHUL_SEED_OFFSET", offset)
        with su.runners.threads(threads):
            keys.add(_runtime.fingerprint(_runtime.numerics(cpu)))
            setting_key = su.experiments.Setting(size="tiny").key
            keys.add(setting_key)
    assert len(keys) == 8  # four numerics, four setting keys, all different
