"""The linear probe: it finds a planted class signal, not a missing one, and takes labels and
embeddings as tensors straight from a model (with gradients, on any device) or as arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechul import probes


def _planted(n: int, signal: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    emb = torch.randn(n, 8, generator=g)
    emb[:, 0] += signal * labels  # the label, written into one dimension
    return emb, labels


def test_probe_finds_a_planted_signal_and_not_a_missing_one():
    found = probes.linear_probe(*_planted(400, 3.0, 0), *_planted(200, 3.0, 1))
    blind = probes.linear_probe(*_planted(400, 0.0, 0), *_planted(200, 0.0, 1))
    assert found.accuracy > 0.9 and found.chance == pytest.approx(0.25)
    assert blind.accuracy < 0.4 and (found.n_train, found.n_test) == (400, 200)


def test_probe_takes_tensors_with_gradients_and_arrays():
    (x_fit, y_fit), (x_test, y_test) = _planted(200, 3.0, 0), _planted(100, 3.0, 1)
    from_model = probes.linear_probe(x_fit.requires_grad_(), y_fit, x_test, y_test)
    from_arrays = probes.linear_probe(x_fit.detach().numpy(), y_fit.numpy(),
                                      x_test.numpy(), np.asarray(y_test))
    assert from_model == from_arrays


def test_probe_needs_two_classes():
    emb, _ = _planted(50, 1.0, 0)
    with pytest.raises(ValueError, match="at least two classes"):
        probes.linear_probe(emb, torch.zeros(50, dtype=torch.long), emb, torch.zeros(50))
