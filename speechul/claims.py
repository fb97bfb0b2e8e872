"""The claims a chapter makes about its own numbers, checked the same way on every machine.

Floating-point sums differ by CPU, thread count and device, so every machine is another seed: a
threshold fitted to the number one machine printed fails on the next. A chapter therefore states
each claim as one of two kinds and never asserts a bare number:

* an **invariant** (:meth:`Claims.invariant`): holds by the code's contract whatever the seeds
  (a forget set and its retain set are disjoint; a method that never reads the forget set ...);
  it fails only when the code is wrong;
* a **statistic** over seeds, with a margin taken from the spread measured in the same run:
  :meth:`Claims.below` (a quantity is smaller than another by more than ``k`` standard errors
  of their paired difference), :meth:`Claims.close` (two quantities differ by no more than a
  floor plus ``k`` standard errors), :meth:`Claims.at_most` (a quantity's mean is under a bound
  the text states, up to ``k`` standard errors). A statistical claim with fewer than three seeds
(a CI-size run) is shown as *not checked*: one seed has no spread to judge by.

Everything else a chapter measures is reported, not asserted.

What happens when a claim does not hold depends on where the chapter runs (one switch,
``$SPEECHUL_CLAIMS``): ``report`` (the default: a reader's Colab or laptop session) shows a
visible box with the claim and its numbers and execution goes on; ``strict`` (set by
``make book``, ``scripts/run_chapters.py`` and the tests) raises :class:`ClaimFailed` at
:meth:`Claims.check`, so CI fails. Either way every claim and its numbers are shown.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Claims", "Claim", "ClaimFailed", "mode", "mean_se", "BUDGET", "within_budget"]

#: "Cheap": a method's work (``cost_fraction``, :mod:`speechul.cost`) at most this share of
#: Retrain's. Work is counted, not timed, so the budget means the same on every machine.
BUDGET = 0.1

_MODES = ("report", "strict")


class ClaimFailed(AssertionError):
    """A chapter's claim did not hold (strict mode); the message lists each one with numbers."""


def mode() -> str:
    """``$SPEECHUL_CLAIMS``: ``"report"`` (default) or ``"strict"``."""
    chosen = os.environ.get("SPEECHUL_CLAIMS", "report") or "report"
    if chosen not in _MODES:
        raise ValueError(f"SPEECHUL_CLAIMS must be one of {list(_MODES)}, got {chosen!r}")
    return chosen


def within_budget(fraction: float, budget: float = BUDGET) -> bool:
    """True when a cost fraction is inside the budget. Work counts are exact, so a method that
    does exactly a tenth of Retrain's work (two epochs against twenty) is inside; the tolerance
    only absorbs the rounding of the division."""
    return fraction <= budget * (1 + 1e-9)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n)) of finite values; SE is inf for n < 2,
    so a single seed never passes a statistical claim by having no spread."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.inf
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.inf
    return float(x.mean()), se


@dataclass
class Claim:
    """One checked claim: its text, whether it held, the numbers behind it, its kind."""

    text: str
    holds: bool
    measured: str
    kind: str


