"""What a corpus is and how it is divided: load by name, parts, forget sets, on-device batches.

A :class:`Corpus` holds every clip's log-mel features as one tensor on the device, the labels of
*both* tasks (keyword and speaker, where the corpus has them) and the train/val/test part of each
clip. A :class:`Split` says which training clips to forget and which to retain. Indices are
always positions in the corpus, so one index tensor means the same clips everywhere.

To add a dataset, write a function that returns a :class:`Source` and add it to ``LOADERS``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from . import features as feats
from . import synth
from ._runtime import default_device, fingerprint, generator

__all__ = ["PARTS", "Source", "Corpus", "Batches", "Split", "LOADERS", "load", "forget_split",
           "as_indices"]

PARTS = ("train", "val", "test")
KINDS = ("sample", "class", "speaker")


@dataclass(frozen=True, eq=False)
class Source:
    """A dataset before features: labels, parts and a way to read audio. Loaders return this.

    Args:
        name: display name, e.g. ``"embedded-default"``.
        key: a fingerprint of the exact clips (it keys the feature cache).
        labels: task name -> (N,) int64 labels; ``"speaker"`` is always present.
        names: task name -> class names, indexed by label.
        part: (N,) int64, 0 train / 1 val / 2 test.
        load_waves: (B,) indices -> (B, samples) int16 or float waves at ``sample_rate``.
        sample_rate: the waves' rate in Hz.
    """

    name: str
    key: str
    labels: dict[str, torch.Tensor]
    names: dict[str, tuple[str, ...]]
    part: torch.Tensor
    load_waves: Callable[[torch.Tensor], torch.Tensor]
    sample_rate: int = 16_000

    def __repr__(self) -> str:  # a line, not every label tensor (a notebook echoes it)
        tasks = ", ".join(f"{t}: {len(n)} classes" for t, n in self.names.items())
        return (f"Source({self.name!r}, {len(self.part)} clips, {_parts(self.part)}, {tasks}, "
                f"{self.sample_rate} Hz, key={self.key!r})")


def _parts(part: torch.Tensor) -> str:
    """``train/val/test 240/80/80`` for a (N,) part tensor."""
    return "/".join(PARTS) + " " + "/".join(str(int((part == i).sum())) for i in range(3))


@dataclass(frozen=True, eq=False)
class Corpus:
    """Every clip's features on one device, with both tasks' labels and the parts.

    ``x`` is (N, 1, n_mels, frames); ``y`` is the current task's labels (N,). Switch task with
    :meth:`with_task`: the features are shared, not copied. ``features`` are the settings ``x``
    was computed with; they enter :attr:`key`, which keys every cached model.
    """

    source: Source
    x: torch.Tensor
    task: str
    labels: dict[str, torch.Tensor] = field(repr=False)
    features: feats.FeatureConfig = feats.FeatureConfig()

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def key(self) -> str:
        """The clips and their feature settings: a model trained on other features (say
        ``n_fft=512``, same shape) must not be loaded from the cache. The default settings keep
        the clips' own fingerprint, so caches made before features were keyed stay valid."""
        if self.features == feats.FeatureConfig():
            return self.source.key
        return fingerprint(self.source.key, dataclasses.asdict(self.features))

    @property
    def y(self) -> torch.Tensor:
        return self.labels[self.task]

    @property
    def speaker(self) -> torch.Tensor:
        return self.labels["speaker"]

    @property
    def part(self) -> torch.Tensor:
        return self.labels["part"]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.source.names[self.task]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def names(self, task: str) -> tuple[str, ...]:
        """Class names of ``task`` (``"keyword"`` or ``"speaker"``)."""
        return self.source.names[task]

    def indices(self, part: str) -> torch.Tensor:
        """Corpus indices of ``"train"``, ``"val"`` or ``"test"`` clips."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; known: {list(PARTS)}")
        return torch.nonzero(self.part == PARTS.index(part)).flatten()

    def with_task(self, task: str) -> Corpus:
        """The same clips labelled for another task (features are shared)."""
        if task not in self.source.names:
            raise ValueError(f"corpus {self.name!r} has no task {task!r}; "
                             f"known: {sorted(self.source.names)}")
        return dataclasses.replace(self, task=task)

    def to(self, device: str | torch.device) -> Corpus:
        labels = {k: v.to(device) for k, v in self.labels.items()}
        return dataclasses.replace(self, x=self.x.to(device), labels=labels)

    def audio(self, index: int) -> np.ndarray:
        """The waveform of clip ``index`` as float32 in [-1, 1] (for players and plots)."""
        wave = self.source.load_waves(torch.tensor([int(index)]))[0]
        wave = wave.float() / 32768.0 if wave.dtype == torch.int16 else wave.float()
        return wave.numpy()

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return (f"Corpus({self.name!r}, task={self.task!r}, {self.n_classes} classes, "
                f"{len(self)} clips, {_parts(self.part)}, x={tuple(self.x.shape)} "
                f"{str(self.x.dtype).removeprefix('torch.')} on {self.device})")


class Batches:
    """Mini-batches of a subset of a corpus, drawn on the device with a seeded generator.

    Iterating yields ``(x, y)`` with x (B, 1, n_mels, frames) and y (B,). Each pass reshuffles
    from the same generator, so two ``Batches`` built with the same seed give the same stream.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor,
                 batch_size: int = 128, seed: int = 0, shuffle: bool = True) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.x, self.y = x, y
        self.indices = indices.to(x.device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = generator(seed)

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size

    @property
    def size(self) -> int:
        """Number of clips."""
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices
        if self.shuffle:
            perm = torch.randperm(len(order), generator=self.generator).to(order.device)
            order = order[perm]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


@dataclass(frozen=True, eq=False)
class Split:
    """A forget request: which training clips to forget, which to retain, what to test on.

    All fields are corpus index tensors. For ``class``/``speaker`` requests, ``forgotten_test``
    holds the test clips of the forgotten classes/speakers and ``kept_test`` the rest (likewise
    for validation); for ``sample`` requests they are ``None``.
    """

    corpus: Corpus
    kind: str
    forget: torch.Tensor
    retain: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    targets: tuple[str, ...] = ()
    forgotten_test: torch.Tensor | None = None
    kept_test: torch.Tensor | None = None
    forgotten_val: torch.Tensor | None = None
    kept_val: torch.Tensor | None = None

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(value)}" for name, value in vars(self).items()
                          if isinstance(value, torch.Tensor))
        targets = f", targets={list(self.targets)}" if self.targets else ""
        return f"Split({self.kind!r}{targets}, {sizes}, corpus={self.corpus.name!r})"

    def subset(self, name: str) -> torch.Tensor:
        """The index tensor called ``name`` (``"forget"``, ``"retain"``, ``"test"``, ...)."""
        value = getattr(self, name, None)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"split of kind {self.kind!r} has no subset {name!r}")
        return value

    def batches(self, name: str, batch_size: int = 128, seed: int = 0,
                shuffle: bool = True) -> Batches:
        """Shuffled mini-batches of one subset, labelled for the corpus's task."""
        return Batches(self.corpus.x, self.corpus.y, self.subset(name), batch_size, seed, shuffle)


