"""Scaling of the heavy stages: wall time against the number of samples n and against the channel width.

    python benchmarks/scaling.py                  # prints a markdown table and appends it to RESULTS.md
    python benchmarks/scaling.py --no-write --device cuda

Each row times one toolkit operation (median of 3 calls after a warm-up) on synthetic inputs of growing size:
the cka / cca / reg spectra of two layers (d = 256, 512) and the streaming Mahalanobis fit + score (D = 256) at
n samples, batched diffeomorphisms of n 32x32 images, and, against the width multiplier, one hooked forward pass
of resnet18 that captures its 18 analysis layers and one training step (batch 128, 32x32 inputs).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_kernels import layer_features  # noqa: E402
from benchmarks.bench_mahalanobis import batches, class_features, streaming  # noqa: E402
from benchmarks.bench_training import toolkit_trainer  # noqa: E402
from benchmarks.common import append_results, best_time, machine  # noqa: E402
from measures.similarity import cka_spectrum, gram_factor  # noqa: E402
from measures.stability import diffeo, temperature_for_displacement  # noqa: E402
from models import build_model  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.taps import LayerTaps  # noqa: E402

SAMPLES = (500, 1000, 2000, 4000, 8000)
WIDTHS = (0.25, 0.5, 1.0)


def by_samples(device: torch.device) -> dict[str, list[float]]:
    """Seconds per operation for every n in SAMPLES."""
    rows: dict[str, list[float]] = {"cka spectra, 2 layers d=256/512": [], "Mahalanobis fit+score D=256": [],
                                    "diffeo, n images": []}
    generator = torch.Generator(device=device).manual_seed(0)
    temperature = temperature_for_displacement(1.0, 32, 3)
    cfg = {"dim": 256, "classes": 10, "batch": 500}
    for n in SAMPLES:
        a, b = (f.double() for f in layer_features(n, (256, 512), generator, device))
        rows["cka spectra, 2 layers d=256/512"].append(
            best_time(lambda a=a, b=b: cka_spectrum(gram_factor(a), gram_factor(b)), device))
        features, labels = class_features(2 * n, cfg, generator, device)
        train, test = batches(features[:n], labels[:n], cfg), batches(features[n:], labels[n:], cfg)
        rows["Mahalanobis fit+score D=256"].append(best_time(lambda t=train, s=test: streaming(t, s, cfg), device))
        images = torch.rand(n, 3, 32, 32, generator=generator, device=device)
        rows["diffeo, n images"].append(best_time(lambda x=images: diffeo(x, temperature, 3), device))
    return rows


def by_width(device: torch.device) -> dict[str, list[float]]:
    """Seconds per resnet18 capture pass and training step for every width in WIDTHS."""
    rows: dict[str, list[float]] = {"resnet18 capture pass, 18 layers, batch 256": [],
                                    "resnet18 training step, batch 128": []}
    x = torch.rand(256, 3, 32, 32, device=device)
    y = torch.randint(10, (128,), device=device)
    for width in WIDTHS:
        model = build_model("resnet18", 10, width=width).to(device)
        layers = model.weight_layers()

        def capture(model=model, layers=layers):
            with torch.no_grad(), LayerTaps(layers):
                model.eval()(x)

        trainer, _ = toolkit_trainer("resnet18", x[:128], y, {"width": width, "batch": 128}, device)

        def step(trainer=trainer):
            trainer.model.train()
            trainer.step(x[:128], y)

        rows["resnet18 capture pass, 18 layers, batch 256"].append(best_time(capture, device))
        rows["resnet18 training step, batch 128"].append(best_time(step, device))
    return rows


def table(title: str, columns: tuple, rows: dict[str, list[float]]) -> str:
    lines = [f"| {title} | " + " | ".join(str(c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{t * 1e3:.0f} ms" for t in times) + " |" for name, times in rows.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args()
    device = resolve_device(args.device)
    text = (f"\n## {time.strftime('%Y-%m-%d')} - scaling - {machine(device)}\n\n"
            + table("samples n", SAMPLES, by_samples(device)) + "\n\n"
            + table("width", WIDTHS, by_width(device)) + "\n")
    print(text)
    if not args.no_write:
        append_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
