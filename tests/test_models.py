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


@pytest.mark.parametrize("k", [1, 2, 4])
def test_split_into_trunk_and_top_is_the_same_network(k):
    model = models.build("cnn", 10).eval()
    x = torch.randn(4, 1, 40, 101)
    trunk, top = model.split(k)
    assert torch.equal(top(trunk(x)), model(x))
    top_params = {id(p) for p in top.parameters()}
    assert id(model.head.weight) in top_params  # shared modules: training top trains the model
    assert not top_params & {id(p) for p in trunk.parameters()}
    assert model.state_dict().keys() == models.build("cnn", 10).state_dict().keys()


@pytest.mark.parametrize("k", [0, 5, -1])
def test_split_refuses_a_cut_outside_the_network(k):
    with pytest.raises(ValueError, match="k must be between 1 and 4"):
        models.build("cnn", 10).split(k)


def test_pooling_before_relu_trains_exactly_like_the_usual_order():
    """The blocks pool before their ReLU (cheaper); outputs and gradients equal relu-then-pool."""
    model = models.build("cnn", 10)
    usual = models.build("cnn", 10)
    usual.load_state_dict(model.state_dict())
    for block in usual.features[1:]:
        pool, relu = block[2], block[3]
        assert isinstance(pool, torch.nn.MaxPool2d) and isinstance(relu, torch.nn.ReLU)
        block[2], block[3] = torch.nn.ReLU(), pool
    x = torch.randn(8, 1, 40, 101)
    y = torch.randint(0, 10, (8,))
    for net in (model, usual):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    assert torch.equal(model(x), usual(x))
    for (name, p), q in zip(model.named_parameters(), usual.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
