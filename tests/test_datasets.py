"""Real-corpus loaders on tiny fixture trees that copy each dataset's real layout and naming.

Nothing is downloaded: every tree is written here with soundfile (tones + noise), then loaded
through ``su.data.load`` exactly as a student would load the real corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechul import audiofiles, data, datasets
from speechul.features import FeatureConfig

SR = 16_000
WORDS = (*datasets.SUPERB_KEYWORDS, "bed", "cat")  # two "unknown" words
SC_SPEAKERS = ("0a1b2c3d", "1b2c3d4e", "2c3d4e5f", "3d4e5f60", "4e5f6071", "5f607182")
VAL_SPEAKER, TEST_SPEAKER = SC_SPEAKERS[4], SC_SPEAKERS[5]
WAVEFORM = FeatureConfig(kind="waveform")


def _tone(seconds: float, freq: float, seed: int, sr: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    noise = np.random.default_rng(seed).normal(0, 0.05, len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def make_speech_commands(root: Path, version: str = "v0.01") -> Path:
    """root/SpeechCommands/speech_commands_<v>/<word>/<speaker>_nohash_<n>.wav + lists + noise."""
    folder = root / "SpeechCommands" / f"speech_commands_{version}"
    lists: dict[str, list[str]] = {VAL_SPEAKER: [], TEST_SPEAKER: []}
    for w, word in enumerate(WORDS):
        (folder / word).mkdir(parents=True)
        for s, speaker in enumerate(SC_SPEAKERS):
            rel = f"{word}/{speaker}_nohash_0.wav"
            seconds = 0.75 if s == 0 else 1.0  # speaker 0's clips are short: padded
            sf.write(folder / rel, _tone(seconds, 200 + 60 * w + 7 * s, seed=w * 10 + s), SR)
            lists.get(speaker, []).append(rel)
    (folder / "validation_list.txt").write_text("\n".join(lists[VAL_SPEAKER]) + "\n")
    (folder / "testing_list.txt").write_text("\n".join(lists[TEST_SPEAKER]) + "\n")
    (folder / "_background_noise_").mkdir()
    for i, name in enumerate(("white_noise.wav", "running_tap.wav")):
        sf.write(folder / "_background_noise_" / name, _tone(12.0, 50 + 30 * i, seed=99 + i), SR)
    return folder


def make_librispeech(root: Path, speakers: tuple[int, ...] = (19, 26, 103),
                     utterances: int = 10) -> Path:
    """root/LibriSpeech/train-clean-100/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac + .trans.txt."""
    for s, spk in enumerate(speakers):
        chapter = 100 + s
        folder = root / "LibriSpeech" / "train-clean-100" / str(spk) / str(chapter)
        folder.mkdir(parents=True)
        lines = []
        for u in range(utterances):
            name = f"{spk}-{chapter}-{u:04d}"
            seconds = 0.5 if u == 0 else 1.5 + 0.25 * u  # utterance 0 is shorter than a crop
            sf.write(folder / f"{name}.flac", _tone(seconds, 150 + 40 * s, seed=1000 * s + u), SR)
            lines.append(f"{name} SOME WORDS {u}")
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root / "LibriSpeech"


def make_voxceleb1(root: Path, speakers: int = 3) -> list[tuple[int, str]]:
    """root/wav/<id>/<video>/<nnnnn>.wav + root/iden_split.txt; returns the split lines."""
    lines = []
    for s in range(speakers):
        sid = f"id{10001 + s}"
        for v, video in enumerate(("1zcIwhmdeo4", "7gWzIy6yIIk")):
            for u in range(1, 4):
                rel = f"{sid}/{video}/{u:05d}.wav"
                (root / "wav" / rel).parent.mkdir(parents=True, exist_ok=True)
                wave = _tone(2.0, 120 + 50 * s, seed=100 * s + 10 * v + u)
                sf.write(root / "wav" / rel, wave, SR)
                lines.append((1 if v == 0 else 2 if u == 1 else 3, rel))
    (root / "iden_split.txt").write_text("".join(f"{p} {rel}\n" for p, rel in lines))
    return lines


@pytest.fixture(scope="module")
def sc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sc")
    make_speech_commands(root)
    return root


@pytest.fixture(scope="module")
def sc_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sc-cache")


@pytest.fixture(scope="module")
def superb(sc_root: Path, sc_cache: Path) -> data.Corpus:
    return data.load("speechcommands", root=sc_root, cache=sc_cache, device="cpu")


# --------------------------------------------------------------------------- Speech Commands


def test_superb_classes_labels_and_parts(superb: data.Corpus) -> None:
    names = superb.names("keyword")
    assert names == (*datasets.SUPERB_KEYWORDS, "_unknown_", "_silence_")
    label = [names[i] for i in superb.y.tolist()]
    speaker = [superb.names("speaker")[i] for i in superb.speaker.tolist()]
    part = superb.part.tolist()
    words = [w for w, s in zip(label, speaker, strict=True) if s != datasets.BACKGROUND]
    assert words.count("_unknown_") == 2 * len(SC_SPEAKERS)  # bed + cat of every speaker
    assert all(w != "_silence_" for w in words)
    for s, p in zip(speaker, part, strict=True):
        if s == VAL_SPEAKER:
            assert p == 1, "validation_list.txt speakers must be validation clips"
        elif s == TEST_SPEAKER:
            assert p == 2, "testing_list.txt speakers must be test clips"
        elif s != datasets.BACKGROUND:
            assert p == 0
    # Silence is a balanced class: as many clips per part as an average keyword (4 / 1 / 1).
    silence = [p for w, p in zip(label, part, strict=True) if w == "_silence_"]
    assert [silence.count(p) for p in range(3)] == [4, 1, 1]
    assert superb.x.shape == (len(WORDS) * len(SC_SPEAKERS) + 6, 1, 40, 101)
    assert torch.isfinite(superb.x).all()


def test_speaker_labels_come_from_file_names(superb: data.Corpus) -> None:
    assert set(superb.names("speaker")) == {*SC_SPEAKERS, datasets.BACKGROUND}
    src = superb.source
    counts = torch.bincount(superb.speaker, minlength=len(superb.names("speaker")))
    for name in SC_SPEAKERS:
        assert counts[superb.names("speaker").index(name)] == len(WORDS)
    assert src.sample_rate == 16_000 and len(src.part) == len(superb)


def test_waveforms_padded_and_silence_cut_from_noise(sc_root: Path, sc_cache: Path) -> None:
    corpus = data.load("speechcommands", root=sc_root, cache=sc_cache, device="cpu",
                       features=WAVEFORM)
    assert corpus.x.shape[1:] == (1, 16_000)
    folder = sc_root / "SpeechCommands" / "speech_commands_v0.01"
    speakers, label = corpus.names("speaker"), corpus.names("keyword")
    short = [i for i in range(len(corpus)) if speakers[corpus.speaker[i]] == SC_SPEAKERS[0]
             and label[corpus.y[i]] == "yes"][0]
    expected, _ = sf.read(folder / "yes" / f"{SC_SPEAKERS[0]}_nohash_0.wav", dtype="float32")
    wave = corpus.x[short, 0].numpy()
    np.testing.assert_allclose(wave[: len(expected)], expected, atol=1e-6)
    assert np.all(wave[len(expected):] == 0), "short clips are zero-padded at the end"
    silence = corpus.x[corpus.y == label.index("_silence_"), 0]
    assert silence.std(dim=1).min() > 0.01, "silence crops hold background noise, not zeros"
    assert len(torch.unique(silence, dim=0)) == len(silence), "every silence crop is different"


def test_all_words_and_word_list(sc_root: Path, sc_cache: Path) -> None:
    every = datasets.speech_commands(root=sc_root, words="all", cache=sc_cache)
    assert every.names["keyword"] == tuple(sorted(WORDS))
    assert len(every.part) == len(WORDS) * len(SC_SPEAKERS)
    few = datasets.speech_commands(root=sc_root, words=["yes", "bed"], cache=sc_cache)
    assert few.names["keyword"] == ("yes", "bed", "_unknown_", "_silence_")
    with pytest.raises(ValueError, match="zebra"):
        datasets.speech_commands(root=sc_root, words=["yes", "zebra"], cache=sc_cache)
    with pytest.raises(ValueError, match="v0.01"):
        datasets.speech_commands(root=sc_root, version="v3", cache=sc_cache)


def test_max_per_class_caps_each_class_and_part(sc_root: Path, sc_cache: Path) -> None:
    capped = datasets.speech_commands(root=sc_root, max_per_class=2, cache=sc_cache)
    pairs = torch.stack([capped.labels["keyword"], capped.part], dim=1)
    _, counts = torch.unique(pairs, dim=0, return_counts=True)
    assert counts.max() == 2
    again = datasets.speech_commands(root=sc_root, max_per_class=2, cache=sc_cache)
    assert again.key == capped.key, "the same options give the same clips and key"
    assert capped.key != datasets.speech_commands(root=sc_root, cache=sc_cache).key


def test_an_experiment_setting_caps_a_real_corpus_like_a_chapter(
        sc_root: Path, sc_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chapter's SIZE reaches the grid too: its Retrain must be trained on the chapter's clips
    (chapter 3 hands its request to ``experiments.reference``)."""
    from speechul import experiments

    monkeypatch.setitem(data.REAL_SIZES, "tiny", 2)  # the fixture has a few clips per class
    experiments._corpus.cache_clear()
    setting = experiments.Setting(dataset="speechcommands", size="tiny", device="cpu",
                                  data_options={"cache": sc_cache, "root": sc_root})
    grid = experiments._corpus("speechcommands", "keyword", "cpu", "tiny",
                               experiments._options(setting))
    experiments._corpus.cache_clear()
    chapter = data.load("speechcommands", task="keyword", device="cpu", size="tiny",
                        root=sc_root, cache=sc_cache)
    full = data.load("speechcommands", task="keyword", device="cpu", root=sc_root, cache=sc_cache)
    assert grid.key == chapter.key != full.key
    assert len(grid.y) == len(chapter.y) < len(full.y)


