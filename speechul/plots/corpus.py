"""Corpus views: audio players, waveforms, log-mels, confusion matrices, embeddings, curves.

Every function returns a matplotlib ``Figure`` (or an IPython ``Audio`` object), so a chapter
cell stays one call and a test can inspect what was drawn. Pass ``ax=`` to draw into an existing
axes (the widgets and grids do); otherwise a new figure is made. Tensors may live on any device:
everything is moved to the CPU before drawing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, Audio
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..data import Corpus

__all__ = ["audio", "players", "waveform", "logmel", "clip_index", "clip_grid", "confusion",
           "loss_histogram", "embedding_map", "learning_curves"]

HOP_SECONDS = 0.01  # the log-mel hop (160 samples at 16 kHz), for time axes


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The given axes and its figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _numpy(values: Any) -> np.ndarray:
    """Tensors (any device), lists and arrays -> a NumPy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values)


def _title(corpus: Corpus, index: int) -> str:
    """``"yes / en-us+m1 (train)"``: what a reader needs to know about one clip."""
    parts = []
    if "keyword" in corpus.labels:
        parts.append(corpus.names("keyword")[int(corpus.labels["keyword"][index])])
    parts.append(corpus.names("speaker")[int(corpus.speaker[index])])
    part = ("train", "val", "test")[int(corpus.part[index])]
    return f"{' / '.join(parts)} ({part})"


def _check_index(corpus: Corpus, index: int) -> int:
    if not 0 <= int(index) < len(corpus):
        raise ValueError(f"clip index {index} out of range: the corpus has {len(corpus)} clips")
    return int(index)


def audio(corpus: Corpus, index: int) -> Audio:
    """A player for clip ``index`` with the WAV embedded (base64), so it plays in static HTML."""
    index = _check_index(corpus, index)
    return Audio(corpus.audio(index), rate=corpus.source.sample_rate)


def players(corpus: Corpus, indices: Sequence[int], captions: Sequence[str] | None = None) -> HTML:
    """A small table of players, one row per clip, captioned with what the clip is.

    Each row embeds its WAV like :func:`audio`, so the table plays in static HTML too.
    """
    indices = [_check_index(corpus, i) for i in indices]
    if captions is not None and len(captions) != len(indices):
        raise ValueError(f"{len(captions)} captions for {len(indices)} clips")
    rows = []
    for n, index in enumerate(indices):
        caption = captions[n] if captions is not None else _title(corpus, index)
        player = audio(corpus, index)._repr_html_().strip()
        rows.append(f"<tr><td style='padding-right:1em'>{caption}</td><td>{player}</td></tr>")
    return HTML(f"<table>{''.join(rows)}</table>")


def waveform(corpus: Corpus, index: int, ax: Axes | None = None) -> Figure:
    """The waveform of one clip against time in seconds."""
    index = _check_index(corpus, index)
    wave = corpus.audio(index)
    fig, ax = _axes(ax, (6, 2))
    ax.plot(np.arange(len(wave)) / corpus.source.sample_rate, wave, lw=0.5)
    ax.set(xlabel="time (s)", ylabel="amplitude", title=_title(corpus, index),
           xlim=(0, len(wave) / corpus.source.sample_rate))
    return fig


def logmel(corpus: Corpus, index: int, ax: Axes | None = None, colorbar: bool = True) -> Figure:
    """The log-mel spectrogram the models read: (n_mels, frames) with time in seconds."""
    index = _check_index(corpus, index)
    spec = _numpy(corpus.x[index, 0])  # (n_mels, frames)
    fig, ax = _axes(ax, (6, 2.5))
    image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                      extent=(0, spec.shape[1] * HOP_SECONDS, 0, spec.shape[0]))
    ax.set(xlabel="time (s)", ylabel="mel band", title=_title(corpus, index))
    if colorbar:
        fig.colorbar(image, ax=ax, label="log power")
    return fig


