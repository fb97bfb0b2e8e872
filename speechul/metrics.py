"""How well a model forgot: accuracies, membership inference, distances to Retrain and to noise.

Every metric takes a model, a :class:`~speechul.data.Corpus` and corpus indices, so the same
index tensor (``split.forget``, ``split.test``, ...) means the same clips everywhere.
:func:`evaluate` gathers them into one plain ``dict`` per model (one row of a results table), and
:func:`summarize` turns rows from several seeds into means and standard deviations.

Units: accuracies, AUCs and gaps are fractions in [0, 1] (tables print points = x100);
divergences are in bits, so the Jensen-Shannon divergence lies in [0, 1] and ZRF does too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ._runtime import eval_chunk, generator
from .data import Corpus, Split

__all__ = [
    "predict", "accuracy", "per_class_accuracy", "confusion_matrix", "per_sample_loss",
    "mia_loss_auc", "mia_classifier", "js_divergence", "zrf", "evaluate", "summarize",
    "GAP_METRICS",
]

#: The metrics whose distance to Retrain is averaged into ``gap_mean`` (SalUn's "Avg. Gap",
#: Fan et al. 2024): forgetting, utility on retained and unseen data, and privacy.
GAP_METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate with batch-norm running statistics and no dropout, then restore the mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Logits (N, C) of inputs x (N, ...) in eval mode, without gradients, ``chunk`` at a time.

    Chunking bounds memory on large corpora and, on a CPU, is faster (``eval_chunk``); the
    result is float32 on the model's device (the inputs' for a model without parameters, such
    as a frozen embedding's ``Flatten``).
    """
    device = next(model.parameters(), x).device
    chunk = chunk or eval_chunk(device)
    with _eval_mode(model):
        parts = [model(x[i : i + chunk].to(device)).float() for i in range(0, len(x), chunk)]
    if not parts:
        raise ValueError("predict needs at least one input")
    return torch.cat(parts)


class _Outputs:
    """A model's logits (N, C) for every clip of one corpus, computed in one pass.

    :func:`evaluate` asks for the same clips several times (accuracies, two attacks, gaps);
    passing this in place of the model makes each metric a slice instead of a forward pass.
    """

    def __init__(self, model: nn.Module, corpus: Corpus) -> None:
        self.corpus, self.logits = corpus, predict(model, corpus.x)


def _logits(model: nn.Module | _Outputs, corpus: Corpus, indices: torch.Tensor) -> torch.Tensor:
    if isinstance(model, _Outputs) and model.corpus is corpus:
        return model.logits[indices.to(model.logits.device)]
    return predict(model, corpus.x[indices])


def _labels(model: nn.Module | _Outputs, corpus: Corpus, indices: torch.Tensor) -> torch.Tensor:
    if isinstance(model, _Outputs):
        return corpus.y[indices].to(model.logits.device)
    return corpus.y[indices].to(next(model.parameters()).device)


def accuracy(model: nn.Module, corpus: Corpus, indices: torch.Tensor) -> float:
    """Fraction of clips ``indices`` whose arg-max prediction is the label (NaN if none)."""
    if len(indices) == 0:
        return math.nan
    hits = _logits(model, corpus, indices).argmax(1) == _labels(model, corpus, indices)
    return hits.float().mean().item()


def confusion_matrix(model: nn.Module, corpus: Corpus, indices: torch.Tensor) -> np.ndarray:
    """Counts (C, C) int64: row = true class, column = predicted class."""
    c = corpus.n_classes
    true = _labels(model, corpus, indices).cpu()
    pred = _logits(model, corpus, indices).argmax(1).cpu()
    return torch.bincount(true * c + pred, minlength=c * c).reshape(c, c).numpy()


def per_class_accuracy(model: nn.Module, corpus: Corpus, indices: torch.Tensor) -> np.ndarray:
    """Accuracy per true class (C,); NaN for classes with no clip among ``indices``."""
    counts = confusion_matrix(model, corpus, indices)
    totals = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(counts) / totals, np.nan)


