"""Choose l1_sparse's default penalty on validation clips (the record is benchmarks/HISTORY.md).

The book's two tuning requests at once (``speechul/unlearn/methods.py``'s docstring): a random
10 % of the keyword model's training clips and the keyword "yes", seeds 0 and 1, every number
computed on the validation clips (``holdout="val"``). Prints each penalty's mean gap to Retrain,
forget accuracy and validation accuracy. ~5 min on 2 CPU cores from an empty cache.

    python benchmarks/tune_l1.py
"""

from __future__ import annotations

import pandas as pd

import speechul as su

PENALTIES = (0.0, 0.01, 0.03, 0.1, 0.3)
REQUESTS = (("sample", {"fraction": 0.1}), ("class", {"classes": ("yes",)}))


def sweep(penalties: tuple[float, ...] = PENALTIES, seeds: tuple[int, ...] = (0, 1)
          ) -> pd.DataFrame:
    """One row per (request, penalty, seed): gap_mean, forget_acc, test_acc (= validation)."""
    rows = []
    for kind, request in REQUESTS:
        for l1 in penalties:
            setting = su.experiments.Setting(task="keyword", kind=kind, methods=("l1_sparse",),
                                             seeds=seeds, hparams={"l1_sparse": {"l1": l1}},
                                             holdout="val", **request)
            table = su.experiments.run(setting)
            for _, r in table[table.method == "l1_sparse"].iterrows():
                rows.append({"kind": kind, "l1": l1, "seed": r.seed, "gap": r.gap_mean,
                             "forget_acc": r.forget_acc, "val_acc": r.test_acc})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    found = sweep()
    means = found.groupby(["kind", "l1"])[["gap", "forget_acc", "val_acc"]].mean()
    print(means.round(4))
    print("summed gap over both requests:")
    print(means["gap"].unstack("kind").sum(axis=1).round(4))
