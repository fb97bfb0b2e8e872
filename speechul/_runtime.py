"""Plumbing shared by every module: device, seeding, cached files, fingerprints, timing.

Nothing here knows about speech. It exists so that reliability lives in one place: every cache
file in speechul (the synthetic corpus, features, trained checkpoints) is written atomically with
a checksum beside it, and a file whose checksum does not match is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import glob
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "default_device",
    "eval_chunk",
    "keep_freed_memory",
    "seed_everything",
    "seed_offset",
    "shifted",
    "generator",
    "numerics",
    "source_digest",
    "keep_random_state",
    "cache_dir",
    "fingerprint",
    "cached",
    "atomic_save",
    "checked_load",
    "locked",
    "Timer",
    "autocast",
    "precision",
    "progress",
]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: the one asked for, else CUDA when present, else the CPU.

    MPS is opt-in (``device="mps"``): some ops used here are still slow or missing there.
    """
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def eval_chunk(device: torch.device) -> int:
    """Clips per forward pass when evaluating (no gradients) on ``device``.

    On a CPU small chunks keep each layer's activations in the processor's caches, which makes
    128 clips at a time faster than 1024 for the default model; a GPU wants large chunks to
    fill it.
    """
    return 128 if device.type == "cpu" else 1024


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let the C allocator keep freed memory for reuse instead of handing it back to the OS.

    Why: a CPU training step allocates and frees activations of a few MB each (the default
    model's first block: 64 x 16 x 20 x 51 floats, 4 MB). glibc serves such blocks from fresh
    ``mmap`` pages or trims them off its heap when freed, so every step pays ~250,000 page faults
    per epoch to get zeroed pages back from the kernel. Raising the mmap threshold (32 MB, glibc's
    cap) and the trim threshold (256 MB) keeps the pages in the process: the page faults go, CPU
    epochs get shorter (by how much depends on the machine), and the arithmetic, so every
    number in the book, is bitwise the same. The cost: up to 256 MB of
    freed memory stays reserved. It changes the whole process's allocator, so importing
    speechul does not do it: the command line, the grid's worker processes and the chapters
    call it (``su.keep_freed_memory()``); ``SPEECHUL_MALLOC=default`` opts out. Returns whether
    the tuning applied (Linux with glibc only; elsewhere it is a no-op).
    """
    opted_out = os.environ.get("SPEECHUL_MALLOC", "tuned") == "default"
    if opted_out or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_set = mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # mallopt returns 1 on success, 0 on error
    trim_set = mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    return bool(mmap_set and trim_set)


def seed_offset() -> int:
    """``$SPEECHUL_SEED_OFFSET`` (default 0): added to every seed the package draws from.

    Initial weights, forget draws, batch orders and the methods' randomness all shift by it (the
    corpus does not: it is the data). A chapter run with an offset is the same chapter on other
    seeds, which is what another machine's arithmetic amounts to: a claim that holds only for
    the seeds it was written with fails here. It is part of every trained model's cache key
    (:func:`numerics`).
    """
    raw = os.environ.get("SPEECHUL_SEED_OFFSET", "0") or "0"
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"SPEECHUL_SEED_OFFSET must be a whole number, got {raw!r}") from None


def shifted(seed: int) -> int:
    """``seed`` plus :func:`seed_offset`: the seed actually drawn from."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"a seed must be a whole number, got {seed!r}")
    return int(seed) + seed_offset()


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``shifted(seed)``: every seeded draw of the package uses one
    of these (or :func:`seed_everything`), so the seed offset reaches all of them."""
    return torch.Generator().manual_seed(shifted(seed) % 2**63)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (with :func:`shifted`) so CPU runs are bitwise repeatable."""
    from ._checks import seed as checked_seed  # a bad seed is named, not a formatting error

    seed = shifted(checked_seed(seed))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def numerics(device: torch.device) -> dict[str, Any]:
    """Everything besides the recipe that changes a trained model's floating-point numbers.

    Float sums depend on the thread count (CPU), the device, the precision and torch's kernels;
    the seed offset changes every draw; and the package's own source decides what is computed
    (:func:`source_digest`). Each trained model's and results row's cache key holds this, so a cache
    filled under one of them is never served under another (a 1-thread run after a 2-thread one
    trains its own models instead of reading the other's and reporting its numbers).
    """
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{device.type}:{torch.get_num_threads()} threads")
    return {"precision": precision(device), "device": where, "torch": torch.__version__,
            "seed_offset": seed_offset(), "package": source_digest()}