def _class_id(name: str | int, names: Sequence[str], what: str) -> int:
    """A class name or id -> id, with an error listing what exists."""
    if isinstance(name, str):
        if name not in names:
            raise ValueError(f"unknown {what} {name!r}; known: {list(names)}")
        return list(names).index(name)
    if not 0 <= int(name) < len(names):
        raise ValueError(f"unknown {what} id {name}; ids run 0..{len(names) - 1}")
    return int(name)


def clip_index(corpus: Corpus, speaker: str | int, keyword: str | int, take: int = 0) -> int:
    """The corpus index of the ``take``-th clip of ``keyword`` said by ``speaker``."""
    if "keyword" not in corpus.labels:
        raise ValueError(f"corpus {corpus.name!r} has no keyword labels")
    s = _class_id(speaker, corpus.names("speaker"), "speaker")
    k = _class_id(keyword, corpus.names("keyword"), "keyword")
    hits = torch.nonzero((corpus.speaker == s) & (corpus.labels["keyword"] == k)).flatten()
    if not 0 <= take < len(hits):
        raise ValueError(f"take {take} out of range: {len(hits)} clips of "
                         f"({corpus.names('speaker')[s]}, {corpus.names('keyword')[k]})")
    return int(hits[take])


def clip_grid(corpus: Corpus, speakers: Sequence[str | int], keywords: Sequence[str | int],
              take: int = 0) -> Figure:
    """Log-mels of every (speaker, keyword) pair: rows are speakers, columns keywords.

    Reading down a column shows one word in many voices; along a row, one voice saying many words.
    """
    if not speakers or not keywords:
        raise ValueError("clip_grid needs at least one speaker and one keyword")
    rows, cols = len(speakers), len(keywords)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols + 0.8, 1.3 * rows + 0.6),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    for r, speaker in enumerate(speakers):
        for c, keyword in enumerate(keywords):
            ax = axes[r, c]
            logmel(corpus, clip_index(corpus, speaker, keyword, take), ax=ax, colorbar=False)
            ax.set(title="", xlabel="", ylabel="")
            if r == 0:
                ax.set_title(corpus.names("keyword")[_class_id(keyword, corpus.names("keyword"),
                                                               "keyword")])
            if c == 0:
                ax.set_ylabel(corpus.names("speaker")[_class_id(speaker, corpus.names("speaker"),
                                                                "speaker")], fontsize=8)
    fig.supxlabel("time (s)")
    return fig


