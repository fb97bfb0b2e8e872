"""The embedded offline corpus: eSpeak NG voices x keywords x takes, augmented, cached.

No public speech corpus can be downloaded everywhere, so every chapter runs on a synthetic
multi-speaker keyword corpus generated locally in seconds:

* each *speaker* is an eSpeak NG accent + voice variant (``en-us+m3``, ``en-gb-x-rp+f2``, ...)
  with its own base pitch, pitch range and speaking rate;
* each *take* jitters pitch and rate, then is augmented: random placement in the 1 s window,
  a random spectral colouring (microphone/channel), a short reverb, background noise at a random
  SNR and a random gain.

The result is hard enough to leave a real generalisation gap (the signal membership inference
and sample unlearning live on) yet learnable to >= 0.90 keyword and >= 0.75 speaker accuracy.
Generation is bit-for-bit deterministic for a seed (see ``_espeak.py`` for how).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from ._runtime import cache_dir, cached, fingerprint, progress, source_digest

__all__ = ["KEYWORDS", "SAMPLE_RATE", "SIZES", "SynthConfig", "speakers", "build"]

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SAMPLE_RATE = 16_000
CLIP_SECONDS = 1.0

# Accents and voice variants shipped with eSpeak NG. Harsh variants (whisper, croak) are left
# out: they make keywords unintelligible rather than speakers distinct.
_ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc",
            "en-gb-x-gbclan", "en-gb-x-gbcwmd")
_VARIANTS = ("m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "f5", "m6", "m7",
             "klatt", "klatt2", "klatt3", "klatt4")


@dataclass(frozen=True)
class SynthConfig:
    """What the corpus is made of. Every field is part of the cache key.

    ``train_takes``/``val_takes`` give how many of each speaker's takes per keyword go to train
    and validation; the rest are test. The split is by take, identical for both tasks.
    """

    n_speakers: int = 32
    takes: int = 10
    train_takes: int = 6
    val_takes: int = 2
    seed: int = 0
    snr_db: tuple[float, float] = (-5.0, 20.0)
    reverb_probability: float = 0.5
    pitch_jitter: int = 8
    rate_jitter: int = 15


SIZES: dict[str, SynthConfig] = {
    "tiny": SynthConfig(n_speakers=8, takes=5, train_takes=3, val_takes=1),
    "small": SynthConfig(n_speakers=16, takes=8, train_takes=5, val_takes=1),
    "default": SynthConfig(),
}


def speakers(n: int, seed: int = 0) -> list[dict]:
    """The first ``n`` speakers: distinct (accent, variant) pairs with base pitch/rate/range."""
    if not 1 <= n <= len(_ACCENTS) * len(_VARIANTS):
        raise ValueError(f"n_speakers must be in 1..{len(_ACCENTS) * len(_VARIANTS)}, got {n}")
    rng = np.random.default_rng([seed, 1])
    out = []
    for i in range(n):
        # Walk the variants fastest and shift the accent each lap so neighbours differ in both.
        variant = _VARIANTS[i % len(_VARIANTS)]
        accent = _ACCENTS[(i + i // len(_VARIANTS)) % len(_ACCENTS)]
        out.append({
            "name": f"{accent}+{variant}",
            "voice": f"{accent}+{variant}",
            "pitch": int(rng.integers(25, 76)),
            "range": int(rng.integers(20, 81)),
            "rate": int(rng.integers(140, 201)),
        })
    return out


def _jobs(config: SynthConfig) -> list[dict]:
    """One synthesis job per speaker: every keyword x take with jittered prosody."""
    jobs = []
    for s, spk in enumerate(speakers(config.n_speakers, config.seed)):
        rng = np.random.default_rng([config.seed, 2, s])
        takes = []
        for word in KEYWORDS:
            for _ in range(config.takes):
                takes.append([
                    word,
                    int(spk["rate"] + rng.integers(-config.rate_jitter, config.rate_jitter + 1)),
                    int(np.clip(spk["pitch"] + rng.integers(-config.pitch_jitter,
                                                            config.pitch_jitter + 1), 0, 99)),
                    int(np.clip(spk["range"] + rng.integers(-10, 11), 0, 100)),
                ])
        jobs.append({"voice": spk["voice"], "seed": config.seed * 1000 + s, "takes": takes})
    return jobs


def _run_job(job: dict, workdir: str, index: int) -> dict[str, np.ndarray]:
    """Synthesise one speaker in a fresh Python process (see ``_espeak.py`` for why)."""
    job_path, out_path = Path(workdir) / f"{index}.json", Path(workdir) / f"{index}.npz"
    job_path.write_text(json.dumps(job))
    script = Path(__file__).with_name("_espeak.py")
    done = subprocess.run([sys.executable, str(script), str(job_path), str(out_path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"eSpeak NG worker failed for voice {job['voice']!r}:\n{done.stderr}")
    with np.load(out_path) as data:
        return {k: data[k] for k in data.files}


def _synthesise(config: SynthConfig) -> tuple[list[np.ndarray], int]:
    """Raw trimmed words for every (speaker, keyword, take), in that order, and their rate."""
    jobs = _jobs(config)
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp, \
            concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_run_job, job, tmp, i) for i, job in enumerate(jobs)]
        results = [f.result() for f in progress(futures, desc="synthesising speakers")]
    words = []
    for res in results:
        words.extend(np.split(res["samples"], np.cumsum(res["lengths"])[:-1]))
    return words, int(results[0]["sample_rate"])


def _pad(words: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack int16 words of different lengths into (N, L) float32 in [-1, 1] and (N,) lengths."""
    lengths = torch.tensor([len(w) for w in words])
    out = torch.zeros(len(words), int(lengths.max()))
    for i, w in enumerate(words):
        out[i, : len(w)] = torch.from_numpy(w.astype(np.float32) / 32768.0)
    return out, lengths