# --------------------------------------------------------------------------- loading


def _embedded(size: str = "default", cache: str | os.PathLike | None = None) -> Source:
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


# A chapter's ``SIZE`` parameter on a real corpus: at most this many clips per class (or speaker)
# and part, so "tiny" and "small" stay quick subsets; None or "default" keeps everything.
REAL_SIZES: dict[str | None, int | None] = {None: None, "default": None, "small": 200, "tiny": 40}


def _real(name: str) -> Callable[..., Source]:
    """Real corpora live in ``speechul.datasets``; imported only when asked for."""

    def loader(size: str | None = None, **kwargs: object) -> Source:
        from . import datasets

        fn = getattr(datasets, name)
        cap = next((p for p in inspect.signature(fn).parameters if p.startswith("max_per_")), None)
        if size not in REAL_SIZES:
            raise ValueError(f"unknown size {size!r} for {name}; known: {list(REAL_SIZES)}")
        if REAL_SIZES[size] is not None and cap is not None and cap not in kwargs:
            kwargs[cap] = REAL_SIZES[size]  # a chapter's SIZE means "a quick subset" here too
        return fn(**kwargs)

    loader.__name__ = name
    return loader


LOADERS: dict[str, Callable[..., Source]] = {
    "embedded": _embedded,
    "speechcommands": _real("speech_commands"),
    "librispeech": _real("librispeech"),
    "voxceleb1": _real("voxceleb1"),
}


