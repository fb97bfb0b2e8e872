"""The unlearning front door and every registered method, on the tiny corpus.

The contract test is parametrized over ``METHODS``, so a newly registered method is tested too.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from speechul import data, metrics, train, unlearn

# One-keyword class forgetting on the tiny corpus (24 clips of the class, 216 retained). Batches
# of 16 give the methods about as many steps per epoch on the forget set as the default corpus
# does with batches of 64. The tiny model is under-trained (retain accuracy ~0.94), so a few
# large steps move its retained accuracy more than on the default corpus (book/03 checks 2 pts).
BATCH = 16
FORGET_DROP = 0.5    # forget accuracy must fall at least this far below the original's
RETAIN_SLACK = 0.15  # retain accuracy may fall at most this far below the original's


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def class_split(tiny_corpus) -> data.Split:
    return data.forget_split(tiny_corpus, "class", classes=["yes"])


@pytest.fixture(scope="module")
def sample_split(tiny_corpus) -> data.Split:
    return data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def original_scores(tiny_original, class_split) -> dict[str, float]:
    model, corpus = tiny_original.model, class_split.corpus
    return {name: metrics.accuracy(model, corpus, class_split.subset(name))
            for name in ("forget", "retain")}


@pytest.fixture(scope="module")
def class_runs(tiny_original, class_split):
    """Each method's class-forgetting run, made once (the Retrain run is used twice)."""
    done: dict[str, unlearn.Unlearned] = {}

    def get(name: str) -> unlearn.Unlearned:
        if name not in done:
            done[name] = unlearn.run(name, tiny_original, class_split, seed=0, batch_size=BATCH)
        return done[name]

    return get


@pytest.mark.parametrize("name", sorted(unlearn.METHODS))
def test_method_contract(name, tiny_original, class_split, original_scores, class_runs):
    before = _state(tiny_original.model)
    out = class_runs(name)
    assert _same(before, _state(tiny_original.model)), "the original model was modified"
    assert out.method == name and out.seconds > 0 and not out.diverged
    assert out.hparams == unlearn.defaults(name)
    after = _state(out.model)
    assert not _same(before, after), f"{name} returned the original weights"
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert not out.model.training, "the unlearned model is returned in eval mode"
    corpus = class_split.corpus
    forget = metrics.accuracy(out.model, corpus, class_split.forget)
    retain = metrics.accuracy(out.model, corpus, class_split.retain)
    assert forget <= original_scores["forget"] - FORGET_DROP, (
        f"{name}: forget accuracy {forget:.2f} (original {original_scores['forget']:.2f})")
    assert retain >= original_scores["retain"] - RETAIN_SLACK, (
        f"{name}: retain accuracy {retain:.2f} (original {original_scores['retain']:.2f})")


def test_retrain_is_train_on_retain_bitwise(tiny_original, class_split, class_runs):
    out = class_runs("retrain")  # Retrain trains with the recipe's batch size, whatever run's
    direct = train.train_on(class_split.corpus, class_split.retain, tiny_original.recipe,
                            unlearn.methods.RETRAIN_STREAM)
    assert _same(_state(out.model), _state(direct.model))


def test_same_seed_same_weights(tiny_original, sample_split):
    a, b, c = (unlearn.run("random_labels", tiny_original, sample_split, seed=s)
               for s in (1, 1, 2))
    assert _same(_state(a.model), _state(b.model))
    assert not _same(_state(a.model), _state(c.model))


def test_salun_with_every_weight_is_random_labels(tiny_original, sample_split):
    salun = unlearn.run("salun", tiny_original, sample_split, seed=0, fraction=1.0, lr=1e-3)
    labels = unlearn.run("random_labels", tiny_original, sample_split, seed=0, lr=1e-3)
    assert _same(_state(salun.model), _state(labels.model))


def test_salun_moves_only_salient_weights(tiny_original, sample_split):
    before = _state(tiny_original.model)
    out = unlearn.run("salun", tiny_original, sample_split, seed=0, fraction=0.1)
    params = dict(tiny_original.model.named_parameters())
    moved = sum((before[n] != p).sum().item() for n, p in out.model.named_parameters())
    total = sum(p.numel() for p in params.values())
    assert 0 < moved <= 0.1 * total + 1


