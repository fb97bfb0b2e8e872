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
import torch
from torch import nn

from .data import Corpus
from .metrics import per_sample_loss
from .probes import embeddings

__all__ = ["SpeakerTest", "speaker_membership", "membership_by_speaker", "identity_probe",
           "IdentityResult"]


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
    """
    ranks = scores.argsort().argsort().astype(np.float64) + 1.0
    n1 = is_deleted[0].sum()
    n0 = is_deleted.shape[1] - n1
    return ((is_deleted * ranks).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def speaker_membership(model: nn.Module, corpus: Corpus, deleted: torch.Tensor,
                       fresh: torch.Tensor, n_permutations: int = 2000,
                       seed: int = 0) -> SpeakerTest:
    """Permutation test: were the ``deleted`` clips of a person trained on?

    Args:
        deleted: corpus indices of the person's training clips (the ones they asked to delete).
        fresh: corpus indices of the same person's clips that no model trained on (val/test).
    The score is minus the per-clip loss, so a higher AUC means "deleted clips fit better".
    """
    if len(deleted) == 0 or len(fresh) == 0:
        raise ValueError("speaker_membership needs at least one deleted and one fresh clip")
    both = torch.cat([deleted, fresh])
    scores = -per_sample_loss(model, corpus, both).double().cpu().numpy()
    tags = np.r_[np.ones(len(deleted), bool), np.zeros(len(fresh), bool)]
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(tags) for _ in range(n_permutations)])
    observed = float(_auc_rows(scores, tags[None])[0])
    null = _auc_rows(scores, shuffled)
    p_value = float((1 + (null >= observed).sum()) / (1 + n_permutations))
    high = float(np.quantile(null, 0.95))
    return SpeakerTest(observed, p_value, high, len(deleted), len(fresh))


def membership_by_speaker(model: nn.Module, corpus: Corpus, n_permutations: int = 500,
                          seed: int = 0) -> dict[str, SpeakerTest]:
    """:func:`speaker_membership` for every speaker: training clips vs their val+test clips.

    On the original model every speaker was trained on: this is the "member" distribution a
    forgotten person should leave.
    """
    train, held = corpus.indices("train"), torch.cat([corpus.indices("val"),
                                                      corpus.indices("test")])
    speaker = corpus.labels["speaker"]
    out = {}
    for i, name in enumerate(corpus.names("speaker")):
        deleted, fresh = train[speaker[train] == i], held[speaker[held] == i]
        if len(deleted) and len(fresh):
            out[name] = speaker_membership(model, corpus, deleted, fresh, n_permutations, seed)
    return out


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