def test_forget_splits_of_all_three_kinds(superb: data.Corpus) -> None:
    sample = data.forget_split(superb, "sample", fraction=0.2, seed=0)
    assert len(sample.forget) == round(0.2 * len(superb.indices("train")))
    klass = data.forget_split(superb, "class", classes=["yes"])
    assert (superb.y[klass.forget] == superb.names("keyword").index("yes")).all()
    assert len(klass.forgotten_test) == 1  # the test speaker's "yes"
    me = data.forget_split(superb, "speaker", speakers=[SC_SPEAKERS[1]])
    assert len(me.forget) == len(WORDS)
    assert (superb.speaker[me.forget] == superb.names("speaker").index(SC_SPEAKERS[1])).all()
    assert len(me.forgotten_test) == 0, "official parts: a training speaker has no test clips"


def test_per_speaker_parts_give_forgotten_speakers_test_clips(sc_root: Path,
                                                              sc_cache: Path) -> None:
    corpus = data.load("speechcommands", root=sc_root, cache=sc_cache, device="cpu",
                       parts="per_speaker")
    me = data.forget_split(corpus, "speaker", speakers=[SC_SPEAKERS[1]])
    assert len(me.forgotten_test) >= 1 and len(me.forgotten_val) >= 1
    assert len(me.forget) + len(me.forgotten_test) + len(me.forgotten_val) == len(WORDS)


