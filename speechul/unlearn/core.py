"""The registry of unlearning methods and the one front door that runs them.

A method is a plain function ``fn(model, forget, retain, *, hyper-parameters) -> nn.Module``:
``forget`` and ``retain`` are :class:`~speechul.data.Batches`, and its keyword-only signature *is*
its configuration (defaults visible in ``help()`` and :func:`defaults`, every value validated and
recorded). :func:`run` does everything a method should not have to: look-up, validation, a copy
of the model so the original is never touched, seeded batches, timing, and the divergence guard.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import cost, train
from .._runtime import Timer, fingerprint, keep_random_state, seed_everything
from ..data import Batches, Split
from ..metrics import predict
from ._shared import Guard, guarding

__all__ = ["METHODS", "register", "config", "defaults", "run", "Unlearned", "INJECTED"]

Method = Callable[..., nn.Module]

#: name -> method; :func:`register` adds to it, :func:`run` looks names up in it.
METHODS: dict[str, Method] = {}

#: Keyword arguments :func:`run` supplies itself when a method declares them (never user-set):
#: ``recipe`` (the original's TrainConfig), ``seed``, ``n_classes`` and ``unseen``
#: (:func:`unseen`: clips like the forget set that no model trained on).
INJECTED = ("recipe", "seed", "n_classes", "unseen")

# Hyper-parameters that must be strictly positive whichever method declares them.
_POSITIVE = ("lr", "epochs", "steps", "temperature")
_COUNTS = ("epochs", "steps")  # loop counts: 1.5 epochs would fail deep inside range()

@dataclass(frozen=True)
class Unlearned:
    """What :func:`run` returns: the new model and how it was made.

    ``hparams`` are the bound hyper-parameters (defaults filled in); ``diverged`` is True when
    the method hit a non-finite loss or weights and the last finite weights were returned.
    ``cost`` is the run's work in GFLOP (:mod:`speechul.cost`): budgets compare it with
    Retrain's, counted the same way, because it is the same on every machine; ``seconds`` are
    wall-clock, reported but never a budget.
    """

    model: nn.Module
    method: str
    hparams: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    diverged: bool = False
    cost: float = 0.0


def register(fn: Method | None = None, *, check: Callable[..., None] | None = None) -> Any:
    """Add ``fn`` to :data:`METHODS` under its function name; re-registering replaces.

    Use as a decorator, also in a notebook cell. Replacing a built-in method from another module
    warns, so a student does not shadow ``scrub`` by accident. The contract:

    - ``fn(model, forget, retain, *, hyper-parameters) -> nn.Module``: the hyper-parameters
      keyword-only, with defaults (they are the method's configuration: validated, recorded in
      every result row, overridden by ``run(..., lr=...)`` or a grid's ``hparams``);
    - ``model`` is a private copy of the original, in **eval mode** as trained models are: call
      ``model.train()`` before a training pass (``train.one_epoch`` does), or batch-norm layers
      keep their running statistics frozen;
    - ``forget``/``retain`` are :class:`~speechul.data.Batches`: iterate for ``(x, y)`` batches
      (x (B, 1, n_mels, frames), reshuffled each pass), ``.size`` clips; ``.x[.indices]`` is
      every clip at once;
    - declaring ``recipe``, ``seed`` or ``n_classes`` (:data:`INJECTED`) gets them supplied;
    - ``lr``, ``epochs``, ``steps`` and ``temperature`` must be positive (``epochs``/``steps``
      whole numbers) in every method that declares them;
    - return the unlearned model (edit ``model`` in place and return it, or a new one).

    ``@register(check=fn)`` adds a value check: ``check(**hparams)`` gets every tunable
    hyper-parameter (defaults filled in) and raises ValueError for values the method cannot run
    with (``scrub``'s ``max_steps`` above its ``epochs``). It runs in :func:`config`, so a grid
    (``experiments.Setting``) refuses bad values before any model trains, not when the method's
    turn comes.
    """
    if fn is None:
        return functools.partial(register, check=check)
    _check_signature(fn)
    if check is not None:
        fn.__dict__[_CHECK] = check  # travels with the function to pool and Ray workers
    old = METHODS.get(fn.__name__)
    if old is not None and old.__module__ != fn.__module__ and old.__module__.startswith(
            "speechul."):
        warnings.warn(f"replacing the built-in unlearning method {fn.__name__!r}", stacklevel=2)
    METHODS[fn.__name__] = fn
    return fn


_CHECK = "speechul_check"  # the attribute holding a method's value check (register(check=))

# run()'s own arguments: a hyper-parameter of that name would be taken by run, not the method.
_RESERVED = ("method", "original", "split", "batch_size", "config")


def _check_signature(fn: Method) -> None:
    """Refuse, at registration, a signature whose hyper-parameters :func:`run` could not pass."""
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"register a function with a name (def ...), got {fn!r}")
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 3:
        names = [p.name for p in positional]
        raise TypeError(f"method {name!r} must take (model, forget, retain, *, hyper-parameters);"
                        f" its positional parameters are {names}: put the hyper-parameters "
                        "after a '*'")
    clash = sorted(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name in _RESERVED)
    if clash:
        raise TypeError(f"method {name!r}: hyper-parameter name(s) {clash} are run()'s own "
                        "arguments; rename them")


def _lookup(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown unlearning method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def _keyword_only(fn: Method) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def defaults(name: str) -> dict[str, Any]:
    """The tunable hyper-parameters of method ``name`` and their defaults."""
    params = _keyword_only(_lookup(name))
    return {n: p.default for n, p in params.items()
            if n not in INJECTED and p.default is not inspect.Parameter.empty}


@functools.cache
def _config_class(name: str, fn: Method) -> type:
    """A frozen dataclass whose fields are ``fn``'s hyper-parameters, defaults included."""
    fields = [(n, Any, dataclasses.field(default=v)) for n, v in defaults(name).items()]
    cls = dataclasses.make_dataclass(f"{name.title().replace('_', '')}Config", fields,
                                     frozen=True)
    cls.__doc__ = f"Hyper-parameters of {name!r} (defaults shown).\n\n{inspect.getdoc(fn)}"
    return cls


def config(name: str, **overrides: Any) -> Any:
    """The hyper-parameters of method ``name`` as a frozen dataclass value.

    The method's keyword-only signature is its single source of truth; this view makes it a
    value to print, compare, store with results and pass back: ``run(name, ..., config=cfg)``.
    Unknown or bad values are rejected as :func:`run` rejects them.
    """
    _bind(name, overrides)
    return _config_class(name, _lookup(name))(**overrides)


def _bind(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Check ``hparams`` against the method's signature; return all of them, defaults filled."""
    params = _keyword_only(_lookup(name))
    tunable = [n for n in params if n not in INJECTED]
    unknown = sorted(set(hparams) - set(tunable))
    if unknown:
        raise TypeError(f"method {name!r} has no hyper-parameter {unknown}; valid: {tunable}")
    bound = {n: hparams.get(n, params[n].default) for n in tunable}
    missing = [n for n, v in bound.items() if v is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"method {name!r} needs values for {missing}")
    for key in _POSITIVE:
        value = bound.get(key)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name}: {key} must be positive, got {value!r}")
    for key in _COUNTS:
        value = bound.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name}: {key} must be a whole number, got {value!r}")
    check = getattr(_lookup(name), _CHECK, None)
    if check is not None:
        try:
            check(**bound)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    return bound


def unseen(split: Split, batch_size: int) -> Batches:
    """Validation clips like the request's forget set, which no model trained on: those of the
    forgotten classes or speakers for a class request, all of them for a sample request."""
    held = split.forgotten_val if split.forgotten_val is not None else split.val
    if len(held) == 0:
        raise ValueError(f"the {split.kind} request has no validation clips like its forget set; "
                         "a method that needs unseen clips (scrub_r) cannot run on it")
    return Batches(split.corpus.x, split.corpus.y, held, batch_size, shuffle=False)


def _stream_seed(seed: int, name: str) -> int:
    """Independent, repeatable batch orders for the forget and retain streams of one seed."""
    return int(fingerprint(seed, name), 16) % 2**62


def _settle(name: str, out: nn.Module, guard: Guard, original: nn.Module,
            reason: str | None) -> tuple[nn.Module, bool]:
    """Return a model with finite weights and outputs, and whether the method diverged.

    When the loss (``reason``), the weights or the outputs on the probe clips went non-finite,
    the run's last healthy snapshot comes back, else a copy of the original; a warning says
    which.
    """
    if reason is None and guard.healthy(out):
        return out, False
    reason = reason or "its weights or outputs became non-finite"
    restored = guard.restored()
    what = "its last finite weights"
    if restored is None:
        restored = copy.deepcopy(original)
        what = "the ORIGINAL model (the method kept no finite snapshot), unlearned nothing"
    warnings.warn(f"unlearning method {name!r} diverged ({reason}); it returned {what} "
                  "(check its learning rate)", RuntimeWarning, stacklevel=3)
    return restored, True


def _probe(split: Split) -> torch.Tensor:
    """A few forget and retain clips (n, 1, n_mels, frames) whose logits tell a healthy model."""
    x = split.corpus.x
    return torch.cat([x[split.subset(name)[:2]] for name in ("forget", "retain")])


def _check_outputs(model: nn.Module, split: Split) -> None:
    """A keyword model handed a speaker split (or any model and labels that disagree) would
    train on the wrong labels without a word; one clip's logits say so before that."""
    outputs = predict(model, split.corpus.x[split.forget[:1]]).shape[-1]
    if outputs != split.corpus.n_classes:
        raise ValueError(f"the model has {outputs} outputs but the split's corpus has "
                         f"{split.corpus.n_classes} {split.corpus.task} classes: a model of "
                         "another task or corpus?")


def _callers_random_state_kept(fn: Callable[..., Unlearned]) -> Callable[..., Unlearned]:
    """Run :func:`run` inside :func:`~speechul._runtime.keep_random_state`: it seeds the global
    generators for repeatable runs, and the caller's streams must come out untouched."""

    @functools.wraps(fn)
    def wrapper(method: str, original: train.Trained, split: Split, *args: Any,
                **kwargs: Any) -> Unlearned:
        device = getattr(getattr(split, "corpus", None), "device", None)
        with keep_random_state(device):
            return fn(method, original, split, *args, **kwargs)

    return wrapper


@_callers_random_state_kept
def run(method: str, original: train.Trained, split: Split, *, seed: int = 0,
        batch_size: int | None = None, config: Any = None, **hparams: Any) -> Unlearned:
    """Unlearn ``split.forget`` from a copy of ``original.model`` with a registered method.

    Args:
        method: a key of :data:`METHODS`, e.g. ``"finetune"``, ``"scrub"``, ``"retrain"``.
        original: the trained model (``train.original``); never modified.
        split: the forget request (``data.forget_split``).
        seed: seeds the batch orders and any randomness of the method.
        batch_size: of the forget and retain batches (default: the original recipe's).
        config: a :func:`config` value for this method (``hparams`` override its fields).
        **hparams: the method's hyper-parameters; the rest take :func:`defaults`.
    Raises:
        KeyError: unknown method; TypeError: unknown hyper-parameter; ValueError: bad value.
    """
    fn = _lookup(method)
    if not isinstance(original, train.Trained):
        raise TypeError(f"original must be a su.train.Trained (what train.original returns), got "
                        f"{type(original).__name__}; wrap a network of your own as "
                        "su.train.Trained(model, recipe)")
    if config is not None:
        if not dataclasses.is_dataclass(config) or type(config) is not _config_class(method, fn):
            raise TypeError(f"config must come from su.unlearn.config({method!r}), "
                            f"got {type(config).__name__}")
        hparams = {**dataclasses.asdict(config), **hparams}
    bound = _bind(method, hparams)
    batch_size = original.recipe.batch_size if batch_size is None else batch_size
    corpus = split.corpus
    _check_outputs(original.model, split)
    forget, retain = (Batches(corpus.x, corpus.y, split.subset(name), batch_size,
                              seed=_stream_seed(seed, name)) for name in ("forget", "retain"))
    given = {"recipe": lambda: original.recipe, "seed": lambda: seed,
             "n_classes": lambda: corpus.n_classes, "unseen": lambda: unseen(split, batch_size)}
    injected = {k: make() for k, make in given.items() if k in _keyword_only(fn)}
    model = copy.deepcopy(original.model)
    seed_everything(seed)
    reason = None
    guard = Guard(_probe(split))
    with Timer() as timer, cost.counting() as work:
        try:
            with guarding(guard):
                out = fn(model, forget=forget, retain=retain, **bound, **injected)
        except train.Diverged as err:
            out, reason = model, str(err)
    if not isinstance(out, nn.Module):
        raise TypeError(f"method {method!r} returned {type(out).__name__}, not an nn.Module")
    out, diverged = _settle(method, out, guard, original.model, reason)
    return Unlearned(out.eval(), method, bound, timer.seconds, diverged, work.gflop)

