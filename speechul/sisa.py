"""Exact unlearning by design: SISA training (Sharded, Isolated, Sliced, Aggregated).

Bourtoule et al. (2021): split the training set into ``shards`` disjoint parts and train one
model per shard, in isolation. Each shard is further cut into ``slices``; its model sees slice 1,
then slices 1-2, then 1-3, ..., and a checkpoint is saved after each stage. The ensemble predicts
with the mean of the members' softmax outputs. Deleting a clip then only retrains *its* shard,
and only from the last checkpoint taken before the clip's slice was first seen: the result is
exactly the model that shard would have been had the clip never existed, at a fraction of the
cost of retraining everything. The price is accuracy: each member sees 1/shards of the data.

>>> sharded = su.sisa.fit(corpus, recipe, shards=4, slices=2, seed=0)
>>> new, seconds, retrained = su.sisa.forget(sharded, split.forget)   # sharded is untouched
>>> su.metrics.evaluate(new, split)                                   # an ordinary nn.Module
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import train
from ._runtime import Timer, fingerprint, generator, progress
from .data import Batches, Corpus, as_indices

__all__ = ["Sharded", "fit", "forget", "train_shard", "stage_epochs", "sisa", "as_trained"]

StateDict = dict[str, torch.Tensor]


class Sharded(nn.Module):
    """A SISA ensemble: one model per shard, the slices each saw, and per-stage checkpoints.

    ``forward`` returns the *log of the mean member probability* (B, C): arg-max, softmax and
    cross-entropy of it are those of the averaged ensemble, so every function in
    :mod:`speechul.metrics` works on it unchanged. Shards whose clips were all deleted no longer
    vote. Build with :func:`fit`; delete with :func:`forget` (which returns a new object).

    Attributes:
        members: one model per shard.
        slices: ``slices[k][r]`` are the corpus indices (CPU int64) of slice ``r`` of shard ``k``.
        checkpoints: ``checkpoints[k][r]`` are shard ``k``'s weights (CPU) after stage ``r``.
        corpus, recipe, seed: what the shards are (re)trained with.
        seconds: wall-clock seconds of the training that made this object (fit or forget).
    """

    def __init__(self, members: Sequence[nn.Module], slices: list[list[torch.Tensor]],
                 checkpoints: list[list[StateDict]], corpus: Corpus, recipe: train.TrainConfig,
                 seed: int, seconds: float = 0.0) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.slices, self.checkpoints = slices, checkpoints
        self.corpus, self.recipe, self.seed, self.seconds = corpus, recipe, seed, seconds

    def __deepcopy__(self, memo: dict[int, Any]) -> Sharded:
        """Copy weights, slices and checkpoints, but share the corpus: features are read-only,
        and copying them would cost memory and time on every ``unlearn.run``."""
        memo[id(self.corpus)] = self.corpus
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return new

    @property
    def n_shards(self) -> int:
        return len(self.members)

    @property
    def sizes(self) -> list[int]:
        """Number of clips each shard is trained on now."""
        return [sum(len(s) for s in shard) for shard in self.slices]

    @property
    def train_indices(self) -> torch.Tensor:
        """Every clip the ensemble is trained on now (sorted corpus indices)."""
        return torch.cat([s for shard in self.slices for s in shard]).sort().values

    def _voters(self) -> list[nn.Module]:
        return [m for m, n in zip(self.members, self.sizes, strict=True) if n > 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([F.softmax(m(x).float(), dim=1) for m in self._voters()]).mean(0)
        return probs.clamp_min(1e-12).log()  # the floor keeps losses finite for attacks

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The members' embeddings side by side: (B, 1, ...) -> (B, voters x D).

        Averaging embeddings of independently trained models is meaningless (their coordinates
        are unrelated); concatenating them keeps everything a linear probe could use.
        """
        return torch.cat([m.embed(x) for m in self._voters()], dim=1)


def stage_epochs(recipe: train.TrainConfig, slices: int) -> int:
    """Epochs per slice stage, so that slicing costs about as much as training once.

    Stage ``r`` (of ``R``) trains on ``r/R`` of the shard, so ``e`` epochs per stage process
    ``e (R + 1) / 2`` shard-epochs in total; ``e = 2 E / (R + 1)`` matches the recipe's ``E``
    (Bourtoule et al. 2021, section V-B). Rounded up, at least one.
    """
    return max(1, math.ceil(2 * recipe.epochs / (slices + 1)))


