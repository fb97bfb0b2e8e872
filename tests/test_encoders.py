"""SSLClassifier on a tiny random wav2vec 2.0 (no download) and the offline-weights errors."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchaudio
from torch import nn

from speechul import encoders


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    """The tiny encoder's ops are too small to split: extra threads only wait on each other
    (measured 100x slower with 2 threads on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _waves(n: int = 6, seed: int = 0, samples: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, samples) tones of two pitches, labels 0/1: a task a head can learn.

    A quarter second keeps these tests fast; the encoder does not care about the length.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    t = torch.arange(samples) / 16_000
    x = torch.sin(2 * torch.pi * (200 + 600 * y[:, None]) * t) * 0.3
    return (x + 0.05 * torch.randn(n, samples, generator=g)).unsqueeze(1), y


def _grads(module: nn.Module) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval() -> None:
    torch.manual_seed(0)
    model = encoders.SSLClassifier(5, tiny=True, freeze=True).train()
    x, _ = _waves(samples=16_000)  # one second: the clip length of the keyword corpora
    logits = model(x)
    assert logits.shape == (6, 5) and model.embed(x).shape == (6, model.embedding_dim)
    logits.logsumexp(dim=1).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(_grads(model.head))
    assert not model.encoder.training and model.head.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}


def test_training_a_frozen_model_changes_only_the_head() -> None:
    torch.manual_seed(0)
    model = encoders.SSLClassifier(2, tiny=True, freeze=True, dropout=0.0)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    x, y = _waves(8)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model.train()(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(head_before, model.head.weight)


def test_unfrozen_model_fine_tunes_end_to_end() -> None:
    torch.manual_seed(0)
    model = encoders.SSLClassifier(3, tiny=True, freeze=False).train()
    x, _ = _waves(4)
    model(x).logsumexp(dim=1).sum().backward()
    flags = _grads(model.encoder)
    assert all(flags), f"{flags.count(False)} encoder tensors got no gradient"
    assert model.encoder.training


def test_weighted_pooling_learns_layer_weights() -> None:
    torch.manual_seed(0)
    encoder = encoders.tiny_encoder(seed=1, layers=3)
    model = encoders.SSLClassifier(2, encoder=encoder, pooling="weighted").eval()
    assert model.bundle == "injected" and model.layer_weights.shape == (3,)
    x, _ = _waves(4)
    layers, _ = encoder.extract_features(x.flatten(1))
    expected = torch.stack([h.mean(dim=1) for h in layers]).mean(dim=0)  # zero logits: uniform
    torch.testing.assert_close(model.embed(x), expected)
    model(x).sum().backward()
    assert model.layer_weights.grad is not None and model.layer_weights.grad.abs().sum() > 0


def test_gradients_reach_the_input_through_a_frozen_encoder() -> None:
    model = encoders.SSLClassifier(2, tiny=True, freeze=True).eval()
    x, _ = _waves(2)
    x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_constructor_ignores_width_and_checks_arguments() -> None:
    build = encoders.constructor("HUBERT_BASE")
    model = build(4, width=16, tiny=True)
    assert isinstance(model, encoders.SSLClassifier) and model.head.out_features == 4
    tuned = encoders.constructor("HUBERT_BASE", freeze=False, pooling="weighted")(3, tiny=True)
    assert not tuned.freeze and tuned.layer_weights is not None
    with pytest.raises(ValueError, match="WAV2VEC2_BASE"):
        encoders.SSLClassifier(4, bundle="WAV2VEC3")
    with pytest.raises(ValueError, match="weighted"):
        encoders.SSLClassifier(4, tiny=True, pooling="max")
    assert {"WAV2VEC2_BASE", "HUBERT_BASE", "WAVLM_BASE_PLUS"} <= set(encoders.BUNDLES)


# --------------------------------------------------------------------------- offline weights


@pytest.fixture()
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and a bundle whose get_model must not be reached by accident."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = encoders.weights_path("WAV2VEC2_BASE")
    assert path == tmp_path / "hub" / "checkpoints" / "wav2vec2_fairseq_base_ls960.pth"

    def no_network(**_: object) -> nn.Module:
        raise AssertionError("get_model was called although the weights are missing")

    monkeypatch.setattr(torchaudio.pipelines.WAV2VEC2_BASE, "get_model", no_network)
    return path


def test_missing_weights_without_download_name_what_to_fetch(empty_hub: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        encoders.SSLClassifier(10, bundle="WAV2VEC2_BASE", download=False)
    message = str(info.value)
    assert "WAV2VEC2_BASE" in message and str(empty_hub) in message
    assert "https://download.pytorch.org/torchaudio/models/wav2vec2_fairseq_base_ls960.pth" \
        in message
    assert "get_model()" in message and "TORCH_HOME" in message


def test_offline_machine_fails_fast_with_the_same_advice(empty_hub: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoders, "_reachable", lambda *a, **k: False)
    with pytest.raises(ConnectionError, match=r"no network.*WAV2VEC2_BASE.*wav2vec2_fairseq"):
        encoders.SSLClassifier(10, bundle="WAV2VEC2_BASE")


def test_failed_download_is_wrapped(empty_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: object) -> nn.Module:
        raise urllib.error.URLError("connection reset")

    monkeypatch.setattr(encoders, "_reachable", lambda *a, **k: True)
    monkeypatch.setattr(torchaudio.pipelines.WAV2VEC2_BASE, "get_model", broken)
    with pytest.raises(ConnectionError, match=r"connection reset.*WAV2VEC2_BASE"):
        encoders.SSLClassifier(10, bundle="WAV2VEC2_BASE")


def test_cached_weights_are_used_without_network(empty_hub: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    empty_hub.parent.mkdir(parents=True)
    empty_hub.write_bytes(b"stand-in for the cached weights")
    monkeypatch.setattr(encoders, "_reachable", lambda *a, **k: pytest.fail("probed network"))
    monkeypatch.setattr(torchaudio.pipelines.WAV2VEC2_BASE, "get_model",
                        lambda **_: encoders.tiny_encoder())
    model = encoders.SSLClassifier(3, bundle="WAV2VEC2_BASE", download=False)
    assert model.bundle == "WAV2VEC2_BASE" and model.embedding_dim == 32
