"""SISA: a deletion retrains only the shards holding the clips, exactly (bitwise on the CPU), and
never touches the ensemble it was given; the ensemble is an ordinary model for the metrics."""

from __future__ import annotations

import copy

import pytest
import torch

from speechul import data, metrics, sisa, train, unlearn

RECIPE = train.TrainConfig(epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def sharded(tiny_corpus) -> sisa.Sharded:
    return sisa.fit(tiny_corpus, RECIPE, shards=3, slices=2, seed=0)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_layout_partitions_the_training_set(sharded, tiny_corpus):
    every = torch.cat([s for shard in sharded.slices for s in shard])
    assert len(every) == len(every.unique()), "a clip sits in two slices"
    assert torch.equal(every.sort().values, tiny_corpus.indices("train").sort().values)
    assert len(sharded.checkpoints) == 3 and all(len(c) == 2 for c in sharded.checkpoints)


def test_forward_is_the_log_of_averaged_probabilities(sharded, tiny_corpus):
    x = tiny_corpus.x[:5]
    with torch.no_grad():
        out = sharded(x)
        mean = torch.stack([m(x).softmax(1) for m in sharded.members]).mean(0)
    torch.testing.assert_close(out.exp(), mean)
    assert sharded.embed(x).shape == (5, 3 * sharded.members[0].embedding_dim)
    assert 0.0 <= metrics.accuracy(sharded, tiny_corpus, tiny_corpus.indices("test")) <= 1.0


@pytest.mark.parametrize("slice_", [0, 1], ids=["first-slice", "last-slice"])
def test_deletion_retrains_one_shard_exactly(sharded, tiny_corpus, slice_):
    before = [_state(m) for m in sharded.members]
    slices_before = copy.deepcopy(sharded.slices)
    clip = sharded.slices[1][slice_][:2]
    new, seconds, retrained = sisa.forget(sharded, clip)

    assert retrained == (1,) and seconds > 0
    assert new is not sharded
    for k in (0, 2):  # other shards untouched
        assert _same(_state(new.members[k]), before[k])
    assert not _same(_state(new.members[1]), before[1])
    # the input ensemble is exactly as it was
    assert all(_same(_state(m), b) for m, b in zip(sharded.members, before, strict=True))
    assert all(torch.equal(a, b) for sa, sb in zip(sharded.slices, slices_before, strict=True)
               for a, b in zip(sa, sb, strict=True))
    # exact: the same as training shard 1 from scratch on what it has left
    remaining = [s[~torch.isin(s, clip)] for s in slices_before[1]]
    scratch, _ = sisa.train_shard(tiny_corpus, remaining, RECIPE, seed=0, shard=1)
    assert _same(_state(new.members[1]), _state(scratch))
    if slice_ == 1:  # resumed: the checkpoint before the deleted clip's slice is reused
        assert _same(new.checkpoints[1][0], sharded.checkpoints[1][0])


def test_deleted_clips_are_gone_everywhere(sharded):
    request = torch.cat([sharded.slices[0][0][:3], sharded.slices[2][1][:2]])
    new, _, retrained = sisa.forget(sharded, request)
    assert retrained == (0, 2)
    assert not torch.isin(new.train_indices, request).any()
    assert sum(new.sizes) == sum(sharded.sizes) - 5
    with pytest.raises(ValueError, match="already deleted"):
        sisa.forget(new, request[:1])


@pytest.mark.parametrize("bad, message", [
    ([], "empty"),
    ("test", "not in this ensemble's training set"),
    ([10**6], "not in this ensemble's training set"),
    ([0.5], "integer"),
])
def test_bad_requests_rejected(sharded, tiny_corpus, bad, message):
    if bad == "test":
        bad = tiny_corpus.indices("test")[:3]
    with pytest.raises(ValueError, match=message):
        sisa.forget(sharded, bad)


def test_bad_layouts_rejected(tiny_corpus):
    with pytest.raises(ValueError, match="cannot fill"):
        sisa.fit(tiny_corpus, RECIPE, shards=200, slices=2)
    with pytest.raises(ValueError, match="unknown group"):
        sisa.fit(tiny_corpus, RECIPE, shards=2, group="accent")
    with pytest.raises(ValueError, match=">= 1"):
        sisa.fit(tiny_corpus, RECIPE, shards=0)


def test_grouped_shards_keep_a_speaker_in_one_shard(tiny_corpus):
    recipe = train.TrainConfig(epochs=1, batch_size=32)
    grouped = sisa.fit(tiny_corpus, recipe, shards=2, slices=1, seed=1, group="speaker")
    speaker = tiny_corpus.speaker.cpu()
    owners = [set(speaker[torch.cat(shard)].tolist()) for shard in grouped.slices]
    assert not owners[0] & owners[1], "a speaker was split across shards"
    split = data.forget_split(tiny_corpus, "speaker", speakers=[0])
    _, _, retrained = sisa.forget(grouped, split.forget)
    assert len(retrained) == 1


def test_stage_epochs_match_the_recipe_cost():
    recipe = train.TrainConfig(epochs=20)
    assert sisa.stage_epochs(recipe, 1) == 20
    # R slices, e epochs each: e (R + 1) / 2 shard-epochs, at least the recipe's 20
    for r in (2, 3, 4, 9):
        e = sisa.stage_epochs(recipe, r)
        assert 20 <= e * (r + 1) / 2 < 20 + (r + 1) / 2


def test_registry_form_runs_through_unlearn(sharded, tiny_corpus, monkeypatch):
    monkeypatch.setitem(unlearn.METHODS, "sisa", sisa.sisa)
    request = sharded.slices[0][1][:4]
    split = data.forget_split(tiny_corpus, "sample", indices=request)
    out = unlearn.run("sisa", sisa.as_trained(sharded), split, seed=0)
    direct, _, _ = sisa.forget(sharded, request)
    assert isinstance(out.model, sisa.Sharded) and not out.diverged
    assert all(_same(_state(a), _state(b))
               for a, b in zip(out.model.members, direct.members, strict=True))
    assert out.model.corpus is sharded.corpus, "the corpus is shared, not copied"
    row = metrics.evaluate(out.model, split)
    assert 0.0 <= row["test_acc"] <= 1.0
    with pytest.raises(TypeError, match="SISA ensemble"):
        sisa.sisa(train.fresh_model(RECIPE, 10, torch.device("cpu"), 0),
                  split.batches("forget"), split.batches("retain"))
