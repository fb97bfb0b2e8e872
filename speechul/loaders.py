"""Datasets by name: the registry :data:`LOADERS` and :func:`load`, which turns a loader's
:class:`~speechul.corpus.Source` into a :class:`~speechul.corpus.Corpus` with cached features.

**To add a dataset**, write ``fn(size="default", cache=None, **options) -> Source`` and add it
to ``LOADERS`` (``speechul.data.LOADERS`` is the same dictionary): that is the one place. The
experiment grid, the command line and worker processes all look datasets up there.

The real corpora (:mod:`speechul.datasets`) are imported only when asked for: they need
torchaudio, which an embedded-corpus session never loads.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import torch

from . import digits, encoder_features, synth
from . import features as feats
from ._runtime import default_device
from .corpus import Corpus, Source

__all__ = ["REAL_SIZES", "LOADERS", "load", "embedded"]

Loader = Callable[..., Source]

# A chapter's ``SIZE`` parameter on a real corpus: at most this many clips per class (or speaker)
# and part, so "tiny" and "small" stay quick subsets; None or "default" keeps everything.
REAL_SIZES: dict[str | None, int | None] = {None: None, "default": None, "small": 200, "tiny": 40}


def embedded(size: str = "default", cache: str | os.PathLike | None = None) -> Source:
    """The synthetic eSpeak NG keyword corpus (``speechul.synth``)."""
    payload = synth.build(size, cache=cache)
    waves = payload["waves"]
    return Source(
        name=f"embedded-{size}" if isinstance(size, str) else "embedded",
        key=payload["key"],
        labels={"keyword": payload["keyword"], "speaker": payload["speaker"]},
        names={"keyword": tuple(payload["keywords"]), "speaker": tuple(payload["speakers"])},
        part=payload["part"],
        load_waves=lambda idx: waves[idx],
        sample_rate=synth.SAMPLE_RATE,
    )


def real(function: str, cap: str) -> Loader:
    """The loader of ``speechul.datasets.<function>``, whose argument ``cap`` limits the clips
    per class or speaker: a chapter's ``size`` ("tiny", "small") sets it, so a real corpus
    gives a quick subset where the embedded one gives a small corpus."""

    def loader(size: str | None = None, **kwargs: object) -> Source:
        from . import datasets  # torchaudio, only when a real corpus is asked for

        if size not in REAL_SIZES:
            raise ValueError(f"unknown size {size!r} for {function}; known: {list(REAL_SIZES)}")
        if REAL_SIZES[size] is not None and cap not in kwargs:
            kwargs[cap] = REAL_SIZES[size]
        return getattr(datasets, function)(**kwargs)

    loader.__name__ = loader.__qualname__ = function
    return loader


LOADERS: dict[str, Loader] = {
    "embedded": embedded,
    "speechcommands": real("speech_commands", cap="max_per_class"),
    "librispeech": real("librispeech", cap="max_per_speaker"),
    "voxceleb1": real("voxceleb1", cap="max_per_speaker"),
    "digits": digits.source,
}


def check_loader(name: str, loader: Loader, arguments: dict) -> None:
    """A dataset of one's own is ``fn(size="default", cache=None, **options) -> Source``: say
    which argument a loader lacks instead of a TypeError from inside the grid."""
    params = inspect.signature(loader).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    lacking = [k for k in arguments if k not in params]
    if lacking:
        raise ValueError(f"dataset {name!r}: its loader takes no {lacking}; a loader is "
                         "fn(size='default', cache=None, **options) -> speechul.data.Source")


def _inputs(name: str, source: Source, features: feats.FeatureConfig,
            cache: str | os.PathLike | None, device: torch.device) -> torch.Tensor:
    """The model inputs of every clip: the source's own (images), else cached log-mels."""
    if source.inputs is not None:
        if features != feats.FeatureConfig():
            raise ValueError(f"dataset {name!r} gives its inputs directly (it has no audio), so "
                             "feature settings do not apply: leave features= at its default")
        return source.inputs
    if source.sample_rate != features.sample_rate:
        raise ValueError(f"dataset {name!r} has {source.sample_rate} Hz audio but the features "
                         f"expect {features.sample_rate} Hz")
    compute = encoder_features.extract if features.kind == "encoder" else feats.logmel
    return compute(source.load_waves, len(source.part), source.key, features, cache=cache,
                   device=device)


def load(name: str = "embedded", task: str | None = None, *,
         device: str | torch.device | None = None, cache: str | os.PathLike | None = None,
         features: feats.FeatureConfig | dict | str = feats.FeatureConfig(),
         **kwargs: object) -> Corpus:
    """Load a corpus by name with cached log-mel features on ``device``.

    Args:
        name: a key of ``LOADERS`` (``"embedded"``, ``"speechcommands"``, ``"digits"``, ...).
        task: ``"keyword"`` or ``"speaker"``: which labels ``Corpus.y`` holds (default: the
            corpus's first task, ``"keyword"`` where it has keywords).
        device: where features live (default: CUDA when present, else CPU).
        cache: cache folder (default ``$SPEECHUL_CACHE`` or ``data/cache``).
        features: log-mel settings, or another kind (``FeatureConfig.coerce``: a mapping such
            as ``{"kind": "encoder", "encoder": "WAV2VEC2_BASE"}`` from a parameter file, or
            the text a setting's JSON round trip makes of a config).
        **kwargs: passed to the loader, e.g. ``size="tiny"`` for the embedded corpus.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(LOADERS)}")
    features = feats.FeatureConfig.coerce(features)
    check_loader(name, LOADERS[name], {"cache": cache, **kwargs})
    source = LOADERS[name](cache=cache, **kwargs)
    device = default_device(device)
    x = _inputs(name, source, features, cache, device)
    labels = {**source.labels, "part": source.part}
    first = next(iter(source.names))
    corpus = Corpus(source=source, x=x, task=first, labels=labels, features=features)
    corpus = corpus.with_task(task or first)
    return corpus.to(device)