def _check_loader(name: str, loader: Callable[..., Source], arguments: dict) -> None:
    """A dataset of one's own is ``fn(size="default", cache=None, **options) -> Source``: say
    which argument a loader lacks instead of a TypeError from inside the grid."""
    params = inspect.signature(loader).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    lacking = [k for k in arguments if k not in params]
    if lacking:
        raise ValueError(f"dataset {name!r}: its loader takes no {lacking}; a loader is "
                         "fn(size='default', cache=None, **options) -> speechul.data.Source")


def load(name: str = "embedded", task: str | None = None, *,
         device: str | torch.device | None = None, cache: str | os.PathLike | None = None,
         features: feats.FeatureConfig = feats.FeatureConfig(), **kwargs: object) -> Corpus:
    """Load a corpus by name with cached log-mel features on ``device``.

    Args:
        name: a key of ``LOADERS`` (``"embedded"``, ``"speechcommands"``, ...).
        task: ``"keyword"`` or ``"speaker"``: which labels ``Corpus.y`` holds (default: the
            corpus's first task, ``"keyword"`` where it has keywords).
        device: where features live (default: CUDA when present, else CPU).
        cache: cache folder (default ``$SPEECHUL_CACHE`` or ``data/cache``).
        features: log-mel settings.
        **kwargs: passed to the loader, e.g. ``size="tiny"`` for the embedded corpus.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(LOADERS)}")
    _check_loader(name, LOADERS[name], {"cache": cache, **kwargs})
    source = LOADERS[name](cache=cache, **kwargs)
    if source.sample_rate != features.sample_rate:
        raise ValueError(f"dataset {name!r} has {source.sample_rate} Hz audio but the features "
                         f"expect {features.sample_rate} Hz")
    device = default_device(device)
    x = feats.logmel(source.load_waves, len(source.part), source.key, features, cache=cache,
                     device=device)
    labels = {**source.labels, "part": source.part}
    first = next(iter(source.names))
    corpus = Corpus(source=source, x=x, task=first, labels=labels, features=features)
    corpus = corpus.with_task(task or first)
    return corpus.to(device)


# --------------------------------------------------------------------------- forget sets


def _lookup(wanted: Sequence[str | int], names: tuple[str, ...], what: str) -> list[int]:
    """Class names or ids -> ids, with an error that lists what exists."""
    out = []
    for item in wanted:
        if isinstance(item, str):
            if item not in names:
                raise ValueError(f"unknown {what} {item!r}; known: {list(names)}")
            out.append(names.index(item))
        elif isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise ValueError(f"{item!r} ({type(item).__name__}) is not a {what}: give a class "
                             f"name such as {names[0]!r} or an id 0..{len(names) - 1}")
        elif 0 <= int(item) < len(names):
            out.append(int(item))
        else:
            raise ValueError(f"unknown {what} {item!r}; ids run 0..{len(names) - 1}")
    if not out:
        raise ValueError(f"name at least one {what} to forget")
    return out


def as_indices(indices: Sequence[int] | torch.Tensor, what: str = "forget request") -> torch.Tensor:
    """Corpus positions as a sorted, unique int64 CPU tensor (duplicates count once).

    A boolean mask (it would read as the positions 0 and 1), float values (silently truncated)
    and an empty request are refused with a message that says so.
    """
    wanted = torch.as_tensor(indices).flatten().cpu()
    if len(wanted) == 0:  # checked first: an empty list reads as float32
        raise ValueError(f"{what} is empty: give at least one corpus index")
    if wanted.dtype == torch.bool:
        raise ValueError(f"{what}: got a boolean mask; pass positions, e.g. mask.nonzero()[:, 0]")
    if wanted.is_floating_point() or wanted.is_complex():
        raise ValueError(f"{what}: indices must be integer corpus positions, got {wanted.dtype}")
    return wanted.long().unique()


def _sample_forget(corpus: Corpus, train: torch.Tensor, fraction: float | None,
                   indices: Sequence[int] | torch.Tensor | None, seed: int) -> torch.Tensor:
    if (fraction is None) == (indices is None):
        raise ValueError("a 'sample' forget set needs exactly one of fraction= or indices=")
    if indices is not None:
        forget = as_indices(indices).to(train.device)
        outside = forget[~torch.isin(forget, train)]
        if len(outside):
            raise ValueError(f"forget indices not in the training set: {outside[:10].tolist()}"
                             f"{' ...' if len(outside) > 10 else ''}")
        return forget
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    g = generator(seed)
    n = max(1, round(fraction * len(train)))
    return train[torch.randperm(len(train), generator=g)[:n].to(train.device)].sort().values


def forget_split(corpus: Corpus, kind: str = "sample", *, fraction: float | None = None,
                 indices: Sequence[int] | torch.Tensor | None = None,
                 classes: Sequence[str | int] | None = None,
                 speakers: Sequence[str | int] | None = None, seed: int = 0) -> Split:
    """Build a forget request and its retain set.

    Args:
        kind: ``"sample"`` (random ``fraction`` of train, or explicit ``indices``), ``"class"``
            (all training clips whose label is in ``classes``: keywords for a keyword model,
            speakers for a speaker model) or ``"speaker"`` (all training clips of ``speakers``,
            whatever the label: "forget me" in a keyword model).
        seed: draws the random sample; the same seed gives the same forget set.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown forget kind {kind!r}; known: {list(KINDS)}")
    train, val, test = (corpus.indices(p) for p in PARTS)
    if kind == "sample":
        forget = _sample_forget(corpus, train, fraction, indices, seed)
        return _checked(Split(corpus, kind, forget, train[~torch.isin(train, forget)], val, test))
    task, wanted = ("speaker", speakers) if kind == "speaker" else (corpus.task, classes)
    if isinstance(wanted, (str, int)):
        wanted = [wanted]  # "yes" is one keyword, not the letters y, e and s
    if wanted is None:
        needs = "speakers" if kind == "speaker" else "classes"
        raise ValueError(f"a {kind!r} forget set needs {needs}=")
    names = corpus.names(task)
    ids = torch.tensor(_lookup(wanted, names, task), device=corpus.device)
    hit = torch.isin(corpus.labels[task], ids)
    pick = lambda part, flag: part[hit[part] == flag]  # noqa: E731 - a two-use helper
    forget = pick(train, True)
    if len(forget) == 0:
        raise ValueError(f"the forget set is empty: no training clips of {list(wanted)}")
    return _checked(Split(corpus, kind, forget, pick(train, False), val, test,
                          targets=tuple(names[i] for i in ids.tolist()),
                          forgotten_test=pick(test, True), kept_test=pick(test, False),
                          forgotten_val=pick(val, True), kept_val=pick(val, False)))


def _checked(split: Split) -> Split:
    """Refuse a request that leaves nothing to train on (Retrain would return an untrained
    network, and every method would "succeed" against it)."""
    if len(split.retain) == 0:
        raise ValueError(f"the retain set is empty: this {split.kind!r} request forgets every "
                         "training clip")
    return split
