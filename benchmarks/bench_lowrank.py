"""Low-rank sweep of analyzing.py (seed000 §6.1-6.2): one SVD per layer for all 53 ratios vs one SVD per ratio.

Toolkit: `weight_svd` once per layer, `rank_at_ratio` for the 53 `threshold_ratios`, then `truncate` (W_k and Pi_k)
for every (ratio, layer), in the order analyzing.py installs them. Reference: for every ratio and layer, a fresh
torch.linalg.svd of the reshaped weight, k = #{s > r s_0} clipped to [1, len(s)], and the same two products.
Weights of models.build_model("resnet18", 10, width=0.5) (default) or width 1 (large, seed000's net).

    python benchmarks/run_all.py --only lowrank
    python benchmarks/run_all.py --only lowrank --size large
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from benchmarks.common import Result, best_time, max_rel_diff, sync
from measures.spectra import rank_at_ratio, threshold_ratios, truncate, weight_svd
from models import build_model

SIZES = {"default": dict(width=0.5), "large": dict(width=1.0)}


def toolkit_sweep(weights: list[torch.Tensor], ratios: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(W_k, Pi_k) for every ratio, then every layer, from one SVD per layer."""
    svds = [weight_svd(W) for W in weights]
    ranks = torch.stack([rank_at_ratio(svd.S, ratios.to(svd.S.device)) for svd in svds])     # (L, 53)
    for column in range(len(ratios)):
        for svd, k in zip(svds, ranks[:, column].tolist()):
            yield truncate(svd, k)


def reference_sweep(weights: list[torch.Tensor], ratios: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(W_k, Pi_k) for every ratio, then every layer, with a new SVD each time."""
    for r in ratios.tolist():
        for W in weights:
            U, S, Vh = torch.linalg.svd(W.reshape(W.shape[0], -1).double(), full_matrices=False)
            k = int((S > r * S[0]).sum().clamp(1, len(S)))
            W_k = (U[:, :k] * S[:k]) @ Vh[:k]
            Pi_k = U[:, :k] @ Vh[:k]
            yield W_k.reshape(W.shape).to(W.dtype), Pi_k.reshape(W.shape).to(W.dtype)


def reference_time_and_diff(weights, ratios, device: torch.device) -> tuple[float, float]:
    """Time of one reference sweep (its steps only) and the largest relative difference from the toolkit's
    weights, compared pair by pair as they come (all 53 x L pairs would not fit in memory at width 1)."""
    toolkit, reference = toolkit_sweep(weights, ratios), reference_sweep(weights, ratios)
    seconds, diff = 0.0, 0.0
    while True:
        sync(device)
        start = time.perf_counter()
        pair = next(reference, None)
        sync(device)
        seconds += time.perf_counter() - start
        if pair is None:
            return seconds, diff
        diff = max([diff] + [max_rel_diff(mine, theirs) for mine, theirs in zip(next(toolkit), pair)])


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=cfg["width"]).to(device)
    weights = [layer.weight.detach() for layer in model.weight_layers()]
    ratios = threshold_ratios()

    def toolkit():
        for _ in toolkit_sweep(weights, ratios):
            pass

    reference_s, diff = reference_time_and_diff(weights, ratios, device)       # also runs (warms) the toolkit
    return [Result(f"low-rank sweep resnet18 w={cfg['width']} ({len(weights)} layers x {len(ratios)} ratios)",
                   best_time(toolkit, device, warmup=0), reference_s, diff, note="diff over every W_k and Pi_k")]
