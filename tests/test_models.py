"""The CNN: shapes, embedding, parameter budget, registry errors."""

from __future__ import annotations

import pytest
import torch

from speechul import models


def test_logits_and_embedding_shapes():
    model = models.build("cnn", 10).eval()
    x = torch.randn(4, 1, 40, 101)
    assert model(x).shape == (4, 10)
    emb = model.embed(x)
    assert emb.shape == (4, model.embedding_dim)
    assert torch.allclose(model.head(emb), model(x), atol=1e-5)  # dropout is off in eval


def test_small_enough_for_a_laptop():
    n = sum(p.numel() for p in models.build("cnn", 32).parameters())
    assert 10_000 < n < 200_000


def test_unknown_arch_and_bad_classes():
    with pytest.raises(ValueError, match="known: .*cnn"):
        models.build("transformer", 10)
    with pytest.raises(ValueError, match="at least 2 classes"):
        models.build("cnn", 1)
