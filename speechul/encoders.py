"""Pretrained self-supervised speech encoders (wav2vec 2.0, HuBERT, WavLM) with a small head.

An :class:`SSLClassifier` reads raw 16 kHz audio, ``FeatureConfig(kind="waveform")`` features of
shape (B, 1, samples), runs a torchaudio pipeline encoder and classifies a pooled embedding:

* ``pooling="mean"``: the last transformer layer averaged over time;
* ``pooling="weighted"``: a learned softmax-weighted sum of every layer's time average (the
  SUPERB recipe: different tasks live in different layers; speaker identity sits low).

``freeze=True`` trains the head only. The encoder's parameters then have ``requires_grad=False``:
they receive no gradient (``p.grad`` stays ``None``), so optimizers skip them and every
unlearning method that updates ``model.parameters()`` edits the head alone. Methods that touch
parameters without gradients (adding noise, resetting layers, Fisher statistics) should select
``p.requires_grad`` parameters. Gradients still flow *through* the frozen encoder to its input.
``freeze=False`` fine-tunes end to end.

Weights come from torch hub's cache (``torch.hub.get_dir()/checkpoints``). When they are
missing and cannot be downloaded, construction fails at once with what to fetch and where to put
it, instead of hanging on a network that is not there.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchaudio
from torch import nn

__all__ = ["BUNDLES", "SSLClassifier", "weights_url", "weights_path", "load_encoder",
           "tiny_encoder", "constructor"]

_HOST = "download.pytorch.org"
_BASE_URL = f"https://{_HOST}/torchaudio/models/"
BUNDLES = tuple(sorted(name for name in dir(torchaudio.pipelines)
                       if type(getattr(torchaudio.pipelines, name))
                       is torchaudio.pipelines.Wav2Vec2Bundle))


def _bundle(name: str) -> torchaudio.pipelines.Wav2Vec2Bundle:
    if name not in BUNDLES:
        raise ValueError(f"unknown encoder bundle {name!r}; known: {list(BUNDLES)}")
    return getattr(torchaudio.pipelines, name)


def weights_url(name: str) -> str:
    """Where torchaudio downloads bundle ``name``'s weights from."""
    path = _bundle(name)._path  # private in torchaudio 2.x; the file name of the weights
    return path if path.startswith("https") else _BASE_URL + path


def weights_path(name: str) -> Path:
    """Where torch hub caches bundle ``name``'s weights (``load_state_dict_from_url`` rule)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_url(name))


def _how_to_fetch(name: str) -> str:
    return (f"Encoder {name} needs {weights_url(name)} at {weights_path(name)}. On a connected "
            f"machine run `python -c \"import torchaudio; torchaudio.pipelines.{name}"
            f".get_model()\"` (or download the URL), then copy the file to that path here "
            f"(or point $TORCH_HOME at a folder holding hub/checkpoints/).")


def _reachable(host: str = _HOST, timeout: float = 5.0) -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of hanging.

    Behind an HTTP(S) proxy a direct connection may be refused while downloads work, so the
    probe is skipped there and the download itself decides.
    """
    if any(os.environ.get(k) for k in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A stalled download raises after ``seconds`` without data instead of waiting forever."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_encoder(name: str = "WAV2VEC2_BASE", download: bool = True) -> nn.Module:
    """The pretrained encoder of bundle ``name`` (eval mode), from the hub cache or the web.

    Raises:
        FileNotFoundError: weights not cached and ``download=False``.
        ConnectionError: weights not cached and the download is impossible or fails.
    """
    bundle = _bundle(name)
    if not weights_path(name).is_file():
        if not download:
            raise FileNotFoundError(f"{_how_to_fetch(name)} (download=False was given)")
        if not _reachable():
            raise ConnectionError(f"no network to {_HOST}. {_how_to_fetch(name)}")
    try:
        with _socket_timeout(60.0):
            return bundle.get_model()
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f"downloading the weights failed ({err}). "
                              f"{_how_to_fetch(name)}") from None


