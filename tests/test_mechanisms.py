"""Each method's and audit's *defining mechanism*, tested directly (issue #29).

The contract test of ``test_unlearn`` asks for outcomes (forget accuracy drops, retain accuracy
holds) that fine-tuning meets without ever reading the forget set, so a method whose mechanism is
broken (SalUn's mask drawn at random, SSD's Fisher on the wrong data, NegGrad+'s sign flipped)
still passes it. Here each mechanism is checked against a hand computation, mostly on a tiny
linear softmax model whose gradients have a closed form, and every method must differ from
fine-tuning and move the forget set towards Retrain where that is its point.
``scripts/mutate.py`` breaks these mechanisms one at a time to show that the tests notice.

Cheap tests (closed forms, fixed logits) come first and the tiny-model runs last, so that the
mutation runs (``pytest -x``) stop early on a mutant that a cheap test catches.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from scriptload import load_script
from sklearn.metrics import roc_auc_score
from test_metrics import FixedLogits, make_corpus
from torch import nn

from speechul import audits, data, forget_me, metrics, sisa, train, unlearn
from speechul.unlearn import _shared as S
from speechul.unlearn import methods

N_FORGET, N_RETAIN, N_CLASSES = 4, 24, 3
BATCH = 16  # the sample request's batch size (as test_unlearn's)


# --------------------------------------------------------------------------- a tiny problem


def _linear_problem(seed: int = 0) -> tuple[nn.Linear, data.Batches, data.Batches]:
    """A linear softmax model (4 inputs, 3 classes) and one-batch forget and retain sets.

    Only the forget clips use input 3 (the retain clips have 0 there), so the weights reading it
    matter to the forget set alone: the forget-specific weights SSD should find.
    """
    g = torch.Generator().manual_seed(seed)
    n = N_FORGET + N_RETAIN
    x = torch.randn(n, 4, generator=g)
    x[:N_FORGET, 3] = 2.0 + torch.rand(N_FORGET, generator=g)
    x[N_FORGET:, 3] = 0.0
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Linear(4, N_CLASSES)
    forget = data.Batches(x, y, torch.arange(N_FORGET), batch_size=1000, seed=1)
    retain = data.Batches(x, y, torch.arange(N_FORGET, n), batch_size=1000, seed=2)
    return model, forget, retain


def _marked(y: torch.Tensor, forget: bool) -> S.Marked:
    """``y`` as a mixed batch's labels with every clip marked forget (or retain)."""
    return S.Marked(y, torch.full_like(y, forget, dtype=torch.bool))


