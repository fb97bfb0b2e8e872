"""Reading clips out of real corpora's audio files: the helpers every loader of ``datasets`` shares.

A clip is a window of one file (see ``speechul.datasets``): these helpers read it with
``soundfile``, turn string labels into a :class:`~speechul.data.Source`, pick stable subsets and
splits by hashing file names, and turn missing data into one clear error.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ._runtime import fingerprint, progress
from .corpus import Source

__all__ = ["SAMPLE_RATE", "FRACTIONS", "Row", "read_clip", "wave_loader", "make_source", "cap",
           "hash_order", "split_per_group", "missing", "walk"]

SAMPLE_RATE = 16_000
FRACTIONS = (0.8, 0.1, 0.1)  # train/val/test share where speechul makes the split itself
# (relative path, slot, slots, lo, hi): one clip = window ``slot`` of ``slots`` in [lo, hi).
Row = tuple[str, int, int, float, float]

# --------------------------------------------------------------------------- reading audio


def read_clip(path: Path, slot: int, slots: int, lo: float, hi: float, length: int) -> np.ndarray:
    """One clip as float32 (length,): window ``slot`` of ``slots`` in [lo, hi) of the file.

    Raises ValueError naming the file when it is missing, unreadable, empty, not 16 kHz or
    holds non-finite samples: a silently resampled, skipped or all-zero clip would change the
    corpus without anyone noticing, and a NaN sample would surface epochs later as a
    "diverged" training run that blames the learning rate.
    """
    if not path.is_file():
        raise ValueError(f"{path} is listed by the dataset but missing")
    try:
        with sf.SoundFile(str(path)) as handle:
            if handle.samplerate != SAMPLE_RATE:
                raise ValueError(f"{path} has a sample rate of {handle.samplerate} Hz; speechul "
                                 f"expects {SAMPLE_RATE} Hz (resample the dataset first)")
            if handle.frames == 0:
                raise ValueError(f"{path} holds no audio (0 frames): a broken file?")
            first, last = int(lo * handle.frames), int(hi * handle.frames)
            start = first + max(0, last - first - length) * (slot + 1) // (slots + 1)
            handle.seek(start)
            wave = handle.read(min(length, last - start), dtype="float32", always_2d=True)
    except (RuntimeError, sf.SoundFileError) as err:
        raise ValueError(f"cannot read audio file {path}: {err}") from None
    if not np.isfinite(wave).all():
        raise ValueError(f"{path} holds non-finite (NaN or infinite) samples")
    wave = wave.mean(axis=1)  # multi-channel files are mixed down to mono
    return np.pad(wave, (0, length - len(wave)))


def wave_loader(base: Path, rows: Sequence[Row], seconds: float,
                 workers: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``load_waves`` for a Source: (B,) indices -> (B, samples) float32, reading only those files.

    Files are read on a few threads: libsndfile releases the GIL, and real corpora are many small
    files, so reading is bound by file-system latency rather than by the CPU.
    """
    length = round(seconds * SAMPLE_RATE)
    workers = workers or min(8, os.cpu_count() or 1)

    def read(i: int) -> np.ndarray:
        path, slot, slots, lo, hi = rows[i]
        return read_clip(base / path, slot, slots, lo, hi, length)

    def load_waves(indices: torch.Tensor) -> torch.Tensor:
        ids = [int(i) for i in torch.as_tensor(indices).flatten()]
        if len(ids) < 4 * workers:
            waves = [read(i) for i in ids]
        else:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                waves = list(pool.map(read, ids))
        return torch.from_numpy(np.stack(waves)) if waves else torch.zeros(0, length)

    return load_waves


