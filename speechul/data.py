"""What a corpus is and how it is divided: load by name, parts, forget sets, on-device batches.

A :class:`Corpus` holds every clip's features as one tensor on the device, the labels of *both*
tasks (keyword and speaker, where the corpus has them) and the train/val/test part of each clip.
A :class:`Split` says which training clips to forget and which to retain. Indices are always
positions in the corpus, so one index tensor means the same clips everywhere.

This module is the front door: the types live in :mod:`speechul.corpus`, the loaders and their
registry in :mod:`speechul.loaders`, and forget requests here. To add a dataset, write a
function that returns a :class:`Source` and add it to ``LOADERS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._runtime import generator
from .corpus import PARTS, Batches, Corpus, Source, Split
from .loaders import LOADERS, REAL_SIZES, load

__all__ = ["PARTS", "Source", "Corpus", "Batches", "Split", "LOADERS", "REAL_SIZES", "load",
           "forget_split", "as_indices"]

KINDS = ("sample", "class", "speaker")


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
