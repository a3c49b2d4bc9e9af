"""Activation covariance of the rainbow paper (seed002 §5.1): streaming float64 sums vs stacking every activation.

Conv activations (B, C, H, W) are rows (B H W, C), space treated as samples, and the covariance is the UNCENTRED
E[a a^T] = sum_rows a^T a / rows. Toolkit: measures.alignment.CovarianceAccumulator, updated batch by batch (float64).
Reference: stack the activations of every batch, convert to float64, one matmul A^T A / rows. The batches cycle
through a pool of a few resident activation tensors, so the input memory is the same at N and 4N batches.

    python benchmarks/run_all.py --only covariance                   # 10 batches of 128 x 256 x 8 x 8
    python benchmarks/run_all.py --only covariance --size large      # seed002's D_3 = 640 channels at 16 x 16
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from benchmarks.bench_kernels import for_peak_memory
from benchmarks.common import Result, best_time, max_rel_diff, peak_memory_mb
from measures.alignment import CovarianceAccumulator

SIZES = {"default": dict(batch=128, channels=256, side=8, batches=10),
         "large": dict(batch=128, channels=640, side=16, batches=12)}
POOL = 4  # distinct activation tensors the batches cycle through


def activation_pool(cfg: dict, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """POOL float32 activations (B, C, H, W) with correlated channels (rotated power-law variances, ~1/m)."""
    B, C, S = cfg["batch"], cfg["channels"], cfg["side"]
    rotation = torch.linalg.qr(torch.randn(C, C, generator=generator, device=device))[0]
    scales = torch.arange(1, C + 1, device=device, dtype=torch.float32).rsqrt()
    rows = [(torch.randn(B * S * S, C, generator=generator, device=device) * scales) @ rotation.T
            for _ in range(POOL)]
    return [r.reshape(B, S, S, C).permute(0, 3, 1, 2).contiguous() for r in rows]


def loader(pool: list[torch.Tensor], batches: int) -> Iterator[torch.Tensor]:
    """`batches` activations (B, C, H, W), cycling through the pool, as a data loader + forward pass would give."""
    for i in range(batches):
        yield pool[i % len(pool)]


def streaming(pool: list[torch.Tensor], batches: int) -> torch.Tensor:
    """Toolkit: (C, C) float64 covariance from running sums, one batch at a time."""
    accumulator = CovarianceAccumulator()
    for activation in loader(pool, batches):
        accumulator.update(activation)
    return accumulator.compute().cross


def stacked(pool: list[torch.Tensor], batches: int) -> torch.Tensor:
    """Reference: (C, C) float64 covariance of all rows stacked."""
    A = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x in loader(pool, batches)]).double()
    return A.T @ A / A.shape[0]


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    pool = activation_pool(cfg, torch.Generator(device=device).manual_seed(0), device)
    n = cfg["batches"]
    peak_4n = peak_memory_mb(for_peak_memory(lambda: streaming(pool, 4 * n), device), device)
    peaks = [peak_memory_mb(for_peak_memory(lambda fn=fn: fn(pool, n), device), device) for fn in (streaming, stacked)]
    rows = n * cfg["batch"] * cfg["side"] ** 2
    return [Result(f"activation covariance {rows} rows x C={cfg['channels']}",
                   best_time(lambda: streaming(pool, n), device), best_time(lambda: stacked(pool, n), device),
                   max_rel_diff(streaming(pool, n), stacked(pool, n)), *peaks,
                   note=f"streaming peak {peaks[0]:.0f} MB at {n} batches, {peak_4n:.0f} MB at {4 * n}")]