@dataclass
class Claims:
    """The claims of one chapter (or one section): add them, then :meth:`check` once.

    >>> claims = Claims("Chapter 4")
    >>> claims.below(gaps["eu_k"], gaps["finetune"], "EU-k lands closer to Retrain")
    >>> claims.check()
    """

    title: str
    k: float = 2.0  # standard errors of margin in statistical claims
    min_n: int = 3  # seeds a statistical claim needs; fewer: shown as "not checked", not judged
    items: list[Claim] = field(default_factory=list)

    def invariant(self, holds: bool, text: str, measured: str = "") -> bool:
        """A claim true by the code's contract whatever the seeds; false means a bug."""
        return self._add(bool(holds), text, measured, "invariant")

    def statistic(self, holds: bool, text: str, measured: str) -> bool:
        """A statistical claim decided by the caller (say in ``text`` what the margin is)."""
        return self._add(bool(holds), text, measured, "statistic")

    def below(self, a: Sequence[float], b: Sequence[float], text: str, *,
              paired: bool = True, k: float | None = None) -> bool:
        """mean(a) < mean(b) by more than ``k`` standard errors of the difference.

        ``paired``: a[i] and b[i] share seed i (the same request), so the spread is that of
        b - a per seed; otherwise the two standard errors add in quadrature.
        """
        if self._too_few(text, a, b):
            return True
        k = self.k if k is None else k
        diff, se = _difference(b, a, paired)
        measured = (f"{_fmt(a)} vs {_fmt(b)}: difference {diff:.3g}, "
                    f"needs > {k:g} x SE = {k * se:.3g}")
        return self._add(diff > k * se, text, measured, "statistic")

    def close(self, a: Sequence[float], b: Sequence[float], text: str, *, floor: float = 0.0,
              paired: bool = True, k: float | None = None) -> bool:
        """|mean(a) - mean(b)| <= ``floor`` + ``k`` standard errors of the difference.

        ``floor`` is a noise level measured in the same run (e.g. Retrain against another
        Retrain); 0 means "within the seeds' own spread".
        """
        if self._too_few(text, a, b):
            return True
        k = self.k if k is None else k
        diff, se = _difference(a, b, paired)
        margin = floor + k * se
        measured = (f"{_fmt(a)} vs {_fmt(b)}: |difference| {abs(diff):.3g}, "
                    f"allowed {floor:.3g} + {k:g} x SE {se:.3g} = {margin:.3g}")
        return self._add(abs(diff) <= margin, text, measured, "statistic")

    def at_most(self, a: Sequence[float], bound: float, text: str, *,
                k: float | None = None) -> bool:
        """mean(a) <= ``bound`` + ``k`` SE: the mean is not credibly above a stated bound."""
        if self._too_few(text, a):
            return True
        k = self.k if k is None else k
        mean, se = mean_se(a)
        measured = f"{_fmt(a)}: allowed <= {bound:.3g} + {k:g} x SE {se:.3g}"
        return self._add(mean - k * se <= bound if math.isfinite(se) else mean <= bound,
                         text, measured, "statistic")

    def _too_few(self, text: str, *sides: Sequence[float]) -> bool:
        """Record a statistical claim with fewer than ``min_n`` seeds as *not checked* (shown
        in the table, never silently dropped, never passed off as holding on one seed)."""
        n = min(sum(1 for v in side if v is not None and math.isfinite(v)) for side in sides)
        if n >= self.min_n:
            return False
        self._add(True, text, f"not checked: {n} seed(s), a statistic needs {self.min_n}",
                  "not checked")
        return True

    def _add(self, holds: bool, text: str, measured: str, kind: str) -> bool:
        self.items.append(Claim(text, holds, measured, kind))
        return holds

    @property
    def failed(self) -> list[Claim]:
        """The claims that did not hold."""
        return [c for c in self.items if not c.holds]

    def check(self) -> None:
        """Show every claim with its numbers; then fail (strict) or flag (report) the ones that
        did not hold."""
        _show(self)
        if self.failed and mode() == "strict":
            lines = "\n".join(f"- {c.text} [{c.measured}]" for c in self.failed)
            raise ClaimFailed(f"{self.title}: {len(self.failed)} of {len(self.items)} claims "
                              f"did not hold:\n{lines}")

    def _repr_markdown_(self) -> str:
        verdict = {True: "yes", False: "**NO**"}
        rows = "\n".join(f"| {'-' if c.kind == 'not checked' else verdict[c.holds]} | "
                         f"{c.kind} | {c.text} | "
                         f"{c.measured} |" for c in self.items)
        return f"| holds | kind | claim | measured |\n|---|---|---|---|\n{rows}\n"


def _difference(a: Sequence[float], b: Sequence[float], paired: bool) -> tuple[float, float]:
    """mean(a) - mean(b) and its standard error (paired by seed, or independent)."""
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired values need one per seed on both sides, got {len(a)} "
                             f"and {len(b)}")
        return mean_se([x - y for x, y in zip(a, b, strict=True)])
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    return ma - mb, math.hypot(sa, sb)


def _fmt(values: Sequence[float]) -> str:
    mean, se = mean_se(values)
    spread = f" +- {se:.2g}" if math.isfinite(se) else ""
    return f"{mean:.3g}{spread} (n={len(values)})"


def _show(claims: Claims) -> None:
    """A table of the claims; a red box for each one that did not hold (in a notebook)."""
    try:
        from IPython.display import HTML, Markdown, display
    except ImportError:  # outside IPython: plain text
        print(claims._repr_markdown_())
        return
    display(Markdown(f"**{html.escape(claims.title)}: claims checked in this run**\n\n"
                     + claims._repr_markdown_()))
    for c in claims.failed:
        display(HTML(
            '<div style="border:2px solid #c0392b;background:#fdecea;padding:0.6em;'
            'margin:0.4em 0"><b>A claim of this chapter did not hold in your run.</b><br>'
            f"{html.escape(c.text)}<br><code>{html.escape(c.measured)}</code><br>"
            "Your machine's numbers differ from the book's, as another seed's would; read the "
            "text with your numbers in mind (CI fails on this, so the book's own run holds it)."
            "</div>"))
