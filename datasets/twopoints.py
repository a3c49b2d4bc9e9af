"""The scale-detection task of seed004 §2.8 ("twopoints"): are two active pixels closer than xi?

- Candidate points: the pixels (i, j) of a d x d grid with i != j. This is the original's quirk (it took
  `itertools.permutations(range(d), 2)`): diagonal pixels are never active. 756 points for d = 28.
- Samples: all unordered pairs of distinct points, in `itertools.combinations` order (285,390 for d = 28).
- Distance: Euclidean ("L2") or max ("Linf") of the coordinate differences; with pbc each difference becomes
  min(|delta|, d - |delta|).
- Classes: label 0 "far" when dist >= xi + gap/2, label 1 "close" when dist < xi - gap/2; pairs in between are
  dropped. For d=28, xi=14, gap=2: far 135,397, close 120,767. Training with the hinge loss maps
  y = 2 * label - 1, so close = +1 and far = -1 (seed004 §7.4).
- Split, as the original: both classes are permuted by one private generator seeded 123456789 (far first, then
  close). Test = the last testsize/2 of each class, with testsize = 4 ptr for "test" and 5000 for "probe" (the
  stability probes; these overlap a little with the training pool, seed004 §7.5). The training pool is the rest
  of each class truncated to the smaller class (P each, far then close), and the training set is
  `randperm(2 P)[:ptr]` under `seed` (a private generator; not class-balanced).
- Image: one channel d x d, zeros with +1 at both points, divided by m = 2/d^2: active pixels are d^2/2 = 392
  for d = 28, so the mean pixel is 1. No normalisation is applied afterwards (mean 0, std 1).

extras["points"] holds the (N, 2, 2) integer (row, col) coordinates of the two points, so the stability code
can move them (the twopoints "diffeomorphism", seed004 §2.8) and redraw with `render_points`.
"""
from __future__ import annotations

import numpy as np
import torch

from utils.errors import ToolkitError

SPLIT_SEED = 123456789
PROBE_TESTSIZE = 5000
NORMS = ("L2", "Linf")


def render_points(
    points: torch.Tensor, d: int, value: float | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Draw active pixels on empty one-channel images, as the twopoints dataset does (seed004 §2.8).

    Each point adds `value` to its pixel (two points on the same pixel give 2 value, keeping the total mass).

    Args:
      points: (N, P, 2) integer pixel coordinates (row, col).
      d: image side.
      value: pixel value of an active point; default d^2 / 2 (392 for d=28), so the mean pixel is 1.
      dtype: dtype of the images.

    Returns:
      (N, 1, d, d) images.
    """
    value = d * d / 2 if value is None else value
    points = points.long()
    index = points[..., 0] * d + points[..., 1]                                        # (N, P)
    images = torch.zeros(points.shape[0], d * d, dtype=dtype, device=points.device)
    images.scatter_add_(1, index, torch.full(index.shape, value, dtype=dtype, device=points.device))
    return images.reshape(-1, 1, d, d)


def candidate_points(d: int) -> np.ndarray:
    """(d (d - 1), 2) pixel coordinates (row, col) with row != col, in lexicographic order."""
    rows, cols = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    keep = rows != cols
    return np.stack([rows[keep], cols[keep]], axis=1)


def pair_distances(a: np.ndarray, b: np.ndarray, d: int, norm: str = "L2", pbc: bool = False) -> np.ndarray:
    """Distances (M,) between points a (M, 2) and b (M, 2) on the d x d grid, in `norm`, periodic if `pbc`."""
    delta = np.abs(a - b).astype(np.float64)
    if pbc:
        delta = np.minimum(delta, d - delta)
    return np.sqrt((delta ** 2).sum(1)) if norm == "L2" else delta.max(1)


def class_pairs(d: int = 28, xi: float = 14, gap: float = 2, norm: str = "L2",
                pbc: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All labelled pairs of the task, before the split (module docstring).

    Returns:
      points (K, 2) candidate pixels; far (F, 2) and close (C, 2) pairs of indices into points, each pair
      (first, second) with first < second, in `itertools.combinations` order.
    """
    if norm not in NORMS:
        raise ToolkitError(f"twopoints: unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    points = candidate_points(d)
    first, second = np.triu_indices(len(points), k=1)
    dist = pair_distances(points[first], points[second], d, norm, pbc)
    pairs = np.stack([first, second], axis=1)
    return points, pairs[dist >= xi + gap / 2], pairs[dist < xi - gap / 2]


def load_twopoints(split: str, d: int = 28, xi: float = 14, gap: float = 2, norm: str = "L2", pbc: bool = False,
                   ptr: int = 1024, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One split of the twopoints task (module docstring; seed004 §2.8).

    Args:
      split: "train" (ptr samples), "test" (4 ptr samples) or "probe" (5000 samples).
      d, xi, gap, norm, pbc: the task (image side, class scale, gap between classes, distance).
      ptr: number of training samples; also sets the test size 4 ptr.
      seed: seed of the draw of the training subset.

    Returns:
      images (N, 1, d, d) float32 with active pixels d^2/2, labels (N,) int64 (0 far, 1 close),
      points (N, 2, 2) int64 (row, col) of the two active pixels.
    """
    points, far, close = class_pairs(d, xi, gap, norm, pbc)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    far, close = (torch.as_tensor(c)[torch.randperm(len(c), generator=generator)] for c in (far, close))
    half = (PROBE_TESTSIZE if split == "probe" else 4 * ptr) // 2
    pool_size = min(len(far), len(close)) - half
    if pool_size <= 0 or (split == "train" and ptr > 2 * pool_size):
        raise ToolkitError(f"twopoints: far {len(far)} / close {len(close)} pairs are too few for ptr={ptr} "
                           f"(test {half} per class); lower ptr or change d, xi, gap")
    if split == "train":
        pairs = torch.cat([far[:pool_size], close[:pool_size]])
        labels = torch.cat([torch.zeros(pool_size), torch.ones(pool_size)]).long()
        pick = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:ptr]
        pairs, labels = pairs[pick], labels[pick]
    else:
        pairs = torch.cat([far[-half:], close[-half:]])
        labels = torch.cat([torch.zeros(half), torch.ones(half)]).long()
    coords = torch.as_tensor(points)[pairs]  # (N, 2, 2)
    return render_points(coords, d), labels, coords
