"""The 1-D scale-detection task of seed004 §2.12 ("scale1d"; paper Fig. 7): two active sites on a line of length L.

- Samples: all unordered pairs r1 < r2 of distinct sites of 0..L-1, in `itertools.combinations` order (the
  original's create_dataset; 8128 pairs for L = 128).
- Labels, task "block" (the original's task 2, the one the paper uses): label 1 (hinge +1) when both sites lie in
  the same block of size xi, floor(r1 / xi) == floor(r2 / xi), else label 0 (hinge -1); for L = 128, xi = 32:
  1984 same-block pairs, 6144 others. Task "distance" (task 1): with the periodic distance
  d = min(|r2 - r1|, L - |r2 - r1|), label 1 when d < xi - gap, label 0 when d >= xi + gap (gap NOT halved,
  unlike twopoints), pairs in between dropped.
- Signal: one channel of length L, zeros with sqrt(L / 2) at both sites (||x||^2 = L: the mean squared site is 1).
  Stored as images (N, 1, 1, L) so that every ImageData is (N, C, H, W); the 1-D nets take (B, C, 1, L) or
  (B, C, L). Not normalised (mean 0, std 1).
- Splits, class-balanced as the original's training script (P = 1024 training points, 128 validation, the rest
  test; seeds 0-9): each class permuted by a private generator seeded with `seed` (label 0 first) and both cut to
  the smaller class's size n; "train" = the first ptr/2 of each class, "val" = the next VALIDATION/2 of each,
  "test" = the rest of each (L = 128, xi = 32: 1984 per class, so 512 + 64 + 1408 each); within a split label 0
  comes first. "probe" (the stability probes): a class-balanced tenth of all pairs, as the original measured
  on (nplus + nminus) // 10 pairs, half from each class, drawn by a generator seeded PROBE_SEED (independent of
  `seed`; it overlaps the training set, as the original's did).

extras["sites"] holds the (N, 2) int64 positions, so the stability code can move them (`measures.stability.
move_sites`, the task's "diffeomorphism") and redraw them with `render_sites`.
"""
from __future__ import annotations

import numpy as np
import torch

from utils.errors import ToolkitError

VALIDATION = 128
PROBE_SEED = 123456789
TASKS = ("block", "distance")


def render_sites(sites: torch.Tensor, length: int, value: float | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Signals (N, 1, 1, length) with `value` (default sqrt(length / 2)) added at each of the (N, K) sites."""
    value = (length / 2) ** 0.5 if value is None else value
    sites = sites.long()
    signals = torch.zeros(sites.shape[0], length, dtype=dtype, device=sites.device)
    signals.scatter_add_(1, sites, torch.full(sites.shape, value, dtype=dtype, device=sites.device))
    return signals.reshape(-1, 1, 1, length)


def site_pairs(length: int = 128, xi: int = 32, gap: float = 0, task: str = "block") -> tuple[np.ndarray, np.ndarray]:
    """All labelled pairs of the task (module docstring): sites (M, 2) with r1 < r2 and labels (M,) in {0, 1}."""
    if task not in TASKS:
        raise ToolkitError(f"scale1d: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if length < 2 or xi < 1:
        raise ToolkitError(f"scale1d: need length >= 2 and xi >= 1, got length={length}, xi={xi}")
    first, second = np.triu_indices(length, k=1)
    sites = np.stack([first, second], axis=1)
    if task == "block":
        return sites, (first // xi == second // xi).astype(np.int64)
    delta = second - first
    distance = np.minimum(delta, length - delta)
    keep = (distance < xi - gap) | (distance >= xi + gap)
    return sites[keep], (distance[keep] < xi - gap).astype(np.int64)


def load_scale1d(split: str, length: int = 128, xi: int = 32, gap: float = 0, task: str = "block", ptr: int = 1024,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One split of the 1-D task (module docstring; seed004 §2.12).

    Args:
      split: "train" (ptr samples), "val" (VALIDATION), "test" (the rest) or "probe" (a balanced tenth).
      length, xi, gap, task: the task.
      ptr: number of training samples.
      seed: seed of the permutation that makes the train/val/test split.

    Returns:
      signals (N, 1, 1, length) float32, labels (N,) int64 (1 = same block / close, hinge +1), sites (N, 2) int64.
    """
    sites, labels = (torch.as_tensor(a) for a in site_pairs(length, xi, gap, task))
    classes = [torch.nonzero(labels == c).flatten() for c in (0, 1)]
    if split == "probe":
        generator, half = torch.Generator().manual_seed(PROBE_SEED), len(labels) // 20
    else:
        generator, n = torch.Generator().manual_seed(seed), min(len(c) for c in classes)
        bounds = {"train": (0, ptr // 2), "val": (ptr // 2, (ptr + VALIDATION) // 2),
                  "test": ((ptr + VALIDATION) // 2, n)}
        if split not in bounds:
            raise ToolkitError(f"scale1d has no split {split!r}; choose one of train, val, test, probe")
        if ptr < 2 or (ptr + VALIDATION) // 2 >= n:
            raise ToolkitError(f"scale1d: {n} pairs per class are too few for ptr={ptr} plus {VALIDATION} validation "
                               "pairs and a test set; lower ptr, raise length or change xi")
    if split == "probe" and min(len(c) for c in classes) < half:
        raise ToolkitError(f"scale1d: a class has fewer than {half} pairs for the probe set; change xi or length")
    picks = []
    for members in classes:
        members = members[torch.randperm(len(members), generator=generator)]
        picks.append(members[:half] if split == "probe" else members[slice(*bounds[split])])
    pick = torch.cat(picks)
    return render_sites(sites[pick], length), labels[pick], sites[pick]
