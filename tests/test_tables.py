"""The compact table (``speechul.tables``): mean ± std over seeds in each metric's unit."""

from __future__ import annotations

import pandas as pd

from speechul import tables


def _rows() -> pd.DataFrame:
    base = {"dataset": "embedded", "task": "keyword", "kind": "sample", "forget": 0.1,
            "setting": "s1"}
    return pd.DataFrame([
        {**base, "method": "finetune", "seed": 0, "forget_acc": 0.5, "seconds": 2.0,
         "js_to_reference": 0.0125},
        {**base, "method": "finetune", "seed": 1, "forget_acc": 0.7, "seconds": 4.0,
         "js_to_reference": 0.0175},
        {**base, "method": "ssd", "seed": 0, "forget_acc": 0.9, "seconds": 1.0,
         "js_to_reference": None},
    ])


def test_cells_are_mean_and_std_in_the_metrics_unit():
    frame = tables.mean_std(_rows())
    assert list(frame.index) == ["finetune", "ssd"]
    assert frame.loc["finetune", "forget"] == "60.0 ± 14.1"  # points: x100
    assert frame.loc["finetune", "seconds"] == "3.0 ± 1.4"  # seconds as they are
    assert frame.loc["finetune", "JS (bits)"] == "0.015 ± 0.004"  # bits, three decimals
    assert frame.loc["ssd", "forget"] == "90.0"  # one seed: no spread to show
    assert frame.loc["ssd", "JS (bits)"] == "" and frame.loc["ssd", "gap"] == ""


def test_each_request_gets_its_own_titled_table():
    rows = _rows()
    other = rows.assign(setting="s2", task="speaker")
    text = tables.render(pd.concat([rows, other]))
    assert "embedded keyword, sample request 0.1 (2 seeds)" in text
    assert "embedded speaker, sample request 0.1 (2 seeds)" in text
    assert sum(line.startswith("finetune") for line in text.splitlines()) == 2
