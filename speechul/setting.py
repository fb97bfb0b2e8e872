"""One cell of an experiment grid: a forget request, the methods and seeds to try on it.

A :class:`Setting` is a value: it validates everything it can before a model trains (methods and
their hyper-parameters, the device, the forget request's shape) and names itself with keys that
identify the cached Retrain (:attr:`Setting.reference_key`), the rows of a results file
(:attr:`Setting.key`) and each method's variant (:meth:`Setting.variant`).
:mod:`speechul.experiments` runs it.
"""

from __future__ import annotations

import inspect
import json
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from . import _checks, train, unlearn
from ._runtime import default_device, fingerprint, numerics

__all__ = ["Setting", "REFERENCE", "GROUP", "HOLDOUTS"]

REFERENCE = "retrain"

#: The clips that play "unseen data" when a run is scored: ``test`` for the numbers one reports,
#: ``val`` for choosing hyper-parameters (never tune on the clips you report).
HOLDOUTS = ("test", "val")

#: The columns that name one request and one method variant: a summary over seeds groups by
#: them (``setting`` tells apart recipes and data options; ``overrides``, tuned variants).
GROUP = ("dataset", "size", "task", "kind", "forget", "setting", "method", "overrides")


@dataclass(frozen=True)
class Setting:
    """One forget request on one model, and the methods and seeds to try on it.

    Args:
        task: ``"keyword"`` or ``"speaker"`` (what the model classifies).
        kind: ``"sample"``, ``"class"`` or ``"speaker"`` (see ``data.forget_split``).
        fraction / classes / speakers: what to forget, by kind (``fraction`` is only read by
            the sample kind, and set to None for the others, so a class request made here and
            the same one from the command line share one key and one cached Retrain).
        methods: method names from ``unlearn.METHODS``; Retrain always runs as the reference.
        seeds: each seed draws the forget set (sample kind), initialises Retrain and drives the
            methods' randomness. The original model is trained once with ``original_seed``
            unless ``vary_original`` is set (then with each seed).
        dataset, size, data_options: which corpus (``data.load``; on a real corpus ``size``
            caps the clips per class, as a chapter's ``SIZE`` does).
        recipe: the training recipe of the original model and of Retrain.
        hparams: per-method overrides, e.g. ``{"scrub": {"epochs": 3}}``.
        holdout: ``"test"``, or ``"val"`` to tune: every ``test``-named number of a row (test
            accuracy, the attacker's non-members, a class request's kept/forgotten test
            accuracy) is then computed on the validation clips, and the rows are kept apart
            from the test rows (:attr:`key`). Retrain is the same model either way.
    """

    task: str = "keyword"
    kind: str = "sample"
    fraction: float | None = 0.1
    classes: tuple[str, ...] = ()
    speakers: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    dataset: str = "embedded"
    size: str = "default"
    data_options: Mapping[str, Any] = field(default_factory=dict)
    recipe: train.TrainConfig = train.TrainConfig()
    original_seed: int = 0
    vary_original: bool = False
    hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    device: str | None = None
    holdout: str = "test"

    def __post_init__(self) -> None:
        for name in ("classes", "speakers"):  # "yes" is one keyword, not y, e and s
            if isinstance(getattr(self, name), (str, int)):
                object.__setattr__(self, name, (getattr(self, name),))
        if self.kind != "sample":
            object.__setattr__(self, "fraction", None)  # frozen: the one normalisation
        _check_values(self)
        known = set(unlearn.METHODS)
        unknown = [m for m in (*self.methods, *self.hparams) if m not in known]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {sorted(known)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.kind == "sample" and not (self.fraction is None or 0 < self.fraction < 1):
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")
        _check_device(self.device)
        if self.holdout not in HOLDOUTS:
            raise ValueError(f"holdout must be one of {list(HOLDOUTS)}, got {self.holdout!r}")
        if not isinstance(self.hparams, Mapping):
            raise ValueError(f"hparams must map method names to overrides, got {self.hparams!r}")
        for method, overrides in self.hparams.items():
            if not isinstance(overrides, Mapping):
                raise ValueError(f"hparams[{method!r}] must map names to values, "
                                 f"got {overrides!r}")
            try:  # fail now, not after the originals and Retrains have trained
                unlearn.config(method, **overrides)
            except TypeError as err:
                raise ValueError(str(err)) from None

    @property
    def key(self) -> str:
        """Identifies the request, recipe, Retrain's overrides, the numerics (precision, device,
        thread count, torch version, seed offset: ``_runtime.numerics``) and holdout (not the
        methods tried on it, their overrides, or the seeds): a results file written in fp32 or
        at 1 thread is not resumed by a bf16 or 2-thread run, nor a test table by a tuning run.
        A row is identified by this key, its method, the method's :meth:`variant` and its seed,
        so tuning one method re-runs that method alone."""
        return fingerprint(self.reference_key, numerics(default_device(self.device)), self.holdout)

    @property
    def reference_key(self) -> str:
        """Identifies Retrain's request and recipe: no other method's hyper-parameters, so that
        tuning a method never retrains the reference."""
        fields = asdict(self)
        for name in ("methods", "seeds", "device", "hparams", "holdout"):
            fields.pop(name)
        return fingerprint(fields, dict(self.hparams.get(REFERENCE, {})))

    def overrides(self, method: str) -> str:
        """``method``'s hyper-parameter overrides in this setting, as sorted JSON (``"{}"``
        for none): the results column that tells tuned variants of one method apart."""
        return json.dumps(dict(self.hparams.get(method, {})), sort_keys=True, default=str)

    def variant(self, method: str) -> str:
        """What a run of ``method`` is, beyond the request: every hyper-parameter it will run
        with (defaults included) and the method function's source. A results file's row is
        reused only when this matches, so changing a method's default or its code (the loop of
        developing a new method) runs it again instead of serving the old numbers."""
        bound = asdict(unlearn.config(method, **self.hparams.get(method, {})))
        return fingerprint(json.dumps(bound, sort_keys=True, default=str),
                           _source(unlearn.METHODS[method]))

    def describe(self) -> dict[str, Any]:
        """The columns every result row carries."""
        what = {"sample": self.fraction, "class": ",".join(self.classes),
                "speaker": ",".join(self.speakers)}[self.kind]
        return {"dataset": self.dataset, "size": self.size, "task": self.task,
                "kind": self.kind, "forget": what, "holdout": self.holdout, "setting": self.key}


def _check_values(setting: Setting) -> None:
    """Types a grid would otherwise misread: ``classes=(True,)`` is class 1 to ``torch``, a
    seed ``"a"`` fails as a string-formatting error only when the first model trains."""
    for name in ("classes", "speakers"):
        for item in getattr(setting, name):
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise ValueError(f"{name} holds {item!r} ({type(item).__name__}): give class "
                                 "names (str) or ids (int)")
    if isinstance(setting.seeds, (str, bytes)) or not isinstance(setting.seeds, Iterable):
        raise TypeError(f"seeds must be whole numbers, got {setting.seeds!r}")
    for value in setting.seeds:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"seeds must be whole numbers, got {value!r} in {setting.seeds!r}")
    _checks.seed(setting.original_seed, "original_seed")


def _check_device(device: str | None) -> None:
    """A device name torch knows, found before anything trains. (Whether a GPU is there is
    checked where the runs happen: a Ray cluster's workers may have one this machine lacks.)"""
    try:
        default_device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None


def _source(fn: Callable[..., Any]) -> str:
    """A function's source (its name where the source cannot be read, e.g. a built-in)."""
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return f"{fn.__module__}.{fn.__qualname__}"
