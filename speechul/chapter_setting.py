"""What a chapter's data parameters mean, checked at the chapter's top before anything loads.

Every chapter declares the same data parameters (``DATASET``, ``DATA_OPTIONS``, ``ARCH``) and
calls :func:`check` right after its parameters cell. A setting the chapter cannot run (a keyword
chapter on a speaker-only corpus, Speech Commands' official parts for a speaker task, a
forgotten speaker with no training clips) then stops the chapter at once with a message that
says what to use instead, rather than as a NaN axis or an empty forget set deep in a plot.
The parameter files of ``book/params/`` are these parameters, one file per reader setting.

``ARCH`` picks the model and the features it reads (:data:`ARCHS`): the book's CNN on log-mels,
a frozen encoder (``"wav2vec2"``, ``"hubert"``: its embeddings extracted once and cached, a
linear head trained on them) or a fine-tuned one (``"wav2vec2-ft"``, ``"hubert-ft"``: raw
waveforms, on a GPU). :meth:`ChapterSetting.recipe` and :attr:`ChapterSetting.data_options`
carry that choice into ``su.train.TrainConfig`` and ``su.data.load``.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import train
from .corpus import PARTS
from .loaders import LOADERS

__all__ = ["Arch", "ARCHS", "CORPUS_TASKS", "MIN_SPEAKER_CLIPS", "SettingRefused",
           "ChapterSetting", "check"]

#: The tasks each corpus has (without loading it): a speaker corpus has no keywords.
CORPUS_TASKS: dict[str, tuple[str, ...]] = {
    "embedded": ("keyword", "speaker"), "speechcommands": ("keyword", "speaker"),
    "librispeech": ("speaker",), "voxceleb1": ("speaker",), "digits": ("digit",)}
#: ``DATA_OPTIONS`` keys of the real corpora: their loader's arguments (``speechul.datasets``).
_REAL = {"speechcommands": "speech_commands", "librispeech": "librispeech",
         "voxceleb1": "voxceleb1"}
#: A forgotten speaker needs at least this many clips: one per part (to forget, to tune, to test).
MIN_SPEAKER_CLIPS = 3


@dataclass(frozen=True)
class Arch:
    """What ``ARCH`` means: the model (``models.MODELS``), the features it reads
    (``FeatureConfig`` fields; empty: log-mels), and the recipe fields it fixes."""

    model: str
    features: Mapping[str, Any] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)
    gpu: bool = False  # fine-tuning a 95 M-parameter encoder: refused on a CPU


ARCHS: dict[str, Arch] = {
    "cnn": Arch("cnn"),
    "wav2vec2": Arch("head", {"kind": "encoder", "encoder": "WAV2VEC2_BASE"}, {"width": 768}),
    "hubert": Arch("head", {"kind": "encoder", "encoder": "HUBERT_BASE"}, {"width": 768}),
    "wav2vec2-ft": Arch("wav2vec2-ft", {"kind": "waveform"}, {"lr": 5e-5}, gpu=True),
    "hubert-ft": Arch("hubert-ft", {"kind": "waveform"}, {"lr": 5e-5}, gpu=True),
    # a random miniature wav2vec 2.0 (encoders.tiny_encoder): the frozen path without a download
    "tiny": Arch("head", {"kind": "encoder", "encoder": "tiny"}, {"width": 32}),
}


class SettingRefused(ValueError):
    """A chapter cannot run this setting; the message says what to use instead."""


@dataclass(frozen=True)
class ChapterSetting:
    """A checked setting: pass :attr:`data_options` to ``su.data.load`` and to
    ``Setting(data_options=)``, and build the recipe with :meth:`recipe`."""

    dataset: str
    data_options: dict[str, Any]
    arch: str

    def recipe(self, **fields: Any) -> train.TrainConfig:
        """The recipe for ``ARCH``; ``fields`` (``epochs=EPOCHS``) win over its defaults."""
        spec = ARCHS[self.arch]
        return train.TrainConfig(**{"arch": spec.model, **spec.recipe, **fields})

    def __str__(self) -> str:
        options = {k: v for k, v in self.data_options.items() if k != "features"}
        return f"{self.dataset} {options or ''} with ARCH={self.arch!r}".replace("  ", " ")


def _refuse(chapter: str, problem: str, instead: str) -> SettingRefused:
    return SettingRefused(f"{chapter} cannot run this setting: {problem}. {instead}")


def _loader_options(dataset: str) -> set[str]:
    """The ``DATA_OPTIONS`` keys the dataset's loader takes (besides ``size``, ``cache``)."""
    if dataset in _REAL:
        from . import datasets  # torchaudio, only for a real corpus

        names = set(inspect.signature(getattr(datasets, _REAL[dataset])).parameters)
    else:
        names = set(inspect.signature(LOADERS[dataset]).parameters)
    return names - {"size", "cache"}


