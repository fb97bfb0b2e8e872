"""Forget me: the rank AUC is the usual AUC, the permutation test finds trained-on speakers and
not speakers a model never saw, and the identity probe beats chance on a keyword model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from speechul import forget_me, train


def test_rank_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=50)
    tags = rng.permutation(np.r_[np.ones(20, bool), np.zeros(30, bool)])
    ours = forget_me._auc_rows(scores, tags[None])[0]
    assert ours == pytest.approx(roc_auc_score(tags, scores))
    tied = np.round(scores)  # many ties, as exact-zero losses of training clips give
    assert forget_me._auc_rows(tied, tags[None])[0] == pytest.approx(roc_auc_score(tags, tied))
    assert forget_me._auc_rows(np.zeros(50), tags[None])[0] == pytest.approx(0.5)


def test_trained_on_speakers_are_found(tiny_corpus, tiny_original):
    tests = forget_me.membership_by_speaker(tiny_original.model, tiny_corpus, n_permutations=300)
    assert set(tests) == set(tiny_corpus.names("speaker"))
    aucs = np.array([t.auc for t in tests.values()])
    assert aucs.mean() > 0.6, aucs  # every speaker was trained on: deleted clips fit better
    assert all(0 < t.p_value <= 1 for t in tests.values())


def test_choosing_the_most_exposed_speaker_is_paid_for(tiny_corpus, tiny_original):
    """max-T: the chosen speaker is the one with the largest AUC, and its p-value compares that
    AUC with the largest shuffled AUC over all speakers, so it is never smaller than the plain
    test's, and the 95 % point of the maximum lies above any single speaker's."""
    model = tiny_original.model
    plain = forget_me.membership_by_speaker(model, tiny_corpus, n_permutations=400, seed=1)
    person, chosen = forget_me.most_exposed(model, tiny_corpus, n_permutations=400, seed=1)
    assert person == max(plain, key=lambda name: plain[name].auc)
    assert chosen.auc == pytest.approx(plain[person].auc)
    assert chosen.p_value >= plain[person].p_value
    assert chosen.null_high > np.median([t.null_high for t in plain.values()])


def test_a_speaker_never_trained_on_is_not_flagged(tiny_corpus):
    # A model trained without speaker 0: their training clips are as unseen as their test clips.
    train_idx = tiny_corpus.indices("train")
    speaker = tiny_corpus.labels["speaker"]
    recipe = train.TrainConfig(epochs=12, lr=3e-3, batch_size=32)
    without = train.train_on(tiny_corpus, train_idx[speaker[train_idx] != 0], recipe, seed=0)
    with_all = train.train_on(tiny_corpus, train_idx, recipe, seed=0)
    held = torch.cat([tiny_corpus.indices("val"), tiny_corpus.indices("test")])
    deleted, fresh = train_idx[speaker[train_idx] == 0], held[speaker[held] == 0]
    out = forget_me.speaker_membership(without.model, tiny_corpus, deleted, fresh)
    seen = forget_me.speaker_membership(with_all.model, tiny_corpus, deleted, fresh)
    assert out.p_value > 0.05 and out.auc < out.null_high, out
    assert seen.auc > out.auc, (seen, out)


def test_membership_needs_clips(tiny_corpus, tiny_original):
    empty = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="at least one"):
        forget_me.speaker_membership(tiny_original.model, tiny_corpus, empty,
                                     tiny_corpus.indices("test"))


def test_identity_probe_beats_chance(tiny_corpus, tiny_original):
    out = forget_me.identity_probe(tiny_original.model, tiny_corpus)
    assert set(out.recall) == set(tiny_corpus.names("speaker"))
    assert out.accuracy > out.chance + 0.1, out
    with pytest.raises(ValueError, match="must differ"):
        forget_me.identity_probe(tiny_original.model, tiny_corpus, "val", "val")
