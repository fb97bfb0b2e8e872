"""Smoke tests of the benchmark scripts: they run end to end and write well-formed results.

These are not timing tests (the machine is shared, timings are noise): they check that each
script runs on the tiny corpus, that every number it reports exists and is positive, that the
naive baseline computes the same features as speechul (or the comparison would be unfair), and
that BENCHMARKS.md is rendered from the results.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
QUICK_METHODS = ("retrain", "finetune", "ssd")  # a subset keeps the smoke run short


def _run(script: str, *args: str, tmp_path: Path) -> tuple[dict, str]:
    """Run a benchmark script into ``tmp_path``; return its only results file and the markdown."""
    out, markdown = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    env = {**os.environ, "SPEECHUL_QUIET": "1"}  # SPEECHUL_CACHE: the session's (conftest)
    done = subprocess.run([sys.executable, str(BENCH / script), *args, "--out", str(out),
                           "--markdown", str(markdown)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, f"expected one results file, got {files}"
    return json.loads(files[0].read_text()), markdown.read_text()


def _import(name: str):
    """A benchmark script as a module (they import their helpers from their own folder)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_machine(machine: dict, device: str) -> None:
    for key in ("cpu", "logical_cores", "torch_threads", "torch", "torchaudio", "device"):
        assert machine.get(key), f"machine description lacks {key!r}: {machine}"
    assert machine["device"] == device


@pytest.fixture(scope="module")
def perf(tmp_path_factory: pytest.TempPathFactory, tiny_corpus) -> tuple[dict, str]:
    # tiny_corpus: built once per session, so the script finds its features in the cache.
    tmp = tmp_path_factory.mktemp("perf")
    return _run("perf.py", "--quick", "--skip-book", "--device", "cpu", "--methods",
                *QUICK_METHODS, tmp_path=tmp)


def test_perf_training_section(perf):
    result, _ = perf
    assert result["kind"] == "perf" and result["corpus"] == "embedded-tiny"
    _check_machine(result["machine"], "cpu")
    t = result["training"]
    assert t["samples"] == t["clips"] * t["epochs"] > 0
    for side in ("cached", "naive"):
        for key in ("seconds", "samples_per_s", "seconds_per_epoch", "input_only_samples_per_s"):
            assert _positive(t[side][key]), f"training.{side}.{key} = {t[side][key]!r}"
        assert math.isclose(t[side]["samples_per_s"] * t[side]["seconds"], t["samples"],
                            rel_tol=1e-6)
    assert _positive(t["speedup"]) and _positive(t["feature_pass_seconds"])
    assert math.isclose(t["speedup"], t["cached"]["samples_per_s"] / t["naive"]["samples_per_s"])
    # A fair baseline: it must compute the features speechul caches, not cheaper ones.
    assert t["max_feature_diff"] < 1e-4, f"naive features differ by {t['max_feature_diff']}"


def test_perf_unlearning_section(perf):
    result, _ = perf
    u = result["unlearning"]
    assert (u["task"], u["kind"], u["fraction"]) == ("keyword", "sample", 0.1)
    assert u["forget"] > 0 and u["retain"] > u["forget"]
    assert set(u["methods"]) == set(QUICK_METHODS)
    for name, row in u["methods"].items():
        assert _positive(row["seconds"]), f"{name}: seconds {row['seconds']!r}"
        assert row["runs"] == [row["seconds"]] and u["repeats"] == 1
        assert math.isclose(row["fraction_of_retrain"],
                            row["seconds"] / u["methods"]["retrain"]["seconds"])
        assert isinstance(row["diverged"], bool)
    assert u["methods"]["finetune"]["hparams"]["epochs"] == 1, "--quick caps method epochs at 1"
    assert result["book"] is None, "--skip-book must not execute the book"


def test_perf_markdown_renders_the_results(perf):
    result, markdown = perf
    assert "perf-cpu-" in markdown and "-tiny.json" in markdown
    assert f"{result['training']['speedup']:.1f}x" in markdown
    for name in QUICK_METHODS:
        assert f"| {name} |" in markdown
    assert result["machine"]["cpu"] in markdown


def test_perf_rejects_unknown_methods_before_measuring(tmp_path, capsys):
    perf = _import("perf")
    with pytest.raises(SystemExit, match=r"unknown method\(s\) \['nope'\]; known: \[.*'retrain'"):
        perf.main(["--quick", "--methods", "nope", "--out", str(tmp_path),
                   "--markdown", str(tmp_path / "B.md")])
    assert "[perf" not in capsys.readouterr().err, "nothing is measured with a bad request"
    assert not list(tmp_path.iterdir()), "a failed run must not write results"


def test_gpu_stand_in_runs_on_cpu(tmp_path):
    result, markdown = _run("gpu_stand_in.py", "--quick", "--device", "cpu", tmp_path=tmp_path)
    assert result["kind"] == "gpu-stand-in"
    _check_machine(result["machine"], "cpu")
    assert result["clips"] == 256 and len(result["epoch_seconds"]) == 1
    assert all(_positive(s) for s in result["epoch_seconds"])
    assert _positive(result["samples_per_s"])
    assert result["peak_memory_mib"] is None, "peak GPU memory is only measured on CUDA"
    assert 0.0 <= result["train_accuracy"] <= 1.0
    assert "GPU stand-in for Speech Commands" in markdown


