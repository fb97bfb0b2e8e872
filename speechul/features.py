"""Log-mel features, computed once per corpus and cached.

Every model in the book reads log-mel spectrograms. They are computed in one batched pass with
torchaudio's transforms (not re-implemented), stored as one tensor keyed by the corpus and the
feature settings, and moved to the device as a whole: training never touches audio again.
The same holds for the other kinds: raw waveforms (for fine-tuning an encoder) and a frozen
encoder's pooled embeddings (:mod:`speechul.encoder_features`, also keyed by its weights).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

import torch
import torchaudio

from ._runtime import cache_dir, cached, fingerprint, progress, source_digest

__all__ = ["FeatureConfig", "KINDS", "logmel", "logmel_batch"]

KINDS = ("logmel", "waveform", "encoder")

WaveLoader = Callable[[torch.Tensor], torch.Tensor]  # (B,) clip indices -> (B, samples)


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel settings: 25 ms windows, 10 ms hop, 40 mel bands up to 8 kHz.

    ``kind="waveform"`` keeps the raw 16 kHz audio instead, as (N, 1, samples): the input of the
    pretrained speech encoders (wav2vec 2.0, HuBERT) when they are fine-tuned.
    ``kind="encoder"`` with ``encoder`` a ``torchaudio.pipelines`` bundle (``"WAV2VEC2_BASE"``,
    ``"HUBERT_BASE"``) or ``"tiny"`` (a random miniature, for tests) stores that frozen
    encoder's last-layer embedding averaged over time, (N, 1, D): a frozen encoder then runs
    once per corpus, not once per epoch.
    """

    kind: str = "logmel"
    sample_rate: int = 16_000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 40
    encoder: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown feature kind {self.kind!r}; known: {list(KINDS)}")
        if (self.kind == "encoder") != bool(self.encoder):
            raise ValueError("give encoder= (a torchaudio bundle name or 'tiny') exactly when "
                             f"kind='encoder'; got kind={self.kind!r}, encoder={self.encoder!r}")

    @classmethod
    def coerce(cls, value: FeatureConfig | Mapping | str) -> FeatureConfig:
        """A config from what survives a JSON round trip: a mapping of fields (what parameter
        files hold), a kind name (``"waveform"``), or the ``repr`` of a config (what
        ``json.dumps(..., default=str)`` makes of one inside a setting's data options)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown feature settings {unknown}; known: {sorted(known)}")
            return cls(**value)
        if isinstance(value, str) and value in KINDS:
            return cls(kind=value)
        if isinstance(value, str) and value.startswith(f"{cls.__name__}("):
            return cls(**_repr_fields(value))
        raise ValueError(f"features must be a FeatureConfig, a mapping of its fields or one of "
                         f"{list(KINDS)}; got {value!r}")


def _repr_fields(text: str) -> dict:
    """``FeatureConfig(kind='waveform', ...)`` -> its keyword values, read as literals only."""
    try:
        call = ast.parse(text, mode="eval").body
        return {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError, AttributeError) as err:
        raise ValueError(f"cannot read feature settings from {text!r} ({err})") from None


def logmel_batch(waves: torch.Tensor, config: FeatureConfig = FeatureConfig()) -> torch.Tensor:
    """Log-mel spectrogram of float waves: (N, samples) -> (N, 1, n_mels, frames).

    ``log(mel + 1e-6)``: the small floor keeps silence finite without flattening quiet speech.
    """
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
        n_mels=config.n_mels,
    ).to(waves.device)
    return torch.log(transform(waves) + 1e-6).unsqueeze(1)


def float_waves(block: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A loader's (B, samples) int16 or float waves as float32 in [-1, 1] on ``device``."""
    if block.ndim != 2:
        raise ValueError(f"waves must be (N, samples), got shape {tuple(block.shape)}")
    block = block.to(device)
    return block.float() / 32768.0 if block.dtype == torch.int16 else block.float()


def _compute(load_waves: WaveLoader, n: int, config: FeatureConfig, chunk: int,
             device: torch.device) -> torch.Tensor:
    """Chunked, so a large corpus is never held in memory as audio, only as features."""
    out = []
    for start in progress(range(0, n, chunk), desc="log-mel features"):
        block = float_waves(load_waves(torch.arange(start, min(start + chunk, n))), device)
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
    if config.kind == "encoder":
        raise ValueError("encoder features are keyed by the encoder's weights: compute them "
                         "with speechul.encoder_features.extract (su.data.load does)")
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
