"""A frozen encoder's embeddings of a corpus, computed once and cached on disk like log-mels.

A frozen wav2vec 2.0 or HuBERT is the same function in every epoch, so running it in every
epoch (65k Speech Commands clips, 95 M parameters) repeats identical work: the book's
``ARCH="wav2vec2"`` instead trains a linear head (``models.EmbeddingHead``) on embeddings
extracted here once. The embedding is the one ``encoders.SSLClassifier(freeze=True,
pooling="mean")`` computes (the last transformer layer averaged over time), so a head trained
on these features is that classifier, without its per-epoch encoder pass.

The cache key holds a digest of the encoder's weights, not only its name: other weights under
the same name (a newer checkpoint, a fine-tuned copy, the random ``"tiny"`` test encoder with
another seed) never serve stale embeddings.
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from . import encoders, features
from ._runtime import cache_dir, cached, fingerprint, progress
from .features import FeatureConfig, WaveLoader

__all__ = ["load", "weights_digest", "pooled", "extract"]

TINY = "tiny"  # encoders.tiny_encoder(): random weights, no download (tests, CPU demos)


def load(name: str, download: bool = True) -> nn.Module:
    """The encoder named by a feature config: a torchaudio bundle or ``"tiny"``."""
    if name == TINY:
        return encoders.tiny_encoder()
    return encoders.load_encoder(name, download=download)


def weights_digest(encoder: nn.Module) -> str:
    """SHA-256 (16 hex digits) of every tensor of the state dict, by name, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


@torch.inference_mode()
def pooled(encoder: nn.Module, waves: torch.Tensor) -> torch.Tensor:
    """(B, samples) float waves -> (B, 1, D): the last layer's output averaged over time."""
    layers, _ = encoder.extract_features(waves)
    return layers[-1].mean(dim=1).unsqueeze(1)


def extract(load_waves: WaveLoader, n: int, corpus_key: str, config: FeatureConfig,
            cache: str | os.PathLike | None = None, chunk: int = 512,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """Cached (n, 1, D) float32 embeddings of a corpus's clips on the CPU.

    Keyed by the log-mel cache's rule (corpus, settings, source, torchaudio) plus the
    encoder's :func:`weights_digest`; the encoder runs on ``device`` in chunks of ``chunk``.
    """
    if config.kind != "encoder":
        raise ValueError(f"extract() computes encoder features, got kind={config.kind!r}")
    device = torch.device(device)
    encoder = load(config.encoder).to(device).eval()
    key = fingerprint(features.cache_key(corpus_key, config), weights_digest(encoder))
    path = cache_dir(cache) / "features" / f"encoder-{key}.pt"

    def build() -> torch.Tensor:
        out = []
        for start in progress(range(0, n, chunk), desc=f"{config.encoder} embeddings"):
            idx = torch.arange(start, min(start + chunk, n))
            out.append(pooled(encoder, features.float_waves(load_waves(idx), device)).cpu())
        return features._validated(torch.cat(out).float(), n, corpus_key)

    return cached(path, build)
