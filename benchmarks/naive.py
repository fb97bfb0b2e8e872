"""The baseline speechul is compared with: the per-file pipeline of most audio tutorials.

A ``Dataset`` that, for every item of every epoch, opens the clip's WAV file with soundfile and
computes its log-mel with torchaudio's ``MelSpectrogram``; a ``DataLoader`` batches the items.
It computes exactly the features speechul caches (same transform, same ``log(mel + 1e-6)``), so
the only difference a benchmark sees is *where* the work happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import soundfile as sf
import torch
import torchaudio

import speechul as su


def write_wavs(corpus: su.data.Corpus, indices: torch.Tensor, folder: Path,
               chunk: int = 256) -> list[Path]:
    """Write the clips ``indices`` of an embedded corpus as 16-bit PCM WAVs (one per clip).

    16-bit PCM is what Speech Commands ships, and what the embedded corpus stores (int16).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rate = corpus.source.sample_rate
    paths = []
    ids = indices.cpu()
    for start in su._runtime.progress(range(0, len(ids), chunk), desc="writing WAVs"):
        block = corpus.source.load_waves(ids[start : start + chunk])
        for i, wave in zip(ids[start : start + chunk].tolist(), block, strict=True):
            path = folder / f"{i:06d}.wav"
            data = wave.numpy() if wave.dtype == torch.int16 else wave.float().numpy()
            sf.write(str(path), data, rate, subtype="PCM_16")
            paths.append(path)
    return paths


class PerFileLogMel(torch.utils.data.Dataset):
    """Item i: (log-mel (1, n_mels, frames) float32, label) computed from the file on access."""

    def __init__(self, paths: list[Path], labels: torch.Tensor,
                 config: su.features.FeatureConfig = su.features.FeatureConfig()) -> None:
        self.paths, self.labels = paths, labels.cpu()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
            n_mels=config.n_mels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        wave, _ = sf.read(str(self.paths[i]), dtype="float32")
        spec = torch.log(self.mel(torch.from_numpy(wave)) + 1e-6)  # (n_mels, frames)
        return spec.unsqueeze(0), self.labels[i]


class OnDevice:
    """Wraps a DataLoader so its batches land on ``device`` (what a training loop would do)."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        blocking = self.device.type != "cuda"
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=not blocking), y.to(self.device)


def loader(paths: list[Path], labels: torch.Tensor, batch_size: int, device: torch.device,
           workers: int = 0, seed: int = 0) -> OnDevice:
    """The naive training stream: shuffled batches of per-file log-mels, moved to ``device``."""
    dataset = PerFileLogMel(paths, labels)
    stream = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
        persistent_workers=workers > 0)
    return OnDevice(stream, device)
