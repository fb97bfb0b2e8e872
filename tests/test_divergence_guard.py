"""The divergence guard of ``unlearn.run``: a method that blew up returns its last weights whose
*outputs* are finite (huge finite weights give NaN logits), and the snapshot it restores is the
one this run kept, never one left on a model object by an earlier run."""

from __future__ import annotations

import copy

import pytest
import torch

from speechul import data, metrics, train, unlearn


@pytest.fixture(scope="module")
def sample_split(tiny_corpus) -> data.Split:
    return data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)


def _finite_outputs(model, split: data.Split) -> bool:
    return bool(torch.isfinite(metrics.predict(model, split.corpus.x)).all())


def test_huge_finite_weights_with_nan_outputs_are_rolled_back(tiny_original, sample_split):
    """lr=1e8: the weights stay finite (~1e30) but the logits are NaN; before, the model came
    back as it was and ``metrics.evaluate`` raised sklearn's "Input contains NaN"."""
    with pytest.warns(RuntimeWarning, match="diverged"):
        out = unlearn.run("gradient_ascent", tiny_original, sample_split, lr=1e8, epochs=2)
    assert out.diverged
    assert _finite_outputs(out.model, sample_split)
    metrics.evaluate(out.model, sample_split)  # must not raise


def test_a_non_finite_loss_rolls_back_to_the_snapshot(tiny_original, sample_split, monkeypatch):
    """A method whose loss went non-finite (``train.Diverged``) after a first finite epoch gets
    that epoch's snapshot back, not the weights it had when the loss blew up."""
    monkeypatch.setattr(unlearn.core, "METHODS", dict(unlearn.METHODS))
    kept = {}

    @unlearn.register
    def blow_up(model, forget, retain, *, epochs: int = 2):
        from speechul.unlearn import _shared as S
        for epoch in S.epoch_loop(model, epochs, "blow up"):
            if epoch == 1:  # the snapshot of this epoch's start is the last healthy one
                kept.update({k: v.clone() for k, v in model.state_dict().items()})
            with torch.no_grad():
                next(model.parameters()).mul_(1.5)  # finite weights, other than the snapshot
            if epoch == 1:
                raise train.Diverged("loss became nan")
        return model

    with pytest.warns(RuntimeWarning, match="last finite weights"):
        out = unlearn.run("blow_up", tiny_original, sample_split)
    assert out.diverged
    state = out.model.state_dict()
    assert all(torch.equal(state[k], kept[k]) for k in kept)


def test_a_snapshot_left_on_a_model_object_is_never_restored(tiny_original, sample_split,
                                                             monkeypatch):
    """A model that once went through a method outside ``run`` (or any epoch loop) carries no
    snapshot into the next run: a method without epoch loops that diverges returns the ORIGINAL,
    and says so, not the stale weights of that earlier loop."""
    monkeypatch.setattr(unlearn.core, "METHODS", dict(unlearn.METHODS))
    model = copy.deepcopy(tiny_original.model)
    forget, retain = (data.Batches(sample_split.corpus.x, sample_split.corpus.y,
                                   sample_split.subset(name), 32, seed=0)
                      for name in ("forget", "retain"))
    unlearn.methods.finetune(model, forget, retain, epochs=1, lr=1e-3)  # outside run()
    start = {k: v.clone() for k, v in model.state_dict().items()}

    @unlearn.register
    def poison(model, forget, retain, *, epochs: int = 1):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model

    with pytest.warns(RuntimeWarning, match="returned the ORIGINAL model"):
        out = unlearn.run("poison", train.Trained(model, tiny_original.recipe), sample_split)
    assert all(torch.equal(v, start[k]) for k, v in out.model.state_dict().items())
