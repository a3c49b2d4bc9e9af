"""The scale-detection task of seed004 §2.8 ("twopoints"): are two active pixels closer than xi?

Candidate points are the pixels (i, j) of a d x d grid with i != j (the original's quirk: the diagonal is
never active; 756 points for d = 28), and samples are all unordered pairs of distinct points (285,390).
Label 1 ("close", hinge +1) when the distance is < xi - gap/2, label 0 ("far", hinge -1) when >= xi + gap/2;
pairs in between are dropped. Split as the original: each class permuted with a private generator (seed
123456789); test = the last testsize/2 of each class (testsize = 4 ptr, or 5000 for the "probe" split used by
the stability measurements); the train pool is the rest truncated to the smaller class, from which `ptr`
samples are drawn with randperm under `seed` (not class-balanced). Image: one channel, +1 at both points,
divided by 2/d^2 (pixel value d^2/2, so the mean pixel is 1). extras["points"] holds the (N, 2, 2) (row, col)
coordinates, so the stability code can move the points (its "diffeomorphism").
"""
from __future__ import annotations

import numpy as np
import torch

from measures.stability import render_points

SPLIT_SEED = 123456789
PROBE_TESTSIZE = 5000


def candidate_points(d: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    keep = rows != cols
    return np.stack([rows[keep], cols[keep]], axis=1)  # (d (d - 1), 2)


def pair_distances(points: np.ndarray, first: np.ndarray, second: np.ndarray, d: int, norm: str, pbc: bool):
    delta = np.abs(points[first] - points[second]).astype(np.float64)
    if pbc:
        delta = np.minimum(delta, d - delta)
    return np.sqrt((delta ** 2).sum(1)) if norm == "L2" else delta.max(1)


def class_pairs(d: int = 28, xi: float = 14, gap: float = 2, norm: str = "L2", pbc: bool = False):
    """(points, pairs of the far class, pairs of the close class); pairs index into points."""
    points = candidate_points(d)
    first, second = np.triu_indices(len(points), k=1)
    dist = pair_distances(points, first, second, d, norm, pbc)
    pairs = np.stack([first, second], axis=1)
    return points, pairs[dist >= xi + gap / 2], pairs[dist < xi - gap / 2]


def load_twopoints(split: str, ptr: int = 1024, seed: int = 0, d: int = 28, xi: float = 14, gap: float = 2,
                   norm: str = "L2", pbc: bool = False):
    """(images, labels, points) of the train, test or probe split."""
    points, far, close = class_pairs(d, xi, gap, norm, pbc)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    shuffled = [torch.as_tensor(c)[torch.randperm(len(c), generator=generator)] for c in (far, close)]
    testsize = PROBE_TESTSIZE if split == "probe" else 4 * ptr
    half = testsize // 2
    if split == "train":
        pool_size = min(len(c) - half for c in shuffled)
        pool = torch.cat([c[:pool_size] for c in shuffled])
        labels = torch.cat([torch.zeros(pool_size), torch.ones(pool_size)]).long()
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:ptr]
        pairs, labels = pool[pick], labels[pick]
    else:
        pairs = torch.cat([c[-half:] for c in shuffled])
        labels = torch.cat([torch.zeros(half), torch.ones(half)]).long()
    coords = torch.as_tensor(points)[pairs]  # (N, 2, 2)
    return render_points(coords, d), labels, coords
