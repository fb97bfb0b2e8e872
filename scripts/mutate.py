"""A small mutation tester: break one mechanism at a time and see whether the tests notice.

Each :class:`Mutation` names a source file, an exact snippet in it, its replacement and the test
files that should catch it. For every mutation the package (``speechul/``), the tests and
``pyproject.toml`` are copied into a scratch folder, the snippet is replaced there (never in the
repository), and the listed tests run with ``pytest -x -q`` under a time limit. A failing run
*kills* the mutation; a passing one means it *survived*: the tests cannot tell the broken
mechanism from the real one.

Usage::

    python scripts/mutate.py                    # every mutation; a table and the kill rate
    python scripts/mutate.py --only salun       # the mutations whose name contains "salun"
    python scripts/mutate.py --skip "signed gaps"   # all but that one (repeatable)
    python scripts/mutate.py --exclude tests/test_mechanisms.py   # as if that file did not exist
    python scripts/mutate.py --check            # only check that every snippet still matches

Exit status 1 when a snippet no longer occurs exactly once in its file (the list must follow the
code, not rot silently), else 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("speechul", "tests", "scripts", "pyproject.toml")
# New tests first: with -x, a mutation they kill stops there instead of after the slow files.

#: Set (to the mutation's name) while the tests run on a mutant: the test that the list matches
#: the source must skip there, since the mutant's source no longer matches by design.
MUTANT = "SPEECHUL_MUTANT"

UNLEARN = ("tests/test_mechanisms.py", "tests/test_unlearn.py")
AUDITS = ("tests/test_mechanisms.py", "tests/test_audits.py")
METRICS = ("tests/test_mechanisms.py", "tests/test_metrics.py")
SISA = ("tests/test_mechanisms.py", "tests/test_sisa.py")
FORGET_ME = ("tests/test_mechanisms.py", "tests/test_forget_me.py")
METHODS = "speechul/unlearn/methods.py"
SHARED = "speechul/unlearn/_shared.py"


@dataclass(frozen=True)
class Mutation:
    """Replace ``snippet`` (which must occur exactly once in ``file``) by ``replacement``."""

    name: str
    file: str
    snippet: str
    replacement: str
    tests: tuple[str, ...]


MUTATIONS = (
    # ---- the eleven-odd survivors reported in issue #29
    Mutation("salun mask random", SHARED,
             "chosen[torch.topk(flat, k).indices] = 1.0",
             "chosen[torch.randperm(len(flat))[:k]] = 1.0", UNLEARN),
    Mutation("salun mask least salient", SHARED,
             "chosen[torch.topk(flat, k).indices] = 1.0",
             "chosen[torch.topk(flat, k, largest=False).indices] = 1.0", UNLEARN),
    Mutation("eu_k top not re-initialised", METHODS,
             "    S.reset_(top, seed)\n", "    pass\n", UNLEARN),
    Mutation("lira online = offline", "speechul/audits.py",
             "    if not online:\n        return torch.special.log_ndtr",
             "    if True:\n        return torch.special.log_ndtr", AUDITS),
    Mutation("evaluate mia on retain", "speechul/metrics.py",
             'row["mia_auc"] = mia_loss_auc(outputs, split.corpus, split.forget, _unseen(split))',
             'row["mia_auc"] = mia_loss_auc(outputs, split.corpus, split.retain, _unseen(split))',
             METRICS),
    Mutation("GAP_METRICS cut to two", "speechul/metrics.py",
             'GAP_METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")',
             'GAP_METRICS = ("forget_acc", "retain_acc")', METRICS),
    Mutation("signed gaps", "speechul/metrics.py",
             'row[f"gap_{name}"] = abs(row[name] - ref[name])',
             'row[f"gap_{name}"] = row[name] - ref[name]', METRICS),
    Mutation("ssd dampening factor 0", METHODS,
             "factor = (dampening * fd / ff.clamp_min(1e-30)).clamp(max=1.0)",
             "factor = torch.zeros_like(ff)", UNLEARN),
    Mutation("ssd all-data fisher on retain", METHODS,
             "S.fixed_order(forget, retain)", "S.fixed_order(retain)", UNLEARN),
    Mutation("neggrad+ ascent sign flipped", METHODS,
             "alpha * ce[~is_forget].mean() - (1 - alpha) * ce[is_forget].mean()",
             "alpha * ce[~is_forget].mean() + (1 - alpha) * ce[is_forget].mean()", UNLEARN),
    Mutation("sisa emptied shards vote", "speechul/sisa.py",
             "zip(self.members, self.sizes, strict=True) if n > 0]",
             "zip(self.members, self.sizes, strict=True) if n >= 0]", SISA),
    Mutation("most exposed without max-T", "speechul/forget_me.py",
             "_test(observed[person], np.max(nulls, axis=0), *sizes[person])",
             "_test(observed[person], nulls[list(observed).index(person)], *sizes[person])",
             FORGET_ME),
    # ---- the ones the run presumably killed
    Mutation("gradient ascent sign", METHODS,
             "ascent = lambda m, x, y: -F.cross_entropy(m(x), y)",
             "ascent = lambda m, x, y: F.cross_entropy(m(x), y)", UNLEARN),
    Mutation("finetune reads forget", METHODS,
             "\"finetune\"):\n        train.one_epoch(model, retain, train.cross_entropy,",
             "\"finetune\"):\n        train.one_epoch(model, Batches(retain.x, retain.y, "
             "torch.cat([retain.indices, forget.indices]), retain.batch_size), "
             "train.cross_entropy,", UNLEARN),
    Mutation("loss attack AUC direction", "speechul/metrics.py",
             "return _auc(member, non_member)", "return _auc(non_member, member)", METRICS),
    Mutation("retrain on all data", METHODS,
             "batches = Batches(retain.x, retain.y, retain.indices, recipe.batch_size, seed=own)",
             "batches = Batches(retain.x, retain.y, torch.cat([retain.indices, forget.indices]),"
             " recipe.batch_size, seed=own)", UNLEARN),
    Mutation("scrub max pass descends", METHODS,
             "return -S.kl(m(x), target, temperature)",
             "return S.kl(m(x), target, temperature)", UNLEARN),
    Mutation("bad teacher teachers swapped", METHODS,
             "S.by_rows(is_forget, bad, good, x)", "S.by_rows(is_forget, good, bad, x)", UNLEARN),
    # ---- more
    Mutation("scrub max/min passes swapped", METHODS,
             "train.one_epoch(model, forget, forget_loss, opt, scheduler=sched)\n"
             "        train.one_epoch(model, retain, retain_loss, opt, scheduler=sched)",
             "train.one_epoch(model, forget, retain_loss, opt, scheduler=sched)\n"
             "        train.one_epoch(model, retain, forget_loss, opt, scheduler=sched)", UNLEARN),
    Mutation("random labels may keep the true label", METHODS,
             "shift = torch.randint(1, n_classes,", "shift = torch.randint(0, n_classes,",
             UNLEARN),
    Mutation("retrain not re-initialised", METHODS,
             "fresh = train.fresh_model(recipe, n_classes, retain.x.device, own)",
             "fresh = model", UNLEARN),
    Mutation("l1 penalty off", METHODS,
             "strength[0] = l1 * (1 - epoch / epochs)", "strength[0] = 0.0", UNLEARN),
    Mutation("ssd selects low forget importance", METHODS,
             "torch.where(ff > selection * fd, factor,",
             "torch.where(ff < selection * fd, factor,", UNLEARN),
    Mutation("salun mask unused", METHODS,
             "mask=mask, labels=labels, desc=\"salun\")",
             "mask=None, labels=labels, desc=\"salun\")", UNLEARN),
    Mutation("bad teacher is the original", METHODS,
             "good, bad = S.frozen_copy(model), S.reinitialised(model, seed)",
             "good, bad = S.frozen_copy(model), S.frozen_copy(model)", UNLEARN),
    # ---- issue 29's reference defaults
    Mutation("random labels never the true label by default", METHODS,
             "    if rule == \"any\":", "    if rule == \"never\":", UNLEARN),
    Mutation("retrain starts from the original's seed", METHODS,
             "own = seed + RETRAIN_STREAM", "own = seed", UNLEARN),
    Mutation("scrub_r never rewinds", METHODS,
             "    model.load_state_dict(state)\n", "    pass\n", UNLEARN),
    Mutation("scrub_r rewinds to the farthest epoch", METHODS,
             "_, state = min(kept, key=", "_, state = max(kept, key=", UNLEARN),
    Mutation("scrub_r calibrated on training clips", "speechul/unlearn/core.py",
             "else split.val\n", "else split.retain\n", UNLEARN),
    Mutation("l1 proximal step grows the weights", SHARED,
             "(p.abs() - step).clamp_min(0)", "(p.abs() + step).clamp_min(0)", UNLEARN),
    Mutation("relearning measures the taught clips too", "speechul/audits.py",
             "taught, held = order[:n_relearn], order[n_relearn:]",
             "taught, held = order[:n_relearn], order", AUDITS),
    # ---- the encoder path and the chapters' choice of a forgettable speaker
    Mutation("a head's EU-k top is a copy", "speechul/models.py",
             "return nn.Flatten(1), nn.Sequential(self.dropout, self.head)",
             "return nn.Flatten(1), nn.Sequential(self.dropout, nn.Linear(\n"
             "            self.head.in_features, self.head.out_features))",
             ("tests/test_encoder_features.py",)),
    Mutation("in every part = in some part", "speechul/corpus.py",
             "full = (counts > 0).all(dim=1).tolist()", "full = (counts > 0).any(dim=1).tolist()",
             ("tests/test_data.py",)),
)


def check(mutations: tuple[Mutation, ...] = MUTATIONS, root: Path = ROOT,
          exclude: tuple[str, ...] = ()) -> list[str]:
    """Problems with the list: each snippet must occur exactly once and differ from its
    replacement, and each test file (but those in ``exclude``) must exist. Empty when all is
    well."""
    problems = []
    for m in mutations:
        text = (root / m.file).read_text()
        count = text.count(m.snippet)
        if count != 1:
            problems.append(f"{m.name}: snippet found {count} times in {m.file}")
        if m.snippet == m.replacement:
            problems.append(f"{m.name}: the replacement equals the snippet")
        problems += [f"{m.name}: no test file {t}" for t in m.tests
                     if t not in exclude and not (root / t).exists()]
    return problems


def _scratch_copy(target: Path) -> None:
    """Copy the package, the tests and the pytest configuration into ``target``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)


