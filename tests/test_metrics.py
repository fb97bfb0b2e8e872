"""Metrics against hand-computed values, on a "model" that returns a fixed logit row per clip."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from speechul import data, metrics


class FixedLogits(nn.Module):
    """Clip i (its feature tensor holds the number i) gets row i of ``table`` as logits."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.flatten().long()]


def make_corpus(y: list[int], part: list[int], n_classes: int = 2) -> data.Corpus:
    n = len(y)
    labels = {"keyword": torch.tensor(y), "speaker": torch.zeros(n, dtype=torch.long)}
    source = data.Source(name="fixed", key="fixed", labels=labels,
                         names={"keyword": tuple(f"k{i}" for i in range(n_classes)),
                                "speaker": ("s0",)},
                         part=torch.tensor(part), load_waves=lambda idx: torch.zeros(len(idx), 1))
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1)
    return data.Corpus(source=source, x=x, task="keyword", labels={**labels, "part": source.part})


def idx(*items: int) -> torch.Tensor:
    return torch.tensor(items)


def test_predict_chunks_and_restores_mode():
    model = FixedLogits([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    x = torch.arange(3.0).reshape(3, 1, 1, 1)
    model.train()
    out = metrics.predict(model, x, chunk=2)
    assert torch.equal(out, model.table.detach()) and not out.requires_grad
    assert model.training, "predict must restore training mode"


def test_accuracy_confusion_and_per_class():
    # labels 0 0 1 1 ; predictions 0 1 1 1 (arg-max of each row)
    corpus = make_corpus([0, 0, 1, 1], [0, 0, 0, 0])
    model = FixedLogits([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [-1.0, 1.0]])
    assert metrics.accuracy(model, corpus, idx(0, 1, 2, 3)) == pytest.approx(0.75)
    assert metrics.accuracy(model, corpus, idx(1)) == 0.0
    assert math.isnan(metrics.accuracy(model, corpus, idx()))
    assert np.array_equal(metrics.confusion_matrix(model, corpus, idx(0, 1, 2, 3)),
                          np.array([[1, 1], [0, 2]]))
    per_class = metrics.per_class_accuracy(model, corpus, idx(0, 1))
    assert per_class[0] == pytest.approx(0.5) and np.isnan(per_class[1])


def test_per_sample_loss_is_cross_entropy():
    corpus = make_corpus([0, 1], [0, 0])
    model = FixedLogits([[0.0, 0.0], [0.0, math.log(3.0)]])
    loss = metrics.per_sample_loss(model, corpus, idx(0, 1))
    # uniform -> log 2; p(true) = 3/4 -> log(4/3)
    assert loss.tolist() == pytest.approx([math.log(2.0), math.log(4.0 / 3.0)], abs=1e-6)


def test_loss_attack_auc():
    # members 0,1 have lower loss than non-members 2,3 -> AUC 1; swapped -> 0; equal -> 0.5
    corpus = make_corpus([0, 0, 0, 0], [0, 0, 2, 2])
    model = FixedLogits([[5.0, 0.0], [4.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert metrics.mia_loss_auc(model, corpus, idx(0, 1), idx(2, 3)) == pytest.approx(1.0)
    assert metrics.mia_loss_auc(model, corpus, idx(2, 3), idx(0, 1)) == pytest.approx(0.0)
    # one member above and one below a single non-member: 1 of 2 pairs ordered -> 0.5
    assert metrics.mia_loss_auc(model, corpus, idx(0, 3), idx(2)) == pytest.approx(0.5)


def _js_bits(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    kl = lambda a: float(np.sum(a * np.log2(a / m)))  # noqa: E731
    return 0.5 * kl(p) + 0.5 * kl(q)


def test_js_divergence_and_zrf():
    corpus = make_corpus([0, 1], [0, 0])
    a = FixedLogits([[math.log(3.0), 0.0], [0.0, 0.0]])  # (3/4, 1/4) and uniform
    b = FixedLogits([[0.0, math.log(3.0)], [0.0, 0.0]])  # (1/4, 3/4) and uniform
    expected = _js_bits(np.array([0.75, 0.25]), np.array([0.25, 0.75])) / 2  # 2nd clip adds 0
    assert metrics.js_divergence(a, b, corpus, idx(0, 1)) == pytest.approx(expected, abs=1e-6)
    assert metrics.js_divergence(a, a, corpus, idx(0, 1)) == pytest.approx(0.0, abs=1e-7)
    assert metrics.zrf(a, b, corpus, idx(0, 1)) == pytest.approx(1 - expected, abs=1e-6)
    far = FixedLogits([[-50.0, 50.0], [50.0, -50.0]])
    near = FixedLogits([[50.0, -50.0], [-50.0, 50.0]])
    assert metrics.js_divergence(far, near, corpus, idx(0, 1)) == pytest.approx(1.0, abs=1e-5)


def _attack_corpus():
    """12 retain clips (confident), 12 test clips (unsure); clips 0-3 form the forget set."""
    confident, unsure = [6.0, 0.0], [0.3, 0.0]
    n_train, n_test = 16, 12
    corpus = make_corpus([0] * (n_train + n_test), [0] * n_train + [2] * n_test)
    return corpus, confident, unsure, n_train, n_test


@pytest.mark.parametrize("forget_like", ["test", "retain"])
def test_mia_classifier_efficacy(forget_like):
    corpus, confident, unsure, n_train, n_test = _attack_corpus()
    jitter = lambda row, i: [row[0] + 0.01 * i, row[1]]  # noqa: E731 - distinct points
    forget_row = unsure if forget_like == "test" else confident
    table = ([jitter(forget_row, i) for i in range(4)]
             + [jitter(confident, i) for i in range(4, n_train)]
             + [jitter(unsure, i) for i in range(n_test)])
    split = data.forget_split(corpus, "sample", indices=[0, 1, 2, 3])
    efficacy = metrics.mia_classifier(FixedLogits(table), split)
    # forget clips that look like test clips are all called non-members, and vice versa
    assert efficacy == (1.0 if forget_like == "test" else 0.0)


def test_evaluate_rows_and_gaps():
    y = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    part = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    corpus = make_corpus(y, part)
    right = [[2.0, 0.0] if label == 0 else [0.0, 2.0] for label in y]
    wrong = [row[::-1] for row in right]
    good, bad = FixedLogits(right), FixedLogits(wrong)
    sample = data.forget_split(corpus, "sample", indices=[0, 1])
    row = metrics.evaluate(good, sample, reference=bad)
    assert {"forget_acc", "retain_acc", "val_acc", "test_acc", "mia_auc",
            "mia_efficacy"} <= set(row) and "kept_test_acc" not in row
    assert row["forget_acc"] == 1.0 and row["test_acc"] == 1.0
    assert row["gap_forget_acc"] == 1.0 and row["gap_retain_acc"] == 1.0
    expected_mean = np.mean([row[f"gap_{m}"] for m in metrics.GAP_METRICS])
    assert row["gap_mean"] == pytest.approx(expected_mean)
    p = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    assert row["js_to_reference"] == pytest.approx(_js_bits(p, p[::-1]), abs=1e-6)
    same = metrics.evaluate(good, sample, reference=metrics.evaluate(good, sample))
    assert same["gap_mean"] == 0.0 and "js_to_reference" not in same

    klass = data.forget_split(corpus, "class", classes=["k0"])
    row = metrics.evaluate(bad, klass, random_model=good)
    assert row["forgotten_test_acc"] == 0.0 and row["kept_test_acc"] == 0.0
    assert row["test_acc"] == 0.0 and 0.0 <= row["zrf"] <= 1.0


def test_summarize_mean_std_over_seeds():
    rows = [{"method": "a", "seed": 0, "forget_acc": 0.2, "note": "x"},
            {"method": "a", "seed": 1, "forget_acc": 0.4, "note": "y"},
            {"method": "b", "seed": 0, "forget_acc": 1.0, "note": "z"}]
    table = metrics.summarize(rows)
    assert list(table.columns) == ["method", "metric", "mean", "std", "n"]
    a = table[(table.method == "a") & (table.metric == "forget_acc")].iloc[0]
    assert a["mean"] == pytest.approx(0.3) and a["std"] == pytest.approx(math.sqrt(0.02))
    assert a["n"] == 2 and set(table.metric) == {"forget_acc"}
    b = table[table.method == "b"].iloc[0]
    assert np.isnan(b["std"])
    assert metrics.summarize(pd.DataFrame(rows), by=("method", "seed")).shape[0] == 3
    with pytest.raises(ValueError, match="cannot group"):
        metrics.summarize(rows, by=("setting",))
