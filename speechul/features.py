"""Log-mel features, computed once per corpus and cached.

Every model in the book reads log-mel spectrograms. They are computed in one batched pass with
torchaudio's transforms (not re-implemented), stored as one tensor keyed by the corpus and the
feature settings, and moved to the device as a whole: training never touches audio again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torchaudio

from ._runtime import cache_dir, cached, fingerprint, progress, source_digest

__all__ = ["FeatureConfig", "logmel", "logmel_batch"]

WaveLoader = Callable[[torch.Tensor], torch.Tensor]  # (B,) clip indices -> (B, samples)


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel settings: 25 ms windows, 10 ms hop, 40 mel bands up to 8 kHz.

    ``kind="waveform"`` keeps the raw 16 kHz audio instead, as (N, 1, samples): the input of the
    pretrained speech encoders (wav2vec 2.0, HuBERT).
    """

    kind: str = "logmel"
    sample_rate: int = 16_000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 40


def logmel_batch(waves: torch.Tensor, config: FeatureConfig = FeatureConfig()) -> torch.Tensor:
    """Log-mel spectrogram of float waves: (N, samples) -> (N, 1, n_mels, frames).

    ``log(mel + 1e-6)``: the small floor keeps silence finite without flattening quiet speech.
    """
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
        n_mels=config.n_mels,
    ).to(waves.device)
    return torch.log(transform(waves) + 1e-6).unsqueeze(1)


def _compute(load_waves: WaveLoader, n: int, config: FeatureConfig, chunk: int,
             device: torch.device) -> torch.Tensor:
    """Chunked, so a large corpus is never held in memory as audio, only as features."""
    out = []
    for start in progress(range(0, n, chunk), desc="log-mel features"):
        block = load_waves(torch.arange(start, min(start + chunk, n)))
        if block.ndim != 2:
            raise ValueError(f"waves must be (N, samples), got shape {tuple(block.shape)}")
        block = block.to(device)
        block = block.float() / 32768.0 if block.dtype == torch.int16 else block.float()
        feats = block.unsqueeze(1) if config.kind == "waveform" else logmel_batch(block, config)
        out.append(feats.cpu())  # cached on disk from the CPU; the caller moves it back
    return torch.cat(out)


def cache_key(corpus_key: str, config: FeatureConfig) -> str:
    """The features' cache key: the corpus, the settings, this module's source and torchaudio's
    version (the file is ``<cache>/features/<key>.pt``)."""
    return fingerprint(corpus_key, asdict(config), source_digest("features"),
                       torchaudio.__version__)


def logmel(
    load_waves: WaveLoader,
    n: int,
    corpus_key: str,
    config: FeatureConfig = FeatureConfig(),
    cache: str | os.PathLike | None = None,
    chunk: int = 512,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Cached log-mels of a corpus of ``n`` clips -> (n, 1, n_mels, frames) float32 on the CPU.

    ``load_waves(indices)`` returns those clips as (B, samples) int16 or float at
    ``config.sample_rate``. The cache key is ``corpus_key``, the feature settings and the source of
    this module (and torchaudio's version), so changing any of them recomputes; the audio
    is only read when the cache is missing or damaged. ``device`` is where the spectra are
    computed (a GPU makes the first pass over a real corpus fast).
    """
    if config.kind not in ("logmel", "waveform"):
        raise ValueError(f"unknown feature kind {config.kind!r}; known: logmel, waveform")
    path = cache_dir(cache) / "features" / f"{cache_key(corpus_key, config)}.pt"
    return cached(path, lambda: _validated(
        _compute(load_waves, n, config, chunk, torch.device(device)), n, corpus_key))


def _validated(feats: torch.Tensor, n: int, corpus_key: str) -> torch.Tensor:
    """Refuse features (N, 1, n_mels, frames) that must never be cached: another clip count than
    the corpus has (a loader that dropped files would shift every label) or non-finite values
    (a damaged audio file; they would make every model trained on them NaN)."""
    if len(feats) != n:
        raise ValueError(f"corpus {corpus_key}: the audio loader returned {len(feats)} clips "
                         f"for {n}; check that every audio file is present and readable")
    bad = ~torch.isfinite(feats.flatten(1)).all(1)
    if bad.any():
        clips = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(f"corpus {corpus_key}: non-finite features in {int(bad.sum())} clip(s), "
                         f"e.g. clip(s) {clips}; check (or remove) those audio files")
    return feats