def _shard_seed(seed: int, shard: int, stage: int | None = None) -> int:
    """Independent, repeatable seeds per shard (initialisation) and per stage (batch order):
    a function of positions only, so retraining a shard replays exactly the same randomness."""
    return int(fingerprint("sisa", seed, shard, stage), 16) % 2**62


def _train_stages(model: nn.Module, corpus: Corpus, slices: list[torch.Tensor], start: int,
                  recipe: train.TrainConfig, seed: int, shard: int) -> list[StateDict]:
    """Run stages ``start .. R-1`` in place: stage r trains on slices[0..r]; returns the
    checkpoints taken after each of them (CPU copies)."""
    stage_recipe = dataclasses.replace(recipe, epochs=stage_epochs(recipe, len(slices)))
    saved = []
    for stage in range(start, len(slices)):
        seen = torch.cat(slices[: stage + 1]).to(corpus.device)
        if len(seen):  # a shard emptied by deletions keeps its initial weights
            batches = Batches(corpus.x, corpus.y, seen, recipe.batch_size,
                              seed=_shard_seed(seed, shard, stage))
            train.fit(model, batches, stage_recipe, desc=f"shard {shard} stage {stage}")
        saved.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    return saved


def train_shard(corpus: Corpus, slices: list[torch.Tensor], recipe: train.TrainConfig,
                seed: int, shard: int) -> tuple[nn.Module, list[StateDict]]:
    """Train shard ``shard``'s model from scratch on its slices; -> (model, checkpoints).

    This is also what a deletion replays from its checkpoint on, so retraining a shard from
    scratch on its remaining clips gives bitwise the same weights on the CPU.
    """
    model = train.fresh_model(recipe, corpus.n_classes, corpus.device, _shard_seed(seed, shard))
    checkpoints = _train_stages(model, corpus, slices, 0, recipe, seed, shard)
    return model.eval(), checkpoints


def _layout(corpus: Corpus, shards: int, slices: int, seed: int,
            group: str | None) -> list[list[torch.Tensor]]:
    """Random disjoint shards of the training set, each cut into slices (CPU indices).

    With ``group`` (e.g. ``"speaker"``), whole groups go to one shard (balanced greedily by
    size), so deleting everything of one speaker retrains one shard only.
    """
    train_idx = corpus.indices("train").cpu()
    if shards < 1 or slices < 1:
        raise ValueError(f"shards and slices must be >= 1, got {shards} and {slices}")
    if len(train_idx) < shards * slices:
        raise ValueError(f"{len(train_idx)} training clips cannot fill {shards} shards x "
                         f"{slices} slices")
    g = generator(seed)
    train_idx = train_idx[torch.randperm(len(train_idx), generator=g)]
    if group is None:
        parts = list(torch.tensor_split(train_idx, shards))
    else:
        if group not in corpus.labels or group == "part":
            known = sorted(k for k in corpus.labels if k != "part")
            raise ValueError(f"unknown group {group!r}; known: {known}")
        labels = corpus.labels[group].cpu()[train_idx]
        ids = labels.unique()
        if len(ids) < shards:
            raise ValueError(f"{len(ids)} {group} groups cannot fill {shards} shards")
        ids = ids[torch.randperm(len(ids), generator=g)]
        members: list[list[torch.Tensor]] = [[] for _ in range(shards)]
        for gid in sorted(ids.tolist(), key=lambda i: -int((labels == i).sum())):
            smallest = min(range(shards), key=lambda k: sum(len(t) for t in members[k]))
            members[smallest].append(train_idx[labels == gid])
        parts = [torch.cat(m)[torch.randperm(sum(len(t) for t in m), generator=g)]
                 for m in members]
    if min(len(p) for p in parts) < slices:
        raise ValueError(f"a shard has fewer clips than the {slices} slices")
    return [[s.sort().values for s in torch.tensor_split(p, slices)] for p in parts]


