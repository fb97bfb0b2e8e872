"""Machinery the unlearning methods share (private: methods import it, users need not).

Teachers (a frozen copy, a re-initialised "incompetent" one), the forget/retain pairing, the
temperature-scaled KL divergence, SalUn's saliency mask and SSD's diagonal Fisher information,
plus the optimiser and epoch loop every method uses, so that their differences stay visible.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._runtime import progress, shifted
from ..corpus import Batches
from ..cost import uncounted
from ..metrics import predict


def is_finite(model: nn.Module) -> bool:
    """True when every floating parameter and buffer (batch-norm statistics too) is finite."""
    return all(torch.isfinite(t).all().item() for t in model.state_dict().values()
               if t.is_floating_point())


class Guard:
    """The last healthy weights of one unlearning run, kept by ``unlearn.run`` while it runs.

    Healthy means finite weights *and* finite logits on a few probe clips: weights of ~1e30 are
    finite but give NaN outputs. The snapshot lives here, not on the model object, so a model
    that went through an epoch loop elsewhere (a method called directly, an earlier run) never
    brings a stale snapshot into the next run.
    """

    def __init__(self, probe: torch.Tensor) -> None:
        self.probe = probe  # (n, 1, n_mels, frames): a few forget and retain clips
        self.module: nn.Module | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def healthy(self, model: nn.Module) -> bool:
        """Finite weights and batch-norm statistics, and finite logits (n, C) on the probe."""
        if not is_finite(model):
            return False
        with uncounted():  # a health check, not the method's work
            return bool(torch.isfinite(predict(model, self.probe)).all())

    def keep(self, model: nn.Module) -> None:
        """Remember ``model``'s weights if they are healthy (else keep the older snapshot)."""
        if self.healthy(model):
            self.module, self.state = model, copy.deepcopy(model.state_dict())

    def restored(self) -> nn.Module | None:
        """The module of the last snapshot with its weights put back; None if none was kept."""
        if self.module is None or self.state is None:
            return None
        self.module.load_state_dict(self.state)
        return self.module


_GUARD: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("speechul_guard",
                                                                      default=None)


@contextlib.contextmanager
def guarding(guard: Guard) -> Iterator[Guard]:
    """Make ``guard`` the one :func:`epoch_loop` reports to while a method runs."""
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


def epoch_loop(model: nn.Module, n: int, desc: str) -> Iterator[int]:
    """Epoch numbers with a progress bar, remembering the weights from before each epoch.

    If a step makes the weights or outputs non-finite, ``run`` restores the last healthy copy
    (:class:`Guard`): a method then returns its last finite weights, never NaN. Outside ``run``
    nothing is remembered.
    """
    for epoch in progress(range(n), desc=desc):
        guard = _GUARD.get()
        if guard is not None:
            guard.keep(model)
        yield epoch


#: The optimisers a method may name (its ``optimizer`` hyper-parameter).
OPTIMIZERS = ("adam", "sgd")


def optimizer(model: nn.Module, lr: float, steps: int, kind: str = "adam",
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimiser and its schedule over ``steps``.

    ``"adam"`` (the book's): Adam without weight decay, cosine to zero. Adam's per-weight step
    size makes one ``lr`` work for ascent and descent alike; no weight decay, so weights outside
    a SalUn mask stay exactly as they were. ``"sgd"`` (SCRUB's reference, Kurmanji et al. 2023):
    SGD with momentum 0.9 and weight decay 5e-4 at a constant ``lr`` (the reference decays it
    only after its third epoch).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9,
                                                     weight_decay=5e-4)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    check_optimizer(kind)
    opt = torch.optim.Adam(params, lr=lr)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))


