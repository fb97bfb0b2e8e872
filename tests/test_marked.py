"""Batches that mix forget and retain clips carry the labels and an explicit forget mask
(``S.Marked``), not labels sign-encoded as -(y + 1): no label value can be misread as a forget
flag, and a loss reads ``y.is_forget`` instead of decoding."""

from __future__ import annotations

import torch

from speechul.data import Batches
from speechul.unlearn import _shared as S


def _streams(n: int = 40, n_forget: int = 7, batch_size: int = 8) -> tuple[Batches, Batches]:
    x = torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 3  # label 0 included: it is where a sign code is most fragile
    forget = torch.arange(0, n, n // n_forget)[:n_forget]
    retain = torch.tensor([i for i in range(n) if i not in set(forget.tolist())])
    return (Batches(x, y, forget, batch_size, seed=1), Batches(x, y, retain, batch_size, seed=2))


def test_mixed_marks_exactly_the_forget_clips():
    forget, retain = _streams()
    both = S.mixed(forget, retain)
    seen = []
    twin = S.mixed(*_streams())  # the same streams again: its batches come in both's order
    for idx, (x, y) in zip(both.index_batches(), twin, strict=True):
        assert isinstance(y, S.Marked) and len(y) == len(idx)
        assert torch.equal(y.labels, retain.y[idx]), "labels are the true labels, not encoded"
        assert torch.equal(y.is_forget, torch.isin(idx, forget.indices))
        assert torch.equal(x, retain.x[idx])
        seen.append(idx)
    assert sorted(torch.cat(seen).tolist()) == list(range(40)), "one pass over both sets"


def test_pairs_stack_retain_then_forget_with_their_mask():
    forget, retain = _streams()
    batches = list(S.pairs(forget, retain))
    assert len(batches) == len(retain), "one pass over the longer stream"
    for x, y in batches:
        n_forget = int(y.is_forget.sum())
        assert 0 < n_forget <= forget.batch_size and len(x) == len(y)
        assert not y.is_forget[: len(y) - n_forget].any(), "retain rows first, then forget rows"
        assert (y.labels >= 0).all()


def test_mixed_batches_draw_the_same_order_as_plain_batches():
    """The mask adds a field; the shuffle (and so every method's result) is a plain Batches'."""
    forget, retain = _streams()
    both = S.mixed(forget, retain)
    seed = int(torch.randint(2**62, (1,), generator=_streams()[0].generator))
    plain = Batches(retain.x, retain.y, both.indices, retain.batch_size, seed=seed)
    for (x, y), (px, py) in zip(both, plain, strict=True):
        assert torch.equal(x, px) and torch.equal(y.labels, py)