def confusion(matrix: Any, names: Sequence[str], normalize: bool = True,
              ax: Axes | None = None) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted), row-normalised by default."""
    counts = _numpy(matrix).astype(float)
    if counts.shape != (len(names), len(names)):
        raise ValueError(f"matrix shape {counts.shape} does not match {len(names)} names")
    shown = counts / np.maximum(counts.sum(1, keepdims=True), 1) if normalize else counts
    fig, ax = _axes(ax, (0.45 * len(names) + 2, 0.45 * len(names) + 1.5))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90)
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="true")
    if len(names) <= 12:  # numbers stay readable only on small matrices
        for (i, j), value in np.ndenumerate(shown):
            ax.text(j, i, f"{value:.2f}" if normalize else f"{value:.0f}", ha="center",
                    va="center", fontsize=7, color="white" if value > 0.6 * shown.max() else "k")
    fig.colorbar(image, ax=ax, label="fraction of row" if normalize else "count")
    return fig


def loss_histogram(member_losses: Any, nonmember_losses: Any, bins: int = 40,
                   ax: Axes | None = None) -> Figure:
    """Per-sample losses of members (trained on) vs non-members, on a log axis.

    The gap between the two histograms is what a loss-based membership attack exploits.
    """
    members, others = _numpy(member_losses).ravel(), _numpy(nonmember_losses).ravel()
    if len(members) == 0 or len(others) == 0:
        raise ValueError("loss_histogram needs at least one member and one non-member loss")
    floor = 1e-6  # a perfectly fitted clip has loss ~0; keep it on the log axis
    both = np.concatenate([members, others]).clip(floor)
    edges = np.geomspace(both.min(), max(both.max(), floor * 10), bins + 1)
    fig, ax = _axes(ax, (6, 3))
    ax.hist(members.clip(floor), edges, alpha=0.6, density=True, label=f"members ({len(members)})")
    ax.hist(others.clip(floor), edges, alpha=0.6, density=True,
            label=f"non-members ({len(others)})")
    ax.set(xscale="log", xlabel="per-sample cross-entropy loss", ylabel="density")
    ax.legend()
    return fig


def _project(emb: np.ndarray, method: str, seed: int, fit_labels: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2) with scikit-learn: PCA, t-SNE, or LDA (supervised by ``fit_labels``)."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.manifold import TSNE

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(emb)
    if method == "tsne":
        perplexity = float(min(30, max(2, (len(emb) - 1) // 3)))
        # Exact t-SNE is faster than Barnes-Hut below a few thousand points (no tree overhead).
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    method="exact" if len(emb) <= 2000 else "barnes_hut").fit_transform(emb)
    if method == "lda":
        if len(np.unique(fit_labels)) < 3:
            raise ValueError("an 'lda' map needs at least 3 classes in fit_labels")
        return LinearDiscriminantAnalysis(n_components=2).fit_transform(emb, fit_labels)
    raise ValueError(f"unknown projection {method!r}; known: 'pca', 'tsne', 'lda'")


def embedding_map(emb: Any, labels: Any, names: Sequence[str], method: str = "pca",
                  seed: int = 0, ax: Axes | None = None, title: str = "",
                  fit_labels: Any = None) -> Figure:
    """A 2-D map of embeddings (N, D), one colour per label in ``labels`` (N,).

    Args:
        labels: ints indexing ``names``; they colour the points.
        method: ``"pca"`` and ``"tsne"`` are unsupervised; ``"lda"`` finds the 2 directions that
            best separate ``fit_labels`` (default: ``labels``), e.g. a map fitted to separate
            speakers and coloured by keyword.
    """
    points, labels = _numpy(emb), _numpy(labels).astype(int).ravel()
    if points.ndim != 2 or len(points) != len(labels):
        raise ValueError(f"emb must be (N, D) with N = len(labels) = {len(labels)}, "
                         f"got {points.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels must index names (0..{len(names) - 1})")
    fit = labels if fit_labels is None else _numpy(fit_labels).astype(int).ravel()
    xy = _project(points, method, seed, fit)
    fig, ax = _axes(ax, (5, 4))
    present = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(present) <= 10 else "tab20")
    for rank, c in enumerate(present):  # colours by rank: a subset of classes stays distinct
        ax.scatter(*xy[labels == c].T, s=8, color=cmap(rank % cmap.N), label=names[c])
    ax.set(xticks=[], yticks=[], title=title or f"{method.upper()} of {points.shape[1]}-D points")
    if len(present) <= 20:
        ax.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1, 0.5))
    return fig


def learning_curves(history: Sequence[Mapping[str, float]] | Any, ax: Axes | None = None) -> Figure:
    """Per-epoch loss (left axis) and accuracies (right axis) from ``Trained.history``.

    Accepts the list of per-epoch dicts, or any object with a ``history`` attribute.
    """
    rows = list(getattr(history, "history", history))
    if not rows:
        raise ValueError("learning_curves needs at least one epoch of history")
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
    keys = [k for k in rows[0] if k != "epoch"]
    fig, ax = _axes(ax, (6, 3))
    right = None
    for key in keys:
        values = [row.get(key, np.nan) for row in rows]
        if "acc" in key:
            right = right or ax.twinx()
            right.plot(epochs, values, "--", label=key)
        else:
            ax.plot(epochs, values, label=key)
    ax.set(xlabel="epoch", ylabel="loss")
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        right.set(ylabel="accuracy", ylim=(0, 1.02))
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, loc="center right")
    return fig
