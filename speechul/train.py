"""The training recipe, the one inner training step, fitting, and the cached original model.

``one_epoch`` is the only place where gradients are taken: zero-grad, forward under autocast,
backward, optional gradient mask, clipping, step. Training (``fit``) and every unlearning method
write their own short outer loop on top of it. A non-finite loss or gradient raises
:class:`Diverged` *before* the optimiser step, so weights are never overwritten with NaN.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks, cost, models
from ._runtime import (
    Timer,
    atomic_save,
    autocast,
    cache_dir,
    checked_load,
    eval_chunk,
    fingerprint,
    locked,
    numerics,
    progress,
    seed_everything,
)
from .data import Batches, Corpus

__all__ = ["TrainConfig", "Trained", "Diverged", "one_epoch", "fit", "fresh_model", "train_on",
           "original", "cross_entropy"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """The recipe shared by the original model, Retrain, shadow models and SISA shards.

    Args:
        arch, width: the architecture (``models.MODELS``) and its width.
        epochs, lr, batch_size, weight_decay: AdamW training.
        schedule: ``"cosine"`` (to zero over all steps), ``"step"`` (x0.1 at 2/3) or ``"constant"``.
        label_smoothing: off by default: smoothing hides the memorisation we want to measure.
        max_grad_norm: gradient clipping (``None`` for none).
    """

    arch: str = "cnn"
    width: int = 16
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-2
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    max_grad_norm: float | None = 5.0

    def __post_init__(self) -> None:
        _check_recipe(self)


def _check_recipe(recipe: TrainConfig) -> None:
    """Refuse, by field name, values that would train wrongly or fail deep inside: a negative
    ``max_grad_norm`` flips every gradient (gradient *ascent*), ``epochs=1.5`` fails in
    ``range()``, ``lr=True`` is silently 1.0."""
    if recipe.arch not in models.MODELS:
        raise ValueError(f"unknown architecture {recipe.arch!r}; known: {sorted(models.MODELS)}")
    for name in ("width", "epochs", "batch_size"):
        object.__setattr__(recipe, name, _checks.whole(name, getattr(recipe, name), low=1))
    _checks.number("lr", recipe.lr, low=0, low_open=True, what="a positive number such as 3e-3")
    _checks.number("weight_decay", recipe.weight_decay, low=0, what="a number >= 0")
    _checks.number("label_smoothing", recipe.label_smoothing, low=0, high=1, high_open=True)
    if recipe.max_grad_norm is not None:
        _checks.number("max_grad_norm", recipe.max_grad_norm, low=0, low_open=True,
                       what="a positive number or None (no clipping)")
    if recipe.schedule not in ("cosine", "step", "constant"):
        raise ValueError(f"unknown schedule {recipe.schedule!r}; known: cosine, step, constant")


class Diverged(RuntimeError):
    """The loss or a gradient became non-finite; the step that caused it was not taken."""


@dataclass
class Trained:
    """A trained model with what made it: recipe, per-epoch history, seconds, cache key, and
    ``cost``: the work of training it in GFLOP (:mod:`speechul.cost`), the same on every machine."""

    model: nn.Module
    recipe: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    key: str = ""
    cost: float = 0.0


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The plain loss: mean cross-entropy of the model's logits against labels."""
    return F.cross_entropy(model(x), y)


def one_epoch(model: nn.Module, batches: Batches, loss_fn: LossFn,
              optimizer: torch.optim.Optimizer, *,
              scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
              mask: dict[str, torch.Tensor] | None = None,
              max_grad_norm: float | None = None) -> float:
    """One pass over ``batches``; returns the mean loss.

    Args:
        loss_fn: ``loss_fn(model, x, y) -> scalar``; methods build their objectives here.
        mask: parameter name -> 0/1 tensor; gradients outside the mask are zeroed (SalUn).
        max_grad_norm: clip the gradient norm before the step.
    Raises:
        Diverged: on a non-finite loss or gradient norm, before stepping.
    """
    model.train()
    device = next(model.parameters()).device
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total, count = 0.0, 0
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = loss_fn(model, x, y)
        if not torch.isfinite(loss):
            raise Diverged(f"loss became {loss.item()}")
        loss.backward()
        if mask is not None:
            for name, p in named:
                if p.grad is not None and name in mask:
                    p.grad.mul_(mask[name])
        norm = nn.utils.clip_grad_norm_([p for _, p in named], max_grad_norm or math.inf)
        if not torch.isfinite(norm):
            raise Diverged(f"gradient norm became {norm.item()}")
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total, count = total + loss.item() * len(y), count + len(y)
    return total / max(count, 1)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    chunk = eval_chunk(x.device)
    hits = sum((model(x[i : i + chunk]).argmax(1) == y[i : i + chunk]).sum().item()
               for i in range(0, len(y), chunk))
    return hits / max(len(y), 1)