@functools.cache
def source_digest(*modules: str) -> str:
    """A digest of speechul's own source: the named modules (``"features"``, ``"synth"``), or
    every ``.py`` file of the package when none is named.

    Cache keys hold it, so an edit to the training loop, a metric or a loader never serves
    numbers computed by the old code: a model or a results row is reused only by the code that
    made it. Read once per process (the source does not change under a running import).
    """
    root = Path(__file__).resolve().parent
    files = ([root / f"{m.replace('.', '/')}.py" for m in modules] if modules
             else sorted(root.rglob("*.py")))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where caches live: ``path`` if given, else ``$SPEECHUL_CACHE``, else ``<repo>/data/cache``.

    The default sits beside the package in a source checkout (git ignores it); an installed
    package falls back to ``~/.cache/speechul`` (never a ``data`` folder that another package
    put into site-packages: the checkout is recognised by its ``pyproject.toml``).
    """
    if path is None:
        path = os.environ.get("SPEECHUL_CACHE")
    if path is None:
        repo = Path(__file__).resolve().parent.parent
        checkout = (repo / "pyproject.toml").is_file() and (repo / "data").is_dir()
        path = repo / "data" / "cache" if checkout else Path.home() / ".cache" / "speechul"
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def fingerprint(*parts: Any, length: int = 16) -> str:
    """A short stable hash of JSON-able parts (dataclasses are passed as ``asdict``)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: A temp file of an artefact untouched for this long belongs to a killed writer: removed.
STALE_TEMP_SECONDS = 30 * 60

# Per artefact path: a re-entrant in-process lock and how deep its owner holds it (flock is per
# open file, so the threads of one process need their own lock, and re-entry must not flock).
_LOCKS: dict[str, tuple[threading.RLock, list[int]]] = {}
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock of artefact ``path`` (a ``<path>.lock`` file, ``fcntl.flock``).

    Why: two processes (a grid's workers, two notebooks) that both miss a cached original would
    both train it. Building under this lock, after looking again, makes the second one wait and
    load the first one's file. Re-entrant within a thread; the lock file stays (removing it
    would let a third process lock a new file while the second holds the old one).
    """
    key = str(Path(path).resolve())
    with _LOCKS_GUARD:
        rlock, depth = _LOCKS.setdefault(key, (threading.RLock(), [0]))
    with rlock:
        depth[0] += 1
        try:
            if depth[0] > 1:
                yield
                return
            try:
                Path(key).parent.mkdir(parents=True, exist_ok=True)
                handle = open(key + ".lock", "a")  # noqa: SIM115 - closed below
            except OSError:  # a read-only cache: nothing can be built there, so nothing races
                yield
                return
            with handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            depth[0] -= 1


def _remove_stale_temps(path: Path) -> None:
    """Delete ``<name>*.tmp`` files of ``path`` older than :data:`STALE_TEMP_SECONDS`: what a
    writer killed mid-save left (a live writer touches its temp file continuously)."""
    now = time.time()
    for tmp in path.parent.glob(f"{glob.escape(path.name)}*.tmp"):
        with contextlib.suppress(OSError):  # another process may remove it first
            if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                tmp.unlink()


def _temp(path: Path, suffix: str = "") -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + suffix, suffix=".tmp")
    os.close(fd)
    return tmp


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, its sha256 to another, then both renamed under
    :func:`locked`: checksum first, file second.

    A crash mid-write leaves either the old file or none, never half a file that looks whole; a
    crash between the renames leaves a mismatch, rebuilt. A reader that lands between them
    waits for the lock and looks again (:func:`checked_load`), so it never sees a false
    "damaged". Temp files of writers killed long ago are removed first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp, tmp_sum = _temp(path), _temp(path, ".sha256")
    try:
        torch.save(obj, tmp)
        Path(tmp_sum).write_text(_sha256(Path(tmp)))
        with locked(path):
            os.replace(tmp_sum, str(path) + ".sha256")
            os.replace(tmp, path)
    finally:
        for left in (tmp, tmp_sum):
            if os.path.exists(left):
                os.remove(left)


def _checksum_problem(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (no checksum file, or a mismatch), or None if it can."""
    sidecar = Path(str(path) + ".sha256")
    if not sidecar.exists():
        return f"has no checksum file ({sidecar.name} is missing)"
    if sidecar.read_text().strip() != _sha256(path):
        return "is damaged (checksum mismatch)"
    return None


