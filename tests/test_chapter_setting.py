"""A chapter refuses, at its top and with what to use instead, a setting it cannot run.

``su.chapter_setting.check`` is the one function every chapter calls right after its parameters
cell. These tests give it the settings issue 32 found breaking chapters deep inside (a keyword
chapter on LibriSpeech, Speech Commands' official parts for the speaker task, a validation
speaker to forget, a speaker with too few clips) on fixture trees of the real layouts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_datasets import VAL_SPEAKER, make_librispeech, make_speech_commands

from speechul import chapter_setting as cs
from speechul import train

PER_SPEAKER = {"parts": "per_speaker"}


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trees")
    make_speech_commands(root)
    make_librispeech(root, speakers=(19, 26, 103), utterances=10)
    make_librispeech(root / "two", speakers=(7,), utterances=2)  # a speaker with 2 clips
    return root


def test_the_embedded_default_passes_unchanged():
    setting = cs.check("Chapter 2", "embedded", {}, "cnn", tasks=("keyword", "speaker"))
    assert setting.data_options == {}
    assert setting.recipe(epochs=12) == train.TrainConfig(epochs=12)


def test_a_keyword_chapter_on_a_speaker_corpus_says_what_to_use(trees):
    with pytest.raises(cs.SettingRefused) as err:
        cs.check("Chapter 3", "librispeech", {"root": str(trees)}, tasks=("keyword",))
    message = str(err.value)
    assert "Chapter 3 cannot run this setting" in message
    assert "needs the keyword task" in message and "has only ['speaker']" in message
    assert "DATASET='speechcommands'" in message and "book/params/librispeech.yaml" in message
    # the speaker task on the same corpus is fine
    cs.check("Chapter 4", "librispeech", {"root": str(trees)}, tasks=("speaker",))


def test_official_parts_are_refused_for_a_speaker_task(trees):
    options = {"root": str(trees)}
    for kwargs in ({"tasks": ("keyword", "speaker")}, {"forgets_speakers": True}):
        with pytest.raises(cs.SettingRefused, match="parts'\\] = 'per_speaker'"):
            cs.check("Chapter 5", "speechcommands", options, **kwargs)
    cs.check("Chapter 3", "speechcommands", options, tasks=("keyword",))  # keywords only: fine
    cs.check("Chapter 5", "speechcommands", {**options, **PER_SPEAKER},
             tasks=("keyword", "speaker"))


def test_a_forgotten_speaker_needs_training_clips(trees):
    options = {"root": str(trees)}  # official parts: the validation speaker has no train clips
    with pytest.raises(cs.SettingRefused, match=f"'{VAL_SPEAKER}'.* train 0") as err:
        cs.check("Chapter 6", "speechcommands", options, tasks=("keyword",),
                 speakers=[VAL_SPEAKER])
    assert "per-speaker parts may help" in str(err.value), "official parts: no speaker qualifies"
    cs.check("Chapter 6", "speechcommands", {**options, **PER_SPEAKER}, tasks=("keyword",),
             speakers=[VAL_SPEAKER], forgets_speakers=True)


def test_a_speaker_with_too_few_clips_or_unknown_is_refused(trees):
    with pytest.raises(cs.SettingRefused, match="needs clips in every part"):
        cs.check("Chapter 5", "librispeech", {"root": str(trees / "two")}, tasks=("speaker",),
                 speakers=["7"])
    with pytest.raises(cs.SettingRefused, match="speaker 99 is not in 'librispeech'"):
        cs.check("Chapter 5", "librispeech", {"root": str(trees)}, tasks=("speaker",),
                 speakers=[99])
    cs.check("Chapter 5", "librispeech", {"root": str(trees)}, tasks=("speaker",),
             speakers=[0, "26"])


def test_options_a_corpus_does_not_take_are_named(trees):
    with pytest.raises(cs.SettingRefused, match=r"\['root'\], which 'embedded' does not take"):
        cs.check("Chapter 2", "embedded", {"root": str(trees)})
    with pytest.raises(cs.SettingRefused, match=r"\['part'\], which 'speechcommands'"):
        cs.check("Chapter 2", "speechcommands", {"part": "per_speaker"})
    with pytest.raises(cs.SettingRefused, match="unknown DATASET"):
        cs.check("Chapter 2", "speech_commands")
    with pytest.raises(cs.SettingRefused, match="does not pass DATA_OPTIONS.*would be ignored"):
        cs.check("Chapter 4", "speechcommands", {"download": True}, uses_data_options=False)
    cs.check("Chapter 4", "speechcommands", {}, uses_data_options=False)
    with pytest.raises(cs.SettingRefused, match="it is about 'embedded'"):
        cs.check("Chapter 1", "speechcommands", corpora=("embedded",))


def test_arch_sets_features_and_recipe(monkeypatch):
    setting = cs.check("Chapter 2", "embedded", {}, "wav2vec2")
    assert setting.data_options == {"features": {"kind": "encoder", "encoder": "WAV2VEC2_BASE"}}
    assert setting.recipe(epochs=3) == train.TrainConfig(arch="head", width=768, epochs=3)
    with pytest.raises(cs.SettingRefused, match="both choose the features"):
        cs.check("Chapter 2", "embedded", {"features": {"kind": "waveform"}}, "hubert")
    with pytest.raises(cs.SettingRefused, match="builds the recipe for \\['cnn'\\]"):
        cs.check("Chapter 4", "embedded", {}, "hubert", archs=("cnn",))
    with pytest.raises(cs.SettingRefused, match="unknown ARCH"):
        cs.check("Chapter 2", "embedded", {}, "wav2vec")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(cs.SettingRefused, match="needs a GPU.*ARCH='hubert'"):
        cs.check("Chapter 2", "embedded", {}, "hubert-ft")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    tuned = cs.check("Chapter 2", "embedded", {}, "hubert-ft")
    assert tuned.recipe().arch == "hubert-ft" and tuned.recipe().lr == 5e-5
    assert tuned.data_options["features"] == {"kind": "waveform"}


def test_a_forgotten_word_needs_clips_in_every_part(trees):
    options = {"root": str(trees)}  # official parts: every word has clips in every part
    cs.check("Chapter 5", "speechcommands", options, keywords=["yes"])
    with pytest.raises(cs.SettingRefused, match="keyword 'maybe' is not in"):
        cs.check("Chapter 5", "speechcommands", options, keywords=["maybe"])
    # the fixture's per-speaker parts: 72 clips, 10 % test, so some word has no test clip
    with pytest.raises(cs.SettingRefused, match="keyword .* test 0 clips"):
        cs.check("Chapter 5", "speechcommands", {**options, **PER_SPEAKER},
                 tasks=("keyword", "speaker"), keywords=list(range(12)))
