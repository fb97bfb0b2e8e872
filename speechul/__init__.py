"""speechul: machine unlearning for speech, the package behind the book.

A notebook needs only this import::

    import speechul as su
    corpus = su.data.load("embedded", task="keyword", size="small")
    original = su.train.original(corpus, su.train.TrainConfig(epochs=20))
"""

from . import (
    audits,
    claims,
    cost,
    data,
    digits,
    experiments,
    features,
    metrics,
    models,
    noise,
    plots,
    probes,
    runners,
    sisa,
    synth,
    train,
    unlearn,
    widgets,
)
from ._runtime import default_device, keep_freed_memory, seed_everything
from .metrics import evaluate

keep_freed_memory()  # faster CPU training on glibc, same numbers; see its docstring

__version__ = "0.1.0"

__all__ = ["audits", "claims", "cost", "data", "digits", "experiments", "features", "metrics",
           "models", "noise", "plots", "probes", "runners", "sisa", "synth", "train", "unlearn",
           "widgets", "default_device", "evaluate", "seed_everything"]