def _scheduler(optimizer: torch.optim.Optimizer, recipe: TrainConfig, steps: int):
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    if recipe.schedule == "step":
        step_size = max(2 * steps // 3, 1)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=0.1)
    return None


def _optimizer(model: nn.Module, recipe: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer: AdamW with its learning rate and weight decay."""
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _recipe_loss(recipe: TrainConfig) -> LossFn:
    """The recipe's training loss: cross-entropy with its label smoothing."""

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(x), y, label_smoothing=recipe.label_smoothing)

    return loss_fn


def fit(model: nn.Module, train: Batches, recipe: TrainConfig, *, val: Batches | None = None,
        desc: str = "training") -> list[dict[str, float]]:
    """Train ``model`` in place with the recipe; returns per-epoch loss and accuracies."""
    optimizer = _optimizer(model, recipe)
    scheduler = _scheduler(optimizer, recipe, recipe.epochs * len(train))
    loss_fn = _recipe_loss(recipe)
    history = []
    bar = progress(range(recipe.epochs), desc=desc)
    for epoch in bar:
        loss = one_epoch(model, train, loss_fn, optimizer, scheduler=scheduler,
                         max_grad_norm=recipe.max_grad_norm)
        row = {"epoch": epoch + 1, "loss": loss}
        if val is not None:
            with cost.uncounted():  # a measurement, not part of the training's work
                row["val_acc"] = _accuracy(model, val.x[val.indices], val.y[val.indices])
        history.append(row)
        bar.set_postfix({k: round(v, 3) for k, v in row.items() if k != "epoch"})
    model.eval()
    return history


def fresh_model(recipe: TrainConfig, n_classes: int, device: torch.device, seed: int) -> nn.Module:
    """A newly initialised model of the recipe's architecture, seeded."""
    seed_everything(seed)
    model = models.build(recipe.arch, n_classes, width=recipe.width).to(device)
    # channels_last is oneDNN's fast layout on CPU (1.6x here) and the tensor-core one on GPU.
    return model.to(memory_format=torch.channels_last)


def train_on(corpus: Corpus, indices: torch.Tensor, recipe: TrainConfig, seed: int = 0, *,
             val: torch.Tensor | None = None, desc: str = "training") -> Trained:
    """Train a fresh model on the given corpus indices (the original uses all of train)."""
    model = fresh_model(recipe, corpus.n_classes, corpus.device, seed)
    batches = Batches(corpus.x, corpus.y, indices, recipe.batch_size, seed=seed)
    val_batches = (None if val is None else
                   Batches(corpus.x, corpus.y, val, eval_chunk(corpus.device), shuffle=False))
    with Timer() as timer, cost.counting() as work:
        history = fit(model, batches, recipe, val=val_batches, desc=desc)
    return Trained(model, recipe, history, timer.seconds, cost=work.gflop)


def original(corpus: Corpus, recipe: TrainConfig = TrainConfig(), seed: int = 0, *,
             cache: str | os.PathLike | None = None, use_cache: bool = True) -> Trained:
    """The model trained on every training clip: cached by corpus, task, features, recipe, seed.

    A re-run loads the checkpoint instead of retraining; a damaged checkpoint is detected by its
    checksum and retrained, never silently used.
    """
    key = fingerprint(corpus.key, corpus.task, tuple(corpus.x.shape[1:]), asdict(recipe), seed,
                      numerics(corpus.device))
    path = cache_dir(cache) / "models" / f"original-{key}.pt"
    with locked(path) if use_cache else contextlib.nullcontext():  # one trains, others load
        saved = checked_load(path) if use_cache else None
        if saved is not None:
            model = fresh_model(recipe, corpus.n_classes, corpus.device, seed)
            model.load_state_dict(saved["state_dict"])
            return Trained(model.eval(), recipe, saved["history"], saved["seconds"], key,
                           saved["cost"])
        trained = train_on(corpus, corpus.indices("train"), recipe, seed,
                           val=corpus.indices("val"), desc=f"training {corpus.task} model")
        trained.key = key
        if use_cache:
            state = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
            atomic_save({"state_dict": state, "history": trained.history,
                         "seconds": trained.seconds, "cost": trained.cost}, path)
        return trained
