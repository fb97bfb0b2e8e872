"""Forget me: did a keyword model forget a *person*, not only their clips? (chapter 6)

When a user asks a voice assistant to delete their recordings, the speaker is not a label of the
keyword model: forgetting them cannot mean "never predict this class". Two questions remain:

* **Speaker-level membership.** Does the model still treat the person's deleted clips as
  trained-on? :func:`speaker_membership` compares the losses of the deleted clips with the
  losses of *other, never-trained-on clips of the same person* (their validation/test clips).
  For a model that never saw the person, deleted and fresh clips are exchangeable, so a
  permutation of the "deleted"/"fresh" tags gives the null distribution exactly, with no shadow
  model to train. A trained-on person shows deleted clips with lower losses (AUC > 0.5, small
  p-value).
* **Identity in the embeddings.** Can the person still be recognised from the model's
  penultimate embeddings? :func:`identity_probe` fits a linear probe on embeddings of *held-out*
  clips of every speaker (the validation part) and measures speaker recall on other held-out
  clips (the test part). Neither part was trained on by any model, so the probe measures what
  the *embedding space* encodes about voices, the same question for the original and Retrain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch
from torch import nn

from .data import Corpus
from .metrics import per_sample_loss
from .probes import embeddings

__all__ = ["SpeakerTest", "speaker_membership", "membership_by_speaker", "most_exposed",
           "identity_probe", "IdentityResult"]


@dataclass(frozen=True)
class SpeakerTest:
    """One person's membership test.

    Attributes:
        auc: P(loss of a deleted clip < loss of a fresh clip); 0.5 = no trace of training.
        p_value: one-sided permutation p-value of ``auc`` (small = "trained on this person").
        null_high: the 95th percentile of the permuted AUCs: above it, "trained on" at 5 %.
        n_deleted, n_fresh: clip counts on each side.
    """

    auc: float
    p_value: float
    null_high: float
    n_deleted: int
    n_fresh: int


def _auc_rows(scores: np.ndarray, is_deleted: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC for each row of tags (P, N) against one score vector (N,).

    Scores are ranked once; with ranks r, AUC = (sum r[deleted] - n1 (n1 + 1) / 2) / (n1 n0).
    Tied scores share their average rank (a tie counts one half, as in ``roc_auc_score``):
    an over-fitted model's training losses are often exactly 0 in float32, and ordinal ranks
    would order those ties by position, deleted clips first, pulling the AUC towards 0.
    """
    ranks = scipy.stats.rankdata(scores)  # average ranks, from 1
    n1 = is_deleted[0].sum()
    n0 = is_deleted.shape[1] - n1
    return ((is_deleted * ranks).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _speaker_scores(model: nn.Module, corpus: Corpus, deleted: torch.Tensor,
                    fresh: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(scores, tags): minus the per-clip loss of deleted then fresh clips, and True = deleted."""
    if len(deleted) == 0 or len(fresh) == 0:
        raise ValueError("speaker_membership needs at least one deleted and one fresh clip")
    scores = -per_sample_loss(model, corpus, torch.cat([deleted, fresh])).double().cpu().numpy()
    return scores, np.r_[np.ones(len(deleted), bool), np.zeros(len(fresh), bool)]


def _observed_and_null(scores: np.ndarray, tags: np.ndarray, n_permutations: int,
                       rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """The observed AUC and ``n_permutations`` AUCs with the deleted/fresh tags shuffled."""
    shuffled = np.stack([rng.permutation(tags) for _ in range(n_permutations)])
    return float(_auc_rows(scores, tags[None])[0]), _auc_rows(scores, shuffled)


def _test(observed: float, null: np.ndarray, n_deleted: int, n_fresh: int) -> SpeakerTest:
    p_value = float((1 + (null >= observed).sum()) / (1 + len(null)))
    return SpeakerTest(observed, p_value, float(np.quantile(null, 0.95)), n_deleted, n_fresh)


def speaker_membership(model: nn.Module, corpus: Corpus, deleted: torch.Tensor,
                       fresh: torch.Tensor, n_permutations: int = 2000,
                       seed: int = 0) -> SpeakerTest:
    """Permutation test: were the ``deleted`` clips of a person trained on?

    Args:
        deleted: corpus indices of the person's training clips (the ones they asked to delete).
        fresh: corpus indices of the same person's clips that no model trained on (val/test).
    The score is minus the per-clip loss, so a higher AUC means "deleted clips fit better".
    The person must be chosen without looking at this test (else see :func:`most_exposed`).
    """
    scores, tags = _speaker_scores(model, corpus, deleted, fresh)
    observed, null = _observed_and_null(scores, tags, n_permutations, np.random.default_rng(seed))
    return _test(observed, null, len(deleted), len(fresh))


def _by_speaker(corpus: Corpus) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Speaker name -> (training clips, val+test clips), for speakers that have both."""
    train, held = corpus.indices("train"), torch.cat([corpus.indices("val"),
                                                      corpus.indices("test")])
    speaker = corpus.labels["speaker"]
    pairs = {name: (train[speaker[train] == i], held[speaker[held] == i])
             for i, name in enumerate(corpus.names("speaker"))}
    return {name: pair for name, pair in pairs.items() if len(pair[0]) and len(pair[1])}


def membership_by_speaker(model: nn.Module, corpus: Corpus, n_permutations: int = 500,
                          seed: int = 0) -> dict[str, SpeakerTest]:
    """:func:`speaker_membership` for every speaker: training clips vs their val+test clips.

    On the original model every speaker was trained on: this is the "member" distribution a
    forgotten person should leave.
    """
    return {name: speaker_membership(model, corpus, deleted, fresh, n_permutations, seed)
            for name, (deleted, fresh) in _by_speaker(corpus).items()}


def most_exposed(model: nn.Module, corpus: Corpus, n_permutations: int = 2000,
                 seed: int = 0) -> tuple[str, SpeakerTest]:
    """The speaker whose training clips ``model`` gives away most clearly, tested fairly.

    Choosing the highest of S speakers' AUCs and then testing that speaker alone finds "trained
    on" far too often: the maximum of S chance AUCs is large. So the p-value pays for the choice
    (max-T, Westfall and Young 1993): every permutation shuffles every speaker's deleted/fresh
    tags, and the chosen AUC is compared with the *largest* permuted AUC over all speakers
    (``null_high`` is that maximum's 95th percentile). Exact under the null that no speaker's
    training clips are told apart from their unseen ones.
    """
    rng = np.random.default_rng(seed)
    observed, nulls, sizes = {}, [], {}
    for name, (deleted, fresh) in _by_speaker(corpus).items():
        scores, tags = _speaker_scores(model, corpus, deleted, fresh)
        observed[name], null = _observed_and_null(scores, tags, n_permutations, rng)
        nulls.append(null)
        sizes[name] = (len(deleted), len(fresh))
    if not observed:
        raise ValueError("no speaker has both training and held-out clips")
    person = max(observed, key=observed.get)
    return person, _test(observed[person], np.max(nulls, axis=0), *sizes[person])


@dataclass(frozen=True)
class IdentityResult:
    """Speaker probe on held-out embeddings: overall accuracy and recall per speaker name."""

    accuracy: float
    chance: float
    recall: dict[str, float]


def identity_probe(model: nn.Module, corpus: Corpus, fit_part: str = "val",
                   test_part: str = "test", seed: int = 0) -> IdentityResult:
    """Who is speaking, from the model's embeddings: a linear probe fitted on one held-out part.

    Fits a standardised logistic regression from embeddings (N, D) of ``fit_part`` clips to
    speaker ids, and reports accuracy and per-speaker recall on ``test_part`` clips.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if fit_part == test_part:
        raise ValueError(f"fit and test parts must differ, got {fit_part!r} twice")
    fit, test = corpus.indices(fit_part), corpus.indices(test_part)
    speaker = corpus.labels["speaker"].cpu().numpy()
    x_fit, x_test = (embeddings(model, corpus, idx).numpy() for idx in (fit, test))
    y_fit, y_test = speaker[fit.cpu().numpy()], speaker[test.cpu().numpy()]
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(x_fit, y_fit)
    hit = probe.predict(x_test) == y_test
    names = corpus.names("speaker")
    recall = {names[s]: float(hit[y_test == s].mean()) for s in np.unique(y_test)}
    chance = float(np.bincount(y_test).max() / len(y_test))
    return IdentityResult(float(hit.mean()), chance, recall)
