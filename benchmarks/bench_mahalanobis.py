"""Mahalanobis OOD scores (seed000 §7): streaming ClassGaussians + batched scoring vs "fit all, then diag(B x B)".

Toolkit: `ClassGaussians.update` batch by batch (float64 running sums), `finalize` (eigh of the tied covariance), then
`mahalanobis` on each test batch at d = D (never a B x B matrix). Reference, the form of pytorch-ood and OpenOOD
(spec/ecosystem.md §1.6): stack every feature, fit class means and the tied covariance, invert it, and score all
test features at once with ((Z - mu_c) P (Z - mu_c)^T).diag() per class, then the minimum over classes. Same
covariance on both sides (pooled, divided by N, no ridge), float64, so the distances must agree.

    python benchmarks/run_all.py --only mahalanobis                  # 10,000 train / 2,000 test features, D = 256
    python benchmarks/run_all.py --only mahalanobis --size large     # CIFAR scale: 50,000 / 10,000, D = 512
"""
from __future__ import annotations

import math

import torch

from benchmarks.bench_kernels import for_peak_memory
from benchmarks.common import Result, best_time, max_rel_diff, peak_memory_mb
from measures.ood import ClassGaussians, mahalanobis

SIZES = {"default": dict(train=10000, test=2000, dim=256, classes=10, batch=500),
         "large": dict(train=50000, test=10000, dim=512, classes=10, batch=500)}


def class_features(n: int, cfg: dict, generator: torch.Generator, device: torch.device):
    """n float32 features (n, D) with labels (n,): class means plus a shared, rotated power-law noise."""
    D, nc = cfg["dim"], cfg["classes"]
    means = torch.randn(nc, D, generator=generator, device=device) / math.sqrt(D) * 4
    rotation = torch.linalg.qr(torch.randn(D, D, generator=generator, device=device))[0]
    scales = torch.arange(1, D + 1, device=device, dtype=torch.float32).rsqrt()          # variance ~ 1/m
    labels = torch.randint(nc, (n,), generator=generator, device=device)
    return means[labels] + (torch.randn(n, D, generator=generator, device=device) * scales) @ rotation.T, labels


def batches(features: torch.Tensor, labels: torch.Tensor, cfg: dict):
    """([features (B, D)], [labels (B,)]) as a loader would give them."""
    return list(features.split(cfg["batch"])), list(labels.split(cfg["batch"]))


def streaming(train, test, cfg: dict) -> torch.Tensor:
    """Toolkit: running-sum fit, then partial Mahalanobis at d = D, one test batch at a time. Returns (N_test,)."""
    gaussians = ClassGaussians(cfg["classes"])
    for features, labels in zip(*train):
        gaussians.update(features, labels)
    gaussians.finalize()
    # Scores go into one preallocated output: per-batch results kept in a list between the large per-batch
    # temporaries fragment glibc's heap, and the process RSS then grows with the number of batches.
    scores = torch.empty(sum(len(features) for features in test[0]), dtype=torch.float64, device=test[0][0].device)
    start = 0
    for features in test[0]:
        scores[start:start + len(features)] = mahalanobis(features, gaussians, [cfg["dim"]])[0][:, 0]
        start += len(features)
    return scores


def stacked(train, test, cfg: dict) -> torch.Tensor:
    """Reference: all features stacked, inverse covariance, diag of a B x B matrix per class. Returns (N_test,)."""
    Z, y = torch.cat(train[0]).double(), torch.cat(train[1])
    means = torch.stack([Z[y == c].mean(0) for c in range(cfg["classes"])])
    centred = Z - means[y]
    precision = torch.linalg.inv(centred.T @ centred / len(Z))
    Z_test = torch.cat(test[0]).double()
    scores = torch.stack([((Z_test - mu) @ precision @ (Z_test - mu).T).diag() for mu in means], 1)
    return scores.min(1).values


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    generator = torch.Generator(device=device).manual_seed(0)
    features, labels = class_features(4 * (cfg["train"] + cfg["test"]), cfg, generator, device)
    split = 4 * cfg["train"]
    train, test = batches(features[:split], labels[:split], cfg), batches(features[split:], labels[split:], cfg)
    quarter = [(x[:len(x) // 4], y[:len(y) // 4]) for x, y in (train, test)]          # N = a quarter of the data
    peak_4n = peak_memory_mb(for_peak_memory(lambda: streaming(train, test, cfg), device), device)
    peaks = [peak_memory_mb(for_peak_memory(lambda fn=fn: fn(*quarter, cfg), device), device)
             for fn in (streaming, stacked)]
    diff = max_rel_diff(streaming(*quarter, cfg), stacked(*quarter, cfg))
    return [Result(f"mahalanobis fit+score N={cfg['train']}+{cfg['test']} D={cfg['dim']}",
                   best_time(lambda: streaming(*quarter, cfg), device),
                   best_time(lambda: stacked(*quarter, cfg), device, repeat=1), diff, *peaks,
                   note=f"streaming peak {peaks[0]:.0f} MB at N, {peak_4n:.0f} MB at 4N")]
