"""What a model's embeddings still reveal: linear probes on the penultimate layer.

A keyword model is never told who is speaking, yet its embedding of a clip usually says so: a
linear classifier trained on embeddings recovers the speaker far above chance. That is why
"forget my voice" is hard in speech, and why chapter 6 probes an unlearned model for identity,
not only for accuracy on the forgotten clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ._runtime import eval_chunk
from .data import Corpus

__all__ = ["embeddings", "ProbeResult", "linear_probe"]


@torch.no_grad()
def embeddings(model: nn.Module, corpus: Corpus, indices: torch.Tensor,
               chunk: int | None = None) -> torch.Tensor:
    """Penultimate embeddings of the given clips: -> (len(indices), D) float32 on the CPU."""
    model.eval()
    chunk = chunk or eval_chunk(corpus.x.device)
    out = [model.embed(corpus.x[indices[i : i + chunk]]).float().cpu()
           for i in range(0, len(indices), chunk)]
    return torch.cat(out) if out else torch.zeros(0, 0)


@dataclass(frozen=True)
class ProbeResult:
    """Probe accuracy on held-out clips, and chance level (the majority class share)."""

    accuracy: float
    chance: float
    n_train: int
    n_test: int


def _array(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor on any device (labels on the GPU, say) or an array -> a NumPy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def linear_probe(train_emb: torch.Tensor | np.ndarray, train_labels: torch.Tensor | np.ndarray,
                 test_emb: torch.Tensor | np.ndarray, test_labels: torch.Tensor | np.ndarray,
                 seed: int = 0) -> ProbeResult:
    """Fit a standardised multinomial logistic regression; report held-out accuracy.

    Args:
        train_emb, test_emb: (N, D) embeddings; train_labels, test_labels: (N,) integer labels.
    """
    xs = [_array(a).astype(np.float32) for a in (train_emb, test_emb)]
    ys = [_array(a) for a in (train_labels, test_labels)]
    if len(np.unique(ys[0])) < 2:
        raise ValueError("a probe needs at least two classes in its training labels")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(xs[0], ys[0])
    accuracy = float((probe.predict(xs[1]) == ys[1]).mean())
    chance = float(np.bincount(ys[1]).max() / len(ys[1]))
    return ProbeResult(accuracy, chance, len(ys[0]), len(ys[1]))
