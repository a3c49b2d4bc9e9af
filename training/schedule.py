"""Learning-rate schedules in closed form, so that resuming needs no scheduler state (exact restarts).

Each function gives the learning rate of the optimisation step `iteration` (0-based, counted over the whole
run) for a recipe; the loop sets it on every parameter group before each step.
"""
from __future__ import annotations

import math

from training.recipes import Recipe


def learning_rate(recipe: Recipe, iteration: int, iters_per_epoch: int) -> float:
    """Learning rate at a global step (seed000 §4 per-iteration cosine; seed004 §3 per-epoch cosine, ...)."""
    epoch = iteration // iters_per_epoch
    if recipe.schedule == "cosine_iter":
        total = recipe.epochs * iters_per_epoch
        return recipe.lr * (1 + math.cos(math.pi * iteration / total)) / 2
    if recipe.schedule == "cosine_epoch":
        # PyTorch's CosineAnnealingLR closed form; past T_max it rises again, as in seed004 (§7.6).
        t_max = max(1, round(recipe.cosine_fraction * recipe.epochs))
        return recipe.lr * (1 + math.cos(math.pi * epoch / t_max)) / 2
    if recipe.schedule == "multistep":
        return recipe.lr * recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** (epoch // recipe.step_size)
    if recipe.schedule == "constant":
        return recipe.lr
    raise ValueError(f"unknown schedule {recipe.schedule!r}")