def per_sample_loss(model: nn.Module, corpus: Corpus, indices: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each clip (N,) on the model's device."""
    return F.cross_entropy(_logits(model, corpus, indices), _labels(model, corpus, indices),
                           reduction="none")


def _auc(member_scores: np.ndarray, non_member_scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(member_scores) == 0 or len(non_member_scores) == 0:
        return math.nan
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(non_member_scores))]
    return float(roc_auc_score(labels, np.r_[member_scores, non_member_scores]))


def mia_loss_auc(model: nn.Module, corpus: Corpus, members: torch.Tensor,
                 non_members: torch.Tensor) -> float:
    """AUC of the loss-threshold membership attack: "member if the loss is low".

    0.5 means members and non-members are indistinguishable by loss (what Retrain shows on a
    random forget set); 1.0 means every member has a lower loss than every non-member.
    """
    member = -per_sample_loss(model, corpus, members).cpu().numpy()
    non_member = -per_sample_loss(model, corpus, non_members).cpu().numpy()
    return _auc(member, non_member)


def _attack_features(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per clip (N, 3): confidence in the true class, entropy, loss (all a black box sees)."""
    log_p = F.log_softmax(logits, dim=1)
    loss = -log_p.gather(1, y[:, None]).squeeze(1)
    entropy = -(log_p.exp() * log_p).sum(1)
    return torch.stack([(-loss).exp(), entropy, loss], 1).cpu().numpy()


def _unseen(split: Split) -> torch.Tensor:
    """Non-members that are like the forget set: same classes/speakers when the split has them."""
    if split.forgotten_test is not None and len(split.forgotten_test) > 0:
        return split.forgotten_test
    return split.test


def _kept_test(split: Split) -> torch.Tensor:
    return split.kept_test if split.kept_test is not None else split.test


def mia_classifier(model: nn.Module, split: Split, seed: int = 0) -> float:
    """MIA efficacy: the fraction of forget clips a trained attacker calls non-members.

    SalUn's attack (Jia et al. 2023; Fan et al. 2024): fit a classifier on (confidence, entropy,
    loss) of retain clips (members) vs as many test clips of the kept classes (non-members),
    then apply it to the forget set. Higher means better forgotten; Retrain is the reference.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    corpus = split.corpus
    members, non_members = split.retain, _kept_test(split)
    n = min(len(members), len(non_members))
    if n < 2 or len(split.forget) == 0:
        return math.nan
    g = generator(seed)
    pick = lambda idx: idx[torch.randperm(len(idx), generator=g)[:n].to(idx.device)]  # noqa: E731
    members, non_members = pick(members), pick(non_members)
    feats = [_attack_features(_logits(model, corpus, idx), _labels(model, corpus, idx))
             for idx in (members, non_members, split.forget)]
    attack = make_pipeline(StandardScaler(), SVC(C=3.0, gamma="auto"))
    attack.fit(np.r_[feats[0], feats[1]], np.r_[np.ones(n), np.zeros(n)])
    return float((attack.predict(feats[2]) == 0).mean())


