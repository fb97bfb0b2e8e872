"""A method's hyper-parameters as a config value: ``su.unlearn.config`` and ``run(config=...)``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from speechul import data, experiments, unlearn


def test_config_is_a_frozen_dataclass_of_the_defaults():
    cfg = unlearn.config("finetune")
    assert dataclasses.is_dataclass(cfg)
    assert dataclasses.asdict(cfg) == unlearn.defaults("finetune")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    assert "catastrophic forgetting" in type(cfg).__doc__  # the method's docstring documents it
    assert unlearn.config("finetune", epochs=1).epochs == 1


def test_config_rejects_what_run_rejects():
    with pytest.raises(ValueError, match="lr must be positive"):
        unlearn.config("finetune", lr=-1.0)
    with pytest.raises(TypeError, match="no hyper-parameter"):
        unlearn.config("finetune", momentum=0.9)
    with pytest.raises(KeyError, match="unknown unlearning method"):
        unlearn.config("forget_everything")


def test_value_checks_run_before_anything_trains(monkeypatch):
    """A method's own value check (register(check=...)) runs in config(), so a grid refuses
    scrub's max_steps above its epochs before the originals and Retrains train."""
    with pytest.raises(ValueError, match=r"scrub: max_steps must be an int in \[0, epochs=3\]"):
        unlearn.config("scrub", max_steps=4)
    assert unlearn.config("scrub", max_steps=4, epochs=4).max_steps == 4
    monkeypatch.setitem(unlearn.METHODS, "mine", None)  # removed again after the test
    seen = []

    def even(*, width: int, **_):
        seen.append(width)
        if width % 2:
            raise ValueError(f"width must be even, got {width}")

    @unlearn.register(check=even)
    def mine(model, forget, retain, *, width: int = 2, lr: float = 1e-3):
        return model

    assert unlearn.METHODS["mine"] is mine
    with pytest.raises(ValueError, match="mine: width must be even, got 3"):
        experiments.Setting(methods=("mine",), hparams={"mine": {"width": 3}})
    experiments.Setting(methods=("mine",), hparams={"mine": {"width": 4}})
    assert seen == [3, 4]


def test_run_with_a_config_equals_run_with_keywords(tiny_original, tiny_corpus):
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    by_config = unlearn.run("finetune", tiny_original, split, seed=0,
                            config=unlearn.config("finetune", epochs=1))
    by_keywords = unlearn.run("finetune", tiny_original, split, seed=0, epochs=1)
    assert by_config.hparams == by_keywords.hparams
    for a, b in zip(by_config.model.state_dict().values(),
                    by_keywords.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="config must come from"):
        unlearn.run("finetune", tiny_original, split, config=unlearn.config("scrub"))
