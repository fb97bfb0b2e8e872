"""An image baseline: scikit-learn's handwritten digits as a speechul dataset, ``"digits"``.

Is speech harder to unlearn than images? To ask that fairly, everything but the data must stay
the same: the model (the same small CNN, ``arch="cnn"``), the recipe, the forget requests, the
unlearning methods, the metrics and the experiment runner. This module is a loader like the
speech ones (registered in ``speechul.loaders.LOADERS``): it turns the 1,797 8x8 digit images
that ship with scikit-learn (``sklearn.datasets.load_digits``, offline) into a
:class:`~speechul.corpus.Source` whose ``inputs`` are the images (x of shape (N, 1, px, px), task
``"digit"``, parts train/val/test 60/20/20 like the embedded speech corpus). So
``data.load("digits")`` gives a :class:`~speechul.corpus.Corpus`, and a
:class:`~speechul.setting.Setting` with ``dataset="digits", task="digit"`` runs through
``experiments.run`` like any other.

The images are upsampled (bilinear) to ``pixels`` x ``pixels``: the CNN's stem and three pooling
blocks divide each side by 16, so 8x8 images are too small for it; 32x32 leaves a 2x2 map at the
end, like the 40x101 log-mels leave 2x6. There are no speakers (no writer ids either), so
``kind="speaker"`` requests do not apply.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ._runtime import fingerprint
from .corpus import Source

__all__ = ["TASK", "source"]

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


# The digits are whole at every size: a chapter's "tiny" corpus is 1,797 small images anyway.
SIZES = (None, "tiny", "small", "default")


def source(size: str | None = "default", cache: str | os.PathLike | None = None, *,
           pixels: int = 32, seed: int = 0) -> Source:
    """The digits: 1797 images (1, pixels, pixels) float32 in [0, 1], labels ``"digit"``.

    Args:
        size: a chapter's size name; every size is the whole (small) corpus.
        cache: unused (scikit-learn keeps its own copy); a loader takes it.
        pixels: side after upsampling; at least 16 for the ``"cnn"`` architecture.
        seed: draws the stratified train/val/test parts.
    """
    from sklearn.datasets import load_digits

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} for digits; known: {list(SIZES)}")
    if isinstance(pixels, bool) or not (isinstance(pixels, int) and pixels >= 16):
        raise ValueError(f"pixels must be an int >= 16 (the CNN divides each side by 16), got "
                         f"{pixels!r}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    x = F.interpolate(images, size=(pixels, pixels), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target).long()
    return Source(
        name=f"digits-{pixels}px", key=fingerprint("sklearn-digits", len(labels), pixels, seed),
        labels={TASK: labels}, names={TASK: tuple(str(d) for d in range(10))},
        part=_parts(bunch.target, seed), load_waves=_no_audio, inputs=x.contiguous())
