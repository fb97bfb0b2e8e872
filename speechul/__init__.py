"""speechul: machine unlearning for speech, the package behind the book.

A notebook needs only this import::

    import speechul as su
    su.keep_freed_memory()  # optional: faster CPU training on glibc, same numbers
    corpus = su.data.load("embedded", task="keyword", size="small")
    original = su.train.original(corpus, su.train.TrainConfig(epochs=20))

Importing changes nothing in the process: no allocator tuning (:func:`keep_freed_memory` is an
explicit call, which the command line and the worker processes make), no random state, and the
plotting and notebook modules (``plots``, ``widgets``: matplotlib, IPython, ipywidgets) load on
first use.
"""

import importlib
from types import ModuleType

from . import (
    audits,
    chapter_setting,
    claims,
    cost,
    data,
    digits,
    experiments,
    features,
    metrics,
    models,
    noise,
    probes,
    runners,
    sisa,
    synth,
    tables,
    train,
    unlearn,
)
from ._runtime import default_device, keep_freed_memory, seed_everything
from .metrics import evaluate

__version__ = "0.1.0"

#: Submodules that pull in matplotlib, IPython or ipywidgets: imported on first attribute use.
_LAZY = ("plots", "widgets")

__all__ = ["audits", "chapter_setting", "claims", "cost", "data", "digits", "experiments",
           "features", "metrics", "models", "noise", "plots", "probes", "runners", "sisa", "synth",
           "tables", "train",
           "unlearn", "widgets", "default_device", "evaluate", "keep_freed_memory",
           "seed_everything"]


def __getattr__(name: str) -> ModuleType:
    """``su.plots`` and ``su.widgets``, imported when first used (PEP 562)."""
    if name in _LAZY:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
