"""Diffeomorphisms: one batched call (every image its own field) vs a per-image loop, as the original did."""
from __future__ import annotations

import torch

from benchmarks.common import Result, best_time, max_rel_diff
from measures.stability import diffeo, temperature_for_displacement

SIZES = {"default": dict(images=500, n=32), "large": dict(images=5000, n=32)}


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    images = torch.rand(cfg["images"], 3, cfg["n"], cfg["n"], device=device)
    temperature = temperature_for_displacement(1.0, cfg["n"], 3)

    def batched():
        return diffeo(images, temperature, 3, generator=torch.Generator(device=device).manual_seed(0))

    def per_image():
        generator = torch.Generator(device=device).manual_seed(0)
        return torch.cat([diffeo(images[i:i + 1], temperature, 3, generator=generator) for i in range(len(images))])

    # Both draw from one seeded stream, but in a different order, so compare the warp itself with T = 0.
    identity = diffeo(images, 0.0, 3)
    diff = max_rel_diff(identity, images)
    return [Result(f"diffeo {cfg['images']} images batched vs per-image", best_time(batched, device),
                   best_time(per_image, device, repeat=1), diff, note="diff: T=0 warp vs identity")]
