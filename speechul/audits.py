"""Auditing unlearning: a stronger membership attack, a relearning attack, and verdicts.

Accuracy on the forget set and a loss-threshold attack are weak evidence: a model can score well
on both while the forgotten clips still leave traces. Two stronger audits:

* **LiRA** (Carlini et al. 2022), the likelihood-ratio membership attack. Shadow models are
  trained on random halves of a pool of clips, so every clip is IN for half of them and OUT for
  the rest. For each clip, the shadows' logit-scaled confidences are fitted with one Gaussian
  for IN and one for OUT; a target model's confidence on the clip is then scored by how much
  more likely it is under IN than under OUT. Calibrating *per clip* is what makes it strong:
  an easy clip is confident everywhere, and only the ratio says whether it was trained on.
* **Relearning** (as in Lynch et al. 2024): fine-tune the unlearned model for a few steps on a
  small part of the forget set and watch accuracy on the *rest* of it. Knowledge that was only
  hidden comes back in a few steps; Retrain, which never had it, relearns slowly.

:func:`verdicts` turns the numbers into pass/fail per method against Retrain, with the
thresholds written down next to the table.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import train
from ._runtime import cache_dir, cached, fingerprint, generator, numerics, progress
from .data import Batches, Corpus
from .metrics import predict

__all__ = ["logit_confidence", "Shadows", "shadows", "lira_scores", "LiraResult", "lira",
           "tpr_at_fpr", "relearn", "Audit", "AUDITS", "verdicts", "describe"]


# --------------------------------------------------------------------------- LiRA


def logit_confidence(model: nn.Module, corpus: Corpus, indices: torch.Tensor) -> torch.Tensor:
    """phi = log(p_y / (1 - p_y)) per clip (N,) on the CPU: LiRA's well-behaved statistic.

    The confidence p_y piles up near 1 for trained clips; its logit spreads it out so that a
    Gaussian fits. Computed stably from the logits z as z_y - logsumexp_{c != y} z_c.
    """
    z = predict(model, corpus.x[indices]).cpu()
    y = corpus.y[indices].cpu()
    true = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], -math.inf).logsumexp(1)
    return true - others


@dataclass(frozen=True, eq=False)
class Shadows:
    """Shadow models, kept only as what LiRA needs from them.

    Attributes:
        keep: (S, N) bool: clip n was in shadow s's training set (False outside the pool).
        scores: (S, N) float: shadow s's logit-scaled confidence on every corpus clip.
        pool: (P,) the corpus indices the shadows' training sets were drawn from.
    """

    keep: torch.Tensor
    scores: torch.Tensor
    pool: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.keep)

    @property
    def spread(self) -> tuple[float, float]:
        """(sd_in, sd_out): the within-clip standard deviations of the IN and the OUT scores,
        pooled over the shadows' whole pool. Fitted once on the shadows, as Carlini et al. do,
        so a clip's LiRA score never depends on which other clips are scored beside it."""
        scores = self.scores[:, self.pool].numpy()
        keep = self.keep[:, self.pool].numpy()
        return _pooled_std(scores, keep), _pooled_std(scores, ~keep)


def _keep_matrix(n_shadows: int, pool_size: int, seed: int, n_in: int) -> torch.Tensor:
    """(S, P) bool with each clip IN for exactly ``n_in`` shadows (Carlini et al.'s balanced
    scheme, at the target's share of the pool): every clip has IN and OUT statistics, which
    independent draws would not guarantee."""
    g = generator(seed)
    ranks = torch.rand(n_shadows, pool_size, generator=g).argsort(0).argsort(0)
    return ranks < n_in


