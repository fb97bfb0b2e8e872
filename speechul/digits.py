"""An image baseline: scikit-learn's handwritten digits as a speechul corpus.

Is speech harder to unlearn than images? To ask that fairly, everything but the data must stay
the same: the model (the same small CNN, ``arch="cnn"``), the recipe, the forget requests, the
unlearning methods and the metrics. This module turns the 1,797 8x8 digit images that ship with
scikit-learn (``sklearn.datasets.load_digits``, offline) into a :class:`~speechul.data.Corpus`
(x of shape (N, 1, size, size), task ``"digit"``, parts train/val/test 60/20/20 like the
embedded speech corpus), so that ``train.original``, ``unlearn.run`` and ``metrics.evaluate`` run
on it unchanged, and :func:`run` plays an :class:`~speechul.experiments.Setting` on it.

The images are upsampled (bilinear) to ``size`` x ``size`` pixels: the CNN's stem and three
pooling blocks divide each side by 16, so 8x8 images are too small for it; 32x32 leaves a 2x2 map
at the end, like the 40x101 log-mels leave 2x6. There are no speakers (no writer ids either), so
``kind="speaker"`` requests do not apply.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import data, metrics, train, unlearn
from ._runtime import atomic_save, cache_dir, checked_load, default_device, fingerprint, progress
from .experiments import REFERENCE, Setting, refuse_diverged

__all__ = ["TASK", "load", "run", "run_one"]

TASK = "digit"
_FRACTIONS = (0.6, 0.2, 0.2)  # train / val / test, as in the embedded speech corpus


def _parts(labels: np.ndarray, seed: int) -> torch.Tensor:
    """Stratified train/val/test assignment (N,) 0/1/2: every digit in every part."""
    rng = np.random.default_rng(seed)
    part = np.zeros(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n_train = round(_FRACTIONS[0] * len(idx))
        n_val = round(_FRACTIONS[1] * len(idx))
        part[idx[n_train : n_train + n_val]] = 1
        part[idx[n_train + n_val :]] = 2
    return torch.from_numpy(part)


def _no_audio(indices: torch.Tensor) -> torch.Tensor:
    raise ValueError("the digits corpus holds images: there is no audio to play")


def load(task: str = TASK, *, device: str | torch.device | None = None, size: int = 32,
         seed: int = 0) -> data.Corpus:
    """The digits corpus: x (1797, 1, size, size) float32 in [0, 1], labels ``"digit"``.

    Args:
        task: only ``"digit"`` (the argument exists so the call reads like ``data.load``).
        device: where the images live (default: CUDA when present, else CPU).
        size: side in pixels after upsampling; at least 16 for the ``"cnn"`` architecture.
        seed: draws the stratified train/val/test parts.
    """
    from sklearn.datasets import load_digits

    if task != TASK:
        raise ValueError(f"the digits corpus has no task {task!r}; known: [{TASK!r}]")
    if not (isinstance(size, int) and size >= 16):
        raise ValueError(f"size must be an int >= 16 (the CNN divides each side by 16), got "
                         f"{size!r}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    x = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target).long()
    source = data.Source(
        name=f"digits-{size}px", key=fingerprint("sklearn-digits", len(labels), size, seed),
        labels={TASK: labels}, names={TASK: tuple(str(d) for d in range(10))},
        part=_parts(bunch.target, seed), load_waves=_no_audio)
    corpus = data.Corpus(source=source, x=x.contiguous(), task=TASK,
                         labels={TASK: labels, "part": source.part})
    return corpus.to(default_device(device))


def _reference(corpus: data.Corpus, setting: Setting, original: train.Trained,
               split: data.Split, seed: int) -> tuple[nn.Module, float, float]:
    """Retrain for (setting, seed) on the digits, its seconds and work (GFLOP): trained once, then
    cached like the speech one."""
    path = cache_dir() / "models" / (
        f"retrain-{fingerprint('digits', corpus.key, setting.key, original.key, seed)}.pt")
    saved = checked_load(path)
    if saved is None:
        out = unlearn.run(REFERENCE, original, split, seed=seed,
                          **setting.hparams.get(REFERENCE, {}))
        refuse_diverged(out)
        state = {k: v.detach().cpu() for k, v in out.model.state_dict().items()}
        saved = {"state_dict": state, "seconds": out.seconds, "cost": out.cost}
        atomic_save(saved, path)
    model = train.fresh_model(setting.recipe, corpus.n_classes, corpus.device, seed)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), float(saved["seconds"]), float(saved["cost"])


def run_one(corpus: data.Corpus, setting: Setting, method: str, seed: int) -> dict[str, Any]:
    """One method, one seed on the digits: the same row as ``experiments.run_one`` gives."""
    original_seed = seed if setting.vary_original else setting.original_seed
    original = train.original(corpus, setting.recipe, seed=original_seed)
    split = data.forget_split(corpus, setting.kind, fraction=setting.fraction,
                              classes=setting.classes or None,
                              speakers=setting.speakers or None, seed=seed)
    ref_model, ref_seconds, ref_cost = _reference(corpus, setting, original, split, seed)
    if method == REFERENCE:
        model, seconds, work, hp, diverged = ref_model, ref_seconds, ref_cost, {}, False
    else:
        out = unlearn.run(method, original, split, seed=seed, **setting.hparams.get(method, {}))
        model, seconds, work = out.model, out.seconds, out.cost
        hp, diverged = out.hparams, out.diverged
    random_model = train.fresh_model(setting.recipe, corpus.n_classes, corpus.device,
                                     seed + 10_000)
    row = metrics.evaluate(model, split, reference=ref_model, random_model=random_model)
    describe = {**setting.describe(), "dataset": corpus.name, "task": corpus.task}
    return {**describe, "method": method, "overrides": setting.overrides(method), "seed": seed,
            **row, "cost": work, "retrain_cost": ref_cost, "cost_fraction": work / ref_cost,
            "seconds": seconds, "retrain_seconds": ref_seconds,
            "time_fraction": seconds / ref_seconds,
            "diverged": diverged, "hparams": json.dumps(hp, sort_keys=True, default=str)}


def run(setting: Setting, *, size: int = 32) -> pd.DataFrame:
    """Every (method, seed) of ``setting``, plus Retrain, on the digits corpus.

    The setting's ``task``, ``dataset``, ``size`` and ``data_options`` are ignored (the digits
    have one task); everything else (forget request, methods, seeds, recipe, hyper-parameters)
    is used as ``experiments.run`` uses it, so one ``Setting`` can be played on speech and on
    images and the two tables compared row for row.
    """
    corpus = load(device=setting.device, size=size)
    methods = (REFERENCE, *[m for m in setting.methods if m != REFERENCE])
    todo = [(m, s) for s in setting.seeds for m in methods]
    rows = {(m, s): run_one(corpus, setting, m, s)
            for m, s in progress(todo, desc="digits grid")}
    return pd.DataFrame([rows[(m, s)] for m in methods for s in setting.seeds])
