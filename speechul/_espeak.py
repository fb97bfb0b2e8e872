"""Drive eSpeak NG (shipped by the ``espeakng-loader`` wheel) through ctypes.

Run as a script, this file synthesises every take of one speaker and writes them to a ``.npz``:

    python _espeak.py JOB.json OUT.npz

Why a separate process per speaker: eSpeak NG keeps synthesis state (glottal flutter phase, the
noise generator, filter memories) in static variables that survive ``espeak_Terminate``. The same
word spoken twice in one process therefore differs by a few samples. In a *fresh* process, the
same sequence of calls after ``espeak_ng_SetRandSeed`` gives bit-identical audio. So each speaker
is synthesised in its own process, in a fixed order, with a fixed seed: the corpus is identical
run to run, whatever the number of workers. This file imports only NumPy, so a worker starts in
a fraction of a second.
"""

from __future__ import annotations

import ctypes
import json
import sys

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
RATE, PITCH, RANGE = 1, 3, 4  # espeak_PARAMETER values
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class ESpeak:
    """A minimal synchronous eSpeak NG session: ``say(word) -> int16 samples``."""

    def __init__(self, seed: int = 0) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise (espeakng-loader data missing?)")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), n: int, events: int) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def say(self, word: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        """Synthesise one word; returns int16 samples at ``self.sample_rate`` (22.05 kHz)."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for parameter, value in ((RATE, rate), (PITCH, pitch), (RANGE, pitch_range)):
            self.lib.espeak_SetParameter(parameter, int(value), 0)
        self._chunks.clear()
        text = word.encode()
        self.lib.espeak_Synth(text, len(text) + 1, 0, POS_CHARACTER, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def trim(wave: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Cut the leading and trailing silence eSpeak adds (below ``threshold`` of the peak)."""
    loud = np.flatnonzero(np.abs(wave.astype(np.float32)) > threshold * max(np.abs(wave).max(), 1))
    return wave[loud[0] : loud[-1] + 1] if loud.size else wave


def synthesise(job: dict) -> dict[str, np.ndarray]:
    """Speak every (word, rate, pitch, range) in ``job["takes"]`` with ``job["voice"]``.

    Returns the trimmed words concatenated (int16) with their lengths, so the parent can split them.
    """
    engine = ESpeak(seed=job["seed"])
    words = [trim(engine.say(w, job["voice"], r, p, g)) for w, r, p, g in job["takes"]]
    return {
        "samples": np.concatenate(words).astype(np.int16),
        "lengths": np.array([len(w) for w in words], dtype=np.int64),
        "sample_rate": np.array(engine.sample_rate),
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        result = synthesise(json.load(handle))
    np.savez(sys.argv[2], **result)