def checked_load(path: Path, *, warn: bool = True) -> Any | None:
    """Load a file written by :func:`atomic_save`; ``None`` if missing or damaged.

    Damaged means: no checksum sidecar, a checksum mismatch, or a file torch cannot read. A
    mismatch is looked at again under the artefact's lock: a writer may be between its two
    renames. Loading uses ``weights_only=True``, so a cache file can never run code. ``warn``:
    say why a file is rebuilt (off where the caller has said so already).
    """
    if not path.exists():
        return None
    problem = _checksum_problem(path)
    if problem is not None:
        with locked(path):  # wait for a writer in flight, then judge the file it left
            problem = _checksum_problem(path) if path.exists() else "was removed"
    if problem is None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is treated as damaged
            problem = f"is unreadable ({err})"
    if warn:
        warnings.warn(f"cache file {path} {problem}; rebuilding it", stacklevel=3)
    return None


def cached(path: Path, build: Callable[[], Any]) -> Any:
    """Return the object stored at ``path``, or build it, store it atomically and return it.

    Built under :func:`locked`, after looking again: of several processes missing the file,
    one builds it and the others load it.
    """
    obj = checked_load(path)
    if obj is None:
        with locked(path):
            obj = checked_load(path, warn=False)  # another process may have built it meanwhile
            if obj is None:
                obj = build()
                atomic_save(obj, path)
    return obj


class Timer:
    """Wall-clock timer that synchronises CUDA, so GPU seconds are honest.

    >>> with Timer() as t: ...
    >>> t.seconds
    """

    def __enter__(self) -> Timer:
        _load_lazy_modules()
        _sync()
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        _sync()
        self.seconds = time.perf_counter() - self.start


def _load_lazy_modules() -> None:
    """Import now what torch imports on first use, so no timed run pays for it.

    The first optimizer built in a process imports ``torch._dynamo``, which takes about a second:
    it would land in whichever run is timed first (a Retrain, or a method when the Retrain came
    from the cache) and skew that request's time fractions.
    """
    import torch._dynamo  # noqa: F401 - imported for its side effect, once per process


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _native_cuda_bf16() -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before the flag: it reported native support only
        return torch.cuda.is_bf16_supported()


def precision(device: torch.device) -> str:
    """The arithmetic that training runs in on ``device``: ``"bf16"`` or ``"fp32"``.

    CUDA: bf16 autocast where the GPU computes bf16 natively (Ampere and newer), else fp32: a
    T4 or V100 (Colab's free GPU is a T4) would only emulate bf16, slowly, and fp16 would need
    loss scaling, whose skipped steps the divergence guard of ``train.one_epoch`` would take for
    a diverged run. CPU: fp32, the book's numbers; ``SPEECHUL_CPU_BF16=1`` opts in to bf16
    autocast, which pays on CPUs with native bf16 matrix units (oneDNN's bf16 convolutions) and
    is emulated, slower, elsewhere: measure on your machine before opting in. Results then
    differ from fp32 ones like those of another seed. The precision is part of every trained
    model's cache key, so a checkpoint trained in one precision is never passed off as one of
    another. Evaluation is always fp32.
    """
    if device.type == "cuda":
        return "bf16" if _native_cuda_bf16() else "fp32"
    chosen = os.environ.get("SPEECHUL_CPU_BF16", "0") or "0"
    if chosen not in ("0", "1"):
        raise ValueError(f"SPEECHUL_CPU_BF16 must be 0 or 1, got {chosen!r}")
    return "bf16" if chosen == "1" and device.type == "cpu" else "fp32"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for training steps, decided in one place (:func:`precision`)."""
    chosen = precision(device)
    if chosen == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def progress(iterable: Any = None, **kwargs: Any) -> Iterator:
    """A notebook-aware progress bar (``tqdm.auto``); silenced by ``SPEECHUL_QUIET=1``."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", os.environ.get("SPEECHUL_QUIET") == "1")
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


@contextlib.contextmanager
def keep_random_state(device: torch.device | None = None) -> Iterator[None]:
    """Inside the block reseed freely; after it, the caller's Python, NumPy and torch streams
    (the CPU one, and ``device``'s when it is a GPU) are as they were.

    Why: ``unlearn.run`` seeds everything for repeatable runs, which used to reseed the
    caller's generators too: a notebook's next ``torch.rand`` depended on whether it had run a
    method. ``torch.random.fork_rng`` covers torch; Python's and NumPy's states are saved and
    restored here.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = [device] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
