"""Audits: LiRA separates members on an overfit toy and not on a model that never saw them, its
shadows are balanced and cached; the relearning attack is bounded and finds hidden knowledge;
verdicts follow from the numbers and the stated thresholds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from speechul import audits, data, metrics, train

TOY_RECIPE = train.TrainConfig(epochs=15, batch_size=20, lr=3e-3, width=8)


def _toy(n: tuple[int, int, int] = (80, 40, 80), classes: int = 4, seed: int = 0) -> data.Corpus:
    """Noise images with random labels: only memorisation can fit them, so a trained model
    is confident on its training clips and at chance elsewhere (the easiest case for MIAs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(n), 1, 16, 16, generator=g)
    y = torch.randint(0, classes, (sum(n),), generator=g)
    part = torch.cat([torch.full((k,), i) for i, k in enumerate(n)])
    source = data.Source("toy", f"toy-{seed}", {"label": y},
                         {"label": tuple(map(str, range(classes)))}, part, lambda i: None)
    return data.Corpus(source, x, "label", {"label": y, "part": part})


@pytest.fixture(scope="module")
def toy() -> data.Corpus:
    return _toy()


@pytest.fixture(scope="module")
def toy_shadows(toy) -> audits.Shadows:
    return audits.shadows(toy, TOY_RECIPE, n=8, seed=0)


def test_logit_confidence_is_the_logit_of_the_true_class_probability(tiny_original,
                                                                     tiny_corpus):
    idx = tiny_corpus.indices("test")[:20]
    phi = audits.logit_confidence(tiny_original.model, tiny_corpus, idx)
    p = metrics.predict(tiny_original.model, tiny_corpus.x[idx]).softmax(1)
    p_true = p.gather(1, tiny_corpus.y[idx][:, None]).squeeze(1).double()
    torch.testing.assert_close(phi.double(), torch.log(p_true / (1 - p_true)), atol=1e-3,
                               rtol=1e-3)


def test_shadows_are_balanced_and_cached(toy, toy_shadows, monkeypatch):
    pool = torch.cat([toy.indices("train"), toy.indices("test")])
    assert (toy_shadows.keep[:, pool].sum(0) == 4).all(), "each clip IN for half the shadows"
    assert not toy_shadows.keep[:, toy.indices("val")].any(), "val clips are outside the pool"
    assert toy_shadows.scores.shape == (8, len(toy))
    monkeypatch.setattr(train, "train_on", lambda *a, **k: pytest.fail("retrained a shadow"))
    again = audits.shadows(toy, TOY_RECIPE, n=8, seed=0)
    assert torch.equal(again.scores, toy_shadows.scores)


def test_lira_separates_members_of_an_overfit_model(toy, toy_shadows):
    target = train.train_on(toy, toy.indices("train"), TOY_RECIPE, seed=0).model
    assert metrics.accuracy(target, toy, toy.indices("train")) > 0.95, "the toy must overfit"
    members, non_members = toy.indices("train"), toy.indices("test")
    online = audits.lira(target, toy_shadows, toy, members, non_members)
    offline = audits.lira(target, toy_shadows, toy, members, non_members, online=False)
    assert online.auc > 0.9 and offline.auc > 0.9, (online.auc, offline.auc)
    assert online.tpr[0.05] > 0.5


def test_lira_calls_nothing_a_member_on_a_model_that_saw_neither_set(toy, toy_shadows):
    """A model trained on the val clips only: train and test clips are both unseen, so the AUC
    is 0.5 up to the binomial noise of the two set sizes (two standard errors of the AUC under
    the null, Hanley and McNeil: sqrt((n1 + n2 + 1) / (12 n1 n2)))."""
    stranger = train.train_on(toy, toy.indices("val"), TOY_RECIPE, seed=1).model
    members, non_members = toy.indices("train"), toy.indices("test")
    blind = audits.lira(stranger, toy_shadows, toy, members, non_members)
    n1, n2 = len(members), len(non_members)
    assert abs(blind.auc - 0.5) <= 2 * math.sqrt((n1 + n2 + 1) / (12 * n1 * n2)), blind.auc


def test_a_clips_lira_score_does_not_depend_on_its_companions(toy, toy_shadows):
    """One scoring function for every clip: the variances come from the shadows' pool, not
    from whichever clips are passed in (a clip scored alone once got 64.7, beside 50 others
    0.90)."""
    target = train.train_on(toy, toy.indices("train"), TOY_RECIPE, seed=0).model
    clips = torch.cat([toy.indices("train")[:5], toy.indices("test")[:5]])
    together = audits.lira_scores(target, toy_shadows, toy, clips)
    alone = [audits.lira_scores(target, toy_shadows, toy, clips[i : i + 1])[0]
             for i in range(len(clips))]
    np.testing.assert_allclose(alone, together, rtol=1e-4, atol=1e-4)  # float32 batches
    members_only = audits.lira_scores(target, toy_shadows, toy, toy.indices("train"))
    np.testing.assert_allclose(members_only[:5], together[:5], rtol=1e-4, atol=1e-4)


def test_shadows_train_on_as_many_clips_as_the_target():
    """A target trained on 120 of a 160-clip pool: each clip is IN for 6 of 8 shadows, so a
    shadow trains on about 120 clips (Carlini et al.'s halves would give 80)."""
    corpus = _toy(n=(120, 20, 40), seed=3)
    shadow = audits.shadows(corpus, TOY_RECIPE, n=8, seed=0)
    pool = torch.cat([corpus.indices("train"), corpus.indices("test")])
    assert (shadow.keep[:, pool].sum(0) == 6).all()
    assert shadow.keep[:, pool].sum(1).float().mean().item() == pytest.approx(120)


