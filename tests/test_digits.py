"""The digits image baseline: a dataset loader like the speech ones, so the speech code (and the
one experiment runner) runs on it unchanged, and one Setting played on images gives the same
kind of rows as on speech."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from speechul import data, experiments, features, metrics, train

RECIPE = train.TrainConfig(epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def corpus() -> data.Corpus:
    return data.load("digits", device="cpu")


def test_corpus_shape_parts_and_labels(corpus):
    assert corpus.x.shape == (1797, 1, 32, 32) and corpus.x.dtype == torch.float32
    assert corpus.x.min() >= 0.0 and corpus.x.max() <= 1.0
    assert corpus.task == "digit" and corpus.classes == tuple("0123456789")
    sizes = [len(corpus.indices(p)) for p in data.PARTS]
    assert sum(sizes) == 1797 and abs(sizes[0] / 1797 - 0.6) < 0.01
    for part in data.PARTS:  # stratified: every digit in every part
        assert len(corpus.y[corpus.indices(part)].unique()) == 10


def test_parts_are_repeatable_and_seeded():
    a, b = data.load("digits", device="cpu"), data.load("digits", device="cpu")
    c = data.load("digits", device="cpu", seed=1)
    assert torch.equal(a.part, b.part) and a.key == b.key
    assert not torch.equal(a.part, c.part) and a.key != c.key


@pytest.mark.parametrize("kwargs, message", [
    ({"pixels": 8}, "pixels must be an int >= 16"),
    ({"size": "huge"}, "unknown size 'huge' for digits"),
    ({"task": "keyword"}, "no task 'keyword'"),
    ({"features": features.FeatureConfig(n_mels=64)}, "feature settings do not apply"),
])
def test_bad_arguments_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load("digits", device="cpu", **kwargs)


def test_every_size_is_the_whole_corpus(corpus):
    """A chapter's SIZE ("tiny") applies to every dataset of a setting; the digits are small."""
    tiny = data.load("digits", device="cpu", size="tiny")
    assert torch.equal(tiny.x, corpus.x) and tiny.key == corpus.key


def test_no_audio(corpus):
    with pytest.raises(ValueError, match="images"):
        corpus.audio(0)


def test_speech_model_and_metrics_run_unchanged(corpus):
    trained = train.original(corpus, RECIPE, seed=0)
    test_acc = metrics.accuracy(trained.model, corpus, corpus.indices("test"))
    assert test_acc > 0.8, f"the CNN should read digits after 2 epochs, got {test_acc:.3f}"
    split = data.forget_split(corpus, "class", classes=["3"])
    row = metrics.evaluate(trained.model, split)
    assert row["forget_acc"] > 0.5 and "kept_test_acc" in row


def test_one_setting_on_speech_and_images_gives_matching_rows(corpus):
    setting = experiments.Setting(task="keyword", kind="sample", fraction=0.1, size="tiny",
                                  methods=("finetune",), seeds=(0,), recipe=RECIPE,
                                  device="cpu", hparams={"finetune": {"epochs": 1}})
    on_images = dataclasses.replace(setting, dataset="digits", task="digit")
    images = experiments.run(on_images)
    speech = experiments.run_one(setting, "finetune", 0)
    assert list(zip(images["method"], images["seed"], strict=True)) == [("retrain", 0),
                                                                        ("finetune", 0)]
    assert set(images.columns) - {"variant"} == set(speech), "the tables must be comparable"
    assert (images["dataset"] == "digits").all() and (images["task"] == "digit").all()
    retrain = images[images.method == "retrain"].iloc[0]
    assert retrain["gap_mean"] == 0 and images["test_acc"].between(0, 1).all()
    n_forget = round(0.1 * len(corpus.indices("train")))
    split = data.forget_split(corpus, "sample", fraction=0.1, seed=0)
    assert len(split.forget) == n_forget
    again = experiments.run(dataclasses.replace(on_images, methods=()))  # Retrain: from the cache
    assert again["retrain_seconds"].iloc[0] == retrain["retrain_seconds"]
