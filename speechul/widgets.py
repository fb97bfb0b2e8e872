"""Notebook explorers built from standard ipywidgets controls.

Only controls that ipywidgets 7 and 8 share are used (Dropdown, Output, HBox, VBox), so the
explorer works in Jupyter, VS Code and Colab. The view is written into the ``Output`` widget's
``outputs`` directly (never through ``with output:``), so its content is part of the widget
state: a static book page rendered from saved widget state shows the first clip's player and
spectrogram, and tests can read what was drawn without a kernel.
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import Image

from .data import PARTS, Corpus
from .plots import corpus as views

__all__ = ["explorer"]


def _png(fig: plt.Figure) -> Image:
    """A figure as an embedded PNG (closed afterwards, so the notebook does not draw it twice)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return Image(data=buffer.getvalue(), format="png")


def _view(corpus: Corpus, index: int) -> list:
    """The player and a waveform + log-mel figure of one clip, as display objects."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 3.6), sharex=True, layout="constrained")
    views.waveform(corpus, index, ax=top)
    views.logmel(corpus, index, ax=bottom)
    bottom.set_title("")
    return [views.audio(corpus, index), _png(fig)]


def explorer(corpus: Corpus, speaker: str | None = None,
             keyword: str | None = None) -> widgets.VBox:
    """Pick a speaker, a keyword and a take; hear the clip and see its waveform and log-mel.

    Returns a ``VBox`` (dropdowns on top, the clip view below); display it as a cell's last line.
    """
    if "keyword" not in corpus.labels:
        raise ValueError(f"corpus {corpus.name!r} has no keyword labels to explore")
    speakers, keywords = corpus.names("speaker"), corpus.names("keyword")
    for value, names, what in ((speaker, speakers, "speaker"), (keyword, keywords, "keyword")):
        if value is not None and value not in names:
            raise ValueError(f"unknown {what} {value!r}; known: {list(names)}")
    pick_speaker = widgets.Dropdown(options=list(speakers), value=speaker or speakers[0],
                                    description="speaker")
    pick_keyword = widgets.Dropdown(options=list(keywords), value=keyword or keywords[0],
                                    description="keyword")
    pick_take = widgets.Dropdown(description="take")
    output = widgets.Output()

    def takes() -> list[tuple[str, int]]:
        """(label, corpus index) of every take of the chosen pair, labelled with its part."""
        chosen = ((corpus.speaker == speakers.index(pick_speaker.value))
                  & (corpus.labels["keyword"] == keywords.index(pick_keyword.value)))
        hits = torch.nonzero(chosen).flatten().tolist()
        return [(f"{take} ({PARTS[int(corpus.part[i])]})", i) for take, i in enumerate(hits)]

    def show(_change: object = None) -> None:
        output.outputs = ()
        for item in _view(corpus, pick_take.value):
            output.append_display_data(item)

    def retake(_change: object = None) -> None:
        # Replace the takes without firing show() on the transient values, then draw once.
        pick_take.unobserve(show, names="value")
        options = takes()
        pick_take.options = options
        pick_take.value = options[0][1]
        pick_take.observe(show, names="value")
        show()

    pick_speaker.observe(retake, names="value")
    pick_keyword.observe(retake, names="value")
    pick_take.observe(show, names="value")
    retake()
    return widgets.VBox([widgets.HBox([pick_speaker, pick_keyword, pick_take]), output])
