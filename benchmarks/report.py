"""What machine a benchmark ran on, where results go, and BENCHMARKS.md rendered from them.

Every benchmark script writes one JSON file per machine under ``benchmarks/results/`` and then
re-renders ``BENCHMARKS.md`` from *all* result files, so numbers from a laptop, a shared CI box and
a GPU sit side by side and none is ever edited by hand.

Usage::

    python benchmarks/report.py   # re-render BENCHMARKS.md from benchmarks/results/*.json
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKDOWN = ROOT / "BENCHMARKS.md"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """Everything that makes a timing comparable: CPU, cores, threads, versions, GPU, load.

    The load average is recorded because the machine may be shared: a run under load is slower
    and its numbers should be read with that in mind.
    """
    import torchaudio

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_capability": cpu_capability(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "gpu": None,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return info


def cpu_family(model: str) -> str:
    """The CPU's vendor and family from its marketing name: ``"AMD EPYC 7B13"`` -> ``"amd-epyc"``.

    Enough to tell two machines of the same core count apart (the same chapter took 287 s on a
    2-core Intel Xeon and 633 s on a 2-core AMD EPYC), without a new file per stepping.
    """
    name = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*", " ", model.lower())
    return "-".join(re.sub(r"[^a-z0-9]+", " ", name).split()[:2]) or "unknown"


def cpu_capability() -> str:
    """The vector instructions torch's CPU kernels use here (``avx2``, ``avx512``, ...).

    A virtual machine may name its CPU only "AMD EPYC": a Zen 3 (AVX2) and a Zen 4 (AVX-512)
    then look alike, yet train at different speeds and, with different kernels, to slightly
    different weights (the book's numbers move like another seed's).
    """
    return torch.backends.cpu.get_cpu_capability().lower()


def machine_slug(device: torch.device) -> str:
    """A file-name-safe machine tag, e.g. ``cpu-2cores-amd-epyc-avx2`` or ``cuda-nvidia-h200``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{os.cpu_count()}cores-{cpu_family(cpu_model())}-{cpu_capability()}"
    return re.sub(r"[^a-z0-9]+", "-", f"{device.type}-{name}".lower().replace("cpu-cpu", "cpu"))\
        .strip("-")


def other_runnable(seconds: float = 3.0) -> float:
    """Mean number of runnable tasks besides this (sleeping) process, sampled over ``seconds``.

    Instantaneous, unlike the load average, which still remembers our own last run for minutes.
    ``inf`` where /proc/loadavg does not exist (not Linux): the caller then never waits.
    """
    samples = []
    for _ in range(max(1, int(seconds / 0.25))):
        try:
            running = Path("/proc/loadavg").read_text().split()[3].split("/")[0]
        except (OSError, IndexError):
            return float("inf")
        samples.append(int(running) - 1)  # the reader itself is running while it reads
        time.sleep(0.25)
    return sum(samples) / len(samples)


