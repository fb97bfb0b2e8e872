"""Corpus views: audio players, waveforms, log-mels, confusion matrices, embeddings."""

__all__: list[str] = []
