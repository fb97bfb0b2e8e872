"""Result figures: what is drawn matches the table (bars, reference line, points, log axis)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

from speechul.plots import results  # noqa: E402


@pytest.fixture
def table() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        rows += [
            {"method": "retrain", "seed": seed, "forget_acc": 0.90 + 0.02 * seed,
             "test_acc": 0.9, "gap_mean": 0.0, "seconds": 100.0},
            {"method": "finetune", "seed": seed, "forget_acc": 1.0, "test_acc": 0.88,
             "gap_mean": 0.04 + 0.02 * seed, "seconds": 10.0 + seed},
            {"method": "scrub", "seed": seed, "forget_acc": 0.8, "test_acc": 0.9,
             "gap_mean": 0.05, "seconds": 3.0},
        ]
    return pd.DataFrame(rows)


def test_metric_bars_draws_methods_and_reference(table):
    fig = results.metric_bars(table, metrics=("forget_acc", "test_acc"))
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = [bar.get_height() for bar in bars]
    assert heights == pytest.approx([100.0, 80.0])  # finetune, scrub in points; no retrain bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["finetune", "scrub"]
    (line,) = ax.get_lines()[-1:]
    assert line.get_ydata()[0] == pytest.approx(91.0)  # Retrain's mean over two seeds
    assert "points" in ax.get_title()
    plt.close(fig)


def test_metric_bars_without_reference_draws_every_method(table):
    fig = results.metric_bars(table, metrics=("test_acc",), reference=None)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["retrain", "finetune", "scrub"]
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert ax.get_legend() is None
    plt.close(fig)


def test_metric_bars_rejects_unknown_metric(table):
    with pytest.raises(ValueError, match="no column 'nope'"):
        results.metric_bars(table, metrics=("nope",))


def test_gap_vs_time_points_and_log_axis(table):
    fig = results.gap_vs_time(table.to_dict("records"))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = {t.get_text(): t.xy for t in ax.texts}
    assert set(labels) == {"finetune", "scrub"}
    assert np.allclose(labels["finetune"], (10.5, 5.0))  # mean seconds, mean gap in points
    assert ax.get_lines()[-1].get_xdata()[0] == pytest.approx(100.0)  # Retrain's cost
    plt.close(fig)


def test_gap_vs_time_draws_into_given_axes(table):
    fig, ax = plt.subplots()
    assert results.gap_vs_time(table, ax=ax) is fig
    plt.close(fig)


def test_gap_vs_time_labels_of_nearby_methods_do_not_overlap():
    rows = [{"method": "retrain", "gap_mean": 0.0, "seconds": 100.0}]
    rows += [{"method": name, "gap_mean": 0.05 + 0.001 * i, "seconds": 1.0 + 0.01 * i}
             for i, name in enumerate(["finetune", "neggrad_plus", "l1_sparse", "scrub"])]
    fig = results.gap_vs_time(rows)
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].texts]
    assert len(boxes) == 4
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    points = sorted(tuple(map(float, t.xy)) for t in fig.axes[0].texts)  # points stay put
    assert np.allclose(points, [(1.0 + 0.01 * i, 5.0 + 0.1 * i) for i in range(4)])
    plt.close(fig)


def test_gap_vs_time_by_request_never_pools_requests(table):
    """Two requests of one grid: two panels, each with its own points, titled by request."""
    first = table.assign(setting="a", task="keyword", kind="sample", forget=0.1)
    second = first.assign(setting="b", task="speaker", gap_mean=first.gap_mean * 3)
    fig = results.gap_vs_time_by_request(pd.concat([first, second]))
    assert [ax.get_title() for ax in fig.axes] == ["keyword / sample / 0.1",
                                                   "speaker / sample / 0.1"]
    scrub = [{t.get_text(): t.xy for t in ax.texts}["scrub"][1] for ax in fig.axes]
    assert scrub == pytest.approx([5.0, 15.0])  # each panel's own mean gap, in points
    plt.close(fig)
    assert len(results.gap_vs_time_by_request(table).axes) == 1  # no setting column: one panel