def check_optimizer(kind: object) -> None:
    """Raise ValueError unless ``kind`` names one of :data:`OPTIMIZERS`."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")


def soft_threshold_after_steps(opt: torch.optim.Optimizer, strength: list[float]) -> None:
    """After every step of ``opt``, shrink each weight towards 0 by ``lr * strength[0]``.

    The proximal step of the penalty ``strength * sum |w|``: ``w <- sign(w) max(|w| - lr s, 0)``
    with ``lr`` the step's own learning rate. Written into the loss instead, the penalty's
    gradient ``s sign(w)`` would be divided by Adam's running gradient scale, weight by weight,
    and all but vanish; the proximal step shrinks every weight by the same amount and sets the
    small ones to exactly zero. ``strength`` is a one-element list the caller may change between
    epochs (a decaying penalty).
    """

    def shrink(optimizer: torch.optim.Optimizer, *_: object) -> None:
        with torch.no_grad():
            for group in optimizer.param_groups:
                step = group["lr"] * strength[0]
                if step > 0:
                    for p in group["params"]:
                        p.copy_(torch.sign(p) * (p.abs() - step).clamp_min(0))

    opt.register_step_post_hook(shrink)


def check_range(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    """Raise ValueError unless ``low <= value <= high`` (weights and fractions)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


def frozen_copy(model: nn.Module) -> nn.Module:
    """A teacher: a copy in eval mode that takes no gradients."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def reset_(module: nn.Module, seed: int) -> nn.Module:
    """Re-draw ``module``'s weights in place from their initialisers (batch-norm statistics too).

    Seeded on a forked generator, so the caller's random stream is not disturbed.
    """
    device = next(module.parameters()).device
    cuda = [device] if device.type == "cuda" else []  # CUDA weights draw from the CUDA RNG
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(shifted(seed))
        for part in module.modules():
            if hasattr(part, "reset_parameters"):
                part.reset_parameters()
    return module


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A frozen copy with freshly initialised weights (Bad Teacher's incompetent teacher)."""
    return frozen_copy(reset_(copy.deepcopy(model), seed))


def kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
       temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of temperature-softened distributions, x T^2 (Hinton et al.).

    Both sides go through log-softmax (never raw logits); the T^2 keeps gradient sizes
    comparable across temperatures. Logits (B, C) -> scalar.
    """
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    log_target=True, reduction="batchmean") * t * t


@dataclass(frozen=True, eq=False)
class Marked:
    """The ``y`` of a batch that mixes forget and retain clips: their labels and which clips
    are forget clips, (B,) each. ``train.one_epoch`` (the one training step) only takes its
    length, so mixed batches need no special case there; a method's loss reads both fields."""

    labels: torch.Tensor
    is_forget: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