def _clips(batches: data.Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """All (x, y) of a Batches, in index order."""
    return batches.x[batches.indices], batches.y[batches.indices]


def _ce_grad(model: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Closed-form gradient of the mean cross-entropy of a linear softmax model (float64):
    dL/dz = (softmax(z) - onehot(y)) / B, dL/dW = (dL/dz)^T x, dL/db = sum of dL/dz."""
    w, b = model.weight.detach().double(), model.bias.detach().double()
    dz = (torch.softmax(x.double() @ w.T + b, 1) - F.one_hot(y, w.shape[0]).double()) / len(y)
    return {"weight": dz.T @ x.double(), "bias": dz.sum(0)}


def _ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy, without gradients."""
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) of softmax(logits / t), batch mean, times t^2, written out."""
    p = torch.softmax(teacher.double() / t, 1)
    return (p * (p.log() - torch.log_softmax(student.double() / t, 1))).sum(1).mean() * t * t


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _step_signs(before: dict[str, torch.Tensor], after: nn.Module, lr: float
                ) -> dict[str, torch.Tensor]:
    """(after - before) / lr: for Adam's first step from zero moments, -sign(gradient)."""
    return {k: (v.detach() - before[k]) / lr for k, v in after.state_dict().items()}


def _assert_first_adam_step_follows(grad: dict[str, torch.Tensor],
                                    step: dict[str, torch.Tensor]) -> None:
    """Adam's first step is -lr * g / (|g| + eps): -sign(g) times lr, where |g| >> eps."""
    for name, g in grad.items():
        big = g.abs() > 1e-5
        assert big.any()
        torch.testing.assert_close(step[name][big].double(), -torch.sign(g[big]),
                                   atol=2e-3, rtol=0, msg=name)


class Untouchable:
    """A forget set that fails on any use: for methods that must never read the forget set."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the method read the forget set (.{name})")

    def __iter__(self):
        raise AssertionError("the method iterated over the forget set")

    def __len__(self) -> int:
        raise AssertionError("the method asked for the forget set's length")


@pytest.fixture
def one_epoch_calls(monkeypatch) -> list[tuple[object, train.LossFn]]:
    """Every ``train.one_epoch`` call's (batches, loss_fn), the step still taken."""
    calls, real = [], train.one_epoch

    def record(model, batches, loss_fn, *args, **kwargs):
        calls.append((batches, loss_fn))
        return real(model, batches, loss_fn, *args, **kwargs)

    monkeypatch.setattr(train, "one_epoch", record)
    return calls


# --------------------------------------------------------------------------- method mechanisms


def test_salun_mask_is_the_top_fraction_of_forget_gradient_magnitudes():
    """The mask marks exactly the round(f * n) weights with the largest |dL_forget/dw|."""
    model, forget, _ = _linear_problem()
    grad = _ce_grad(model, *_clips(forget))
    flat = torch.cat([grad["weight"].flatten(), grad["bias"].flatten()]).abs()
    for fraction in (0.2, 0.5):
        k = round(fraction * len(flat))
        ordered = flat.sort(descending=True).values
        assert ordered[k - 1] > ordered[k] * (1 + 1e-3), "a tie at the threshold: ill-posed"
        expected = (flat >= ordered[k - 1]).double()
        mask = S.saliency_mask(model, forget, fraction)
        got = torch.cat([mask["weight"].flatten(), mask["bias"].flatten()]).double()
        assert torch.equal(got, expected), (fraction, got, expected)


def test_ssd_dampens_exactly_the_forget_specific_weights():
    """F_f (forget) and F_D (forget + retain) in closed form: weights with F_f > a F_D are
    multiplied by min(l F_D / F_f, 1), all others left exactly as they were."""
    model, forget, retain = _linear_problem()
    before = _weights(model)
    selection, dampening = 10.0, 2.0
    x_f, y_f = _clips(forget)
    x_r, y_r = _clips(retain)
    f_f = {k: g**2 for k, g in _ce_grad(model, x_f, y_f).items()}  # one batch: mean = itself
    f_d = {k: g**2 for k, g in _ce_grad(model, torch.cat([x_f, x_r]),
                                        torch.cat([y_f, y_r])).items()}
    methods.ssd(model, forget, retain, selection=selection, dampening=dampening)
    selected_any = untouched_any = False
    for name, w in before.items():
        ratio = f_f[name] / f_d[name]
        assert ((ratio / selection - 1).abs() > 0.05).all(), "a weight at the threshold"
        chosen = ratio > selection
        factor = torch.where(chosen, (dampening / ratio).clamp(max=1.0), torch.ones_like(ratio))
        torch.testing.assert_close(getattr(model, name).detach().double(), w.double() * factor,
                                   atol=1e-7, rtol=1e-5, msg=name)
        selected_any |= bool(chosen.any())
        untouched_any |= bool((~chosen).any())
    assert selected_any and untouched_any, "the problem must select some weights, not all"
    assert (f_f["weight"][:, 3] / f_d["weight"][:, 3] > selection).all(), (
        "the weights reading the forget-only input are the forget-specific ones")


def test_neggrad_plus_step_descends_retain_and_ascends_forget():
    """One joint step: Adam moves each weight against the sign of the hand-computed gradient of
    alpha CE(retain) - (1 - alpha) CE(forget)."""
    model, forget, retain = _linear_problem()
    before, alpha, lr = _weights(model), 0.5, 1e-3
    g_f, g_r = _ce_grad(model, *_clips(forget)), _ce_grad(model, *_clips(retain))
    grad = {k: alpha * g_r[k] - (1 - alpha) * g_f[k] for k in g_f}
    methods.neggrad_plus(model, forget, retain, epochs=1, lr=lr, alpha=alpha)
    _assert_first_adam_step_follows(grad, _step_signs(before, model, lr))


@pytest.mark.parametrize("alpha, rises, falls", [(0.0, "forget", None), (1.0, None, "retain")])
def test_neggrad_plus_extremes_move_the_losses_their_way(alpha, rises, falls):
    """alpha = 0 is pure ascent on the forget set (its loss rises), alpha = 1 pure descent on
    the retain set (its loss falls), one small step each."""
    model, forget, retain = _linear_problem()
    sets = {"forget": _clips(forget), "retain": _clips(retain)}
    start = {k: _ce(model, *v) for k, v in sets.items()}
    methods.neggrad_plus(model, forget, retain, epochs=1, lr=1e-3, alpha=alpha)
    end = {k: _ce(model, *v) for k, v in sets.items()}
    if rises:
        assert end[rises] > start[rises] + 1e-4, (start, end)
    if falls:
        assert end[falls] < start[falls] - 1e-4, (start, end)


def test_gradient_ascent_steps_up_the_forget_loss():
    """One step of NegGrad follows +sign(dCE_forget/dw) and raises the forget loss."""
    model, forget, retain = _linear_problem()
    before, lr = _weights(model), 1e-3
    x, y = _clips(forget)
    start = _ce(model, x, y)
    grad = {k: -g for k, g in _ce_grad(model, x, y).items()}  # the loss it descends: -CE
    methods.gradient_ascent(model, forget, retain, epochs=1, lr=lr)
    _assert_first_adam_step_follows(grad, _step_signs(before, model, lr))
    assert _ce(model, x, y) > start + 1e-4


def _forget_losses(loss_fn: train.LossFn, forget: data.Batches, draws: int) -> np.ndarray:
    """Per draw, the loss a model *sure* of each forget clip's true label (logit 50) pays on it:
    ~50 when the clip was relabelled to another class, ~0 when it kept its true label."""
    x, y = _clips(forget)
    sure = lambda labels: lambda inputs: 50.0 * F.one_hot(labels, N_CLASSES).float()  # noqa: E731
    return np.array([loss_fn(sure(y[i : i + 1]), x[i : i + 1], _marked(y[i : i + 1], True)).item()
                     for i in range(N_FORGET) for _ in range(draws)])


def test_random_labels_wrong_rule_never_trains_on_the_true_label(one_epoch_calls):
    """``labels="wrong"``: every draw is another class (a loss of ~50 each); retain clips keep
    their true labels (~0)."""
    model, forget, retain = _linear_problem()
    methods.random_labels(model, forget, retain, epochs=1, lr=1e-3, labels="wrong", seed=0,
                          n_classes=N_CLASSES)
    (_, loss_fn), = one_epoch_calls
    assert _forget_losses(loss_fn, forget, 40).min() > 49.0, "a forget clip kept its true label"
    xr, yr = _clips(retain)
    assert loss_fn(lambda inputs: 50.0 * F.one_hot(yr, N_CLASSES).float(), xr,
                   _marked(yr, False)).item() < 1e-6, "retain clips keep their true labels"


@pytest.mark.parametrize("method", ["random_labels", "salun"])
def test_random_labels_are_drawn_over_all_classes_by_default(method, one_epoch_calls):
    """The reference's rule (Fan et al. 2024): a label drawn uniformly over *all* classes, so the
    true one comes back in 1 draw of N_CLASSES; 1,000 draws put its share within 4 binomial
    standard errors of 1/3 (the "wrong" rule gives 0)."""
    model, forget, retain = _linear_problem()
    extra = {"fraction": 1.0} if method == "salun" else {}
    getattr(methods, method)(model, forget, retain, epochs=1, lr=1e-3, seed=0,
                             n_classes=N_CLASSES, **extra)
    (_, loss_fn), = one_epoch_calls
    kept = _forget_losses(loss_fn, forget, 250) < 1.0
    p, n = 1 / N_CLASSES, len(kept)
    assert abs(kept.mean() - p) < 4 * math.sqrt(p * (1 - p) / n), kept.mean()


def test_bad_teacher_pulls_forget_clips_to_the_random_teacher(one_epoch_calls):
    """Forget rows are distilled from a re-initialised copy, retain rows from the original."""
    model, forget, retain = _linear_problem()
    original, t = copy.deepcopy(model), 2.0
    methods.bad_teacher(model, forget, retain, epochs=1, lr=1e-3, temperature=t, seed=5)
    (_, loss_fn), = one_epoch_calls
    bad = S.reset_(copy.deepcopy(original), 5)
    student = S.reset_(copy.deepcopy(original), 99)
    x_f, y_f = _clips(forget)
    x_r, y_r = _clips(retain)
    with torch.no_grad():
        assert not torch.allclose(bad(x_f), original(x_f)), "the bad teacher is a new network"
        got_f = loss_fn(student, x_f, _marked(y_f, True)).double()
        got_r = loss_fn(student, x_r, _marked(y_r, False)).double()
        torch.testing.assert_close(got_f, _kl(student(x_f), bad(x_f), t))
        torch.testing.assert_close(got_r, _kl(student(x_r), original(x_r), t))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_scrub_maximises_on_forget_then_minimises_on_retain(one_epoch_calls, optimizer):
    """Each epoch with a max step: first a pass over the forget set with -KL(original || student),
    then a pass over the retain set with gamma CE + alpha KL(original || student)."""
    model, forget, retain = _linear_problem()
    original, t, alpha, gamma = copy.deepcopy(model), 2.0, 0.7, 0.4
    methods.scrub(model, forget, retain, epochs=2, max_steps=1, lr=1e-3, alpha=alpha,
                  gamma=gamma, temperature=t, optimizer=optimizer)
    assert [b for b, _ in one_epoch_calls] == [forget, retain, retain]
    student = S.reset_(copy.deepcopy(original), 99)
    (x_f, y_f), (x_r, y_r) = _clips(forget), _clips(retain)
    with torch.no_grad():
        max_loss = one_epoch_calls[0][1](student, x_f, y_f).double()
        min_loss = one_epoch_calls[1][1](student, x_r, y_r).double()
        torch.testing.assert_close(max_loss, -_kl(student(x_f), original(x_f), t))
        expected = (gamma * F.cross_entropy(student(x_r), y_r).double()
                    + alpha * _kl(student(x_r), original(x_r), t))
        torch.testing.assert_close(min_loss, expected)


def test_scrub_defaults_are_the_references():
    """Kurmanji et al.'s code: SGD (momentum 0.9, weight decay 5e-4) at lr 5e-4, gamma 0.99,
    alpha 0.001, temperature 4, 3 epochs of which 2 with a max pass; SCRUB+R the same."""
    reference = {"epochs": 3, "max_steps": 2, "lr": 5e-4, "alpha": 0.001, "gamma": 0.99,
                 "temperature": 4.0, "optimizer": "sgd"}
    assert unlearn.defaults("scrub") == reference
    assert unlearn.defaults("scrub_r") == reference
    opt, _ = S.optimizer(nn.Linear(2, 2), 5e-4, 10, "sgd")
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (group["momentum"], group["weight_decay"], group["lr"]) == (0.9, 5e-4, 5e-4)


def test_scrub_r_rewinds_to_the_epoch_whose_forget_error_matches_unseen_clips(monkeypatch):
    """SCRUB+R keeps each epoch's weights and returns those whose forget error is closest to the
    final model's error on unseen clips: with forget errors 0.1, 0.5, 0.9 and an unseen error of
    0.45, the second epoch's weights (not the last), checked by a marker weight."""
    model, forget, retain = _linear_problem()
    unseen = data.Batches(forget.x, forget.y, forget.indices, 1000, shuffle=False)
    errors = iter([0.1, 0.5, 0.9, 0.45])  # epochs 1-3 on forget, then the final on unseen

    def fake_epochs(m, *args, **kwargs):
        for epoch in range(3):
            with torch.no_grad():
                m.bias.fill_(float(epoch + 1))
            yield epoch

    monkeypatch.setattr(methods, "_scrub_epochs", fake_epochs)
    monkeypatch.setattr(methods, "_error", lambda m, b: next(errors))
    out = methods.scrub_r(model, forget, retain, unseen=unseen)
    assert torch.equal(out.bias, torch.full_like(out.bias, 2.0))


def test_scrub_r_is_given_unseen_clips_like_the_forget_set(tiny_original, tiny_corpus):
    """``run`` hands SCRUB+R the validation clips: all of them for a sample request, those of the
    forgotten class for a class request (never a training clip)."""
    sample = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    klass = data.forget_split(tiny_corpus, "class", classes=[0], seed=0)
    assert torch.equal(unlearn.core.unseen(sample, 8).indices, sample.val)
    got = unlearn.core.unseen(klass, 8).indices
    assert torch.equal(got, klass.forgotten_val) and len(got) > 0
    assert (tiny_corpus.y[got] == 0).all()


def test_l1_proximal_step_soft_thresholds_by_lr_times_strength():
    """After a step the hook shrinks every weight by lr * strength towards 0 and zeroes the ones
    smaller than that; strength 0 changes nothing (then l1_sparse is fine-tuning)."""
    for strength, lr in ((0.5, 0.1), (0.0, 0.1)):
        p = nn.Parameter(torch.tensor([0.3, -0.02, 0.04, -0.5]))
        opt = torch.optim.SGD([p], lr=lr)
        S.soft_threshold_after_steps(opt, [strength])
        p.grad = torch.zeros_like(p)
        opt.step()
        step = lr * strength
        expected = torch.sign(p.detach().new_tensor([0.3, -0.02, 0.04, -0.5])) * (
            torch.tensor([0.3, 0.02, 0.04, 0.5]) - step).clamp_min(0)
        torch.testing.assert_close(p.detach(), expected)


# --------------------------------------------------------------------------- audits and metrics


# FixedLogits and the fixed corpus (clip i holds the number i) are test_metrics.py's.
_fixed_corpus = make_corpus


def test_lira_online_uses_the_in_shadows():
    """Two clips with the same target confidence (phi = 2) and the same OUT shadows (median 0)
    but IN medians 4 and 2: online LiRA, log N(phi; in) - log N(phi; out) with pooled sigma
    sqrt(2), scores them 0 and 1; offline, which ignores IN, cannot tell them apart."""
    corpus = _fixed_corpus([0, 0], [0, 0])
    target = FixedLogits([[2.0, 0.0], [2.0, 0.0]])  # phi = z_y - z_other = 2 on both
    keep = torch.tensor([[True, True], [True, True], [False, False], [False, False]])
    scores = torch.tensor([[3.0, 1.0], [5.0, 3.0], [-1.0, -1.0], [1.0, 1.0]])
    shadow = audits.Shadows(keep, scores, torch.arange(2))
    online = audits.lira_scores(target, shadow, corpus, torch.arange(2))
    sd = math.sqrt(2.0)  # within-clip deviations +-1 around each mean, 2 shadows per clip
    logpdf = scipy.stats.norm.logpdf
    expected = [logpdf(2, 4, sd) - logpdf(2, 0, sd), logpdf(2, 2, sd) - logpdf(2, 0, sd)]
    np.testing.assert_allclose(online, expected, atol=1e-4)
    np.testing.assert_allclose(expected, [0.0, 1.0], atol=1e-9)
    offline = audits.lira_scores(target, shadow, corpus, torch.arange(2), online=False)
    np.testing.assert_allclose(offline, [scipy.stats.norm.logcdf(2 / sd)] * 2, atol=1e-4)


def test_relearning_holds_out_the_clips_it_measures():
    """The relearning attack trains on ``taught`` (+ retain anchors) and measures on ``held``:
    the two split the forget set, and no held-out clip is ever trained on."""
    forget, retain = torch.arange(10, 30), torch.arange(100, 200)
    taught, held, steps = audits._relearn_clips(forget, retain, 6, 12, seed=3)
    assert len(taught) == 6 and len(held) == 14
    assert torch.equal(torch.cat([taught, held]).sort().values, forget)
    assert not torch.isin(held, steps).any()
    assert torch.isin(taught, steps).all() and torch.isin(steps[6:], retain).all()


def _mia_split() -> tuple[data.Split, nn.Module]:
    """12 training clips (forget 0-3, confident; retain unsure), 2 val, 8 test clips (unsure,
    with the same logits as eight retain clips): forget vs test is perfectly separable by loss,
    retain vs test not at all."""
    unsure = [[0.2 + 0.05 * i, 0.0] for i in range(8)]
    table = ([[5.0 + 0.1 * i, 0.0] for i in range(4)] + unsure + [[0.0, 0.0]] * 2 + unsure)
    corpus = _fixed_corpus([0] * 22, [0] * 12 + [1] * 2 + [2] * 8)
    return data.forget_split(corpus, "sample", indices=[0, 1, 2, 3]), FixedLogits(table)


def test_evaluate_attacks_the_forget_set():
    """``mia_auc`` is the loss attack of the forget set against unseen clips."""
    split, model = _mia_split()
    row = metrics.evaluate(model, split)
    loss = lambda idx: F.cross_entropy(model(split.corpus.x[idx]), split.corpus.y[idx],  # noqa: E731
                                       reduction="none").detach().numpy()
    a, b = -loss(split.forget), -loss(split.test)
    hand = roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])
    assert hand == 1.0 and row["mia_auc"] == pytest.approx(hand)


