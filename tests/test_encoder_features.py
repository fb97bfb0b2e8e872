"""Frozen-encoder features: extracted once, cached by the encoder's weights, and equal to what the
end-to-end frozen classifier computes; waveform settings that survive a setting's JSON trip.

The tiny random wav2vec 2.0 (``encoders.tiny_encoder``) stands in for the real weights, which
cannot be downloaded here; the GPU-marked test runs the real bundle where it is cached.
"""

from __future__ import annotations

import json

import pytest
import torch

from speechul import data, encoder_features, encoders, experiments, features, models, train
from speechul.features import FeatureConfig

extract = encoder_features.extract

TINY = FeatureConfig(kind="encoder", encoder="tiny")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    """The tiny encoder's ops are too small to split over threads (see test_encoders)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _loader(waves: torch.Tensor, calls: list[int]):
    def load(idx: torch.Tensor) -> torch.Tensor:
        calls.append(len(idx))
        return waves[idx]
    return load


def _waves(n: int = 5, samples: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(n, samples, generator=g)


def test_encoder_features_are_cached_and_keyed_by_the_weights(tmp_path, monkeypatch):
    waves, calls = _waves(), []
    x = extract(_loader(waves, calls), 5, "corpus", TINY, cache=tmp_path, chunk=2)
    assert x.shape == (5, 1, 32) and x.dtype == torch.float32
    assert calls == [2, 2, 1]
    again = extract(_loader(waves, calls), 5, "corpus", TINY, cache=tmp_path, chunk=2)
    assert calls == [2, 2, 1], "a second load reads the cache, not the audio"
    assert torch.equal(x, again)
    with pytest.raises(ValueError, match="encoder_features.extract"):
        features.logmel(_loader(waves, calls), 5, "corpus", TINY, cache=tmp_path)
    # other weights under the same name: recomputed, not served from the cache
    monkeypatch.setattr(encoder_features, "load",
                        lambda name, download=True: encoders.tiny_encoder(seed=1))
    other = extract(_loader(waves, calls), 5, "corpus", TINY, cache=tmp_path, chunk=2)
    assert len(calls) == 6 and not torch.allclose(x, other)


def test_weights_digest_sees_one_changed_weight():
    encoder = encoders.tiny_encoder()
    before = encoder_features.weights_digest(encoder)
    assert before == encoder_features.weights_digest(encoders.tiny_encoder())
    with torch.no_grad():
        next(encoder.parameters()).view(-1)[0] += 1e-3
    assert encoder_features.weights_digest(encoder) != before


def test_head_on_cached_embeddings_is_the_frozen_classifier(tmp_path):
    waves = _waves(4, 16_000)
    x = extract(lambda i: waves[i], 4, "eq", TINY, cache=tmp_path)
    frozen = encoders.SSLClassifier(3, tiny=True, freeze=True).eval()
    head = models.build("head", 3, width=32).eval()
    head.head.load_state_dict(frozen.head.state_dict())
    with torch.no_grad():
        assert torch.allclose(head(x), frozen(waves.unsqueeze(1)), atol=1e-5)


def test_head_refuses_log_mels_and_a_wrong_width():
    head = models.build("head", 3, width=32)
    with pytest.raises(ValueError, match=r"reads \(B, 1, 32\) encoder embeddings"):
        head(torch.zeros(2, 1, 40, 101))
    with pytest.raises(ValueError, match="TrainConfig\\(width=\\)"):
        head(torch.zeros(2, 1, 768))


def test_an_encoder_given_log_mels_says_what_it_reads():
    model = encoders.SSLClassifier(3, tiny=True)
    with pytest.raises(ValueError, match="reads raw 16 kHz waveforms") as err:
        model(torch.zeros(2, 1, 40, 101))
    assert "features={'kind': 'waveform'}" in str(err.value)


@pytest.mark.parametrize("config", [FeatureConfig(kind="waveform"), TINY])
def test_feature_settings_survive_the_setting_json_round_trip(config):
    # experiments keys a setting's corpus by json.dumps(data_options, default=str)
    text = json.loads(json.dumps({"features": config}, default=str))["features"]
    assert isinstance(text, str)
    assert FeatureConfig.coerce(text) == config
    assert FeatureConfig.coerce({"kind": config.kind, "encoder": config.encoder}) == config


def test_coerce_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="unknown feature settings"):
        FeatureConfig.coerce({"kind": "waveform", "n_mel": 40})
    with pytest.raises(ValueError, match="features must be"):
        FeatureConfig.coerce("mfcc")
    with pytest.raises(ValueError, match="exactly when kind='encoder'"):
        FeatureConfig(kind="encoder")


def test_a_setting_with_encoder_features_trains_a_head(tmp_path):
    options = {"features": {"kind": "encoder", "encoder": "tiny"}}
    recipe = train.TrainConfig(arch="head", width=32, epochs=1)
    setting = experiments.Setting(kind="class", classes=("yes",), size="tiny",
                                  data_options=options, recipe=recipe, device="cpu")
    corpus = experiments.corpus_of(setting)
    assert corpus.x.shape[1:] == (1, 32) and corpus.features == TINY
    direct = data.load("embedded", size="tiny", device="cpu", **options)
    assert torch.equal(direct.x, corpus.x), "the setting's corpus is the chapter's"
    trained = train.original(corpus, recipe, use_cache=False)
    assert isinstance(trained.model, models.EmbeddingHead)



def test_every_method_unlearns_a_head_on_embeddings(tmp_path):
    """ARCH="wav2vec2"/"hubert" train a linear head: every registered method runs on it, leaves
    the original alone and returns a different head; EU-k retrains the whole head (its one
    layer), so its top is re-initialised, and a deeper cut is refused."""
    import speechul.unlearn as unlearn

    corpus = data.load("embedded", size="tiny", device="cpu",
                       features={"kind": "encoder", "encoder": "tiny"})
    recipe = train.TrainConfig(arch="head", width=32, epochs=2)
    original = train.original(corpus, recipe, use_cache=False)
    before = original.model.head.weight.detach().clone()
    split = data.forget_split(corpus, "sample", fraction=0.1, seed=0)
    for method in unlearn.METHODS:
        out = unlearn.run(method, original, split, seed=0).model
        assert torch.equal(original.model.head.weight, before), f"{method} edited the original"
        assert not torch.equal(out.head.weight, before), f"{method} left the head unchanged"
    head = original.model
    trunk, top = head.split(1)
    x = corpus.x[:4]
    with torch.no_grad():
        assert torch.equal(top.eval()(trunk(x)), head.eval()(x)), "top(trunk(x)) is the head"
    assert top[-1] is head.head, "the top shares the head's layer: training it trains the model"
    with pytest.raises(ValueError, match="k must be 1"):
        head.split(2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the real encoder path)")
@pytest.mark.parametrize("bundle", ["WAV2VEC2_BASE", "HUBERT_BASE"])
def test_real_encoder_features_on_the_gpu(bundle, tmp_path):
    if not encoders.weights_path(bundle).is_file():
        pytest.skip(f"{bundle} weights are not cached at {encoders.weights_path(bundle)}")
    waves, config = _waves(8, 16_000), FeatureConfig(kind="encoder", encoder=bundle)
    x = extract(lambda i: waves[i], 8, "gpu", config, cache=tmp_path, device="cuda")
    assert x.shape == (8, 1, 768) and torch.isfinite(x).all()
    frozen = encoders.SSLClassifier(2, bundle=bundle, download=False).cuda().eval()
    with torch.no_grad():
        assert torch.allclose(frozen.embed(waves.cuda().unsqueeze(1)).cpu(), x[:, 0], atol=1e-3)
