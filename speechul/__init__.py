"""speechul: machine unlearning for speech, the package behind the book.

A notebook needs only this import::

    import speechul as su
    corpus = su.data.load("embedded", task="keyword", size="small")
    original = su.train.original(corpus, su.train.TrainConfig(epochs=20))
"""

from . import data, features, metrics, models, plots, probes, synth, train, widgets
from ._runtime import default_device, seed_everything

__version__ = "0.1.0"

__all__ = ["data", "features", "metrics", "models", "plots", "probes", "synth", "train", "widgets",
           "default_device", "seed_everything"]
