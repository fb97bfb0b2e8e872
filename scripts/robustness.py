"""The perturbation matrix: every chapter under variants that stand in for other machines.

Floating-point sums differ by CPU, thread count and device, so another machine trains models
that differ like another seed's. A chapter's claims (``speechul.claims``) must hold under any of
them. Each variant runs the chosen chapters with ``scripts/run_chapters.py`` (claims strict) in
a process of its own, with its own model cache (the corpus and its features are shared: they
are data, the same under every variant), and the script writes a table chapter x variant ->
ok, or the claim that failed.

Variants (``--variants``, default all but bf16):

* ``threads1`` / ``threads2``: torch's CPU thread count (float sums split differently);
* ``bf16``: bf16 autocast on the CPU (``SPEECHUL_CPU_BF16=1``), the closest a CPU gets to a
  GPU's arithmetic; emulated (slow, several times fp32) on CPUs without AMX units;
* ``seed+N``: every seed a chapter draws shifted by N (``SPEECHUL_SEED_OFFSET``): the claims
  must hold for any seeds, not the ones they were written with.

Usage::

    python scripts/robustness.py --out _build/robustness                       # default size
    python scripts/robustness.py --out _build/rob --variants threads1 bf16 --only 04 06
    python scripts/robustness.py --params ci --out _build/rob-ci --variants threads1

Writes ``OUT/matrix.md`` and ``OUT/matrix.json``; the exit status is 1 when any cell failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "scripts" / "run_chapters.py"
SHARED = ("embedded", "features")  # cache folders that hold data, not trained models


def variant_env(name: str) -> dict[str, str]:
    """The environment a variant sets; unknown names are refused with the known ones."""
    if name in ("threads1", "threads2"):
        return {"OMP_NUM_THREADS": name[-1]}
    if name == "bf16":
        return {"SPEECHUL_CPU_BF16": "1"}
    if name.startswith("seed+") and name[5:].isdigit():
        return {"SPEECHUL_SEED_OFFSET": name[5:]}
    raise ValueError(f"unknown variant {name!r}: threads1, threads2, bf16 or seed+N")


def variant_cache(folder: Path, shared: Path) -> Path:
    """A model cache of the variant's own, with the corpus and features linked from ``shared``
    (so no variant synthesises the corpus again, and none reads another's models)."""
    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        (shared / name).mkdir(parents=True, exist_ok=True)
        link = cache / name
        if not link.exists():
            link.symlink_to((shared / name).resolve(), target_is_directory=True)
    return cache


def run_variant(name: str, out: Path, params: str, only: list[str] | None,
                shared: Path) -> list[dict]:
    """Run the chapters under one variant; return run_chapters' summary rows."""
    folder = out / name  # made absolute below: each kernel runs in its own folder
    env = {**os.environ, **variant_env(name), "SPEECHUL_CLAIMS": "strict",
           "SPEECHUL_CACHE": str(variant_cache(folder, shared).resolve())}
    command = [sys.executable, str(RUNNER), "--params", params, "--out", str(folder), "--quiet"]
    if only:
        command += ["--only", *only]
    print(f"[{time.strftime('%H:%M:%S')}] variant {name}: {variant_env(name)}", flush=True)
    subprocess.run(command, env=env, cwd=ROOT, check=False)
    summary = folder / "summary.json"
    if not summary.exists():
        return [{"chapter": "(all)", "status": "failed", "seconds": 0.0,
                 "error": "run_chapters wrote no summary (see its output above)"}]
    return json.loads(summary.read_text())


def matrix(results: dict[str, list[dict]]) -> str:
    """Markdown: a row per chapter, a column per variant: ok (seconds) or the failed claim."""
    variants = list(results)
    chapters = sorted({row["chapter"] for rows in results.values() for row in rows})
    cells = {(row["chapter"], v): row for v, rows in results.items() for row in rows}
    lines = ["| chapter | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    for chapter in chapters:
        row = [_cell(cells.get((chapter, v))) for v in variants]
        lines.append(f"| {chapter} | " + " | ".join(row) + " |")
    failed = sum(1 for rows in results.values() for r in rows if r["status"] != "ok")
    total = sum(len(rows) for rows in results.values())
    lines.append(f"\n{total - failed}/{total} cells ok.")
    return "\n".join(lines)


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if row["status"] == "ok":
        return f"ok ({row['seconds']:.0f} s)"
    error = " ".join(str(row.get("error", "")).split())  # one line: a table cell
    return "FAILED: " + error.replace("|", "/")[:240]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs")
    parser.add_argument("--params", default="default", help="default | ci | FILE.yaml")
    parser.add_argument("--variants", nargs="+", default=["threads1", "threads2", "seed+7"])
    parser.add_argument("--only", nargs="+", help="chapter numbers or stems, e.g. 04 06")
    parser.add_argument("--shared-cache", type=Path, default=None,
                        help="where the corpus and features live (default: the usual cache)")
    args = parser.parse_args(argv)
    try:
        for name in args.variants:
            variant_env(name)
    except ValueError as err:
        parser.error(str(err))
    sys.path.insert(0, str(ROOT))
    from speechul._runtime import cache_dir  # the usual cache, wherever SPEECHUL_CACHE puts it

    shared = args.shared_cache or cache_dir()
    results = {name: run_variant(name, args.out, args.params, args.only, shared)
               for name in args.variants}
    table = matrix(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "matrix.md").write_text(table + "\n")
    (args.out / "matrix.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table)
    return 1 if any(r["status"] != "ok" for rows in results.values() for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
