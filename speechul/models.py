"""The classifiers we train and then make forget.

One small convolutional network on log-mels serves both tasks (keyword spotting and speaker
identification); only the number of outputs differs. It exposes its penultimate embedding through
:meth:`SmallCNN.embed`, which later chapters probe for what the model still knows about a speaker.

To add an architecture, write an ``nn.Module`` with ``forward`` and ``embed`` and put its
constructor in ``MODELS``; give it ``split(k)`` (trunk and top, as :meth:`SmallCNN.split`) if the
``eu_k`` unlearning method should run on it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import encoders

__all__ = ["SmallCNN", "GlobalPool", "EmbeddingHead", "MODELS", "build"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """A 3x3 convolution with batch norm, then halve time and frequency, then ReLU.

    Halving early keeps the cost low: most positions are seen only by the cheap first layers.
    Max-pooling before the ReLU gives the same outputs and gradients as after it (ReLU keeps
    the order of values, so the two commute) and applies the ReLU to a quarter of the values:
    less work for bitwise the same results.
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.MaxPool2d(2), nn.ReLU(inplace=True),
    )


class GlobalPool(nn.Module):
    """Mean and max over time and frequency: (B, C, F, T) -> (B, 2C).

    The mean hears the whole clip, the max the loudest evidence, wherever the word sits in the
    window.
    """

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


class SmallCNN(nn.Module):
    """A few conv blocks, global pooling and a linear head (~0.1 M parameters at width 16).

    Input (B, 1, n_mels, frames) log-mels; output (B, n_classes) logits. The input batch norm
    standardises log-mel levels, so no dataset statistics need to be stored.
    """

    def __init__(self, n_classes: int, width: int = 16, blocks: int = 3, dropout: float = 0.0):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        channels = [width * 2**i for i in range(blocks)]
        self.norm = nn.BatchNorm2d(1)
        # A strided stem halves time and frequency before any wide layer: 4x less work after it.
        stem = nn.Sequential(nn.Conv2d(1, width, 3, stride=2, padding=1, bias=False),
                             nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.features = nn.Sequential(stem, *[_block(c_in, c_out) for c_in, c_out in
                                              zip([width, *channels[:-1]], channels,
                                                  strict=True)])
        self.embedding_dim = 2 * channels[-1]
        self.pool = GlobalPool()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.embedding_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding: (B, 1, n_mels, frames) -> (B, 2 * last channels).

        Mean and max pooling over time and frequency (:class:`GlobalPool`).
        """
        return self.pool(self.features(self.norm(x)))

    def split(self, k: int) -> tuple[nn.Sequential, nn.Sequential]:
        """(trunk, top): the network cut before its last ``k`` convolution stages.

        ``top(trunk(x)) == forward(x)``; both share this model's modules, so training ``top``
        trains the model. Methods that retrain only the top layers (``eu_k``) use it; the trunk's
        output for the default model at k=1 is (B, 2 * width, 5, 12), small enough to cache.
        """
        if not 1 <= k <= len(self.features):
            raise ValueError(f"k must be between 1 and {len(self.features)} (the stem and "
                             f"{len(self.features) - 1} blocks), got {k!r}")
        trunk = nn.Sequential(self.norm, *self.features[:-k])
        return trunk, nn.Sequential(*self.features[-k:], self.pool, self.dropout, self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


class EmbeddingHead(nn.Module):
    """A linear head on a frozen encoder's cached embeddings (``FeatureConfig(kind="encoder")``).

    With the embeddings of :mod:`speechul.encoder_features` this computes what
    ``SSLClassifier(freeze=True)`` computes on waveforms, without running the encoder every
    epoch. ``width`` is the embedding width it reads (768 for the base encoders): the recipe's
    ``width`` field, so the checkpoint cache tells heads of different encoders apart.

    Input (B, 1, width) or (B, width); output (B, n_classes). ``embed`` is the input itself: a
    frozen encoder's embedding is what unlearning a head cannot change.
    """

    def __init__(self, n_classes: int, width: int = 768, dropout: float = 0.0) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.embedding_dim = width
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, width) or (B, width) embeddings -> (B, width), after checking the shape."""
        flat = x.flatten(1)
        if x.ndim > 3 or flat.shape[1] != self.embedding_dim:
            raise ValueError(
                f"EmbeddingHead(width={self.embedding_dim}) reads (B, 1, {self.embedding_dim}) "
                f"encoder embeddings, got {tuple(x.shape)}: load the corpus with "
                "features={'kind': 'encoder', 'encoder': ...} and set TrainConfig(width=) to "
                "the encoder's embedding width (su.chapter_setting does both from ARCH)")
        return flat

    def split(self, k: int) -> tuple[nn.Module, nn.Sequential]:
        """(trunk, top) for ``eu_k``: the frozen embedding and the linear layer, the only layer
        there is (so ``k`` must be 1, and EU-k retrains the whole head: exact unlearning of a
        head is as cheap as retraining it)."""
        if k != 1:
            raise ValueError(f"a linear head has one layer to retrain: k must be 1, got {k!r}")
        return nn.Flatten(1), nn.Sequential(self.dropout, self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


# Pretrained speech encoders with a small head (speechul.encoders): "-ft" fine-tunes the encoder
# end to end (use a learning rate near 5e-5), the plain name freezes it and trains the head only.
# Their weights come from torch hub on first use; offline, building one says what to download.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn": SmallCNN,
    "head": EmbeddingHead,  # on cached frozen-encoder embeddings (features kind "encoder")
    "wav2vec2": encoders.constructor("WAV2VEC2_BASE"),
    "wav2vec2-ft": encoders.constructor("WAV2VEC2_BASE", freeze=False),
    "hubert": encoders.constructor("HUBERT_BASE"),
    "hubert-ft": encoders.constructor("HUBERT_BASE", freeze=False),
}


def build(arch: str, n_classes: int, **kwargs: object) -> nn.Module:
    """A fresh model by name, e.g. ``build("cnn", 10, width=32)``."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(MODELS)}")
    return MODELS[arch](n_classes, **kwargs)