def test_gaps_are_absolute_and_averaged_over_salun_four():
    """gap_m = |m - m(Retrain)|; gap_mean averages forget, retain and test accuracy and MIA
    efficacy (Fan et al. 2024's Avg. Gap), whichever side of Retrain each lies on."""
    split, model = _mia_split()
    row = metrics.evaluate(model, split)
    shifts = {"forget_acc": 0.1, "retain_acc": -0.2, "test_acc": 0.3, "mia_auc": -0.15,
              "mia_efficacy": -0.4}
    reference = {k: row[k] + d for k, d in shifts.items()}
    gapped = metrics.evaluate(model, split, reference=reference)
    for name, d in shifts.items():
        assert gapped[f"gap_{name}"] == pytest.approx(abs(d)), name
    assert gapped["gap_mean"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.4) / 4)


# --------------------------------------------------------------------------- on the tiny model


def test_eu_k_reinitialises_the_top_before_training(tiny_original, tiny_corpus, monkeypatch):
    """With training switched off, EU-k's top equals a fresh initialisation (seeded), differs
    from the original in every tensor, and the trunk is the original's."""
    monkeypatch.setattr(train, "one_epoch", lambda *args, **kwargs: 0.0)
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    retain = data.Batches(tiny_corpus.x, tiny_corpus.y, split.retain, BATCH)
    model = copy.deepcopy(tiny_original.model)
    methods.eu_k(model, Untouchable(), retain, k=1, epochs=1, lr=1e-3, seed=7)
    expected = copy.deepcopy(tiny_original.model)
    S.reset_(expected.split(1)[1], 7)
    before, after, fresh = (_weights(m) for m in (tiny_original.model, model, expected))
    top_names = {n for n in after if not n.startswith(("norm.", "features.0.", "features.1.",
                                                       "features.2."))}
    assert top_names and len(top_names) < len(after)
    for name in after:
        assert torch.equal(after[name], fresh[name]), name
        if name in top_names and after[name].is_floating_point():
            assert not torch.equal(after[name], before[name]), f"{name} kept its old weights"
        elif name not in top_names:
            assert torch.equal(after[name], before[name]), f"trunk weight {name} moved"


