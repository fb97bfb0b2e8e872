"""One-shot GPU benchmark: the keyword model on a Speech Commands-sized stand-in, no download.

Speech Commands v0.01 (SUPERB KS) has ~65k one-second clips in 12 classes. This script builds a
synthetic stand-in of that shape directly on the device: each class gets a fixed random log-mel
"template" (a smooth (40, 101) pattern) and every clip is its class template plus noise, so the
model has something learnable and the accuracy after training is a sanity check, not a result.
It then trains speechul's keyword model on it with ``su.train.fit`` over ``Batches`` (bf16
autocast on GPUs with native bf16, else fp32, as everywhere in speechul: ``train.precision``) and
records seconds per epoch, samples/s and peak GPU memory (``torch.cuda.max_memory_allocated``).

Usage::

    python benchmarks/gpu_stand_in.py                       # on a GPU machine (~65k clips)
    python benchmarks/gpu_stand_in.py --quick --device cpu  # smoke run (256 clips, 1 epoch)

Writes ``benchmarks/results/gpu-stand-in-<machine>[-quick].json`` and re-renders BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

import speechul as su  # noqa: E402

N_MELS, FRAMES = 40, 101  # 1 s at a 10 ms hop: the shape of speechul's log-mels


def log(message: str) -> None:
    print(f"[gpu-stand-in {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stand_in(n: int, n_classes: int, device: torch.device, seed: int = 0,
             chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 40, 101) float32 log-mel-like clips and (n,) labels, made on ``device``.

    Templates are low-pass random patterns (upsampled from a coarse grid) at log-mel levels
    (around -4, spread ~3); noise of the same spread makes classes overlap a little. Made in
    chunks so the peak is the tensor itself, not several temporaries of its size.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    coarse = torch.randn(n_classes, 1, 10, 25, generator=g)
    templates = (F.interpolate(coarse, size=(N_MELS, FRAMES), mode="bilinear") * 3 - 4).to(device)
    y = torch.randint(0, n_classes, (n,), generator=g).to(device)
    x = torch.empty(n, 1, N_MELS, FRAMES, device=device)
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        eps = torch.randn(stop - start, 1, N_MELS, FRAMES, generator=noise, device=device)
        x[start:stop] = templates[y[start:stop]] + 3 * eps
    return x, y


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epochs(x: torch.Tensor, y: torch.Tensor, n_classes: int, recipe: su.train.TrainConfig,
                 seed: int = 0) -> tuple[list[float], torch.nn.Module]:
    """Seconds of each epoch of ``su.train.fit`` (one epoch per call, one shared optimiser)."""
    device = x.device
    model = su.train.fresh_model(recipe, n_classes, device, seed)
    train = torch.arange(len(y), device=device)
    batches = su.data.Batches(x, y, train, recipe.batch_size, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr,
                                  weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           recipe.epochs * len(batches))
    seconds = []
    for epoch in su._runtime.progress(range(recipe.epochs), desc="epochs"):
        _sync(device)
        start = time.perf_counter()
        loss = su.train.one_epoch(model, batches, su.train.cross_entropy, optimizer,
                                  scheduler=scheduler, max_grad_norm=recipe.max_grad_norm)
        _sync(device)
        seconds.append(time.perf_counter() - start)
        log(f"epoch {epoch + 1}/{recipe.epochs}: {seconds[-1]:.2f} s, loss {loss:.3f}")
    return seconds, model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    with su._runtime.autocast(x.device):
        hits = sum((model(x[i : i + chunk]).argmax(1) == y[i : i + chunk]).sum().item()
                   for i in range(0, len(y), chunk))
    return hits / len(y)


def _amp(device: torch.device) -> str:
    if device.type != "cuda":
        return "off (CPU: float32)"
    return su.train.precision(device)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=65_000, help="stand-in corpus size")
    p.add_argument("--classes", type=int, default=12, help="10 keywords + unknown + silence")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (the first warms up)")
    p.add_argument("--batch-size", type=int, default=su.train.TrainConfig().batch_size)
    p.add_argument("--width", type=int, default=su.train.TrainConfig().width)
    p.add_argument("--device", default=None, help="default: CUDA if present, else CPU")
    p.add_argument("--quick", action="store_true", help="256 clips, 1 epoch: a smoke run")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", type=Path, default=report.RESULTS, help="results folder")
    p.add_argument("--markdown", type=Path, default=report.MARKDOWN)
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.epochs = 256, 1
    if args.clips < args.classes or args.epochs < 1:
        raise SystemExit(f"need --clips >= --classes and --epochs >= 1, got {args}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    device = su.default_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shape: let cuDNN pick its fastest
        torch.cuda.reset_peak_memory_stats(device)
    log(f"building {args.clips:,} stand-in clips on {device}")
    x, y = stand_in(args.clips, args.classes, device)
    recipe = dataclasses.replace(su.train.TrainConfig(), epochs=args.epochs,
                                 batch_size=args.batch_size, width=args.width)
    seconds, model = train_epochs(x, y, args.classes, recipe)
    steady = seconds[1:] or seconds  # the first epoch includes cuDNN autotuning and warm-up
    result = {
        "kind": "gpu-stand-in", "date": report.now(),
        "argv": sys.argv[1:] if argv is None else argv, "machine": report.machine(device),
        "clips": args.clips, "n_classes": args.classes, "batch_size": args.batch_size,
        "width": args.width, "amp": _amp(device), "epoch_seconds": seconds,
        "samples_per_s": args.clips * len(steady) / sum(steady),
        "peak_memory_mib": (torch.cuda.max_memory_allocated(device) / 2**20
                            if device.type == "cuda" else None),
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_accuracy": accuracy(model, x, y),
    }
    result["load_average_1m_end"] = report.machine(device)["load_average_1m"]
    log(f"{result['samples_per_s']:,.0f} samples/s, epochs {[round(s, 2) for s in seconds]} s, "
        f"peak {result['peak_memory_mib']} MiB, train accuracy {result['train_accuracy']:.3f}")
    slug = report.machine_slug(device) + ("-quick" if args.quick else "")
    path = args.out / f"gpu-stand-in-{slug}.json"
    report.write_json(result, path)
    log(f"wrote {path}")
    report.update_markdown(args.out, args.markdown)
    return result


if __name__ == "__main__":
    main()