def test_stand_in_data_is_learnable_and_shaped_like_logmels():
    import torch

    gpu_stand_in = _import("gpu_stand_in")

    x, y = gpu_stand_in.stand_in(1200, 12, torch.device("cpu"))
    assert x.shape == (1200, 1, 40, 101) and y.shape == (1200,)
    assert set(y.tolist()) == set(range(12))
    assert -12 < x.mean() < 4, "values should sit at log-mel levels (log of small powers)"
    # Learnable: class means from one half classify the other half (nearest mean) well.
    flat = x.flatten(1)
    means = torch.stack([flat[:600][y[:600] == c].mean(0) for c in range(12)])
    guess = torch.cdist(flat[600:], means).argmin(1)
    assert (guess == y[600:]).float().mean() > 0.9


def test_machines_of_the_same_core_count_get_their_own_results_file():
    report = _import("report")
    assert report.cpu_family("Intel(R) Xeon(R) CPU @ 2.20GHz") == "intel-xeon"
    assert report.cpu_family("AMD EPYC 7B13 64-Core Processor") == "amd-epyc"
    assert report.cpu_family("") == "unknown"
    slug = report.machine_slug(torch.device("cpu"))
    family, capability = report.cpu_family(report.cpu_model()), report.cpu_capability()
    assert slug == f"cpu-{os.cpu_count()}cores-{family}-{capability}", slug
    # a virtual "AMD EPYC" with AVX2 (Zen 3) and one with AVX-512 (Zen 4) get their own files
    assert capability in {"default", "avx2", "avx512", "zvector"}, capability


def test_quiet_wait_is_bounded():
    import time

    report = _import("report")
    busy = report.other_runnable(0.5)
    assert busy >= -0.5 and (busy < 1000 or busy == float("inf"))
    start = time.monotonic()
    report.wait_for_quiet(1.0, log=lambda _: None, threshold=-10)  # never quiet: waits, bounded
    assert 0.9 <= time.monotonic() - start < 10
    start = time.monotonic()
    report.wait_for_quiet(0, log=lambda _: None, threshold=-10)  # 0: never waits
    assert time.monotonic() - start < 0.1


@pytest.mark.book
def test_book_timing_records_failures_without_stopping(tmp_path):
    perf = _import("perf")
    header = ("---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
              "kernelspec: {display_name: Python 3, language: python, name: python3}\n---\n")
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(header + "# Good\n\n```{code-cell} ipython3\nx = 1 + 1\n```\n")
    bad.write_text(header + "# Bad\n\n```{code-cell} ipython3\nraise ValueError('boom')\n```\n")
    ok = perf._run_chapter(good, tmp_path, timeout=120)
    failed = perf._run_chapter(bad, tmp_path, timeout=120)
    assert ok["ok"] and ok["error"] == "" and _positive(ok["seconds"])
    assert not failed["ok"] and "boom" in failed["error"] and _positive(failed["seconds"])


def test_book_timings_of_two_machines_are_compared_side_by_side(tmp_path):
    report = _import("report")

    def perf(cpu: str, seconds: list[float], ok: bool = True) -> dict:
        chapters = {f"book/0{i}.md": {"seconds": s, "ok": ok, "error": ""}
                    for i, s in enumerate(seconds, 1)}
        return {"kind": "perf", "date": "2026-11-30T00:00:00+00:00", "argv": ["--book"],
                "corpus": "embedded-default", "machine": {"cpu": cpu, "device": "cpu"},
                "book": {"date": "2026-11-30T00:00:00+00:00", "argv": ["--book"],
                         "chapters": chapters, "total_seconds": sum(seconds)}}

    report.write_json(perf("Fast CPU", [40.0, 287.0]), tmp_path / "perf-a.json")
    assert "The book on each machine" not in report.render(tmp_path), "one machine: no table"
    report.write_json(perf("Slow CPU", [81.0, 633.0], ok=False), tmp_path / "perf-b.json")
    markdown = report.render(tmp_path)
    assert "| chapter | Fast CPU (2026-11-30) | Slow CPU (2026-11-30) |" in markdown
    assert "| book/02.md | 287 | **633 (failed)** |" in markdown
    assert "| **total** | 327 | 714 |" in markdown


def test_speedup_explanation_says_when_the_two_costs_do_not_add_up():
    report = _import("report")

    def why(cached: float, naive: float, load: float) -> str:
        t = {"cached": {"samples_per_s": cached}, "speedup": cached / naive,
             "naive": {"samples_per_s": naive, "input_only_samples_per_s": load}}
        return report._bound_lines(t)[0]

    assert "as the two predict" in why(1000.0, 500.0, 1000.0)  # 1 + 1 ms = 2 ms per clip
    assert "pays 2.00 ms per clip more" in why(1000.0, 250.0, 1000.0)  # 4 ms: 2 unexplained
    assert "less than the two predict" in why(1000.0, 1000.0, 1000.0)
