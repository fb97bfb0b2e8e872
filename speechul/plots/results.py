"""Unlearning results: metric bars with Retrain marked, gap-to-Retrain vs time.

Both take a results table: one row per method (and seed) with the columns of
``metrics.evaluate`` plus ``method`` and ``seconds`` (a list of dicts or a DataFrame); several
seeds become mean and standard deviation. Fractions are drawn as points (x100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["metric_bars", "gap_vs_time", "gap_vs_time_by_request"]

_LABELS = {"forget_acc": "forget acc.", "retain_acc": "retain acc.", "test_acc": "test acc.",
           "val_acc": "val acc.", "mia_auc": "loss-attack AUC", "mia_efficacy": "MIA efficacy",
           "forgotten_test_acc": "forgotten-class test acc.", "kept_test_acc": "kept test acc.",
           "gap_mean": "mean gap to Retrain", "zrf": "ZRF", "seconds": "seconds"}


def _variants(frame: pd.DataFrame) -> pd.DataFrame:
    """A method run with several sets of hyper-parameter overrides (an experiments table's
    ``overrides`` column, e.g. a learning-rate sweep) becomes one labelled entry per variant,
    ``scrub {"lr": 0.001}``, instead of one point averaged over all of them."""
    if "overrides" not in frame.columns or "method" not in frame.columns:
        return frame
    tuned = frame.groupby("method", sort=False)["overrides"].transform("nunique") > 1
    tuned &= frame["overrides"] != "{}"
    if not tuned.any():
        return frame
    frame = frame.copy()
    frame.loc[tuned, "method"] = frame["method"][tuned] + " " + frame["overrides"][tuned]
    return frame


def _stats(table: Any, metric: str) -> pd.DataFrame:
    """Mean and std of ``metric`` per method (or tuned variant, :func:`_variants`), in table
    order (std 0 for a single seed)."""
    frame = _variants(pd.DataFrame(table))
    for column in ("method", metric):
        if column not in frame.columns:
            raise ValueError(f"the results table has no column {column!r}; "
                             f"columns: {list(frame.columns)}")
    grouped = frame.groupby("method", sort=False)[metric]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std().fillna(0.0)})


def _scale(metric: str) -> float:
    """Fractions (accuracies, AUCs, gaps) are shown in points."""
    fraction = metric.endswith("_acc") or metric.startswith(("mia", "gap"))
    return 100.0 if fraction else 1.0


def _label(metric: str) -> str:
    unit = " (points)" if _scale(metric) == 100.0 else ""
    return _LABELS.get(metric, metric.replace("_", " ")) + unit


def _zoom(stats: pd.DataFrame, ref: pd.Series | None) -> tuple[float, float]:
    """Y-limits that show differences of a point or two: the values' range, padded, from >= 0.

    Accuracies near 100 would otherwise all look alike; the reference line carries the meaning.
    """
    values = [*(stats["mean"] - stats["std"]), *(stats["mean"] + stats["std"])]
    if ref is not None:
        values += [ref["mean"] - ref["std"], ref["mean"] + ref["std"]]
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    pad = 0.3 * (high - low) + 0.05 * max(abs(high), 1.0)
    return max(0.0, low - pad) if low >= 0 else low - pad, high + pad


def metric_bars(table: Any, metrics: Sequence[str] = ("forget_acc", "retain_acc", "test_acc",
                                                      "mia_efficacy"),
                reference: str | None = "retrain", ncols: int | None = None) -> Figure:
    """One panel per metric: a bar per method (std over seeds), Retrain as a dashed line.

    The reference is a line, not a bar, because it is the target: the best bar is the one
    that *touches* the line, not the tallest. The y-axis is zoomed to the values (it need not
    start at 0), so that differences of a point are visible.
    """
    ncols = ncols or len(metrics)
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False,
                             layout="constrained")
    for ax, metric in zip(axes.flat, metrics, strict=False):
        stats = _stats(table, metric) * _scale(metric)
        others = stats[stats.index != reference]
        colors = plt.cm.tab10(np.arange(len(others)) % 10)
        ax.bar(range(len(others)), others["mean"], yerr=others["std"], color=colors, capsize=3)
        ax.set_xticks(range(len(others)), others.index, rotation=60, ha="right", fontsize=8)
        if reference is not None and reference in stats.index:
            ref = stats.loc[reference]
            ax.axhline(ref["mean"], color="black", linestyle="--", label=reference)
            ax.axhspan(ref["mean"] - ref["std"], ref["mean"] + ref["std"], color="grey",
                       alpha=0.2, linewidth=0)
            ax.legend(loc="lower right", fontsize=8)
        low, high = _zoom(others, stats.loc[reference] if reference in stats.index else None)
        ax.set_ylim(low, min(high, 101.0) if _scale(metric) == 100.0 else high)  # <= 100 points
        ax.set_title(_label(metric), fontsize=10)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    return fig


_COST_AXES = {"seconds": "seconds (log scale)",
              "cost_fraction": "work, share of Retrain's (log scale)"}


def gap_vs_time(table: Any, reference: str | None = "retrain", ax: Axes | None = None, *,
                x: str = "seconds") -> Figure:
    """Mean gap to Retrain (points) against cost (log scale), one labelled point per method.

    ``x``: ``"seconds"`` (wall-clock, this machine's) or ``"cost_fraction"`` (work as a share of
    Retrain's, the same on every machine: the axis budgets are drawn on). The ideal method sits
    in the bottom-left corner: as close to Retrain as possible, far cheaper. Retrain itself is
    drawn as a vertical line at its cost (its gap is 0 by definition).
    """
    if x not in _COST_AXES:
        raise ValueError(f"x must be one of {list(_COST_AXES)}, got {x!r}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    else:
        fig = ax.figure
    gap, seconds = _stats(table, "gap_mean") * 100.0, _stats(table, x)
    labels = []
    for i, method in enumerate(gap.index):
        if method == reference:
            continue
        ax.errorbar(seconds.loc[method, "mean"], gap.loc[method, "mean"],
                    xerr=seconds.loc[method, "std"], yerr=gap.loc[method, "std"], fmt="o",
                    color=plt.cm.tab10(i % 10), capsize=3)
        labels.append(ax.annotate(method, (seconds.loc[method, "mean"], gap.loc[method, "mean"]),
                                  textcoords="offset points", xytext=(5, 4), fontsize=8))
    if reference is not None and reference in seconds.index:
        unit = f"{seconds.loc[reference, 'mean']:.0f} s" if x == "seconds" else "1.0"
        ax.axvline(seconds.loc[reference, "mean"], color="black", linestyle="--",
                   label=f"{reference} ({unit})")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(_COST_AXES[x])
    ax.set_ylabel(_label("gap_mean"))
    top = float(np.nanmax(gap["mean"] + gap["std"])) if len(gap) else 1.0
    ax.set_ylim(0, 1.2 * top + 0.5)  # room for the labels above the highest point
    _spread(labels)
    return fig


def gap_vs_time_by_request(table: Any, reference: str | None = "retrain") -> Figure:
    """:func:`gap_vs_time` in one panel per request of a grid (rows grouped by their ``setting``
    key, titled by task, kind and what is forgotten), so a method's runs on different requests
    are never averaged into one point: the figure ``python -m speechul grid`` writes."""
    frame = pd.DataFrame(table)
    if "setting" not in frame.columns:
        return gap_vs_time(frame, reference)
    requests = list(frame.groupby("setting", sort=False))
    fig, axes = plt.subplots(1, len(requests), figsize=(6 * len(requests), 4), squeeze=False,
                             layout="constrained")
    for ax, (_, part) in zip(axes[0], requests, strict=True):
        gap_vs_time(part, reference, ax=ax)
        named = [str(part[c].iloc[0]) for c in ("task", "kind", "forget") if c in part]
        ax.set_title(" / ".join(named), fontsize=10)
    return fig


def _spread(labels: list[Any], step: float = 2.0, limit: int = 40) -> None:
    """Nudge point labels upwards until no two overlap (methods of similar cost and gap).

    Labels are placed from the lowest point up; each moves ``step`` points at a time, at most
    ``limit`` times, past the labels already placed.
    """
    if not labels:
        return
    labels[0].axes.get_xlim()  # settle the autoscaled limits before measuring anything
    renderer = labels[0].figure.canvas.get_renderer()
    placed = []
    for label in sorted(labels, key=lambda a: a.xy[1]):
        for _ in range(limit):
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            x, y = label.xyann
            label.xyann = (x, y + step)
        placed.append(label.get_window_extent(renderer))
