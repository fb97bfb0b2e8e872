"""The work counter (speechul.cost): FLOPs that agree with torch's own counter, on every path."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

import speechul as su
from speechul import cost, train

RECIPE = train.TrainConfig(epochs=1)


def _step(model, corpus, params=None):
    batches = su.data.Batches(corpus.x, corpus.y, corpus.indices("train")[:128], 64)
    opt = torch.optim.Adam(params if params is not None else model.parameters())
    train.one_epoch(model, batches, train.cross_entropy, opt)


def test_counts_agree_with_torch_flop_counter_on_a_training_step(tiny_corpus):
    model = train.fresh_model(RECIPE, tiny_corpus.n_classes, tiny_corpus.device, 0)
    with FlopCounterMode(display=False) as reference, cost.counting() as work:
        _step(model, tiny_corpus)
    assert work.total == reference.get_total_flops() > 0
    # The input batch norm trains, so every layer's input needs a gradient: backward = 2 x fwd.
    assert work.backward == 2 * work.forward


def test_a_frozen_trunk_costs_only_its_forward(tiny_corpus):
    """EU-k style: only the top trains, so backward runs through the top alone."""
    model = train.fresh_model(RECIPE, tiny_corpus.n_classes, tiny_corpus.device, 0)
    trunk, top = model.split(1)
    for p in trunk.parameters():
        p.requires_grad_(False)
    with FlopCounterMode(display=False) as reference, cost.counting() as frozen:
        _step(model, tiny_corpus, top.parameters())
    with cost.counting() as full:
        _step(train.fresh_model(RECIPE, tiny_corpus.n_classes, tiny_corpus.device, 0),
              tiny_corpus)
    assert frozen.total == reference.get_total_flops()
    assert frozen.forward == full.forward and frozen.backward < full.backward / 3


def test_no_grad_passes_count_forward_only_and_uncounted_blocks_not_at_all(tiny_corpus):
    model = train.fresh_model(RECIPE, tiny_corpus.n_classes, tiny_corpus.device, 0).eval()
    x = tiny_corpus.x[:8]
    with cost.counting() as work, torch.no_grad():
        model(x)
        with cost.uncounted():
            model(x)
    with FlopCounterMode(display=False) as reference, torch.no_grad():
        model(x)
    assert work.backward == 0 and work.forward == reference.get_total_flops() > 0


def test_the_hook_is_gone_after_the_block_even_on_error(tiny_corpus):
    model = train.fresh_model(RECIPE, tiny_corpus.n_classes, tiny_corpus.device, 0).eval()
    try:
        with cost.counting() as work:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with torch.no_grad():
        model(tiny_corpus.x[:4])
    assert work.total == 0


def test_work_does_not_depend_on_threads_or_precision(tiny_corpus, monkeypatch):
    """The point of counting work: the same run costs the same on any machine."""
    counts = []
    for threads, bf16 in ((1, "0"), (2, "0"), (2, "1")):
        monkeypatch.setenv("SPEECHUL_CPU_BF16", bf16)
        with su.runners.threads(threads), cost.counting() as work:
            _step(train.fresh_model(RECIPE, tiny_corpus.n_classes, tiny_corpus.device, 0),
                  tiny_corpus)
        counts.append(work.total)
    assert len(set(counts)) == 1


def test_unlearn_run_reports_cost_and_retrain_is_counted_the_same_way(tiny_corpus):
    original = train.original(tiny_corpus, train.TrainConfig(epochs=2))
    split = su.data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    retrain = su.unlearn.run("retrain", original, split, seed=0)
    finetune = su.unlearn.run("finetune", original, split, seed=0, epochs=1)
    # One epoch on the same retain batches, the same network: exactly half of two epochs.
    assert finetune.cost == retrain.cost / 2 > 0