def test_unknown_method_lists_known_ones(tiny_original, sample_split):
    with pytest.raises(KeyError, match="known:.*finetune"):
        unlearn.run("forget_everything", tiny_original, sample_split)


@pytest.mark.parametrize("hparams, error, message", [
    ({"lr": -1e-3}, ValueError, "lr must be positive"),
    ({"epochs": 0}, ValueError, "epochs must be positive"),
    ({"learning_rate": 1e-3}, TypeError, r"valid: \['epochs', 'lr'\]"),
    ({"n_classes": 3}, TypeError, "no hyper-parameter"),
])
def test_bad_config_is_rejected(tiny_original, sample_split, hparams, error, message):
    with pytest.raises(error, match=message):
        unlearn.run("finetune", tiny_original, sample_split, **hparams)


def test_a_model_of_another_task_is_refused(tiny_original, tiny_speaker_corpus):
    """The keyword model (10 outputs) on a speaker split (8 speakers): refused, not trained on
    the wrong labels."""
    split = data.forget_split(tiny_speaker_corpus, "sample", fraction=0.1, seed=0)
    with pytest.raises(ValueError, match="10 outputs but the split's corpus has 8 speaker"):
        unlearn.run("finetune", tiny_original, split)


def test_bad_batch_size_is_rejected(tiny_original, sample_split):
    with pytest.raises(ValueError, match="batch_size"):
        unlearn.run("finetune", tiny_original, sample_split, batch_size=0)


@pytest.mark.parametrize("name, hparams", [("neggrad_plus", {"alpha": 1.5}),
                                           ("salun", {"fraction": 0.0}),
                                           ("scrub", {"max_steps": 9})])
def test_bad_ranges_are_rejected(tiny_original, sample_split, name, hparams):
    with pytest.raises(ValueError, match=next(iter(hparams))):
        unlearn.run(name, tiny_original, sample_split, **hparams)


def test_divergence_returns_finite_weights_with_a_warning(tiny_original, sample_split):
    with pytest.warns(RuntimeWarning, match="last finite weights"):
        out = unlearn.run("gradient_ascent", tiny_original, sample_split, lr=1e30, epochs=3)
    assert out.diverged
    assert all(torch.isfinite(v).all() for v in out.model.state_dict().values()
               if v.is_floating_point())


def test_nan_weights_never_pass_silently(tiny_original, sample_split, monkeypatch):
    monkeypatch.setattr(unlearn.core, "METHODS", dict(unlearn.METHODS))

    @unlearn.register
    def poison(model, forget, retain, *, epochs: int = 1):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model

    with pytest.warns(RuntimeWarning, match="non-finite.*returned the ORIGINAL model"):
        out = unlearn.run("poison", tiny_original, sample_split)
    assert out.diverged
    assert _same(_state(out.model), _state(tiny_original.model))  # nothing finite but the start


def test_register_defaults_and_replace(tiny_original, sample_split, monkeypatch):
    monkeypatch.setattr(unlearn.core, "METHODS", dict(unlearn.METHODS))

    @unlearn.register
    def shrink(model, forget, retain, *, factor: float = 0.5, seed: int):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(factor)
        return model

    assert unlearn.defaults("shrink") == {"factor": 0.5}  # seed is injected, not tunable
    out = unlearn.run("shrink", tiny_original, sample_split, factor=0.25)
    assert out.hparams == {"factor": 0.25}
    weight = next(tiny_original.model.parameters())
    assert torch.allclose(next(out.model.parameters()), 0.25 * weight)

    @unlearn.register
    def shrink(model, forget, retain, *, factor: float = 0.9):  # noqa: F811 - a notebook re-run
        return model

    assert unlearn.defaults("shrink") == {"factor": 0.9}
    with pytest.warns(UserWarning, match="replacing the built-in"):
        @unlearn.register
        def finetune(model, forget, retain, *, epochs: int = 1):
            return model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unlearn.register(unlearn.METHODS["retrain"])  # the same function again: silent


