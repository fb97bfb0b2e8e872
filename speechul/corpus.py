"""What a corpus is: a :class:`Source` (a dataset before features), a :class:`Corpus` (every
clip's features on one device, both tasks' labels, the parts), :class:`Batches` and a forget
request, :class:`Split`.

Only types live here, so every other module (the loaders, the training code, the metrics) can
import them without importing the loaders: ``speechul.loaders`` builds these, ``speechul.data``
gathers the public names. Indices are always positions in the corpus, so one index tensor means
the same clips everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from . import features as feats
from ._runtime import fingerprint, generator

__all__ = ["PARTS", "Source", "Corpus", "Batches", "Split", "part_sizes"]


PARTS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Source:
    """A dataset before features: labels, parts and a way to read audio. Loaders return this.

    A corpus that is not audio (the digits images of :mod:`speechul.digits`) gives its model
    inputs as ``inputs`` instead: they are used as they are, with no log-mel features.

    Args:
        name: display name, e.g. ``"embedded-default"``.
        key: a fingerprint of the exact clips (it keys the feature cache).
        labels: task name -> (N,) int64 labels; ``"speaker"`` is always present.
        names: task name -> class names, indexed by label.
        part: (N,) int64, 0 train / 1 val / 2 test.
        load_waves: (B,) indices -> (B, samples) int16 or float waves at ``sample_rate``.
        sample_rate: the waves' rate in Hz.
        inputs: (N, 1, H, W) model inputs, for a corpus that has no audio (else ``None``).
    """

    name: str
    key: str
    labels: dict[str, torch.Tensor]
    names: dict[str, tuple[str, ...]]
    part: torch.Tensor
    load_waves: Callable[[torch.Tensor], torch.Tensor]
    sample_rate: int = 16_000
    inputs: torch.Tensor | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # a line, not every label tensor (a notebook echoes it)
        tasks = ", ".join(f"{t}: {len(n)} classes" for t, n in self.names.items())
        return (f"Source({self.name!r}, {len(self.part)} clips, {part_sizes(self.part)}, {tasks}, "
                f"{self.sample_rate} Hz, key={self.key!r})")


def part_sizes(part: torch.Tensor) -> str:
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
        ``n_fft=512``, same shape) must not be loaded from the cache."""
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

    def in_every_part(self, task: str) -> tuple[str, ...]:
        """The classes of ``task`` with clips in every part, in class order: the ones a class
        request can forget and measure (training clips to forget, validation and test clips to
        score). Names starting with ``_`` (silence, unknown) are left out."""
        labels = self.labels[task].cpu()
        names = self.names(task)
        counts = torch.bincount(labels * len(PARTS) + self.part.cpu(),
                                minlength=len(names) * len(PARTS)).view(len(names), len(PARTS))
        full = (counts > 0).all(dim=1).tolist()
        return tuple(n for n, ok in zip(names, full, strict=True) if ok and not n.startswith("_"))

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
                f"{len(self)} clips, {part_sizes(self.part)}, x={tuple(self.x.shape)} "
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

    def index_batches(self) -> Iterator[torch.Tensor]:
        """One pass's corpus indices, batch by batch (reshuffled from the generator)."""
        order = self.indices
        if self.shuffle:
            perm = torch.randperm(len(order), generator=self.generator).to(order.device)
            order = order[perm]
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.index_batches():
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