def test_second_load_reads_no_audio(sc_root: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = audiofiles.read_clip
    monkeypatch.setattr(audiofiles, "read_clip", lambda *a: calls.append(a[0]) or real(*a))
    first = data.load("speechcommands", root=sc_root, cache=tmp_path, device="cpu")
    assert len(calls) == len(first)
    calls.clear()
    second = data.load("speechcommands", root=sc_root, cache=tmp_path, device="cpu")
    assert calls == [] and torch.equal(first.x, second.x)


def test_wrong_sample_rate_names_the_file(tmp_path: Path) -> None:
    folder = make_speech_commands(tmp_path / "data")
    bad = folder / "up" / f"{SC_SPEAKERS[2]}_nohash_0.wav"
    sf.write(bad, _tone(1.0, 300, 0, sr=8000), 8000)
    with pytest.raises(ValueError, match=r"_nohash_0\.wav has a sample rate of 8000"):
        data.load("speechcommands", root=tmp_path / "data", cache=tmp_path / "c", device="cpu")


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    folder = make_speech_commands(tmp_path / "data")
    bad = folder / "go" / f"{SC_SPEAKERS[3]}_nohash_0.wav"
    bad.write_bytes(b"RIFF\x00\x00not really a wave file")
    with pytest.raises(ValueError, match=f"cannot read audio file .*{bad.name}"):
        data.load("speechcommands", root=tmp_path / "data", cache=tmp_path / "c", device="cpu")


@pytest.mark.parametrize("damage, message", [
    ("nan", "holds non-finite"), ("empty", r"holds no audio \(0 frames\)"),
    ("missing", "is listed by the dataset but missing")])
def test_a_broken_file_is_named_not_trained_on(tmp_path: Path, damage, message) -> None:
    """A NaN sample surfaced epochs later as 'loss became nan' (blaming the learning rate); an
    empty file loaded as a silent all-zero clip; a missing one gave 'System error'."""
    folder = make_speech_commands(tmp_path / "data")
    bad = folder / "go" / f"{SC_SPEAKERS[3]}_nohash_0.wav"
    if damage == "nan":
        wave = _tone(1.0, 300, 0)
        wave[100] = np.nan
        sf.write(bad, wave, 16000, subtype="FLOAT")
    elif damage == "empty":
        sf.write(bad, np.zeros(0, dtype="float32"), 16000)
    else:
        bad = folder / "go" / f"{VAL_SPEAKER}_nohash_0.wav"  # listed in validation_list.txt
        bad.unlink()
    with pytest.raises(ValueError, match=f"{bad.name}.*{message}|{message}"):
        data.load("speechcommands", root=tmp_path / "data", cache=tmp_path / "c", device="cpu")


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"download=True.*speech_commands_v0\.02\.tar\.gz"):
        data.load("speechcommands", root=tmp_path, version="v0.02", device="cpu")
    with pytest.raises(FileNotFoundError, match=r"download=True.*openslr.*dev-clean\.tar\.gz"):
        data.load("librispeech", task="speaker", root=tmp_path, subset="dev-clean")
    with pytest.raises(FileNotFoundError, match=r"registration.*iden_split\.txt"):
        data.load("voxceleb1", task="speaker", root=tmp_path)
    (tmp_path / "wav").mkdir()
    with pytest.raises(FileNotFoundError, match=r"identification split"):
        data.load("voxceleb1", task="speaker", root=tmp_path)