def fit(corpus: Corpus, recipe: train.TrainConfig = train.TrainConfig(), shards: int = 4,
        slices: int = 1, seed: int = 0, *, group: str | None = None) -> Sharded:
    """Train a SISA ensemble on the corpus's training clips.

    Args:
        recipe: each member's recipe; with slices, each stage trains :func:`stage_epochs`.
        shards: number of disjoint shards (members); 1 with 1 slice is ordinary training.
        slices: stages per shard (a checkpoint after each).
        seed: draws the layout and seeds every member.
        group: a label name (``"speaker"``) whose groups must not be split across shards.
    """
    layout = _layout(corpus, shards, slices, seed, group)
    members, checkpoints = [], []
    with Timer() as timer:
        for k in progress(range(shards), desc=f"SISA: {shards} shards"):
            model, saved = train_shard(corpus, layout[k], recipe, seed, k)
            members.append(model)
            checkpoints.append(saved)
    return Sharded(members, layout, checkpoints, corpus, recipe, seed, timer.seconds).eval()


def _requested(sharded: Sharded, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The deletion request as unique CPU indices, each of a clip the ensemble is trained on."""
    wanted = as_indices(indices, "deletion request")
    absent = wanted[~torch.isin(wanted, sharded.train_indices)]
    if len(absent):
        raise ValueError(f"clips {absent[:10].tolist()}{' ...' if len(absent) > 10 else ''} are "
                         "not in this ensemble's training set (not training clips, out of range "
                         "or already deleted)")
    return wanted


def forget(sharded: Sharded, indices: Sequence[int] | torch.Tensor,
           ) -> tuple[Sharded, float, tuple[int, ...]]:
    """Delete clips exactly: retrain only the shards that hold them, from their last clean
    checkpoint. Never mutates ``sharded``.

    Args:
        indices: corpus indices of clips the ensemble is trained on now.
    Returns:
        (a new :class:`Sharded`, seconds spent retraining, the retrained shards' numbers).
    Raises:
        ValueError: empty request, or a clip the ensemble is not trained on (never was, or was
            already deleted), or a request that would leave no training clip at all.
    """
    wanted = _requested(sharded, indices)
    if len(wanted) == len(sharded.train_indices):
        raise ValueError("this request deletes every training clip: nothing would be left")
    new = copy.deepcopy(sharded)
    hit = [k for k, shard in enumerate(new.slices) if any(torch.isin(s, wanted).any()
                                                          for s in shard)]
    with Timer() as timer:
        for k in progress(hit, desc="SISA: retraining shards"):
            first = min(r for r, s in enumerate(new.slices[k]) if torch.isin(s, wanted).any())
            new.slices[k] = [s[~torch.isin(s, wanted)] for s in new.slices[k]]
            model = train.fresh_model(new.recipe, new.corpus.n_classes, new.corpus.device,
                                      _shard_seed(new.seed, k))
            if first > 0:  # resume from the weights before the deleted clips were ever seen
                model.load_state_dict(new.checkpoints[k][first - 1])
            saved = _train_stages(model, new.corpus, new.slices[k], first, new.recipe,
                                  new.seed, k)
            new.members[k] = model.eval()
            new.checkpoints[k] = new.checkpoints[k][:first] + saved
    new.seconds = timer.seconds
    return new.eval(), timer.seconds, tuple(hit)


def sisa(model: nn.Module, forget: Batches, retain: Batches) -> nn.Module:
    """The registry form (``unlearn.register(sisa)``): delete ``forget``'s clips from a
    :class:`Sharded` model. ``retain`` is not needed: the shards know their own data."""
    if not isinstance(model, Sharded):
        raise TypeError("the 'sisa' method unlearns a SISA ensemble: train it with "
                        "speechul.sisa.fit and wrap it with speechul.sisa.as_trained")
    return _forget(model, forget.indices)[0]


_forget = forget  # ``sisa`` takes an argument named ``forget`` (the registry's signature)


def as_trained(sharded: Sharded) -> train.Trained:
    """Wrap an ensemble as a :class:`~speechul.train.Trained`, for ``unlearn.run("sisa", ...)``."""
    return train.Trained(sharded, sharded.recipe, [], sharded.seconds,
                         fingerprint("sisa", sharded.corpus.key, sharded.seed, sharded.sizes))