def tiny_encoder(seed: int = 0, dim: int = 32, layers: int = 2) -> nn.Module:
    """A randomly initialised miniature wav2vec 2.0 (same 320-sample stride, ~50k parameters).

    For tests and CPU demos of the code path: no download, no pretrained knowledge.
    """
    conv = [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torchaudio.models.wav2vec2_model(
            extractor_mode="group_norm", extractor_conv_layer_config=conv,
            extractor_conv_bias=False, encoder_embed_dim=dim, encoder_projection_dropout=0.0,
            encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=layers,
            encoder_num_heads=2, encoder_attention_dropout=0.0,
            encoder_ff_interm_features=2 * dim, encoder_ff_interm_dropout=0.0,
            encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
            aux_num_out=None)
    return model.eval()


def _layer_count(encoder: nn.Module) -> int:
    core = getattr(encoder, "model", encoder)  # pipelines may wrap the model to normalise input
    return len(core.encoder.transformer.layers)


class SSLClassifier(nn.Module):
    """A pretrained speech encoder + pooling + a linear head.

    Args:
        n_classes: number of outputs.
        bundle: a ``torchaudio.pipelines`` name in ``BUNDLES`` (``"WAV2VEC2_BASE"``,
            ``"HUBERT_BASE"``, ``"WAVLM_BASE_PLUS"``, ...).
        freeze: train the head only (True) or everything (False).
        pooling: ``"mean"`` (last layer) or ``"weighted"`` (learned sum over layers).
        dropout: on the pooled embedding, before the head.
        encoder: use this ``Wav2Vec2Model`` instead of loading ``bundle`` (injection for tests).
        tiny: use :func:`tiny_encoder` (random weights, no download).
        download: allow downloading weights that are not cached yet.

    Input (B, 1, samples) or (B, samples) float waves at 16 kHz; output (B, n_classes).
    """

    def __init__(self, n_classes: int, bundle: str = "WAV2VEC2_BASE", freeze: bool = True,
                 pooling: str = "mean", dropout: float = 0.1, encoder: nn.Module | None = None,
                 tiny: bool = False, download: bool = True) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        if pooling not in ("mean", "weighted"):
            raise ValueError(f"unknown pooling {pooling!r}; known: ['mean', 'weighted']")
        self.bundle = "injected" if encoder is not None else "tiny" if tiny else bundle
        if encoder is None:
            encoder = tiny_encoder() if tiny else load_encoder(bundle, download=download)
        self.encoder, self.freeze, self.pooling = encoder, freeze, pooling
        self.encoder.requires_grad_(not freeze)
        n_layers = _layer_count(encoder)
        self.layer_weights = nn.Parameter(torch.zeros(n_layers)) if pooling == "weighted" else None
        with torch.no_grad():  # one silent pass finds the embedding width of any encoder
            self.embedding_dim = self._layers(torch.zeros(1, 400))[-1].shape[-1]
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.embedding_dim, n_classes)

    def _layers(self, waves: torch.Tensor) -> list[torch.Tensor]:
        """Every transformer layer's output, each (B, frames, D)."""
        features, _ = self.encoder.extract_features(waves)
        return features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder embedding: (B, 1, samples) or (B, samples) -> (B, D)."""
        if x.ndim == 4 or (x.ndim == 3 and x.shape[1] != 1) or x.ndim < 2:
            raise ValueError(
                f"{type(self).__name__} ({self.bundle}) reads raw 16 kHz waveforms (B, 1, "
                f"samples), got {tuple(x.shape)} (log-mels are (B, 1, n_mels, frames)): load "
                "the corpus with features={'kind': 'waveform'} (ARCH='wav2vec2-ft' in a chapter "
                "does), or use cached embeddings and a head (ARCH='wav2vec2')")
        waves = x.flatten(1) if x.ndim == 3 else x
        layers = self._layers(waves)
        if self.layer_weights is None:
            return layers[-1].mean(dim=1)
        means = torch.stack([h.mean(dim=1) for h in layers])  # (L, B, D)
        weights = torch.softmax(self.layer_weights, dim=0).to(means.dtype)
        return torch.einsum("l,lbd->bd", weights, means)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))

    def train(self, mode: bool = True) -> SSLClassifier:
        """A frozen encoder stays in eval mode: its dropout would only add noise to the head."""
        super().train(mode)
        if self.freeze:
            self.encoder.eval()
        return self


def constructor(bundle: str, **defaults: object) -> Callable[..., nn.Module]:
    """A ``models.MODELS`` entry: ``(n_classes, width=ignored, **kwargs) -> SSLClassifier``.

    ``defaults`` fix options per entry (``freeze=False`` for a fine-tuning entry), so that the
    architecture name alone, which keys the checkpoint cache, says what was trained. ``width``
    is accepted and ignored because the training recipe passes it to every model.
    """

    def build(n_classes: int, width: int | None = None, **kwargs: object) -> nn.Module:
        return SSLClassifier(n_classes, bundle=bundle, **{**defaults, **kwargs})

    build.__name__ = f"ssl_{bundle.lower()}"
    return build