@pytest.mark.parametrize("name", ["finetune", "l1_sparse", "retrain", "eu_k"])
def test_retain_only_methods_never_read_the_forget_set(name, tiny_original, tiny_corpus):
    """Fine-tuning, L1-sparse, Retrain and EU-k learn from the retained clips alone."""
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    retain = data.Batches(tiny_corpus.x, tiny_corpus.y, split.retain, 32)
    given = {"recipe": dataclasses.replace(tiny_original.recipe, epochs=1), "seed": 0,
             "n_classes": tiny_corpus.n_classes, "epochs": 1}
    fn = unlearn.METHODS[name]
    kwargs = {k: v for k, v in given.items() if k in unlearn.core._keyword_only(fn)}
    out = fn(copy.deepcopy(tiny_original.model), Untouchable(), retain, **kwargs)
    assert isinstance(out, nn.Module)


def test_retrain_starts_from_a_fresh_model(tiny_original, tiny_corpus):
    """Retrain's result does not depend on the weights it is handed: from the original or
    from a model of zeros, the same seed gives bitwise the same network."""
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    retain = data.Batches(tiny_corpus.x, tiny_corpus.y, split.retain, 32)
    recipe = dataclasses.replace(tiny_original.recipe, epochs=1)
    zeros = copy.deepcopy(tiny_original.model)
    with torch.no_grad():
        for p in zeros.parameters():
            p.zero_()
    runs = [methods.retrain(copy.deepcopy(m), Untouchable(), retain, recipe=recipe, seed=0,
                            n_classes=tiny_corpus.n_classes)
            for m in (tiny_original.model, zeros)]
    a, b = (_weights(m) for m in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_salun_moves_only_weights_of_its_saliency_mask(tiny_original, tiny_corpus):
    """On the real model: every weight SalUn moved is among the most salient for the forget set
    (the mask computed independently of the run, from the same clips)."""
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    out = unlearn.run("salun", tiny_original, split, seed=0, batch_size=BATCH, fraction=0.1)
    forget = data.Batches(tiny_corpus.x, tiny_corpus.y, split.forget, BATCH)
    mask = S.saliency_mask(copy.deepcopy(tiny_original.model), forget, 0.1)
    before = dict(tiny_original.model.named_parameters())
    moved = {n: (p != before[n]).detach() for n, p in out.model.named_parameters()}
    assert sum(m.sum().item() for m in moved.values()) > 0
    outside = sum((moved[n] & (mask[n] == 0)).sum().item() for n in moved)
    assert outside == 0, f"{outside} weights outside the saliency mask moved"


def test_l1_sparse_effect_grows_with_its_strength(tiny_original, tiny_corpus):
    """``l1=0`` is fine-tuning bitwise; as the penalty grows, sum |w| falls, the model ends
    further from fine-tuning's (same seed, epochs, lr) and, once the shrink per step nears Adam's
    own step, weights end exactly zero."""
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    hp = {"epochs": 1, "lr": 3e-3}
    plain = _weights(unlearn.run("finetune", tiny_original, split, seed=0, batch_size=BATCH,
                                 **hp).model)
    runs = [_weights(unlearn.run("l1_sparse", tiny_original, split, seed=0, batch_size=BATCH,
                                 l1=l1, **hp).model) for l1 in (0.0, 0.02, 0.1)]
    weights = [{k: v for k, v in r.items() if v.is_floating_point() and "running" not in k}
               for r in runs]
    assert all(torch.equal(runs[0][k], plain[k]) for k in plain), "l1=0 must be fine-tuning"
    norms = [sum(v.abs().sum().item() for v in w.values()) for w in weights]
    zeros = [sum((v == 0).sum().item() for v in w.values()) for w in weights]
    far = [sum((v - plain[k]).abs().sum().item() for k, v in w.items()) for w in weights]
    assert norms[0] > 1.01 * norms[1] > 1.01 * norms[2], norms
    assert zeros[0] <= zeros[1] <= zeros[2] and zeros[0] < zeros[2], zeros
    assert far[0] == 0 < far[1] < far[2], far


def test_retrain_never_starts_from_the_originals_initial_weights(tiny_original, tiny_corpus,
                                                                 monkeypatch):
    """At every seed s Retrain starts from a draw of its own: not the initial weights of an
    original trained with seed s (seed 0 is the default original's), and not seed s+1's."""
    monkeypatch.setattr(train, "fit", lambda model, *args, **kwargs: model)  # the start only
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    retain = data.Batches(tiny_corpus.x, tiny_corpus.y, split.retain, 32)
    recipe, n = tiny_original.recipe, tiny_corpus.n_classes
    for seed in (0, 1, 2):
        start = _weights(methods.retrain(None, Untouchable(), retain, recipe=recipe, seed=seed,
                                         n_classes=n))
        for other in (seed, seed + 1):
            init = _weights(train.fresh_model(recipe, n, tiny_corpus.device, other))
            assert not all(torch.equal(start[k], init[k]) for k in start), (seed, other)


def test_sisa_emptied_shard_no_longer_votes(tiny_corpus):
    """Delete every clip of shard 0: the ensemble is then shard 1 alone, not an average with
    shard 0's untrained initial weights."""
    sharded = sisa.fit(tiny_corpus, train.TrainConfig(epochs=1, batch_size=32), shards=2,
                       slices=1, seed=0)
    new, _, retrained = sisa.forget(sharded, sharded.slices[0][0])
    assert retrained == (0,) and new.sizes[0] == 0
    x = tiny_corpus.x[:16]
    with torch.no_grad():
        torch.testing.assert_close(new(x).exp(), new.members[1](x).softmax(1))
        assert not torch.allclose(new.members[0](x).softmax(1), new.members[1](x).softmax(1))


def _rank_aucs(scores: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row of tags (P, N): ties share their average rank."""
    ranks = scipy.stats.rankdata(scores)
    n1 = tags[0].sum()
    return ((tags * ranks).sum(1) - n1 * (n1 + 1) / 2) / (n1 * (tags.shape[1] - n1))


def test_most_exposed_speaker_is_judged_against_the_maximum(tiny_corpus, tiny_original):
    """``null_high`` is the 95 % point of the *largest* permuted AUC over all speakers (max-T),
    computed here independently: clearly above any single speaker's own 95 % point."""
    model, corpus, n = tiny_original.model, tiny_corpus, 1000
    train_idx = corpus.indices("train")
    held = torch.cat([corpus.indices("val"), corpus.indices("test")])
    speaker = corpus.labels["speaker"]
    rng = np.random.default_rng(123)
    nulls = []
    for s in range(len(corpus.names("speaker"))):
        deleted, fresh = train_idx[speaker[train_idx] == s], held[speaker[held] == s]
        scores = -metrics.per_sample_loss(model, corpus, torch.cat([deleted, fresh])).numpy()
        tags = np.r_[np.ones(len(deleted), bool), np.zeros(len(fresh), bool)]
        nulls.append(_rank_aucs(scores, np.stack([rng.permutation(tags) for _ in range(n)])))
    max_t = float(np.quantile(np.max(nulls, axis=0), 0.95))
    single = max(float(np.quantile(null, 0.95)) for null in nulls)
    assert max_t > single + 0.035, "too few speakers for max-T to matter"
    _, chosen = forget_me.most_exposed(model, corpus, n_permutations=n, seed=0)
    assert abs(chosen.null_high - max_t) < 0.02, (chosen.null_high, max_t, single)


# --------------------------------------------------------------------------- against fine-tuning


#: SCRUB as the book ran it before it took the reference's defaults: Adam (cosine), lr 1e-3,
#: alpha = gamma = 1, 2 epochs. At the reference's SGD lr 5e-4 SCRUB barely moves a model that
#: Adam trained (chapter 4 shows it), so its mechanism is checked for moving towards Retrain here.
SCRUB_ADAM = {"optimizer": "adam", "lr": 1e-3, "alpha": 1.0, "gamma": 1.0, "epochs": 2}


@pytest.fixture(scope="module")
def sample_runs(tiny_original, tiny_corpus):
    """Every method's run on a 10 % sample request (seed 0), and fine-tuning with seed 1."""
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    runs = {name: unlearn.run(name, tiny_original, split, seed=0, batch_size=BATCH).model
            for name in sorted(unlearn.METHODS)}
    runs["finetune, seed 1"] = unlearn.run("finetune", tiny_original, split, seed=1,
                                           batch_size=BATCH).model
    runs["scrub, adam"] = unlearn.run("scrub", tiny_original, split, seed=0, batch_size=BATCH,
                                      **SCRUB_ADAM).model
    return split, runs


def _forget_logits(model: nn.Module, split: data.Split) -> torch.Tensor:
    return metrics.predict(model, split.corpus.x[split.forget])


@pytest.mark.parametrize("name", sorted(set(unlearn.METHODS) - {"finetune"}))
def test_every_method_differs_from_finetuning(name, sample_runs):
    """On the forget clips, a method's logits are further from fine-tuning's (same seed) than a
    tenth of fine-tuning's own seed-to-seed spread: not fine-tuning under another name. (Same
    seed, fine-tuning twice is bitwise identical on the CPU: float noise is far below this.)"""
    split, runs = sample_runs
    ft = _forget_logits(runs["finetune"], split)
    spread = (ft - _forget_logits(runs["finetune, seed 1"], split)).abs().mean().item()
    distance = (_forget_logits(runs[name], split) - ft).abs().mean().item()
    assert spread > 0.05, "fine-tuning's seeds must differ for the tolerance to mean anything"
    assert distance > 0.1 * spread, (name, distance, spread)


#: Fraction of the original-to-Retrain gap in forget-set loss each method must close on the
#: sample request; about half of what each closes here (measured: 0.5-1.0 for the first five,
#: 0.25 for SalUn, 0.11-0.15 for the last three). SSD is absent: a random 10 % has no weights
#: specific to it, and SSD rightly leaves the model almost as it was; so are SCRUB and SCRUB+R at
#: the reference's SGD defaults (SCRUB is checked with Adam, SCRUB_ADAM).
TOWARDS_RETRAIN = {"bad_teacher": 0.25, "eu_k": 0.25, "gradient_ascent": 0.25,
                   "finetune": 0.25, "l1_sparse": 0.25, "salun": 0.1, "neggrad_plus": 0.05,
                   "random_labels": 0.05, "scrub, adam": 0.05}


@pytest.mark.parametrize("name", sorted(TOWARDS_RETRAIN))
def test_methods_move_the_forget_loss_towards_retrain(name, sample_runs, tiny_original):
    """Retrain never saw the forget clips, so their loss is higher under it than under the
    original; unlearning should move it up, part of the way (and not far past Retrain)."""
    split, runs = sample_runs
    loss = lambda m: metrics.per_sample_loss(m, split.corpus, split.forget).mean().item()  # noqa: E731
    start, goal, got = loss(tiny_original.model), loss(runs["retrain"]), loss(runs[name])
    assert goal > start + 0.2, "the request must leave a gap to close"
    closed = (got - start) / (goal - start)
    assert TOWARDS_RETRAIN[name] <= closed <= 2.0, (name, start, got, goal)


# --------------------------------------------------------------------------- the mutation list


@pytest.mark.skipif("SPEECHUL_MUTANT" in os.environ, reason="a mutant's source differs by design")
def test_mutation_list_matches_the_source():
    """``scripts/mutate.py --check``: every snippet occurs exactly once where it says."""
    mutate = load_script("mutate")
    assert mutate.check() == []
    assert mutate.main(["--check"]) == 0


def test_mutation_check_flags_a_stale_snippet():
    """A snippet that no longer matches (or matches twice) is reported, not silently skipped."""
    mutate = load_script("mutate")
    stale = mutate.Mutation("stale", "speechul/metrics.py", "no such code", "x", ())
    twice = mutate.Mutation("twice", "speechul/metrics.py", "import", "x", ())
    problems = mutate.check((stale, twice))
    assert len(problems) == 2 and "found 0 times" in problems[0] and "times" in problems[1]