def _options(chapter: str, dataset: str, data_options: Mapping[str, Any] | None,
             arch: str) -> dict[str, Any]:
    """The reader's options, checked against the loader, plus ``ARCH``'s features."""
    if not isinstance(data_options, Mapping | None):
        raise _refuse(chapter, f"DATA_OPTIONS must be a dict, got {data_options!r}",
                      "Write e.g. DATA_OPTIONS = {'parts': 'per_speaker'}.")
    options = dict(data_options or {})
    known = _loader_options(dataset)
    unknown = sorted(set(options) - known - {"features"})
    if unknown:
        raise _refuse(chapter, f"DATA_OPTIONS has {unknown}, which {dataset!r} does not take",
                      f"Its options: {sorted(known) or 'none'} (see su.data.LOADERS).")
    if ARCHS[arch].features:
        if options.get("features"):
            raise _refuse(chapter, f"DATA_OPTIONS['features'] and ARCH={arch!r} both choose "
                          "the features", "Leave 'features' out: ARCH sets them.")
        options["features"] = dict(ARCHS[arch].features)
    return options


def _check_arch(chapter: str, arch: str, archs: Sequence[str]) -> None:
    if arch not in ARCHS:
        raise _refuse(chapter, f"unknown ARCH {arch!r}", f"Known: {sorted(ARCHS)}.")
    if arch not in archs:
        raise _refuse(chapter, f"its code builds the recipe for {list(archs)}, not "
                      f"ARCH={arch!r}", "Run it with ARCH='cnn'; the chapters whose recipe "
                      "follows ARCH are listed in book/instructor_guide.md.")
    if ARCHS[arch].gpu and not torch.cuda.is_available():
        raise _refuse(chapter, f"ARCH={arch!r} fine-tunes a 95 M-parameter encoder, which "
                      "needs a GPU, and none is present", f"Use ARCH="
                      f"{arch.removesuffix('-ft')!r} (frozen encoder, cached embeddings) on a "
                      "CPU, or a GPU runtime.")


def _check_tasks(chapter: str, dataset: str, options: Mapping[str, Any],
                 tasks: Sequence[str], forgets_speakers: bool) -> None:
    has = CORPUS_TASKS.get(dataset)
    lacking = [t for t in tasks if has is not None and t not in has]
    if lacking:
        instead = ("Use DATASET='speechcommands' (book/params/speechcommands.yaml) or "
                   f"'embedded'; on {dataset!r} run the speaker-task chapters "
                   f"(book/params/{dataset}.yaml skips this one)" if "keyword" in lacking
                   else f"Use a corpus with {lacking}: {sorted(CORPUS_TASKS)}")
        raise _refuse(chapter, f"it needs the {' and '.join(lacking)} task, and {dataset!r} "
                      f"has only {list(has)}", instead + ".")
    speakerwise = "speaker" in tasks or forgets_speakers
    if dataset == "speechcommands" and speakerwise and options.get("parts", "official") != \
            "per_speaker":
        raise _refuse(chapter, "Speech Commands' official parts put each speaker in one part "
                      "only, so a speaker has no clips in the other parts (no test clips of "
                      "a trained speaker, nothing to forget of a validation speaker)",
                      "Set DATA_OPTIONS['parts'] = 'per_speaker' (book/params/"
                      "speechcommands.yaml does).")


def _counts(dataset: str, options: Mapping[str, Any], size: str,
            task: str) -> tuple[tuple[str, ...], Counter]:
    """``task``'s class names and (class id, part) clip counts, from the source: the labels
    only, no features (the loaders list files; the embedded corpus comes from its cache)."""
    loader_options = {k: v for k, v in options.items() if k != "features"}
    source = LOADERS[dataset](size=size, **loader_options)
    pairs = zip(source.labels[task].tolist(), source.part.tolist(), strict=True)
    return source.names[task], Counter(pairs)