def test_lira_rejects_clips_without_shadow_statistics(toy, toy_shadows):
    model = train.fresh_model(TOY_RECIPE, 4, torch.device("cpu"), 0)
    with pytest.raises(ValueError, match="no IN or no OUT"):
        audits.lira_scores(model, toy_shadows, toy, toy.indices("val"))
    assert np.isfinite(audits.lira_scores(model, toy_shadows, toy, toy.indices("val"),
                                          online=False)).all()
    with pytest.raises(ValueError, match="IN and OUT shadows"):
        audits.shadows(toy, TOY_RECIPE, n=1)


def test_tpr_at_fpr_counts_members_above_the_non_member_quantile():
    non = np.array([0.0, 1.0, 2.0, 3.0])
    assert audits.tpr_at_fpr(np.array([5.0, 6.0, 7.0]), non, 0.25) == 1.0
    assert audits.tpr_at_fpr(np.array([1.0, 5.0]), non, 0.25) == 0.5
    assert audits.tpr_at_fpr(np.array([0.5, 2.5]), non, 0.01) == 0.0


def test_relearning_curve_is_bounded_and_leaves_the_model_alone(tiny_original, tiny_corpus):
    split = data.forget_split(tiny_corpus, "class", classes=["yes"])
    before = {k: v.clone() for k, v in tiny_original.model.state_dict().items()}
    curve = audits.relearn(tiny_original.model, tiny_corpus, split.forget, n_relearn=6, steps=4)
    assert list(curve["step"]) == [0, 1, 2, 3, 4]
    assert curve[["heldout_acc", "taught_acc"]].apply(lambda c: c.between(0, 1)).all().all()
    after = tiny_original.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="n_relearn"):
        audits.relearn(tiny_original.model, tiny_corpus, split.forget, n_relearn=len(split.forget))
    with pytest.raises(ValueError, match="n_retain"):
        audits.relearn(tiny_original.model, tiny_corpus, split.forget, n_retain=4)


def test_relearning_exposes_a_hidden_class(tiny_original, tiny_corpus):
    """A model that only masks a class (a huge negative bias on its logit) relearns it in a few
    steps; a model that never learnt it (a fresh network) does not get there as fast. Retain
    clips in each step keep "answer 'yes' to everything" from passing for relearning."""
    split = data.forget_split(tiny_corpus, "class", classes=["yes"])
    label = tiny_corpus.classes.index("yes")
    hidden = train.fresh_model(TINY_RECIPE_LIKE, 10, torch.device("cpu"), 0)
    hidden.load_state_dict(tiny_original.model.state_dict())
    with torch.no_grad():
        hidden.head.bias[label] -= 8.0
    fresh = train.fresh_model(TINY_RECIPE_LIKE, 10, torch.device("cpu"), 0)
    kwargs = {"retain": split.retain, "n_relearn": 5, "n_retain": 45, "steps": 6, "seed": 0}
    masked = audits.relearn(hidden, tiny_corpus, split.forget, **kwargs)
    naive = audits.relearn(fresh, tiny_corpus, split.forget, **kwargs)
    assert masked["heldout_acc"].iloc[0] < 0.1, "the class starts hidden"
    assert masked["heldout_acc"].iloc[-1] > 0.8, masked
    assert masked["heldout_acc"].iloc[-1] > naive["heldout_acc"].iloc[-1] + 0.2, naive


TINY_RECIPE_LIKE = train.TrainConfig()  # architecture and width of the conftest model


def test_verdicts_follow_the_numbers():
    rows = pd.DataFrame([
        {"method": "retrain", "seed": 0, "forget_acc": 0.90, "test_acc": 0.90, "mia_auc": 0.50},
        {"method": "retrain", "seed": 1, "forget_acc": 0.92, "test_acc": 0.92, "mia_auc": 0.52},
        {"method": "good", "seed": 0, "forget_acc": 0.93, "test_acc": 0.90, "mia_auc": 0.53},
        {"method": "leaky", "seed": 0, "forget_acc": 0.99, "test_acc": 0.95, "mia_auc": 0.70},
        {"method": "broken", "seed": 0, "forget_acc": 0.10, "test_acc": 0.50,
         "mia_auc": math.nan},
    ])
    table = audits.verdicts(rows)
    assert list(table.columns) == ["forget accuracy", "test accuracy", "loss-attack AUC", "passed"]
    assert table.loc["retrain"].tolist() == [True, True, True, "3/3"]
    assert table.loc["good"].tolist() == [True, True, True, "3/3"]  # |0.93 - 0.91| <= 0.05
    assert table.loc["leaky"].tolist() == [False, True, False, "1/3"]  # better test acc passes
    assert table.loc["broken"].tolist() == [False, False, None, "0/2"]
    assert "|forget_acc - Retrain| <= 0.05" in audits.describe().to_string()
    with pytest.raises(ValueError, match="'retrain' row"):
        audits.verdicts(rows[rows.method != "retrain"])
    with pytest.raises(ValueError, match="unknown rule"):
        audits.Audit("x", "forget_acc", "roughly", 0.1)