def shadows(corpus: Corpus, recipe: train.TrainConfig, n: int = 8, seed: int = 0, *,
            parts: Sequence[str] = ("train", "test"), size: int | None = None,
            cache: str | None = None) -> Shadows:
    """Train ``n`` shadow models on random subsets of the ``parts`` clips (cached per shadow).

    The pool includes the test clips by default so that test clips, the reference non-members
    of an unlearning audit, also have IN statistics (the attacker owns the shadows; using data
    of the same distribution is the threat model of Carlini et al. 2022). Each shadow is trained
    with the target's ``recipe`` on about ``size`` clips (default: as many as the target's
    training set), so IN and OUT statistics are calibrated on models like the target: each clip
    is IN for round(n * size / pool) shadows. An interrupted run resumes at the first shadow not
    yet cached.
    """
    pool = torch.cat([corpus.indices(p) for p in parts]).sort().values
    size = len(corpus.indices("train")) if size is None else size
    n_in = round(n * size / max(len(pool), 1))
    if n < 2 or not 1 <= n_in <= n - 1:
        raise ValueError(f"{n} shadows with {size} of {len(pool)} pool clips each leave a clip "
                         f"IN for {n_in} of them: every clip needs IN and OUT shadows; use more "
                         "shadows or a larger pool (parts=...)")
    keep_pool = _keep_matrix(n, len(pool), seed, n_in)
    key = fingerprint(corpus.key, corpus.task, tuple(corpus.x.shape[1:]), asdict(recipe), n,
                      seed, list(parts), n_in, numerics(corpus.device))
    scores = []
    for s in progress(range(n), desc="shadow models"):
        def build(s: int = s) -> torch.Tensor:
            trained = train.train_on(corpus, pool[keep_pool[s].to(pool.device)], recipe,
                                     seed=int(fingerprint(seed, s), 16) % 2**31,
                                     desc=f"shadow {s + 1}/{n}")
            return logit_confidence(trained.model, corpus, torch.arange(len(corpus)))
        scores.append(cached(cache_dir(cache) / "shadows" / f"{key}-{s}.pt", build))
    keep = torch.zeros(n, len(corpus), dtype=torch.bool)
    keep[:, pool.cpu()] = keep_pool
    return Shadows(keep, torch.stack(scores), pool.cpu())


def _gaussian_logpdf(x: np.ndarray, mean: np.ndarray, std: float | np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)


def _pooled_std(scores: np.ndarray, mask: np.ndarray) -> float:
    """Within-clip standard deviation pooled over clips: with a handful of shadows per clip,
    one variance for all clips is far steadier than one per clip (Carlini et al.'s advice)."""
    counts = mask.sum(0)
    means = np.where(mask, scores, 0).sum(0) / np.maximum(counts, 1)
    squares = np.where(mask, (scores - means) ** 2, 0).sum(0)
    return float(np.sqrt(squares.sum() / max(counts.sum() - (counts > 0).sum(), 1)) + 1e-6)


def lira_scores(model: nn.Module, shadow: Shadows, corpus: Corpus, indices: torch.Tensor, *,
                online: bool = True) -> np.ndarray:
    """LiRA membership scores (N,) of clips ``indices`` for a target model: higher = member.

    Online: log N(phi; mu_in, sigma_in) - log N(phi; mu_out, sigma_out), with per-clip medians
    of the IN and OUT shadows and the standard deviations of :attr:`Shadows.spread` (fitted on
    the whole pool, so a clip scores the same alone or beside others). Offline (no IN shadows
    needed): log Phi((phi - mu_out) / sigma_out), how far above the OUT distribution phi sits.
    """
    idx = indices.cpu()
    phi = logit_confidence(model, corpus, indices).numpy()
    scores, keep = shadow.scores[:, idx].numpy(), shadow.keep[:, idx].numpy()
    out = ~keep
    if (out.sum(0) == 0).any() or (online and (keep.sum(0) == 0).any()):
        raise ValueError("some clips have no IN or no OUT shadow: audit clips from the shadows' "
                         "pool (parts=...), or use online=False for clips outside it")
    sd_in, sd_out = shadow.spread
    mu_out = np.nanmedian(np.where(out, scores, np.nan), 0)
    if not online:
        return torch.special.log_ndtr(torch.from_numpy((phi - mu_out) / sd_out)).numpy()
    mu_in = np.nanmedian(np.where(keep, scores, np.nan), 0)
    return _gaussian_logpdf(phi, mu_in, sd_in) - _gaussian_logpdf(phi, mu_out, sd_out)


