"""A method's hyper-parameters as a config value: ``su.unlearn.config`` and ``run(config=...)``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from speechul import data, unlearn


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
