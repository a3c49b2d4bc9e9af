"""Shared data of the measures/alignment.py tests: seeded generators, Haar rotations from scipy, correlated
activations and the numpy space-as-samples reshaping."""
import numpy as np
import scipy.stats
import torch


def rng(seed):
    return torch.Generator().manual_seed(seed)


def rotation(d, seed):
    """Haar-random orthogonal matrix from scipy (independent of the module's own random_basis)."""
    return torch.from_numpy(scipy.stats.ortho_group.rvs(d, random_state=seed))


def correlated(shape, seed):
    """Float64 activations (n, D) or (B, C, H, W) whose channels have unequal, correlated second moments."""
    g = rng(seed)
    channels = shape[1]
    mixing = torch.randn(channels, channels, generator=g, dtype=torch.float64) * torch.linspace(2.0, 0.2, channels)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    return torch.einsum("dc,bc...->bd...", mixing, x)


def rotate_channels(matrix, x):
    """Apply a (D', D) matrix to the channel dimension (dim 1) of (n, D) or (B, D, H, W) activations."""
    return torch.einsum("dc,bc...->bd...", matrix, x)


def np_rows(x):
    """numpy reference of the space-as-samples reshaping: (B, C, H, W) -> (B H W, C)."""
    x = np.asarray(x)
    return x if x.ndim == 2 else x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