def tpr_at_fpr(member_scores: np.ndarray, non_member_scores: np.ndarray, fpr: float) -> float:
    """True-positive rate at a false-positive rate: the attack's power when it must rarely
    accuse a non-member (Carlini et al. argue this, not AUC, is what matters for privacy)."""
    threshold = np.quantile(non_member_scores, 1 - fpr, method="higher")
    return float((member_scores > threshold).mean())


@dataclass(frozen=True)
class LiraResult:
    """Scores of the claimed members and the reference non-members, AUC, TPR at low FPRs."""

    member_scores: np.ndarray
    non_member_scores: np.ndarray
    auc: float
    tpr: dict[float, float]


def lira(model: nn.Module, shadow: Shadows, corpus: Corpus, members: torch.Tensor,
         non_members: torch.Tensor, *, online: bool = True,
         fprs: Sequence[float] = (0.01, 0.05)) -> LiraResult:
    """Run LiRA on ``members`` (e.g. the forget set) vs ``non_members`` (e.g. test clips).

    AUC 0.5 means the attack cannot tell the forget set from unseen clips: what Retrain shows.
    """
    from sklearn.metrics import roc_auc_score

    a = lira_scores(model, shadow, corpus, members, online=online)
    b = lira_scores(model, shadow, corpus, non_members, online=online)
    auc = float(roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b]))
    return LiraResult(a, b, auc, {f: tpr_at_fpr(a, b, f) for f in fprs})


# --------------------------------------------------------------------------- relearning


def _frozen_norm(model: nn.Module) -> None:
    """Batch-norm layers to eval mode: a few clips of one class must not rewrite the running
    statistics (that would change the model for every class, not relearn the forgotten one)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _relearn_clips(forget: torch.Tensor, retain: torch.Tensor | None, n_relearn: int,
                   n_retain: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(taught, held, step_clips) corpus indices for :func:`relearn`, all drawn by ``seed``.

    ``taught`` (n_relearn,) and ``held`` (the rest) split the forget set; ``step_clips`` is
    ``taught`` plus ``n_retain`` retain clips, the batch of every relearning step.
    """
    if not 0 < n_relearn < len(forget):
        raise ValueError(f"n_relearn must be in [1, {len(forget) - 1}] to leave held-out clips, "
                         f"got {n_relearn}")
    g = generator(seed)
    order = forget[torch.randperm(len(forget), generator=g).to(forget.device)]
    taught, held = order[:n_relearn], order[n_relearn:]
    if not n_retain:
        return taught, held, taught
    if retain is None or not 0 < n_retain <= len(retain):
        raise ValueError(f"n_retain={n_retain} needs a retain set with at least that many clips")
    anchors = retain[torch.randperm(len(retain), generator=g)[:n_retain].to(retain.device)]
    return taught, held, torch.cat([taught, anchors.to(taught.device)])


