"""Corpus parts, batches and every kind of forget set, with their error messages."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from speechul import _runtime, data


def test_parts_are_disjoint_and_cover_everything(tiny_corpus):
    parts = [tiny_corpus.indices(p) for p in data.PARTS]
    joined = torch.cat(parts)
    assert joined.numel() == len(tiny_corpus) == joined.unique().numel()
    assert tiny_corpus.x.shape[1:] == (1, 40, 101)
    assert torch.isfinite(tiny_corpus.x).all()


def test_tasks_share_features(tiny_corpus, tiny_speaker_corpus):
    assert tiny_speaker_corpus.x is tiny_corpus.x
    assert tiny_corpus.n_classes == 10 and tiny_speaker_corpus.n_classes == 8
    assert torch.equal(tiny_speaker_corpus.y, tiny_corpus.speaker)
    with pytest.raises(ValueError, match="no task 'gender'"):
        tiny_corpus.with_task("gender")


def test_audio_returns_the_clip(tiny_corpus):
    wave = tiny_corpus.audio(3)
    assert wave.shape == (16000,) and wave.dtype.name == "float32"
    assert 0 < abs(wave).max() <= 1


def test_reprs_are_one_line_summaries(tiny_corpus):
    """A notebook echoes these values: a line that says what they hold, not every label."""
    split = data.forget_split(tiny_corpus.with_task("speaker"), "class", classes=[0])
    lines = [repr(tiny_corpus.source), repr(tiny_corpus), repr(split)]
    assert all("\n" not in line and "tensor(" not in line for line in lines), lines
    train, val, test = (len(tiny_corpus.indices(p)) for p in data.PARTS)
    assert f"train/val/test {train}/{val}/{test}" in lines[1]
    assert f"x={tuple(tiny_corpus.x.shape)}" in lines[1] and "task='keyword'" in lines[1]
    assert f"forget={len(split.forget)}, retain={len(split.retain)}" in lines[2]
    assert f"targets=[{split.targets[0]!r}]" in lines[2]


def test_sample_split(tiny_corpus):
    split = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    train = tiny_corpus.indices("train")
    assert len(split.forget) == round(0.1 * len(train))
    assert torch.equal(torch.cat([split.forget, split.retain]).sort().values, train.sort().values)
    same = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)
    other = data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=1)
    assert torch.equal(split.forget, same.forget) and not torch.equal(split.forget, other.forget)
    explicit = data.forget_split(tiny_corpus, "sample", indices=train[:5].tolist())
    assert torch.equal(explicit.forget, train[:5].sort().values)


def test_class_split(tiny_corpus):
    split = data.forget_split(tiny_corpus, "class", classes=["yes", "stop"])
    y = tiny_corpus.y
    assert split.targets == ("yes", "stop")
    assert set(y[split.forget].tolist()) == {0, 8}
    assert not torch.isin(y[split.retain], torch.tensor([0, 8])).any()
    assert set(y[split.forgotten_test].tolist()) == {0, 8}
    assert len(split.forgotten_test) + len(split.kept_test) == len(split.test)
    one = data.forget_split(tiny_corpus, "class", classes="yes")  # not the letters y, e, s
    assert one.targets == ("yes",) and torch.equal(one.forget, data.forget_split(
        tiny_corpus, "class", classes=["yes"]).forget)


def test_speaker_split_in_keyword_model(tiny_corpus):
    name = tiny_corpus.names("speaker")[2]
    split = data.forget_split(tiny_corpus, "speaker", speakers=[name])
    assert (tiny_corpus.speaker[split.forget] == 2).all()
    assert len(set(tiny_corpus.y[split.forget].tolist())) == 10  # every keyword of that speaker
    assert (tiny_corpus.speaker[split.forgotten_test] == 2).all()


def test_batches_cover_subset_once_per_pass(tiny_corpus):
    split = data.forget_split(tiny_corpus, "sample", fraction=0.2)
    batches = split.batches("forget", batch_size=7, seed=3)
    seen = torch.cat([y for _, y in batches])
    assert len(seen) == batches.size == len(split.forget) and len(batches) == -(-batches.size // 7)
    first = [x for x, _ in split.batches("forget", batch_size=7, seed=3)]
    again = [x for x, _ in split.batches("forget", batch_size=7, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="sample", fraction=0.0), r"fraction must be in \(0, 1\)"),
    (dict(kind="sample", fraction=1.2), r"fraction must be in \(0, 1\)"),
    (dict(kind="sample"), "exactly one of fraction= or indices="),
    (dict(kind="sample", indices=[10**6]), "forget indices not in the training set"),
    (dict(kind="class", classes=["maybe"]), "unknown keyword 'maybe'"),
    (dict(kind="class", classes=[]), "at least one keyword"),
    (dict(kind="class"), "needs classes="),
    (dict(kind="speaker", speakers=["nobody"]), "unknown speaker 'nobody'"),
    (dict(kind="everything"), "unknown forget kind"),
    (dict(kind="sample", indices=[]), "forget request is empty"),
    (dict(kind="sample", indices=[0.9, 2.7]), "integer corpus positions"),
    (dict(kind="sample", indices=torch.tensor([True, True, False])), "boolean mask"),
    (dict(kind="class", classes=list(range(10))), "retain set is empty"),
])
def test_bad_requests_name_the_problem(tiny_corpus, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.forget_split(tiny_corpus, **kwargs)


def test_test_clip_is_not_forgettable(tiny_corpus):
    test_clip = int(tiny_corpus.indices("test")[0])
    with pytest.raises(ValueError, match=str(test_clip)):
        data.forget_split(tiny_corpus, "sample", indices=[test_clip])


def test_unknown_dataset_lists_known():
    with pytest.raises(ValueError, match="known: .*embedded"):
        data.load("timit")


@pytest.mark.parametrize("checkout", [True, False])
def test_the_default_cache_is_the_checkouts_or_the_users(checkout, tmp_path, monkeypatch):
    """In a source checkout the cache sits in its data/ folder; installed, in ~/.cache/speechul,
    even when another package left a data/ folder in site-packages beside speechul."""
    root = tmp_path / "site"
    (root / "speechul").mkdir(parents=True)
    (root / "data").mkdir()
    if checkout:
        (root / "pyproject.toml").write_text("[project]\nname = 'speechul'\n")
    shutil.copy(_runtime.__file__, root / "speechul" / "_runtime.py")
    spec = importlib.util.spec_from_file_location("runtime_copy", root / "speechul" / "_runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("SPEECHUL_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = root / "data" / "cache" if checkout else tmp_path / "home" / ".cache" / "speechul"
    assert module.cache_dir() == expected and expected.is_dir()
    assert Path(module.cache_dir(tmp_path / "given")) == tmp_path / "given"


def test_a_loader_without_the_grid_arguments_is_named(monkeypatch):
    """A user's dataset loader must take size= and cache= (grids pass both); without them the
    command line printed a TypeError traceback from deep inside the grid."""
    def mine(cache=None):
        raise AssertionError("never called")

    monkeypatch.setitem(data.LOADERS, "mine", mine)
    with pytest.raises(ValueError, match=r"'mine': its loader takes no \['size'\]"):
        data.load("mine", size="tiny")


def test_in_every_part_lists_the_classes_a_request_can_forget_and_score():
    corpus = data.load("embedded", size="tiny", device="cpu")
    voices = corpus.with_task("speaker")
    assert voices.in_every_part("speaker") == voices.names("speaker")  # the corpus is balanced
    first = voices.names("speaker")[0]
    gone = voices.speaker.eq(0) & voices.part.eq(2)  # the first speaker's test clips
    labels = {**voices.labels, "part": torch.where(gone, 1, voices.part)}
    moved = dataclasses.replace(voices, labels=labels)
    assert first not in moved.in_every_part("speaker")
    assert moved.in_every_part("speaker") == voices.names("speaker")[1:]
    assert all(not n.startswith("_") for n in corpus.in_every_part("keyword"))