def wait_for_quiet(max_seconds: float, log: Callable[[str], None] = print,
                   threshold: float = 0.5) -> None:
    """Sleep until other jobs leave the CPUs idle (or ``max_seconds`` pass): fairer timings."""
    if max_seconds <= 0:
        return
    deadline = time.monotonic() + max_seconds
    busy = other_runnable()
    if busy > threshold and busy != float("inf"):
        log(f"waiting for a quiet machine ({busy:.1f} other runnable tasks)")
    while threshold < busy < float("inf") and time.monotonic() < deadline:
        busy = other_runnable()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(obj: dict, path: Path) -> None:
    """Write atomically (a crash never leaves half a results file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_results(folder: Path = RESULTS) -> list[tuple[str, dict]]:
    """(file name, content) of every results file, sorted by name; unreadable files skipped."""
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            out.append((path.name, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError) as err:
            print(f"[report] skipping {path}: {err}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- rendering


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _machine_lines(m: dict, end: float | None = None) -> list[str]:
    gpu = m.get("gpu")
    lines = [
        f"- CPU: {m.get('cpu')}{_capability(m)} ({m.get('logical_cores')} logical cores, "
        f"{m.get('usable_cores')} usable; torch threads: {m.get('torch_threads')})",
        f"- torch {m.get('torch')}, torchaudio {m.get('torchaudio')}, Python {m.get('python')} "
        f"on {m.get('platform')}",
        f"- Device: `{m.get('device')}`"
        + (f"; GPU: {gpu['name']} ({gpu['memory_gib']} GiB, CUDA {gpu['cuda']})" if gpu else
           "; no GPU"),
        f"- 1-minute load average when the run started: {_fmt(m.get('load_average_1m'), 2)}"
        + (f", when it ended: {_fmt(end, 2)}" if end is not None else ""),
    ]
    return lines


def _stamp(section: dict) -> str:
    """When a section was measured and how busy the machine was (it may predate the file)."""
    load = section.get("load_average_1m") or [None, None]
    return (f"measured {section.get('date', '?')} with `{' '.join(section.get('argv', []))}`; "
            f"1-minute load average {_fmt(load[0], 2)} at the start, {_fmt(load[1], 2)} at the end")


def _training_lines(t: dict) -> list[str]:
    cached, naive = t["cached"], t["naive"]
    workers = naive.get("workers", 0)
    ceiling = cached["input_only_samples_per_s"] / naive["input_only_samples_per_s"]
    return [
        f"**(a) Training throughput** ({t['clips']:,} training clips x {t['epochs']} epochs = "
        f"{t['samples']:,} samples, batch {t['batch_size']}, same model, optimiser and seed; "
        f"best of {t.get('repeats', 1)}; {_stamp(t)}):",
        "",
        "| pipeline | training samples/s | seconds per epoch | input alone, samples/s |",
        "|---|---:|---:|---:|",
        f"| speechul: cached log-mel tensor + `Batches` + `su.train.fit` | "
        f"{_fmt(cached['samples_per_s'])} | {_fmt(cached['seconds_per_epoch'], 2)} | "
        f"{_fmt(cached.get('input_only_samples_per_s'), 0)} |",
        f"| naive: `DataLoader` (workers={workers}) reading each WAV with soundfile + "
        f"per-item `MelSpectrogram` | {_fmt(naive['samples_per_s'])} | "
        f"{_fmt(naive['seconds_per_epoch'], 2)} | "
        f"{_fmt(naive.get('input_only_samples_per_s'), 0)} |",
        "",
        f"Training speed-up: **{t['speedup']:.1f}x** (target >= 5x). \"Input alone\" is one pass "
        "over each pipeline without a model: the most samples/s it can ever feed, on any device; "
        "where the model step is nearly free (a GPU), the speed-up approaches their ratio, "
        f"**{ceiling:.0f}x** here. One-time cost of the cached way: the "
        f"batched log-mel pass over the whole corpus took {_fmt(t['feature_pass_seconds'], 2)} s "
        f"({t['corpus_clips']:,} clips; cached on disk afterwards). Both pipelines give the same "
        f"features (max abs difference {t['max_feature_diff']:.1e}).",
        "",
        *_bound_lines(t),
    ]


def _bound_lines(t: dict) -> list[str]:
    """Why a speed-up is what it is: a model step vs per-clip loading, both per clip.

    Caching removes the loading cost and nothing else, so the speed-up is about
    (step + load) / step: small where the step is expensive (a CPU), large where it is cheap.
    """
    step = 1e3 / t["cached"]["samples_per_s"]
    load = 1e3 / t["naive"]["input_only_samples_per_s"]
    extra = 1e3 / t["naive"]["samples_per_s"] - step - load  # naive ms per clip beyond the two
    if extra > 0.15 * (step + load):
        why = (f": the naive run pays {extra:.2f} ms per clip more than the two, for batching, "
               "collation and a loader sharing the cores with the step, or a busy machine")
    elif extra < -0.15 * (step + load):
        why = ": less than the two predict (a busy machine? see the load average)"
    else:
        why = ", as the two predict"
    return [
        f"Why {t['speedup']:.1f}x: on this device a training step costs {step:.2f} ms per clip "
        f"and the per-file read + log-mel {load:.2f} ms per clip. Caching removes only the "
        f"second, so the speed-up is about ({step:.2f} + {load:.2f}) / {step:.2f} = "
        f"{(step + load) / step:.1f}x (measured {t['speedup']:.1f}x{why}); where a step is much "
        "cheaper than loading a clip (a GPU; see `gpu_stand_in.py`) it grows towards the "
        "input-alone ratio above.",
        "",
    ]


def _unlearning_lines(u: dict) -> list[str]:
    lines = [
        f"**(b) Unlearning time as a fraction of Retrain** ({u['task']} task, "
        f"{u['fraction']:.0%} {u['kind']} forgetting, {u['forget']:,} forgotten / "
        f"{u['retain']:,} retained clips; `su.unlearn.run` seconds, default hyper-parameters, "
        f"fastest of {u.get('repeats', 1)}; {_stamp(u)}):",
        "",
        "| method | seconds | fraction of Retrain | work fraction | diverged |",
        "|---|---:|---:|---:|:---:|",
    ]
    for name, row in u["methods"].items():
        diverged = "yes" if row["diverged"] else ""
        work = _fmt(row["work_fraction"], 3) if "work_fraction" in row else "-"
        lines.append(f"| {name} | {_fmt(row['seconds'], 2)} | "
                     f"{_fmt(row['fraction_of_retrain'], 3)} | {work} | {diverged} |")
    return [*lines, ""]


def _capability(m: dict) -> str:
    """`` (AVX2)`` when the machine record names its vector instructions, else nothing."""
    return f" ({m['cpu_capability'].upper()})" if m.get("cpu_capability") else ""


def _book_lines(b: dict) -> list[str]:
    lines = [
        "**(c) Executing the book** (each chapter of `_toc.yml` converted with jupytext and run "
        "with papermill, default parameters, in order, from an empty cache: a reader's first run "
        f"of the book, later chapters reusing what earlier ones cached; {_stamp(b)}):",
        "",
        "| chapter | seconds | status |",
        "|---|---:|---|",
    ]
    for name, row in b["chapters"].items():
        status = "ok" if row["ok"] else f"failed: {row.get('error', '')[:80]}"
        lines.append(f"| {name} | {_fmt(row['seconds'])} | {status} |")
    lines.append(f"| **total** | **{_fmt(b['total_seconds'])}** | |")
    return [*lines, ""]


BOOK_BUDGET_S = 300  # every chapter at default parameters on 2 CPU cores (issue 5's target)


def _book_comparison(results: list[tuple[str, dict]]) -> list[str]:
    """One table of every machine's chapter seconds side by side, over-budget ones in bold.

    Empty unless two or more results files hold a book section: one machine needs no
    comparison, and its own section below already lists its chapters.
    """
    books = [(name, r) for name, r in results if r.get("kind") == "perf" and r.get("book")]
    if len(books) < 2:
        return []
    chapters = list(dict.fromkeys(c for _, r in books for c in r["book"]["chapters"]))

    def cell(row: dict | None) -> str:
        if row is None:
            return "-"
        text = _fmt(row["seconds"], 0) + ("" if row["ok"] else " (failed)")
        return f"**{text}**" if row["seconds"] > BOOK_BUDGET_S else text

    head = [f"{r['machine'].get('cpu')}{_capability(r['machine'])} "
            f"({r['book'].get('date', '?')[:10]})" for _, r in books]
    lines = ["## The book on each machine", "",
             f"Seconds per chapter (default parameters, empty cache), from the sections below; "
             f"**bold**: over the {BOOK_BUDGET_S} s budget.", "",
             "| chapter | " + " | ".join(head) + " |", "|---|" + "---:|" * len(books)]
    for chapter in chapters:
        cells = [cell(r["book"]["chapters"].get(chapter)) for _, r in books]
        lines.append(f"| {chapter} | " + " | ".join(cells) + " |")
    totals = [_fmt(r["book"]["total_seconds"], 0) for _, r in books]
    return [*lines, "| **total** | " + " | ".join(totals) + " |", ""]


def _perf_section(name: str, r: dict) -> list[str]:
    lines = [f"## `{name}`: {r.get('corpus', '?')} corpus on `{r['machine']['device']}`", "",
             f"Last run {r.get('date', '?')} with `python benchmarks/perf.py "
             f"{' '.join(r.get('argv', []))}` (sections it skipped keep earlier numbers).", "",
             *_machine_lines(r["machine"]), ""]
    if r.get("training"):
        lines += _training_lines(r["training"])
    if r.get("unlearning"):
        lines += _unlearning_lines(r["unlearning"])
    if r.get("book"):
        lines += _book_lines(r["book"])
    return lines


def _stand_in_section(name: str, r: dict) -> list[str]:
    epochs = ", ".join(f"{s:.2f}" for s in r["epoch_seconds"])
    peak = r.get("peak_memory_mib")
    return [
        f"## `{name}`: GPU stand-in for Speech Commands", "",
        f"Run {r.get('date', '?')} with `python benchmarks/gpu_stand_in.py "
        f"{' '.join(r.get('argv', []))}`.", "",
        *_machine_lines(r["machine"], r.get("load_average_1m_end")), "",
        f"{r['clips']:,} synthetic 1 s log-mel clips ({r['n_classes']} classes), batch "
        f"{r['batch_size']}, mixed precision: {r['amp']}.", "",
        "| seconds of each epoch | samples/s (after the first epoch) | peak memory (MiB) |",
        "|---|---:|---:|",
        f"| {epochs} | {_fmt(r['samples_per_s'])} | {_fmt(peak)} |", "",
    ]


HEADER = """# Benchmarks