def test_eu_k_retrains_only_the_top_and_keeps_the_trunk(tiny_original, sample_split):
    before = _state(tiny_original.model)
    out = unlearn.run("eu_k", tiny_original, sample_split, seed=0, k=2, epochs=2)
    after = _state(out.model)
    trunk, top = out.model.split(2)
    trunk_names = {n for n in after if n.startswith(("norm.", "features.0.", "features.1."))}
    assert trunk_names and all(torch.equal(before[n], after[n]) for n in trunk_names)
    assert all(not torch.equal(before[n], after[n]) for n in after
               if n not in trunk_names and after[n].is_floating_point())
    again = unlearn.run("eu_k", tiny_original, sample_split, seed=0, k=2, epochs=2)
    assert _same(after, _state(again.model))


@pytest.mark.parametrize("forget_rows", [[0, 3, 4], [], list(range(8))])
def test_bad_teacher_asks_each_clip_one_teacher(tiny_original, tiny_corpus, forget_rows):
    # by_rows runs each row through one network only, yet equals computing both on the batch
    # (eval mode: a clip's output is its own), also when every row, or none, is a forget row.
    from speechul.unlearn import _shared
    good = _shared.frozen_copy(tiny_original.model)
    bad = _shared.reinitialised(tiny_original.model, seed=1)
    x = tiny_corpus.x[:8]
    mask = torch.zeros(8, dtype=torch.bool)
    mask[forget_rows] = True
    seen = []
    good.register_forward_hook(lambda _m, args, _o: seen.append(("good", len(args[0]))))
    bad.register_forward_hook(lambda _m, args, _o: seen.append(("bad", len(args[0]))))
    with torch.no_grad():
        out = _shared.by_rows(mask, bad, good, x)
        seen_once = list(seen)
        expected = torch.where(mask[:, None], bad(x), good(x))
    torch.testing.assert_close(out, expected)
    assert sum(n for _, n in seen_once) == 8, seen_once  # eight rows, eight forward passes


def test_eu_k_names_what_it_needs(tiny_original, sample_split):
    with pytest.raises(ValueError, match="k must be between"):
        unlearn.run("eu_k", tiny_original, sample_split, k=9)
    plain = train.Trained(nn.Sequential(nn.Flatten(), nn.LazyLinear(10)), tiny_original.recipe)
    with pytest.raises(ValueError, match="split"):
        unlearn.run("eu_k", plain, sample_split)


def test_register_refuses_signatures_run_cannot_pass(monkeypatch):
    """Hyper-parameters that are not keyword-only registered fine and then reported 'valid: []';
    one named batch_size was taken by run() itself and recorded wrongly."""
    monkeypatch.setattr(unlearn.core, "METHODS", dict(unlearn.METHODS))

    def positional(model, forget, retain, epochs=1, lr=1e-3):
        return model

    def clashing(model, forget, retain, *, batch_size: int = 4):
        return model

    with pytest.raises(TypeError, match=r"put the hyper-parameters after a '\*'"):
        unlearn.register(positional)
    with pytest.raises(TypeError, match=r"\['batch_size'\] are run\(\)'s own arguments"):
        unlearn.register(clashing)
    with pytest.raises(TypeError, match="register a function with a name"):
        unlearn.register(lambda model, forget, retain: model)
    assert not {"positional", "clashing", "<lambda>"} & set(unlearn.METHODS)


def test_a_wrapped_or_bare_model_gets_a_message_not_an_attribute_error(tiny_original,
                                                                      sample_split):
    out = unlearn.run("finetune", tiny_original, sample_split, epochs=1)
    with pytest.raises(TypeError, match=r"original must be a su.train.Trained"):
        unlearn.run("finetune", tiny_original.model, sample_split)
    with pytest.raises(TypeError, match=r"evaluate's reference is a Unlearned; pass .*\.model"):
        metrics.evaluate(out.model, sample_split, reference=out)
    with pytest.raises(TypeError, match=r"evaluate's model is a Trained"):
        metrics.evaluate(tiny_original, sample_split)