def _check_forgotten(chapter: str, dataset: str, options: Mapping[str, Any], size: str,
                     task: str, wanted: Sequence[str | int]) -> None:
    """Each forgotten class of ``task`` exists and has clips in every part: training clips to
    forget, validation and test clips to measure what forgetting did (without them a chapter's
    "forgotten test accuracy" is NaN, and its plot fails)."""
    names, counts = _counts(dataset, options, size, task)
    usable = [i for i, n in enumerate(names) if not n.startswith("_")
              and min(counts[(i, p)] for p in range(len(PARTS))) > 0]
    ranked = sorted(usable, key=lambda i: -counts[(i, 0)])[:5]
    suggest = (", ".join(f"{names[i]!r} ({'/'.join(str(counts[(i, p)]) for p in range(3))})"
                         for i in ranked) or "none has clips in every part here (a larger SIZE "
               "or per-speaker parts may help)")
    for item in wanted:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
            cid = item
        elif isinstance(item, str) and item in names:
            cid = names.index(item)
        else:
            raise _refuse(chapter, f"{task} {item!r} is not in {dataset!r} (ids 0.."
                          f"{len(names) - 1})", f"Those with the most clips "
                          f"(train/val/test): {suggest}.")
        per_part = [counts[(cid, p)] for p in range(len(PARTS))]
        if min(per_part) == 0:
            shown = ", ".join(f"{p} {n}" for p, n in zip(PARTS, per_part, strict=True))
            raise _refuse(chapter, f"{task} {item!r} ({names[cid]!r}) has {shown} clips: "
                          "forgetting it needs clips in every part (training clips to forget, "
                          f"validation and test clips to measure)", f"Pick another, e.g. "
                          f"(train/val/test) {suggest}.")


def check(chapter: str, dataset: str, data_options: Mapping[str, Any] | None = None,
          arch: str = "cnn", *, tasks: Sequence[str] = ("keyword",), size: str = "default",
          speakers: Sequence[str | int] = (), keywords: Sequence[str | int] = (),
          forgets_speakers: bool = False,
          archs: Sequence[str] = tuple(ARCHS), corpora: Sequence[str] | None = None,
          uses_data_options: bool = True) -> ChapterSetting:
    """Refuse, at a chapter's top, a setting it cannot run; else the checked setting.

    Args:
        chapter: the chapter's name, for the message ("Chapter 5").
        dataset, data_options, arch: the chapter's ``DATASET``, ``DATA_OPTIONS``, ``ARCH``.
        tasks: the tasks its models classify (a corpus must have them).
        size: the chapter's ``SIZE`` (caps a real corpus), used to look speakers up.
        speakers, keywords: the speakers and words it forgets (names or ids, ``None`` for
            one the chapter picks itself): each needs clips in every part, so at least
            ``MIN_SPEAKER_CLIPS`` (the corpus's labels are read; no features computed).
        forgets_speakers: it forgets a speaker from a keyword model (so every speaker must
            have clips in every part, as ``"speaker"`` in ``tasks`` requires).
        archs: the ``ARCH`` values its code builds a recipe for.
        corpora: the only datasets it runs on (``None``: any with its tasks).
        uses_data_options: its code passes ``DATA_OPTIONS`` to its loads (else any option
            is refused: it would be silently ignored).

    Raises:
        SettingRefused: with what is wrong and what to use instead.
    """
    if dataset not in LOADERS:
        raise _refuse(chapter, f"unknown DATASET {dataset!r}", f"Known: {sorted(LOADERS)}.")
    if corpora is not None and dataset not in corpora:
        raise _refuse(chapter, f"it is about {' and '.join(map(repr, corpora))}, not "
                      f"DATASET={dataset!r}", "Run it as it is (the parameter files skip it).")
    _check_arch(chapter, arch, archs)
    if data_options and not uses_data_options:
        raise _refuse(chapter, f"its code does not pass DATA_OPTIONS to su.data.load yet, so "
                      f"{sorted(data_options)} would be ignored", "Leave DATA_OPTIONS = {}: "
                      "the corpus is read where the loader looks by default ($SPEECHUL_DATA, "
                      "else <cache>/datasets, where chapter 2 downloads it), with its default "
                      "parts (so no speaker task on Speech Commands).")
    options = _options(chapter, dataset, data_options, arch)
    _check_tasks(chapter, dataset, options, tasks, forgets_speakers)
    for task, wanted in (("speaker", speakers), ("keyword", keywords)):
        wanted = [w for w in wanted if w is not None]
        if wanted:
            _check_forgotten(chapter, dataset, options, size, task, wanted)
    return ChapterSetting(dataset, options, arch)
