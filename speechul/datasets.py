"""Real speech corpora as a :class:`~speechul.data.Source`: Speech Commands, LibriSpeech, VoxCeleb1.

torchaudio's dataset classes do the file listing (their official splits included); audio is
read here with ``soundfile``, one fixed-length clip at a time, so the same feature cache, forget
sets and training code work on real data as on the embedded corpus.

Every clip is a window of one audio file: ``slot`` k of ``slots`` evenly placed windows inside the
fraction ``[lo, hi)`` of the file. Placing windows by position, not by a precomputed offset, means
no file has to be opened before its features are computed. Files shorter than a clip are padded
with zeros at the end; longer ones are cropped (one slot: the centre).

Datasets live under ``root`` (default ``$SPEECHUL_DATA``, else ``<cache>/datasets``), in the
layout torchaudio uses. Nothing is downloaded unless ``download=True``; then
:mod:`speechul.downloads` fetches the archive, checks it against its published SHA-256,
extracts it and deletes it (VoxCeleb1 needs a registration, so it is never downloaded).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torchaudio

from ._runtime import cache_dir
from .audiofiles import (
    FRACTIONS,
    SAMPLE_RATE,
    Row,
    cap,
    make_source,
    missing,
    split_per_group,
    walk,
)
from .corpus import PARTS, Source
from .downloads import Archive
from .downloads import download as download_archive

__all__ = ["SAMPLE_RATE", "SUPERB_KEYWORDS", "UNKNOWN", "SILENCE", "BACKGROUND", "data_root",
           "speech_commands", "librispeech", "voxceleb1"]

SUPERB_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
BACKGROUND = "_background_"  # the "speaker" of silence clips cut from the noise recordings
SC_VERSIONS = ("v0.01", "v0.02")
SC_URL = "http://download.tensorflow.org/data/speech_commands_{}.tar.gz"
SC_LISTS = ("validation_list.txt", "testing_list.txt")
# Published SHA-256 of the archives (TensorFlow Datasets' url_checksums, as torchaudio uses them).
SC_SHA256 = {
    "v0.01": "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    "v0.02": "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
}
LIBRISPEECH_SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100",
                       "train-clean-360", "train-other-500")
LIBRISPEECH_URL = "http://www.openslr.org/resources/12/{}.tar.gz"
LIBRISPEECH_SHA256 = {  # as published with torchaudio's LibriSpeech loader
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
VOX_SPLIT_URL = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/iden_split.txt"
VOX_PAGE = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html"


def data_root(root: str | os.PathLike | None = None,
              cache: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``root``, else ``$SPEECHUL_DATA``, else ``<cache dir>/datasets``."""
    if root is None:
        root = os.environ.get("SPEECHUL_DATA") or cache_dir(cache) / "datasets"
    return Path(root).expanduser()


# --------------------------------------------------------------------------- Speech Commands


def _sc_listing(folder: Path) -> list[tuple[str, str, str, int]]:
    """(path relative to SpeechCommands/, word, speaker, part) of every word clip.

    The parts come from torchaudio's ``subset=``: the official validation_list.txt and
    testing_list.txt (which hash speakers, so a speaker is in one part only).
    """
    root, archive = folder.parent.parent, folder.parent.name
    out = []
    for part, subset in enumerate(("training", "validation", "testing")):
        dataset = torchaudio.datasets.SPEECHCOMMANDS(
            root, url=folder.name, folder_in_archive=archive, download=False, subset=subset)
        for path, _, word, speaker, _ in walk(dataset, f"listing {subset}"):
            out.append((path, word, speaker, part))
    return out


def _sc_found(root: Path, version: str) -> Path | None:
    """The extracted ``speech_commands_vX`` folder among the few layouts people end up with."""
    name = f"speech_commands_{version}"
    for folder in (root / "SpeechCommands" / name, root / name, root):
        if folder.name == name and all((folder / f).is_file() for f in SC_LISTS):
            return folder
    return None


def _sc_folder(root: Path, version: str, download: bool) -> Path:
    """The Speech Commands folder, downloaded first when asked; a folder that lacks one of the
    split lists is named as incomplete, not as absent."""
    folder = root / "SpeechCommands" / f"speech_commands_{version}"
    if _sc_found(root, version) is None and download:
        download_archive(Archive(f"Speech Commands {version}", SC_URL.format(version),
                                 SC_SHA256.get(version)), folder)
    found = _sc_found(root, version)
    if found is not None:
        return found
    how = (f"Download it with su.data.load('speechcommands', root='{root}', "
           f"version='{version}', download=True), or fetch {SC_URL.format(version)} and "
           f"extract it into {folder}.")
    if folder.is_dir():
        lacking = [f for f in SC_LISTS if not (folder / f).is_file()]
        raise missing(f"{' and '.join(lacking)} of Speech Commands {version}",
                      folder / lacking[0], f"The folder is incomplete. {how}")
    raise missing(f"Speech Commands {version}", folder, how)