def contents(base: Path, rows: Sequence[Row]) -> str:
    """A hash of every clip file's size and modification time (ns): what changes when a file's
    audio does, without reading the audio (a real corpus is ~10^5 files; ``stat`` is cheap)."""
    digest = hashlib.sha256()
    for path in sorted({row[0] for row in rows}):
        try:
            info = (base / path).stat()
        except FileNotFoundError:
            raise ValueError(f"{base / path} is listed by the dataset but missing") from None
        digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def encode(values: Sequence[str], names: tuple[str, ...]) -> torch.Tensor:
    lookup = {n: i for i, n in enumerate(names)}
    return torch.tensor([lookup[v] for v in values], dtype=torch.long)


def make_source(name: str, base: Path, rows: list[Row], labels: dict[str, list[str]],
            names: dict[str, tuple[str, ...]], part: list[int], seconds: float,
            options: dict) -> Source:
    """Labels as strings -> a Source whose key fingerprints the exact clip list and options.

    The key includes the dataset's absolute folder: the same file names elsewhere may hold
    other audio, and a stale feature cache must never be reused for it; and the files' sizes and
    modification times (:func:`contents`), so re-extracted or edited audio is not either.
    """
    key = fingerprint(name, str(base.resolve()), options, rows, part, labels, contents(base, rows),
                      "datasets-v1")
    return Source(name=name, key=key,
                  labels={task: encode(values, names[task]) for task, values in labels.items()},
                  names=names, part=torch.tensor(part, dtype=torch.long),
                  load_waves=wave_loader(base, rows, seconds), sample_rate=SAMPLE_RATE)


# --------------------------------------------------------------------------- helpers


def hash_order(keys: Sequence[str]) -> list[int]:
    """Positions of ``keys`` in a stable pseudo-random order (sha1 of the key).

    Used wherever a subset must be picked: it is reproducible on every machine and independent
    of the file system's listing order.
    """
    return sorted(range(len(keys)), key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())


def cap(keys: Sequence[str], groups: Sequence[object], limit: int | None) -> list[int]:
    """Indices to keep so that each group has at most ``limit`` items (hash-ordered picks)."""
    if limit is None:
        return list(range(len(keys)))
    if limit < 1:
        raise ValueError(f"a per-class/per-speaker limit must be >= 1, got {limit}")
    seen: dict[object, int] = {}
    keep = []
    for i in hash_order(keys):
        seen[groups[i]] = seen.get(groups[i], 0) + 1
        if seen[groups[i]] <= limit:
            keep.append(i)
    return sorted(keep)


def split_per_group(keys: Sequence[str], groups: Sequence[object]) -> list[int]:
    """Part (0/1/2) of each item: within every group, hash-ordered 80/10/10 train/val/test.

    A group with 3 or more items always gets at least one validation and one test item, so
    every speaker can be evaluated.
    """
    members: dict[object, list[int]] = {}
    for i in hash_order(keys):
        members.setdefault(groups[i], []).append(i)
    part = [0] * len(keys)
    for items in members.values():
        n = len(items)
        n_held = max(1, round(FRACTIONS[1] * n)) if n >= 3 else 0
        for rank, i in enumerate(items):
            part[i] = 2 if rank < n_held else 1 if rank < 2 * n_held else 0
    return part


def missing(what: str, expected: Path, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found: expected {expected}. {how} (Datasets are looked "
                             "for under root=, else $SPEECHUL_DATA, else <cache>/datasets.)")


def walk(dataset: object, desc: str) -> list[tuple]:
    """All ``get_metadata`` tuples of a torchaudio dataset (paths and labels; no audio read).

    A listed file that is gone, or a LibriSpeech transcript without the utterance's line, is
    named as a damaged dataset folder instead of torchaudio's bare ``Translation not found``.
    """
    out = []
    for n in progress(range(len(dataset)), desc=desc):
        try:
            out.append(dataset.get_metadata(n))
        except (OSError, ValueError) as err:
            raise ValueError(f"{desc}: item {n} of {type(dataset).__name__} could not be "
                             f"listed ({err}); the dataset folder looks incomplete or edited: "
                             "extract its archive again") from None
    return out
