"""The cost of a run in work, not seconds: floating-point operations counted from the model.

Seconds depend on the machine: on a GPU a small job is bound by kernel launches, so Retrain is
relatively cheap and every time fraction moves; on a CPU they move with the load. A budget such
as "at most a tenth of Retrain" is therefore stated in **work**: the floating-point operations
of the network's convolutions and linear layers, forward and backward, that a run executed. The
count depends only on the shapes that flowed through the model, so it is the same on every
machine, thread count and precision, and Retrain is counted exactly like every method.

How it is counted (:func:`counting`): while the context is open, a forward hook on every module
adds, for each ``Conv1d``/``Conv2d``/``Linear`` call,

* forward: ``2 * output elements * multiply-adds per output element`` (``weight[0].numel()``);
* backward, when the call records a graph (grad enabled, output requires grad): the same amount
  again for the weight gradient if the weight trains, and again for the input gradient if the
  input requires one (a layer whose input needs no gradient, like the first, skips it).

These are the terms ``torch.utils.flop_counter.FlopCounterMode`` counts for these layers (the
tests check the two agree), at a fraction of its overhead: one Python call per layer and
forward, not one per operator. Batch norm, activations, pooling and the optimiser's update are
not counted: they are a small share of the work and the same share for every method. A forward
pass with gradients on whose backward never runs would be counted as if it had run; the
methods in :mod:`speechul.unlearn` take teacher outputs under ``torch.no_grad``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Counter", "counting", "uncounted", "GFLOP"]

GFLOP = 1e9  # the unit results are reported in
_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
_STATE = threading.local()  # .paused: measurements inside a counted block (see uncounted)


@dataclass
class Counter:
    """Floating-point operations counted so far: ``forward`` and ``backward`` (FLOPs)."""

    forward: float = 0.0
    backward: float = 0.0

    @property
    def total(self) -> float:
        """Forward plus backward FLOPs."""
        return self.forward + self.backward

    @property
    def gflop(self) -> float:
        """The total in GFLOP (10^9 floating-point operations): the unit of ``cost`` columns."""
        return self.total / GFLOP

    def hook(self, module: nn.Module, args: tuple, output: object) -> None:
        """Forward hook: add this call's forward FLOPs and, if it records a graph, backward's."""
        if (not isinstance(module, _COUNTED) or not isinstance(output, torch.Tensor)
                or getattr(_STATE, "paused", False)):
            return
        flops = 2.0 * output.numel() * module.weight[0].numel()
        self.forward += flops
        if not (torch.is_grad_enabled() and output.requires_grad):
            return
        inputs = args[0] if args and isinstance(args[0], torch.Tensor) else None
        self.backward += flops * (int(module.weight.requires_grad)
                                  + int(inputs is not None and inputs.requires_grad))


@contextlib.contextmanager
def counting() -> Iterator[Counter]:
    """Count the FLOPs of every conv/linear call made while the context is open.

    The hook is global (it sees models created inside the block, such as a method's teachers)
    and removed on exit, even on an error, so nothing outlives the block. Nested blocks each
    count everything inside them.

    >>> with counting() as work:
    ...     model(x)
    >>> work.gflop
    """
    counter = Counter()
    handle = nn.modules.module.register_module_forward_hook(counter.hook)
    try:
        yield counter
    finally:
        handle.remove()


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """Leave the work inside this block out of every open count: measurements that are not
    part of the run, such as ``fit``'s per-epoch validation accuracy."""
    before = getattr(_STATE, "paused", False)
    _STATE.paused = True
    try:
        yield
    finally:
        _STATE.paused = before
