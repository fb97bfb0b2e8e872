"""One run of a grid loads (and checksums) its original model once, not once for itself and
once more for its Retrain reference. Training, unlearning and scoring are stubbed: only the
loads are counted."""

from __future__ import annotations

import torch

from speechul import data, experiments, metrics, train, unlearn

RECIPE = train.TrainConfig(epochs=1)


def _corpus() -> data.Corpus:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 16, 16, generator=g)
    y = torch.arange(30) % 3
    part = torch.tensor([0] * 20 + [1] * 5 + [2] * 5)
    source = data.Source(name="fake", key="fake", labels={"keyword": y},
                         names={"keyword": ("a", "b", "c")}, part=part,
                         load_waves=lambda idx: torch.zeros(len(idx), 1), inputs=x)
    return data.Corpus(source=source, x=x, task="keyword", labels={"keyword": y, "part": part})


def _stubbed(monkeypatch, tmp_path) -> list[int]:
    """Stub the corpus, training, unlearning and scoring; return the list the loads fill."""
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path))
    corpus, loads = _corpus(), []

    def original(corpus: data.Corpus, recipe: train.TrainConfig, seed: int) -> train.Trained:
        loads.append(seed)
        model = train.fresh_model(recipe, corpus.n_classes, corpus.device, seed)
        return train.Trained(model=model, recipe=recipe, key=f"original-{seed}")

    def run(method: str, original: train.Trained, split: data.Split, **_: object):
        return unlearn.Unlearned(model=original.model, method=method, seconds=1.0, cost=1.0)

    monkeypatch.setattr(experiments, "corpus_of", lambda setting: corpus)
    monkeypatch.setattr(train, "original", original)
    monkeypatch.setattr(unlearn, "run", run)
    monkeypatch.setattr(metrics, "evaluate", lambda *a, **k: {"gap_mean": 0.0})
    monkeypatch.setattr(metrics, "js_divergence", lambda *a, **k: 0.0)
    return loads


def test_a_run_loads_its_original_once(monkeypatch, tmp_path):
    loads = _stubbed(monkeypatch, tmp_path)
    setting = experiments.Setting(size="tiny", methods=("finetune",), recipe=RECIPE,
                                  device="cpu")
    row = experiments.run_one(setting, "finetune", 0)
    assert row["method"] == "finetune" and loads == [0], f"the original was loaded {len(loads)}x"
    experiments.run_one(setting, "retrain", 0)  # Retrain now from its cache: still one load
    assert loads == [0, 0]


def test_reference_alone_loads_the_original_itself(monkeypatch, tmp_path):
    loads = _stubbed(monkeypatch, tmp_path)
    setting = experiments.Setting(size="tiny", recipe=RECIPE, device="cpu")
    assert experiments.reference(setting, 1).cost == 1.0 and loads == [0]