Generated by `benchmarks/perf.py` and `benchmarks/gpu_stand_in.py` from the JSON files in
`benchmarks/results/` (re-render with `python benchmarks/report.py`; do not edit by hand).

What is measured:

- **(a)** training throughput of speechul's pipeline (log-mels computed once per corpus, cached,
  held as one tensor on the device and batched by index) against the common per-file pipeline (a
  `torch.utils.data.DataLoader` whose `Dataset` reads each clip's WAV with soundfile and computes
  its log-mel with torchaudio's `MelSpectrogram` on every access). Same model, optimiser, batch
  size, seed and number of samples; the WAVs are written from the same corpus beforehand.
- **(b)** each unlearning method's wall-clock time as a fraction of Retrain (training from scratch
  on the retained clips), from the `seconds` that `su.unlearn.run` reports.
- **(c)** optionally (`--book`), how long each chapter of the book takes to execute.

**Read the CPU numbers as indicative.** They were measured on a small machine shared with other
jobs; the load average at the start of each run is recorded below. Speed-ups (ratios measured in
the same run, best of the repeats) are more stable than absolute samples/s.

Reproduce:

```bash
python benchmarks/perf.py                  # (a) + (b) on the default corpus; add --book for (c)
python benchmarks/perf.py --quick          # a smoke run on the tiny corpus (seconds)
python benchmarks/gpu_stand_in.py          # on a GPU machine: Speech Commands-sized stand-in
```
"""


def render(folder: Path = RESULTS) -> str:
    """BENCHMARKS.md from every results file (perf-*.json and gpu-stand-in-*.json)."""
    lines = [HEADER]
    results = read_results(folder)
    if not results:
        lines.append("No results yet.\n")
    if not any(r.get("kind") == "gpu-stand-in" and r["machine"].get("gpu") for _, r in results):
        lines.append("**No GPU measurement yet:** `benchmarks/gpu_stand_in.py` is ready for a GPU "
                     "machine (it needs no download); its results will appear here.\n")
    lines += _book_comparison(results)
    for name, result in results:
        if result.get("kind") == "perf":
            lines += _perf_section(name, result)
        elif result.get("kind") == "gpu-stand-in":
            lines += _stand_in_section(name, result)
    return "\n".join(lines).rstrip() + "\n"


def update_markdown(folder: Path = RESULTS, markdown: Path = MARKDOWN) -> None:
    markdown.write_text(render(folder))
    print(f"[report] wrote {markdown}", file=sys.stderr)


if __name__ == "__main__":
    update_markdown()