def _js(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (N,) in bits between two softmax distributions."""
    log_p, log_q = F.log_softmax(logits_a, 1), F.log_softmax(logits_b, 1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), 0) - math.log(2)
    kl = lambda log_a: (log_a.exp() * (log_a - log_m)).sum(1)  # noqa: E731
    return (0.5 * kl(log_p) + 0.5 * kl(log_q)).clamp_min(0) / math.log(2)


def js_divergence(model_a: nn.Module, model_b: nn.Module, corpus: Corpus,
                  indices: torch.Tensor) -> float:
    """Mean Jensen-Shannon divergence (bits, in [0, 1]) of two models' outputs on ``indices``."""
    a = _logits(model_a, corpus, indices)
    b = _logits(model_b, corpus, indices).to(a.device)
    return _js(a, b).mean().item()


def zrf(model: nn.Module, random_model: nn.Module, corpus: Corpus,
        indices: torch.Tensor) -> float:
    """Zero Retrain Forgetting score (Chundawat et al. 2023): 1 - mean JS(model, random model).

    Near 1: on the forget set the model answers like a randomly initialised one (it knows
    nothing); near 0: its answers are as far from random as they can be.
    """
    return 1.0 - js_divergence(model, random_model, corpus, indices)


def _accuracies(model: nn.Module, split: Split) -> dict[str, float]:
    names = ["forget", "retain", "val", "test"]
    if split.kind != "sample":
        names += ["forgotten_test", "kept_test", "forgotten_val", "kept_val"]
    return {f"{name}_acc": accuracy(model, split.corpus, split.subset(name)) for name in names}


def evaluate(model: nn.Module, split: Split, reference: nn.Module | dict | None = None,
             random_model: nn.Module | None = None, *, seed: int = 0) -> dict[str, float]:
    """One results row: accuracies, membership inference and, given Retrain, the gaps to it.

    Args:
        reference: Retrain's model, or its row from an earlier ``evaluate`` (saves recomputing).
            Adds ``gap_<m>`` = |m - m(reference)| for m in forget/retain/test accuracy and both
            MIA scores, ``gap_mean`` (average over :data:`GAP_METRICS`) and, for a model,
            ``js_to_reference`` (mean JS divergence on the forget set, bits).
        random_model: a randomly initialised model; adds ``zrf`` for class and speaker splits.
        seed: the attacker's subsample in :func:`mia_classifier`.
    Returns:
        ``forget_acc, retain_acc, val_acc, test_acc, mia_auc, mia_efficacy``; for class/speaker
        splits also ``forgotten_test_acc, kept_test_acc, forgotten_val_acc, kept_val_acc``.
    """
    for name, value in (("model", model), ("reference", reference),
                        ("random_model", random_model)):
        if not isinstance(value, (nn.Module, dict, type(None))) and hasattr(value, "model"):
            raise TypeError(f"evaluate's {name} is a {type(value).__name__}; pass its network, "
                            f"{name}.model")
    outputs = _Outputs(model, split.corpus)
    row = _accuracies(outputs, split)
    row["mia_auc"] = mia_loss_auc(outputs, split.corpus, split.forget, _unseen(split))
    row["mia_efficacy"] = mia_classifier(outputs, split, seed=seed)
    if random_model is not None and split.kind != "sample":
        row["zrf"] = zrf(outputs, random_model, split.corpus, split.forget)
    if reference is not None:
        ref = reference if isinstance(reference, dict) else evaluate(reference, split, seed=seed)
        for name in ("forget_acc", "retain_acc", "test_acc", "mia_auc", "mia_efficacy"):
            row[f"gap_{name}"] = abs(row[name] - ref[name])
        row["gap_mean"] = float(np.mean([row[f"gap_{name}"] for name in GAP_METRICS]))
        if isinstance(reference, nn.Module):
            row["js_to_reference"] = js_divergence(outputs, reference, split.corpus, split.forget)
    return row


def summarize(rows: Sequence[dict] | pd.DataFrame, by: Sequence[str] = ("method",),
              ) -> pd.DataFrame:
    """Mean and standard deviation over seeds, tidy: one row per group and metric.

    Returns columns ``[*by, "metric", "mean", "std", "n"]``; every numeric column except
    ``seed`` is a metric. ``std`` is NaN for a single seed.
    """
    table = pd.DataFrame(rows)
    missing = [name for name in by if name not in table.columns]
    if missing:
        raise ValueError(f"cannot group by {missing}; columns: {list(table.columns)}")
    metrics = [c for c in table.select_dtypes("number").columns if c not in (*by, "seed")]
    long = table.melt(id_vars=list(by), value_vars=metrics, var_name="metric")
    grouped = long.groupby([*by, "metric"], sort=False)["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()
