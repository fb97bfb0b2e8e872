"""Log-mel features: shapes, caching (audio read once), damaged cache rebuilt."""

from __future__ import annotations

import pytest
import torch

from speechul import features


def _loader(waves, calls):
    def load(idx):
        calls.append(len(idx))
        return waves[idx]
    return load


def test_logmel_shape_and_cache(tmp_path):
    waves = (torch.randn(5, 16000) * 3000).to(torch.int16)
    calls: list[int] = []
    x = features.logmel(_loader(waves, calls), 5, "k1", cache=tmp_path)
    assert x.shape == (5, 1, 40, 101) and x.dtype == torch.float32
    assert calls == [5]
    again = features.logmel(_loader(waves, calls), 5, "k1", cache=tmp_path)
    assert calls == [5] and torch.equal(x, again)  # second call read no audio


def test_feature_settings_change_the_key(tmp_path):
    waves = torch.randn(2, 16000) * 0.1
    calls: list[int] = []
    a = features.logmel(_loader(waves, calls), 2, "k", cache=tmp_path)
    b = features.logmel(_loader(waves, calls), 2, "k", features.FeatureConfig(n_mels=64),
                        cache=tmp_path)
    assert a.shape[2] == 40 and b.shape[2] == 64 and calls == [2, 2]


def test_damaged_feature_cache_is_rebuilt(tmp_path):
    waves = torch.randn(2, 16000) * 0.1
    calls: list[int] = []
    x = features.logmel(_loader(waves, calls), 2, "k", cache=tmp_path)
    path = next((tmp_path / "features").glob("*.pt"))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="damaged"):
        y = features.logmel(_loader(waves, calls), 2, "k", cache=tmp_path)
    assert calls == [2, 2] and torch.allclose(x, y)


def test_waveform_kind_and_bad_kind(tmp_path):
    waves = torch.randn(3, 16000) * 0.1
    x = features.logmel(lambda i: waves[i], 3, "w", features.FeatureConfig(kind="waveform"),
                        cache=tmp_path)
    assert x.shape == (3, 1, 16000)
    with pytest.raises(ValueError, match="unknown feature kind"):
        features.logmel(lambda i: waves[i], 3, "w", features.FeatureConfig(kind="mfcc"),
                        cache=tmp_path)