def test_missing_data_names_where_datasets_are_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root=, else \$SPEECHUL_DATA, else <cache>"):
        data.load("speechcommands", root=tmp_path, device="cpu")


def test_damaged_speaker_corpora_are_named(tmp_path: Path) -> None:
    """A blank line in VoxCeleb's split file and a LibriSpeech transcript that lacks an
    utterance fail inside torchaudio as bare unpacking / 'Translation not found' errors."""
    vox = tmp_path / "vox"
    make_voxceleb1(vox)
    split = vox / "iden_split.txt"
    split.write_text(split.read_text() + "\n")
    with pytest.raises(ValueError, match=r"iden_split\.txt has a line that is not .*blank"):
        datasets.voxceleb1(root=vox)
    base = make_librispeech(tmp_path / "libri")
    transcript = base / "train-clean-100" / "26" / "101" / "26-101.trans.txt"
    transcript.write_text("".join(transcript.read_text().splitlines(True)[:-1]))
    with pytest.raises(ValueError, match=r"listing train-clean-100: item \d+ of LIBRISPEECH "
                                         r".*26-101-0009.*extract its archive again"):
        datasets.librispeech(root=tmp_path / "libri")


# --------------------------------------------------------------------------- speaker corpora


def test_librispeech_speaker_crops_and_split(tmp_path: Path) -> None:
    base = make_librispeech(tmp_path)
    corpus = data.load("librispeech", task="speaker", root=tmp_path, cache=tmp_path / "c",
                       device="cpu", crop_seconds=1.0, crops_per_utterance=2, features=WAVEFORM)
    assert set(corpus.source.names) == {"speaker"}
    assert corpus.classes == ("19", "26", "103")
    assert corpus.x.shape == (3 * 10 * 2, 1, 16_000)
    # Per speaker: 10 utterances -> 8 train, 1 val, 1 test, each as 2 crops.
    for s in range(3):
        counts = torch.bincount(corpus.part[corpus.y == s], minlength=3)
        assert counts.tolist() == [16, 2, 2]
    # Both crops of an utterance sit in one part, at 1/3 and 2/3 of the spare length.
    parts = corpus.part.view(-1, 2)
    assert (parts[:, 0] == parts[:, 1]).all()
    wave, _ = sf.read(base / "train-clean-100/19/100/19-100-0003.flac", dtype="float32")
    rows = torch.nonzero(corpus.y == 0).flatten()  # speaker 19, utterances in order, 2 crops
    row = int(rows[3 * 2])
    spare = len(wave) - 16_000
    for k in range(2):
        start = spare * (k + 1) // 3
        np.testing.assert_allclose(corpus.x[row + k, 0].numpy(), wave[start:start + 16_000],
                                   atol=1e-4)  # FLAC is 16-bit
    short = corpus.x[rows[0], 0].numpy()  # utterance 0 is 0.5 s: padded
    assert np.all(short[8000:] == 0) and np.any(short[:8000] != 0)
    default = data.load("librispeech", root=tmp_path, cache=tmp_path / "c", device="cpu")
    assert default.task == "speaker"  # the only task LibriSpeech has
    with pytest.raises(ValueError, match="no task 'keyword'"):
        data.load("librispeech", task="keyword", root=tmp_path, cache=tmp_path / "c", device="cpu")


