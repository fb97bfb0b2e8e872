"""Shared fixtures: one tiny corpus and one tiny trained model per test session.

Every test (and every chapter kernel the book tests start) shares one cache folder, so the tiny
corpus and its features are built once per session, in seconds.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

_CACHE = os.environ.setdefault("SPEECHUL_CACHE", tempfile.mkdtemp(prefix="speechul-test-cache-"))
os.environ.setdefault("SPEECHUL_QUIET", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

from speechul import data, train  # noqa: E402 - after the cache is chosen

# A short recipe that still learns the tiny corpus well enough to forget something measurable.
TINY_RECIPE = train.TrainConfig(epochs=12, lr=3e-3, batch_size=32)


@pytest.fixture(scope="session")
def cache_path() -> str:
    return _CACHE


@pytest.fixture(scope="session")
def tiny_corpus() -> data.Corpus:
    """The tiny embedded corpus (8 speakers x 10 keywords x 5 takes), keyword task, on the CPU."""
    return data.load("embedded", task="keyword", size="tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_speaker_corpus(tiny_corpus: data.Corpus) -> data.Corpus:
    return tiny_corpus.with_task("speaker")


@pytest.fixture(scope="session")
def tiny_original(tiny_corpus: data.Corpus) -> train.Trained:
    """A keyword model trained on the tiny corpus with ``TINY_RECIPE`` (cached per session)."""
    return train.original(tiny_corpus, TINY_RECIPE, seed=0)