def run_one(m: Mutation, *, exclude: tuple[str, ...] = (), timeout: float = 600,
            ) -> tuple[str, float]:
    """("killed" | "survived" | "timeout" | "no tests", seconds) for one mutation."""
    tests = [t for t in m.tests if t not in exclude]
    if not tests:
        return "no tests", 0.0
    with tempfile.TemporaryDirectory(prefix="speechul-mutant-") as tmp:
        scratch = Path(tmp)
        _scratch_copy(scratch)
        path = scratch / m.file
        path.write_text(path.read_text().replace(m.snippet, m.replacement, 1))
        env = {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1",
               MUTANT: m.name}
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                                   "no:cacheprovider", *tests], cwd=scratch, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - start
        seconds = time.perf_counter() - start
    if done.returncode == 0:
        return "survived", seconds
    # 1: tests failed; anything else (collection or usage errors) also means "noticed", but say so
    return ("killed" if done.returncode == 1 else f"killed (rc {done.returncode})"), seconds


def main(argv: list[str] | None = None) -> int:
    """Check the list, then run the selected mutations and print a table and the kill rate."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the snippets")
    parser.add_argument("--only", action="append", default=[],
                        help="run mutations whose name contains this (repeatable: any)")
    parser.add_argument("--skip", action="append", default=[],
                        help="leave out the mutation of this exact name (repeatable)")
    parser.add_argument("--reverse", action="store_true",
                        help="run the list from its end (a second runner, side by side)")
    parser.add_argument("--exclude", action="append", default=[],
                        help="a test file to leave out of every run (repeatable)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutation")
    args = parser.parse_args(argv)
    problems = check(exclude=tuple(args.exclude))
    for p in problems:
        print(f"STALE: {p}", file=sys.stderr)
    if problems:
        return 1
    if args.check:
        print(f"all {len(MUTATIONS)} mutation snippets match the source")
        return 0
    chosen = [m for m in MUTATIONS if m.name not in args.skip
              and (not args.only or any(part in m.name for part in args.only))]
    chosen = chosen[::-1] if args.reverse else chosen
    results = []
    for m in chosen:
        outcome, seconds = run_one(m, exclude=tuple(args.exclude), timeout=args.timeout)
        results.append((m, outcome))
        print(f"{m.name:40s} {outcome:12s} {seconds:6.1f} s  {', '.join(m.tests)}", flush=True)
    killed = sum(outcome.startswith("killed") for _, outcome in results)
    timeouts = sum(outcome == "timeout" for _, outcome in results)
    print(f"\nkilled {killed} of {len(results)} mutations ({killed / max(len(results), 1):.0%})"
          + (f"; {timeouts} timed out (undecided: rerun with a longer --timeout)"
             if timeouts else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