def _place(words: torch.Tensor, lengths: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Put each word at a random offset in a 1 s window; (N, L) -> (N, 16000).

    A word longer than the window keeps its middle second.
    """
    n_out = int(SAMPLE_RATE * CLIP_SECONDS)
    slack = n_out - lengths
    offset = torch.where(slack >= 0, (torch.rand(len(words), generator=g) * (slack + 1)).long(),
                         slack // 2)
    idx = torch.arange(n_out)[None, :] - offset[:, None]  # sample t of the window reads word[idx]
    valid = (idx >= 0) & (idx < lengths[:, None])
    return words.gather(1, idx.clamp(0, words.shape[1] - 1)) * valid


def _colour(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random smooth channel response: spectral tilt plus one resonance, in the FFT domain."""
    n = len(x)
    freqs = torch.fft.rfftfreq(x.shape[1], 1 / SAMPLE_RATE).clamp(min=50.0)
    octaves = torch.log2(freqs / 1000.0)[None, :]  # (1, F)
    tilt = (torch.rand(n, 1, generator=g) * 6 - 3) * octaves  # -3..3 dB per octave
    centre = torch.log2(torch.exp(torch.rand(n, 1, generator=g) * np.log(4000 / 300)) * 300 / 1000)
    bump = (torch.rand(n, 1, generator=g) * 16 - 8) * torch.exp(-((octaves - centre) ** 2) / 0.5)
    gain = 10 ** ((tilt + bump) / 20)
    return torch.fft.irfft(torch.fft.rfft(x) * gain, n=x.shape[1])


def _reverb(x: torch.Tensor, probability: float, g: torch.Generator) -> torch.Tensor:
    """Convolve a random subset with a short exponentially decaying noise tail (RT60 0.1-0.4 s)."""
    n, taps = len(x), int(0.4 * SAMPLE_RATE)
    t = torch.arange(taps) / SAMPLE_RATE
    rt60 = 0.1 + 0.3 * torch.rand(n, 1, generator=g)
    ir = torch.randn(n, taps, generator=g) * torch.exp(-6.9 * t[None, :] / rt60) * 0.1
    ir[:, 0] = 1.0  # the direct sound
    wet = AF.fftconvolve(x, ir)[:, : x.shape[1]]
    wet = wet * (x.norm(dim=1, keepdim=True) / wet.norm(dim=1, keepdim=True).clamp(min=1e-8))
    use = torch.rand(n, 1, generator=g) < probability
    return torch.where(use, wet, x)


def _noise(x: torch.Tensor, snr_db: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Add white or brown noise at a random SNR (relative to the speech's mean power)."""
    n = len(x)
    white = torch.randn(x.shape, generator=g)
    brown = torch.cumsum(white, dim=1)
    brown = brown - brown.mean(dim=1, keepdim=True)
    kind = torch.rand(n, 1, generator=g) < 0.5
    noise = torch.where(kind, white, brown)
    noise = noise / noise.pow(2).mean(dim=1, keepdim=True).sqrt()
    active = (x.abs() > 1e-4).sum(dim=1, keepdim=True).clamp(min=1)  # samples with speech
    speech_power = x.pow(2).sum(dim=1, keepdim=True) / active
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * torch.rand(n, 1, generator=g)
    return x + noise * (speech_power / 10 ** (snr / 10)).sqrt()


def _augment(words: torch.Tensor, lengths: torch.Tensor, config: SynthConfig) -> torch.Tensor:
    """Placement, colouring, reverb, noise and gain, all vectorised: (N, L) -> (N, 16000)."""
    g = torch.Generator().manual_seed(config.seed)
    x = _place(words, lengths, g)
    x = _colour(x, g)
    x = _reverb(x, config.reverb_probability, g)
    x = _noise(x, config.snr_db, g)
    peak = 0.1 + 0.8 * torch.rand(len(x), 1, generator=g)
    return x * (peak / x.abs().amax(dim=1, keepdim=True).clamp(min=1e-8))


def _generate(config: SynthConfig) -> dict:
    """Synthesise, resample to 16 kHz and augment; returns the cache payload."""
    words, rate = _synthesise(config)
    padded, lengths = _pad(words)
    resampled = AF.resample(padded, rate, SAMPLE_RATE)
    lengths = (lengths * SAMPLE_RATE + rate - 1) // rate
    waves = _augment(resampled, lengths, config)
    n_spk, n_kw, n_take = config.n_speakers, len(KEYWORDS), config.takes
    grid = torch.stack(torch.meshgrid(torch.arange(n_spk), torch.arange(n_kw), torch.arange(n_take),
                                      indexing="ij"), dim=-1).reshape(-1, 3)
    take = grid[:, 2]
    first_test = config.train_takes + config.val_takes
    part = (take >= config.train_takes).long() + (take >= first_test).long()
    return {
        "waves": (waves.clamp(-1, 1) * 32767).round().to(torch.int16),  # (N, 16000)
        "speaker": grid[:, 0], "keyword": grid[:, 1], "take": take, "part": part,
        "speakers": [s["name"] for s in speakers(n_spk, config.seed)],
        "keywords": list(KEYWORDS),
    }


def _manifest(payload: dict, path: Path) -> None:
    """A human-readable manifest beside the cache: one row per clip."""
    names = ("train", "val", "test")
    rows = ["index,speaker,keyword,take,split"]
    for i in range(len(payload["part"])):
        rows.append(f"{i},{payload['speakers'][payload['speaker'][i]]},"
                    f"{payload['keywords'][payload['keyword'][i]]},{int(payload['take'][i])},"
                    f"{names[payload['part'][i]]}")
    path.write_text("\n".join(rows) + "\n")


def corpus_key(size: SynthConfig) -> str:
    """The embedded corpus's cache key: its size and the generator's source (this module), so an
    edit to the generator builds the corpus anew instead of serving the old clips."""
    return fingerprint("embedded", asdict(size), source_digest("synth"), torch.__version__)


def build(size: str | SynthConfig = "default", cache: str | os.PathLike | None = None) -> dict:
    """The embedded corpus as a dict of tensors, generated on first use and cached.

    Returns ``waves`` (N, 16000) int16 at 16 kHz, ``speaker``/``keyword``/``take``/``part`` (N,)
    int64 (part: 0 train, 1 val, 2 test), and the ``speakers``/``keywords`` names.
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown corpus size {size!r}; known: {sorted(SIZES)}")
        size = SIZES[size]
    key = corpus_key(size)
    folder = cache_dir(cache) / "embedded" / key
    payload = cached(folder / "corpus.pt", lambda: _generate(size))
    if not (folder / "manifest.csv").exists():
        _manifest(payload, folder / "manifest.csv")
    payload["key"] = key
    return payload
