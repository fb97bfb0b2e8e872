"""The compact results table: methods x key metrics as "mean ± std" over seeds, per request.

Chapter 4 shows it and ``python -m speechul grid`` prints it, so a researcher at the shell reads
the same table as a student in the book (``summary.csv`` keeps the long format, one row per
method and metric, for programs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

#: results column -> column heading, in the order shown: the four parts of the gap, the gap to
#: Retrain, the distance of the outputs to Retrain's, the work and the seconds.
SHOWN: Mapping[str, str] = {
    "forget_acc": "forget", "retain_acc": "retain", "test_acc": "test",
    "mia_auc": "loss-attack AUC", "mia_efficacy": "MIA eff.", "gap_mean": "gap",
    "js_to_reference": "JS (bits)", "cost_fraction": "c (%)", "seconds": "seconds"}
#: how each column is scaled (points and percentages x100, bits and seconds as they are) and
#: how many decimals it gets
SCALE = {"js_to_reference": 1, "seconds": 1}
DIGITS = {"js_to_reference": 3}


def cell(values: pd.Series, metric: str) -> str:
    """``values`` (one per seed) as "mean ± std" in the metric's unit; "mean" for one seed,
    "" when none is known (a metric a method does not report)."""
    values = values.dropna()
    if values.empty:
        return ""
    scale, digits = SCALE.get(metric, 100), DIGITS.get(metric, 1)
    mean, std = values.mean() * scale, values.std() * scale
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def mean_std(rows: pd.DataFrame, shown: Mapping[str, str] = SHOWN) -> pd.DataFrame:
    """Methods (rows, in the order met) x ``shown`` metrics (columns) for one request."""
    out = {method: {name: cell(part[metric], metric) if metric in part else ""
                    for metric, name in shown.items()}
           for method, part in rows.groupby("method", sort=False)}
    return pd.DataFrame(out).T


def by_request(table: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(title, compact table) for each request in a results table (``experiments.run``)."""
    for _, rows in table.groupby("setting", sort=False):
        first = rows.iloc[0]
        seeds = rows["seed"].nunique()
        title = (f"{first['dataset']} {first['task']}, {first['kind']} request "
                 f"{first['forget']} ({seeds} seed{'s' if seeds > 1 else ''})")
        yield title, mean_std(rows)


def render(table: pd.DataFrame) -> str:
    """Every request's compact table as text, for a terminal."""
    return "\n\n".join(f"{title}\n{frame.to_string()}" for title, frame in by_request(table))