def relearn(model: nn.Module, corpus: Corpus, forget: torch.Tensor, *,
            retain: torch.Tensor | None = None, n_relearn: int = 16, n_retain: int = 0,
            steps: int = 10, lr: float = 1e-3, seed: int = 0) -> pd.DataFrame:
    """The relearning attack: fine-tune a copy on ``n_relearn`` forget clips, step by step.

    The forget set is split once by ``seed`` into the relearning clips and the held-out rest,
    so every model is attacked with the same clips. Each step is one full-batch Adam step on
    the relearning clips plus ``n_retain`` clips drawn from ``retain`` (batch norm frozen).
    Mix retain clips in for a forgotten *class*: trained on one class alone, any model, even an
    untrained one, learns to answer that class for everything, which says nothing about hidden
    knowledge. With ``n_retain = (classes - 1) x n_relearn`` the class appears at its natural
    frequency. ``model`` is not modified.

    Returns:
        columns ``step`` (0 = before any step), ``heldout_acc`` (accuracy on the held-out forget
        clips, the measure) and ``taught_acc`` (on the clips trained on). The audits'
        ``relearn_acc`` (chapter 8) is the mean of ``heldout_acc`` over steps 1 to ``steps``.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"steps and lr must be positive, got {steps} and {lr}")
    taught, held, step_clips = _relearn_clips(forget, retain, n_relearn, n_retain, seed)
    attacked = copy.deepcopy(model)
    opt = torch.optim.Adam(attacked.parameters(), lr=lr)
    batches = Batches(corpus.x, corpus.y, step_clips, batch_size=len(step_clips), seed=seed)

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _frozen_norm(m)
        return F.cross_entropy(m(x), y)

    def row(step: int) -> dict[str, float]:
        hits = [(predict(attacked, corpus.x[i]).argmax(1).cpu() == corpus.y[i].cpu()).float()
                for i in (held, taught)]
        return {"step": step, "heldout_acc": hits[0].mean().item(),
                "taught_acc": hits[1].mean().item()}

    rows = [row(0)]
    for step in range(1, steps + 1):
        train.one_epoch(attacked, batches, loss_fn, opt, max_grad_norm=5.0)
        rows.append(row(step))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Audit:
    """One pass/fail test of a method against Retrain on one metric.

    ``rule``: ``"near"`` passes when |value - Retrain| <= tolerance; ``"at_most"`` when value
    <= Retrain + tolerance (e.g. relearned accuracy); ``"at_least"`` when value >= Retrain -
    tolerance (e.g. test accuracy). Tolerances are fractions (0.05 = 5 points).
    """

    name: str
    metric: str
    rule: str
    tolerance: float

    def __post_init__(self) -> None:
        if self.rule not in ("near", "at_most", "at_least"):
            raise ValueError(f"unknown rule {self.rule!r}; known: near, at_most, at_least")
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")

    def passes(self, value: float, reference: float) -> bool | None:
        """True/False, or None when either number is missing (NaN)."""
        if math.isnan(value) or math.isnan(reference):
            return None
        if self.rule == "near":
            return abs(value - reference) <= self.tolerance
        if self.rule == "at_most":
            return value <= reference + self.tolerance
        return value >= reference - self.tolerance

    def describe(self) -> str:
        t = self.tolerance
        return {"near": f"|{self.metric} - Retrain| <= {t:g}",
                "at_most": f"{self.metric} <= Retrain + {t:g}",
                "at_least": f"{self.metric} >= Retrain - {t:g}"}[self.rule]


#: The book's audits. Tolerances sit above the seed-to-seed spread of Retrain itself on the
#: embedded corpus (a few points), so a pass means "indistinguishable at this noise level".
AUDITS = (
    Audit("forget accuracy", "forget_acc", "near", 0.05),
    Audit("test accuracy", "test_acc", "at_least", 0.03),
    Audit("loss-attack AUC", "mia_auc", "near", 0.05),
    Audit("LiRA AUC", "lira_auc", "near", 0.05),
    Audit("relearning", "relearn_acc", "at_most", 0.10),
)


def verdicts(rows: pd.DataFrame, *, reference: str = "retrain",
             audits: Sequence[Audit] = AUDITS, by: str = "method") -> pd.DataFrame:
    """Pass/fail per method and audit, on per-method means over seeds.

    Args:
        rows: one row per (method, seed) or per method, with a ``by`` column and metric columns;
            audits whose metric is absent are left out.
        reference: the ``by`` value every method is compared with.
    Returns:
        one row per method: a True/False/None column per audit and ``passed`` ("k/n" of the
        audits that could be decided).
    """
    if by not in rows.columns or reference not in set(rows[by]):
        raise ValueError(f"rows need a {by!r} column with a {reference!r} row to compare with")
    present = [a for a in audits if a.metric in rows.columns]
    means = rows.groupby(by, sort=False)[[a.metric for a in present]].mean()
    ref = means.loc[reference]
    table = pd.DataFrame({a.name: [a.passes(float(v), float(ref[a.metric]))
                                   for v in means[a.metric]] for a in present},
                         index=means.index, dtype=object)
    decided = table.notna().sum(axis=1)
    table["passed"] = [f"{int((row == True).sum())}/{n}"  # noqa: E712 - True, not truthy
                       for (_, row), n in zip(table.iterrows(), decided, strict=True)]
    return table


def describe(audits: Sequence[Audit] = AUDITS) -> pd.DataFrame:
    """The thresholds as a table, to print next to the verdicts."""
    return pd.DataFrame([{"audit": a.name, "passes when": a.describe()} for a in audits]
                        ).set_index("audit")