def _keyword_names(words: str | Sequence[str], present: set[str]) -> tuple[tuple[str, ...], bool]:
    """Keyword class names and whether ``_unknown_``/``_silence_`` are added."""
    if words == "all":
        return tuple(sorted(present)), False
    if isinstance(words, str) and words != "superb":
        raise ValueError(f"unknown words {words!r}; use 'superb', 'all' or a list of words")
    chosen = SUPERB_KEYWORDS if words == "superb" else tuple(words)
    absent = [w for w in chosen if w not in present]
    if absent or not chosen:
        raise ValueError(f"words {absent or list(chosen)} are not in this dataset; "
                         f"known: {sorted(present)}")
    return (*chosen, UNKNOWN, SILENCE), True


def _silence_rows(folder: Path, counts: list[int]) -> tuple[list[Row], list[int]]:
    """``counts[p]`` one-second noise crops for part p, cut from the _background_noise_ files.

    SUPERB draws random crops of the six noise recordings on the fly; a fixed corpus needs fixed
    clips, so each file is cut in time (first 80 % train, next 10 % val, last 10 % test: no
    noise is shared between parts) and crops are spread evenly, round-robin over the files.
    """
    noise = sorted(p.name for p in (folder / "_background_noise_").glob("*.wav"))
    if not noise and any(counts):
        raise missing("Speech Commands background noise", folder / "_background_noise_",
                       "The _silence_ class is cut from these files; re-extract the archive.")
    bounds = np.cumsum((0.0, *FRACTIONS))
    rows, part = [], []
    for p, count in enumerate(counts):
        per_file = [count // len(noise) + (f < count % len(noise)) for f in range(len(noise))]
        for f, n in enumerate(per_file):
            rel = f"{folder.name}/_background_noise_/{noise[f]}"
            rows += [(rel, k, n, float(bounds[p]), float(bounds[p + 1])) for k in range(n)]
            part += [p] * n
    return rows, part


def _check_choice(what: str, value: object, known: Sequence[object]) -> None:
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; known: {list(known)}")


def _sc_clips(listing: list[tuple[str, str, str, int]], keywords: tuple[str, ...], parts: str,
              max_per_class: int | None) -> tuple[list[Row], list[str], list[str], list[int]]:
    """Word clips -> (rows, keyword labels, speakers, parts), capped per class and part."""
    paths = [path for path, *_ in listing]
    label = [w if w in keywords else UNKNOWN for _, w, _, _ in listing]
    speaker = [s for _, _, s, _ in listing]
    part = [p for *_, p in listing] if parts == "official" else split_per_group(paths, speaker)
    keep = cap(paths, list(zip(label, part, strict=True)), max_per_class)
    rows: list[Row] = [(paths[i], 0, 1, 0.0, 1.0) for i in keep]
    return rows, [label[i] for i in keep], [speaker[i] for i in keep], [part[i] for i in keep]


def _silence_counts(label: list[str], part: list[int], keywords: Sequence[str]) -> list[int]:
    """Silence clips per part: as many as an average keyword has there (a balanced class)."""
    count = Counter(zip(label, part, strict=True))
    return [round(float(np.mean([count[(k, p)] for k in keywords]))) for p in range(len(PARTS))]


def speech_commands(root: str | os.PathLike | None = None, version: str = "v0.01",
                    words: str | Sequence[str] = "superb", parts: str = "official",
                    clip_seconds: float = 1.0, max_per_class: int | None = None,
                    download: bool = False, cache: str | os.PathLike | None = None) -> Source:
    """Google Speech Commands for keyword spotting, with speaker labels for "forget me".

    Args:
        root: folder holding ``SpeechCommands/speech_commands_<version>/`` (torchaudio layout).
        version: ``"v0.01"`` (30 words, SUPERB's KS) or ``"v0.02"`` (35 words).
        words: ``"superb"``: the 10 SUPERB keywords + ``_unknown_`` (every other word) +
            ``_silence_`` (noise crops, as many per part as the mean keyword); ``"all"``: one
            class per word, no unknown/silence; or a list of keywords (+ unknown + silence).
        parts: ``"official"`` (validation/testing lists: each speaker in one part only) or
            ``"per_speaker"`` (each speaker's clips split 80/10/10, so a forgotten speaker
            also has validation and test clips).
        clip_seconds: clip length; shorter files are zero-padded at the end.
        max_per_class: at most this many clips per class and part (hash-picked), for quick runs.
        download: fetch, check and extract the archive when it is missing (folders created).

    Labels: ``"keyword"`` and ``"speaker"`` (the file-name prefix before ``_nohash_``; silence
    clips belong to the pseudo-speaker ``"_background_"``).

    SUPERB differs in three ways: it balances classes by weighted sampling (here silence is
    balanced by its count, unknown is not), draws silence crops at random, and tests on the
    separate ``speech_commands_test_set_v0.01`` archive (3081 clips) instead of
    testing_list.txt, so test accuracies are not leaderboard numbers.
    """
    _check_choice("version", version, SC_VERSIONS)
    _check_choice("parts", parts, ("official", "per_speaker"))
    folder = _sc_folder(data_root(root, cache), version, download)
    listing = _sc_listing(folder)
    keywords, extra = _keyword_names(words, {w for _, w, _, _ in listing})
    rows, label, speaker, part = _sc_clips(listing, keywords, parts, max_per_class)
    if extra:
        noise_rows, noise_part = _silence_rows(folder, _silence_counts(label, part, keywords[:-2]))
        rows, part = rows + noise_rows, part + noise_part
        label += [SILENCE] * len(noise_rows)
        speaker += [BACKGROUND] * len(noise_rows)
    speakers = tuple(sorted(set(speaker) - {BACKGROUND})) + ((BACKGROUND,) if extra else ())
    tag = words if isinstance(words, str) else "-".join(words)
    options = dict(version=version, words=tag, parts=parts, clip_seconds=clip_seconds,
                   max_per_class=max_per_class)
    return make_source(f"speechcommands-{version}-{tag}", folder.parent, rows,
                   {"keyword": label, "speaker": speaker},
                   {"keyword": keywords, "speaker": speakers}, part, clip_seconds, options)


# --------------------------------------------------------------------------- speaker corpora


def _check_crops(crop_seconds: float, crops_per_utterance: int) -> None:
    if crop_seconds <= 0 or crops_per_utterance < 1:
        raise ValueError(f"need crop_seconds > 0 and crops_per_utterance >= 1, got "
                         f"{crop_seconds} and {crops_per_utterance}")


def _pick_speakers(speaker: list[str], n_speakers: int | None) -> list[int]:
    """Indices of the utterances of the first ``n_speakers`` speakers in sorted id order."""
    known = sorted(set(speaker), key=lambda s: (len(s), s))  # numeric order for numeric ids
    if n_speakers is not None and not 1 <= n_speakers <= len(known):
        raise ValueError(f"n_speakers must be in 1..{len(known)}, got {n_speakers}")
    chosen = set(known[:n_speakers])
    return [i for i, s in enumerate(speaker) if s in chosen]


def _speaker_source(name: str, base: Path, utterances: list[tuple[str, str, int]],
                    crop_seconds: float, crops: int, options: dict) -> Source:
    """(path, speaker, part) utterances -> a speaker-only Source of ``crops`` windows each.

    All crops of one utterance stay in its part, so no test audio is ever trained on.
    """
    rows: list[Row] = [(path, k, crops, 0.0, 1.0)
                       for path, _, _ in utterances for k in range(crops)]
    speaker = [s for _, s, _ in utterances for _ in range(crops)]
    part = [p for _, _, p in utterances for _ in range(crops)]
    names = tuple(sorted(set(speaker), key=lambda s: (len(s), s)))
    return make_source(name, base, rows, {"speaker": speaker}, {"speaker": names}, part,
                   crop_seconds, options)


def _librispeech_folder(root: Path, subset: str, download: bool) -> None:
    """Make sure ``root/LibriSpeech/<subset>`` exists, downloading it first when asked."""
    folder = root / "LibriSpeech" / subset
    if not folder.is_dir() and download:
        download_archive(Archive(f"LibriSpeech {subset}", LIBRISPEECH_URL.format(subset),
                                 LIBRISPEECH_SHA256.get(subset)), root)
    if not folder.is_dir():
        raise missing(f"LibriSpeech {subset}", folder,
                      f"Download it with su.data.load('librispeech', task='speaker', "
                      f"root='{root}', subset='{subset}', download=True), or fetch "
                      f"{LIBRISPEECH_URL.format(subset)} and extract it in {root}.")


def librispeech(root: str | os.PathLike | None = None, subset: str = "train-clean-100",
                crop_seconds: float = 3.0, crops_per_utterance: int = 1,
                n_speakers: int | None = None, max_per_speaker: int | None = None,
                download: bool = False, cache: str | os.PathLike | None = None) -> Source:
    """LibriSpeech speaker identification: fixed-length crops labelled by speaker.

    Args:
        root: folder holding ``LibriSpeech/<subset>/`` (torchaudio layout).
        subset: one of ``LIBRISPEECH_SUBSETS`` (train-clean-100 has 251 speakers).
        crop_seconds, crops_per_utterance: evenly spaced windows per utterance (one: the centre).
        n_speakers: keep the first n speakers (sorted by id); ``None``: all.
        max_per_speaker: at most this many utterances per speaker (hash-picked).
        download: fetch, check and extract the subset's archive when it is missing.

    LibriSpeech has no speaker-ID split, so each speaker's utterances are split 80/10/10
    (train/val/test) deterministically. Only the ``"speaker"`` task exists.
    """
    _check_choice("subset", subset, LIBRISPEECH_SUBSETS)
    _check_crops(crop_seconds, crops_per_utterance)
    root = data_root(root, cache)
    _librispeech_folder(root, subset, download)
    dataset = torchaudio.datasets.LIBRISPEECH(root, url=subset, download=False)
    listing = [(m[0], str(m[3])) for m in walk(dataset, f"listing {subset}")]
    listing = [listing[i] for i in _pick_speakers([s for _, s in listing], n_speakers)]
    paths, speaker = [p for p, _ in listing], [s for _, s in listing]
    keep = cap(paths, speaker, max_per_speaker)
    paths, speaker = [paths[i] for i in keep], [speaker[i] for i in keep]
    part = split_per_group(paths, speaker)
    options = dict(subset=subset, crop_seconds=crop_seconds, crops=crops_per_utterance,
                   n_speakers=n_speakers, max_per_speaker=max_per_speaker)
    return _speaker_source(f"librispeech-{subset}", root / "LibriSpeech",
                           list(zip(paths, speaker, part, strict=True)), crop_seconds,
                           crops_per_utterance, options)


def _vox_check(root: Path) -> None:
    """VoxCeleb1 needs a registration to download (``download=True`` cannot fetch it): say
    exactly what to put where."""
    how = (f"VoxCeleb1 needs registration at {VOX_PAGE}: unzip vox1_dev_wav.zip and "
           f"vox1_test_wav.zip into {root} (giving {root / 'wav'}/id10001/...) and save "
           f"{VOX_SPLIT_URL} as {root / 'iden_split.txt'}.")
    if not (root / "wav").is_dir():
        raise missing("VoxCeleb1 audio", root / "wav", how)
    if not (root / "iden_split.txt").is_file():
        raise missing("VoxCeleb1 identification split", root / "iden_split.txt", how)


@contextlib.contextmanager
def _split_file(root: Path) -> Iterator[None]:
    """torchaudio reads ``iden_split.txt`` with ``part, path = line.split()``: a blank or
    malformed line fails there as a bare unpacking error; name the file and the fix."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{root / 'iden_split.txt'} has a line that is not '<1|2|3> "
                         f"<id>/<video>/<n>.wav' ({err}), a blank line included; use the "
                         f"official file from {VOX_SPLIT_URL}") from None


def voxceleb1(root: str | os.PathLike | None = None, crop_seconds: float = 3.0,
              crops_per_utterance: int = 1, n_speakers: int | None = None,
              max_per_speaker: int | None = None, download: bool = False,
              cache: str | os.PathLike | None = None) -> Source:
    """VoxCeleb1 speaker identification (SUPERB SID) with the official ``iden_split.txt``.

    Args:
        root: folder holding ``wav/<id>/<video>/<n>.wav`` and ``iden_split.txt``.
        crop_seconds, crops_per_utterance: fixed windows per utterance (one: the centre).
            SUPERB trains on random 8 s crops and tests on whole utterances; a fixed-clip
            corpus needs fixed windows, so test scores are not comparable to SUPERB's.
        n_speakers: keep the first n of the 1251 speakers (sorted by id); ``None``: all.
        max_per_speaker: at most this many utterances per speaker in each part (hash-picked).
        download: accepted for symmetry with the other loaders; VoxCeleb1 needs a registration,
            so a missing copy is named with what to fetch where, whatever its value.

    Parts follow the split file: 1 train, 2 val, 3 test. Only the ``"speaker"`` task exists.
    """
    _check_crops(crop_seconds, crops_per_utterance)
    root = data_root(root, cache)
    _vox_check(root)
    listing = []
    for part, subset in enumerate(("train", "dev", "test")):
        with _split_file(root):
            dataset = torchaudio.datasets.VoxCeleb1Identification(root, subset=subset,
                                                                  download=False)
        listing += [(m[0], m[0].split("/")[0], part) for m in walk(dataset, f"listing {subset}")]
    listing = [listing[i] for i in _pick_speakers([s for _, s, _ in listing], n_speakers)]
    paths = [p for p, _, _ in listing]
    keep = cap(paths, [(s, p) for _, s, p in listing], max_per_speaker)
    options = dict(crop_seconds=crop_seconds, crops=crops_per_utterance, n_speakers=n_speakers,
                   max_per_speaker=max_per_speaker)
    return _speaker_source("voxceleb1", root / "wav", [listing[i] for i in keep], crop_seconds,
                           crops_per_utterance, options)
