"""Retrain against Retrain: the noise floor under every gap.

Every gap in the book is measured against one Retrain per request, and Retrain is a random
variable: a second exact retraining on the same retained clips, from another initialisation and
batch order, lands some distance from the first. That distance is the floor of every gap: a
method "within 3 points" of Retrain is within 3 points of one draw of an answer that is itself
uncertain by the floor. :func:`floor` trains the second Retrain once per request and seed
(cached like the first) and scores it exactly as a method would be scored.
"""

from __future__ import annotations

from typing import Any

from . import metrics, train, unlearn
from ._runtime import atomic_save, checked_load, fingerprint
from .experiments import REFERENCE, load_run, reference, reference_path, refuse_diverged, scored
from .setting import Setting

__all__ = ["floor", "OTHER"]

#: The second Retrain of seed s trains with seed s + OTHER (initial weights and batch order);
#: the forget set stays seed s's, so the two Retrains answer the same request.
OTHER = 1000


def floor(setting: Setting, seed: int, *, other: int = OTHER) -> dict[str, Any]:
    """The metrics row of a second Retrain (seed ``seed + other``) against the request's
    Retrain (seed ``seed``): ``gap_mean`` is the Retrain-vs-Retrain noise floor of that request,
    in the same units as every method's gap. Cached: a re-run loads the second model."""
    original, split = load_run(setting, seed)
    first = reference(setting, seed, (original, split)).model
    path = reference_path(setting, original, seed)
    second_path = path.with_name(f"retrain2-{fingerprint(path.name, other)}.pt")
    saved = checked_load(second_path)
    if saved is None:
        out = unlearn.run(REFERENCE, original, split, seed=seed + other)
        refuse_diverged(out)
        second = out.model
        atomic_save({"state_dict": {k: v.detach().cpu() for k, v in
                                    second.state_dict().items()}}, second_path)
    else:
        second = train.fresh_model(setting.recipe, split.corpus.n_classes,
                                   split.corpus.device, seed + other)
        second.load_state_dict(saved["state_dict"])
        second.eval()
    row = metrics.evaluate(second, scored(split, setting.holdout), reference=first)
    return {**setting.describe(), "seed": seed, **row}
