"""Bad configuration values are refused where they are made, with errors that name the field and
say what to give instead, never trained on (a negative clipping norm once trained by gradient
ascent) nor failed deep inside; features are checked before they are cached, and a real corpus's
feature key follows its files' contents."""

from __future__ import annotations

import os

import pytest
import torch

from speechul import audiofiles, data, experiments, features, seed_everything, train


@pytest.mark.parametrize("field, value, message", [
    ("max_grad_norm", -1.0, "max_grad_norm must be a positive number or None"),
    ("max_grad_norm", 0, "max_grad_norm must be a positive number or None"),
    ("epochs", 1.5, "epochs must be a whole number"),
    ("epochs", True, "epochs must be a whole number"),
    ("batch_size", "64", "batch_size must be a whole number"),
    ("width", 0, r"width must be positive \(a whole number >= 1\)"),
    ("lr", True, "lr must be a positive number"),
    ("lr", float("nan"), "lr must be a positive number"),
    ("lr", "3e-3", "lr must be a positive number"),
    ("weight_decay", -0.1, "weight_decay must be a number >= 0"),
    ("label_smoothing", 1.0, r"label_smoothing must be a number in \[0, 1\)"),
    ("arch", "transformer", "unknown architecture"),
])
def test_a_bad_recipe_value_is_refused_by_name(field, value, message):
    with pytest.raises((TypeError, ValueError), match=message):
        train.TrainConfig(**{field: value})


def test_good_recipes_still_build():
    assert train.TrainConfig(epochs=3, lr=1, max_grad_norm=None).lr == 1
    assert train.TrainConfig(epochs=torch.tensor(3).item()).epochs == 3


@pytest.mark.parametrize("classes", [[True], [1.0], [None]])
def test_a_class_that_is_not_a_name_or_id_is_refused(tiny_corpus, classes):
    with pytest.raises(ValueError, match="a class name .* or an id"):
        data.forget_split(tiny_corpus, "class", classes=classes)


def test_a_setting_refuses_bool_classes_and_non_integer_seeds():
    with pytest.raises(ValueError, match="classes"):
        experiments.Setting(kind="class", classes=(True,))
    with pytest.raises(TypeError, match="seeds must be whole numbers"):
        experiments.Setting(seeds=("a",))
    with pytest.raises(TypeError, match="original_seed must be a whole number"):
        experiments.Setting(original_seed=0.5)


@pytest.mark.parametrize("seed", ["a", 1.5, True, None])
def test_a_bad_seed_is_named(seed):
    with pytest.raises(TypeError, match="seed must be a whole number"):
        seed_everything(seed)


def test_non_finite_features_are_refused_and_not_cached(tmp_path):
    def waves(indices: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(indices), 1600)
        out[0, 0] = float("nan")
        return out

    with pytest.raises(ValueError, match="non-finite"):
        features.logmel(waves, 4, "nan-corpus", cache=tmp_path)
    assert not list(tmp_path.rglob("*.pt")), "nothing was cached"


def test_features_of_the_wrong_clip_count_are_refused(tmp_path):
    def short(indices: torch.Tensor) -> torch.Tensor:
        return torch.zeros(max(len(indices) - 1, 0), 1600)  # a loader that drops a clip

    with pytest.raises(ValueError, match="3 clips.*4"):
        features.logmel(short, 4, "short-corpus", cache=tmp_path)
    assert not list(tmp_path.rglob("*.pt"))


def test_a_real_corpus_key_follows_its_files(tmp_path):
    """The same file names with other audio (re-extracted, edited) key other features."""
    (tmp_path / "a.wav").write_bytes(b"RIFF0000")
    rows = [("a.wav", 0, 1, 0.0, 1.0)]

    def key() -> str:
        return audiofiles.make_source("toy", tmp_path, rows, {"keyword": ["a"]},
                                   {"keyword": ("a",)}, [0], 1.0, {}).key

    before = key()
    assert key() == before
    (tmp_path / "a.wav").write_bytes(b"RIFF00000")  # other contents, other size
    assert key() != before
    changed = key()
    os.utime(tmp_path / "a.wav", ns=(1, 1))  # same size, other modification time
    assert key() != changed