class MarkedBatches(Batches):
    """:class:`Batches` whose ``y`` is :class:`Marked`: ``is_forget`` is a (N,) corpus mask."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, is_forget: torch.Tensor,
                 indices: torch.Tensor, batch_size: int, seed: int) -> None:
        super().__init__(x, y, indices, batch_size, seed=seed)
        self.is_forget = is_forget.to(x.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Marked]]:
        for idx in self.index_batches():
            yield self.x[idx], Marked(self.y[idx], self.is_forget[idx])


def pairs(forget: Batches, retain: Batches) -> Iterator[tuple[torch.Tensor, Marked]]:
    """One pass over the longer stream, cycling the shorter: joint (x, :class:`Marked`) batches.

    Each yielded batch stacks a retain batch and a forget batch, in that order.
    """
    long, short = (retain, forget) if len(retain) >= len(forget) else (forget, retain)
    if len(short) == 0:
        raise ValueError("pairs need clips in both the forget and the retain set")
    cycled = itertools.chain.from_iterable(itertools.repeat(short))
    for (xa, ya), (xb, yb) in zip(long, cycled, strict=False):
        (xr, yr), (xf, yf) = ((xa, ya), (xb, yb)) if long is retain else ((xb, yb), (xa, ya))
        is_forget = torch.cat([torch.zeros_like(yr, dtype=torch.bool),
                               torch.ones_like(yf, dtype=torch.bool)])
        yield torch.cat([xr, xf]), Marked(torch.cat([yr, yf]), is_forget)


def mixed(forget: Batches, retain: Batches) -> MarkedBatches:
    """One shuffled pass over forget and retain together, each batch's ``y`` :class:`Marked`.

    Unlike :func:`pairs`, each set appears in proportion to its size (a 10 % forget set fills
    ~10 % of every batch), as when the two are simply concatenated into one dataset.
    """
    is_forget = torch.zeros_like(retain.y, dtype=torch.bool)
    is_forget[forget.indices] = True
    seed = int(torch.randint(2**62, (1,), generator=forget.generator))
    return MarkedBatches(retain.x, retain.y, is_forget,
                         torch.cat([retain.indices, forget.indices]), retain.batch_size, seed)


def by_rows(mask: torch.Tensor, if_true: nn.Module, if_false: nn.Module,
            x: torch.Tensor) -> torch.Tensor:
    """Row i is ``if_true(x[i])`` where ``mask[i]``, else ``if_false(x[i])``: x (B, ...) -> (B, C),
    each network run only on its own rows.

    For eval-mode networks, whose outputs are per clip, this equals
    ``torch.where(mask[:, None], if_true(x), if_false(x))`` at half the cost: each row goes
    through one network instead of both.
    """
    out = None
    for rows, net in ((mask, if_true), (~mask, if_false)):
        if rows.any():
            part = net(x[rows])
            out = part.new_empty((len(x), *part.shape[1:])) if out is None else out
            out[rows] = part
    if out is None:
        raise ValueError("by_rows needs a non-empty batch")
    return out


def _gradient_sums(model: nn.Module, stream: Batches, square: bool,
                   desc: str) -> dict[str, torch.Tensor]:
    """Per-parameter sum over mini-batches of the CE gradient (or its square), in eval mode.

    In full precision even where training uses bf16: these gradients are measurements
    (ranked by SalUn, squared by SSD), and bf16's 8-bit mantissa would tie and blur them.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p) for n, p in named}
    was_training = model.training
    model.eval()  # batch-norm statistics must not move: these passes only measure
    for x, y in progress(stream, desc=desc, total=len(stream)):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        for n, p in named:
            if p.grad is not None:
                total[n] += p.grad.float() ** 2 if square else p.grad.float()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return total


def fixed_order(batches: Batches, *extra: Batches) -> Batches:
    """The clips of ``batches`` (and ``extra``) in an order that does not touch their generators.

    Measurements (saliency, Fisher) must not shift the batch order a method trains on later.
    Several streams are shuffled together, seeded from the first stream's seed.
    """
    indices = torch.cat([b.indices for b in (batches, *extra)])
    return Batches(batches.x, batches.y, indices, batches.batch_size,
                   seed=batches.generator.initial_seed(), shuffle=bool(extra))


def saliency_mask(model: nn.Module, forget: Batches, fraction: float) -> dict[str, torch.Tensor]:
    """SalUn's weight saliency: 1 for the ``fraction`` of weights with the largest |dL_f/dw|.

    The threshold is global over all parameters (Fan et al. 2024): layers that matter more
    for the forget set get more of the budget. Returns name -> 0/1 tensor shaped like the weight.
    """
    grads = _gradient_sums(model, fixed_order(forget), square=False, desc="saliency")
    saliency = {n: g.abs() for n, g in grads.items()}
    flat = torch.cat([s.flatten() for s in saliency.values()])
    k = max(1, round(fraction * len(flat)))
    chosen = torch.zeros_like(flat)
    chosen[torch.topk(flat, k).indices] = 1.0  # exactly k weights, even where saliencies tie
    parts = chosen.split([s.numel() for s in saliency.values()])
    return {n: part.view_as(s) for (n, s), part in zip(saliency.items(), parts, strict=True)}


def fisher_diagonal(model: nn.Module, stream: Batches,
                    desc: str = "fisher") -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: mean over mini-batches of the squared CE gradient.

    Mini-batch gradients, as in SSD's code: a batch mixing forget and retain clips dilutes
    the forget clips' gradient, a forget-only batch concentrates it, which is what lets SSD
    find the weights specific to the forget set. Returns name -> tensor shaped like the weight.
    """
    total = _gradient_sums(model, stream, square=True, desc=desc)
    return {n: t / max(len(stream), 1) for n, t in total.items()}