def test_librispeech_subsets_of_speakers_and_forgetting(tmp_path: Path) -> None:
    make_librispeech(tmp_path)
    corpus = data.load("librispeech", task="speaker", root=tmp_path, cache=tmp_path / "c",
                       device="cpu", n_speakers=2, max_per_speaker=5, crop_seconds=1.0)
    assert corpus.classes == ("19", "26") and len(corpus) == 10
    assert corpus.x.shape[1:] == (1, 40, 101)
    split = data.forget_split(corpus, "class", classes=["26"])
    assert (corpus.y[split.forget] == 1).all() and len(split.forgotten_test) == 1
    with pytest.raises(ValueError, match="n_speakers must be in 1..3"):
        datasets.librispeech(root=tmp_path, n_speakers=7)


def test_voxceleb1_official_identification_split(tmp_path: Path) -> None:
    lines = make_voxceleb1(tmp_path)
    corpus = data.load("voxceleb1", task="speaker", root=tmp_path, cache=tmp_path / "c",
                       device="cpu", crop_seconds=1.5)
    assert corpus.classes == ("id10001", "id10002", "id10003")
    assert corpus.x.shape == (len(lines), 1, 40, 151)
    official = sorted(p - 1 for p, _ in lines)
    assert sorted(corpus.part.tolist()) == official
    assert torch.bincount(corpus.part).tolist() == [9, 3, 6]
    small = datasets.voxceleb1(root=tmp_path, n_speakers=2, max_per_speaker=2)
    assert small.names["speaker"] == ("id10001", "id10002")
    assert torch.bincount(small.part).tolist() == [4, 2, 4]
    split = data.forget_split(corpus, "sample", fraction=0.3, seed=1)
    assert torch.isin(split.forget, corpus.indices("train")).all()
