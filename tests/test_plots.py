"""Smoke tests of the corpus views and the explorer widget (Agg backend, tiny corpus)."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from speechul import widgets  # noqa: E402
from speechul.plots import corpus as views  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _wav(html: str) -> tuple[np.ndarray, int]:
    """Decode the first embedded base64 WAV of an HTML snippet."""
    found = re.search(r"data:audio/wav;base64,([A-Za-z0-9+/=]+)", html)
    assert found, "no embedded WAV in the HTML"
    return sf.read(io.BytesIO(base64.b64decode(found.group(1))))


def test_audio_embeds_the_clip(tiny_corpus):
    wave, rate = _wav(views.audio(tiny_corpus, 3)._repr_html_())
    assert rate == 16_000
    assert wave.shape == tiny_corpus.audio(3).shape
    assert np.abs(wave).max() > 0.1  # normalised for listening, not silence


def test_audio_rejects_bad_index(tiny_corpus):
    with pytest.raises(ValueError, match="out of range"):
        views.audio(tiny_corpus, len(tiny_corpus))


def test_players_one_row_per_clip(tiny_corpus):
    html = views.players(tiny_corpus, [0, 5, 9]).data
    assert html.count("<tr>") == 3
    assert html.count("data:audio/wav;base64") == 3
    assert "yes / " in html  # default captions name the keyword and speaker
    with pytest.raises(ValueError, match="captions"):
        views.players(tiny_corpus, [0, 1], captions=["only one"])


def test_waveform_draws_one_second(tiny_corpus):
    fig = views.waveform(tiny_corpus, 0)
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    assert len(line.get_xdata()) == 16_000
    assert line.get_xdata()[-1] == pytest.approx(1.0, abs=1e-3)
    assert ax.get_xlabel() == "time (s)"


def test_logmel_shows_the_features(tiny_corpus):
    fig = views.logmel(tiny_corpus, 7)
    image = fig.axes[0].get_images()[0]
    assert image.get_array().shape == (40, 101)
    np.testing.assert_allclose(image.get_array(), tiny_corpus.x[7, 0].numpy())
    assert len(fig.axes) == 2  # the spectrogram and its colour bar


def test_clip_index_finds_the_pair(tiny_corpus):
    speaker = tiny_corpus.names("speaker")[2]
    index = views.clip_index(tiny_corpus, speaker, "stop", take=1)
    assert tiny_corpus.names("speaker")[int(tiny_corpus.speaker[index])] == speaker
    assert tiny_corpus.names("keyword")[int(tiny_corpus.labels["keyword"][index])] == "stop"
    with pytest.raises(ValueError, match="known:"):
        views.clip_index(tiny_corpus, "nobody", "stop")
    with pytest.raises(ValueError, match="take"):
        views.clip_index(tiny_corpus, speaker, "stop", take=99)


def test_clip_grid_has_one_image_per_pair(tiny_corpus):
    speakers = list(tiny_corpus.names("speaker")[:3])
    fig = views.clip_grid(tiny_corpus, speakers, ["yes", "no"])
    assert len(fig.axes) == 6
    assert all(len(ax.get_images()) == 1 for ax in fig.axes)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["yes", "no"]
    assert fig.axes[2].get_ylabel() == speakers[1]


def test_confusion_normalises_rows():
    counts = np.array([[8, 2, 0], [0, 5, 5], [1, 1, 8]])
    fig = views.confusion(counts, ["a", "b", "c"])
    shown = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(shown.sum(1), 1.0)
    assert len(fig.axes[0].texts) == 9  # small matrices are annotated
    with pytest.raises(ValueError, match="does not match"):
        views.confusion(counts, ["a", "b"])


def test_loss_histogram_two_groups():
    rng = np.random.default_rng(0)
    fig = views.loss_histogram(rng.exponential(0.05, 200), rng.exponential(0.5, 100), bins=20)
    ax = fig.axes[0]
    assert len(ax.patches) == 40
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["members (200)",
                                                                    "non-members (100)"]
    with pytest.raises(ValueError, match="at least one"):
        views.loss_histogram([], [0.1])


@pytest.mark.parametrize("method", ["pca", "tsne", "lda"])
def test_embedding_map_one_colour_per_class(method):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    emb = rng.normal(size=(40, 6)) + labels[:, None]
    fig = views.embedding_map(emb, labels, ["a", "b", "c", "d", "unused"], method=method)
    ax = fig.axes[0]
    assert len(ax.collections) == 4
    assert sum(len(c.get_offsets()) for c in ax.collections) == 40
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c", "d"]


def test_embedding_map_errors():
    with pytest.raises(ValueError, match="unknown projection"):
        views.embedding_map(np.zeros((4, 3)), [0, 1, 0, 1], ["a", "b"], method="umap")
    with pytest.raises(ValueError, match="must index names"):
        views.embedding_map(np.zeros((4, 3)), [0, 1, 2, 1], ["a", "b"])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        views.embedding_map(np.zeros((5, 3)), [0, 1, 0, 1], ["a", "b"])


def test_learning_curves_loss_and_accuracy():
    history = [{"epoch": e, "loss": 1 / e, "val_acc": 0.5 + e / 20} for e in range(1, 6)]
    fig = views.learning_curves(SimpleNamespace(history=history))
    loss_ax, acc_ax = fig.axes
    assert list(loss_ax.get_lines()[0].get_ydata()) == [row["loss"] for row in history]
    assert list(acc_ax.get_lines()[0].get_ydata()) == [row["val_acc"] for row in history]
    assert len(loss_ax.get_legend().get_texts()) == 2
    with pytest.raises(ValueError, match="at least one epoch"):
        views.learning_curves([])


def _shown(explorer) -> tuple[str, list[str]]:
    """(audio html, mime types) of what the explorer's output widget holds."""
    outputs = explorer.children[1].outputs
    return outputs[0]["data"]["text/html"], [next(iter(sorted(o["data"]))) for o in outputs]


def test_explorer_shows_and_updates(tiny_corpus):
    box = widgets.explorer(tiny_corpus)
    speaker, keyword, take = box.children[0].children
    html, kinds = _shown(box)
    assert kinds == ["text/html", "image/png"]  # the player, then the figure
    first, _ = _wav(html)
    np.testing.assert_allclose(first, tiny_corpus.audio(take.value) / np.abs(
        tiny_corpus.audio(take.value)).max(), atol=1e-3)
    assert [label.split()[1] for label, _ in take.options] == [
        "(train)", "(train)", "(train)", "(val)", "(test)"]

    keyword.value = "go"
    index = take.value
    assert tiny_corpus.names("keyword")[int(tiny_corpus.labels["keyword"][index])] == "go"
    assert _wav(_shown(box)[0])[0].shape == first.shape
    assert _shown(box)[0] != html  # a different clip is shown

    take.value = take.options[-1][1]
    assert int(tiny_corpus.part[take.value]) == 2  # the last take is a test clip
    assert speaker.value == tiny_corpus.names("speaker")[0]


def test_explorer_needs_keywords(tiny_corpus):
    labels = {k: v for k, v in tiny_corpus.labels.items() if k != "keyword"}
    with pytest.raises(ValueError, match="no keyword labels"):
        widgets.explorer(dataclasses.replace(tiny_corpus, labels=labels))


def test_explorer_rejects_unknown_names(tiny_corpus):
    with pytest.raises(ValueError, match="unknown keyword 'maybe'; known:"):
        widgets.explorer(tiny_corpus, keyword="maybe")
