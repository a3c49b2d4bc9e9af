"""Spectra of conv filters on the eigenmodes of the grid Laplacian (seed004 §2.9).

A filter that pools space (a constant, or a slowly varying filter) lives on the low modes of the Laplacian of its
N x N pixel grid; a random filter spreads evenly over all modes. Trained nets move the filters' energy onto the
low modes, mostly in early layers (seed004 §1, claim 2).

    eigenvalues, modes = laplacian_modes(3)          # 0, 1, 1, 2, 3, 3, 4, 4, 6 and (9, 3, 3) modes
    a = laplacian_spectrum(conv.weight)              # (9,) energy per mode, a[0] = constant (pooling) part
"""
from __future__ import annotations

import math

import torch

__all__ = ["grid_laplacian", "laplacian_modes", "laplacian_spectrum"]


def grid_laplacian(N: int) -> torch.Tensor:
    """Graph Laplacian L = D - A of the N x N pixel grid, 4-neighbour adjacency, free boundary (seed004 §2.9).

    Pixel (r, c) is index r N + c; A has 1 between horizontal and vertical neighbours, D is the degree
    (2 in corners, 3 on edges, 4 inside).

    Args:
      N: grid side (the filter size).

    Returns:
      (N^2, N^2) float64 symmetric matrix whose rows sum to 0.
    """
    path = torch.zeros(N, N, dtype=torch.float64)            # Laplacian of the path graph 0 - 1 - ... - N-1
    index = torch.arange(N - 1)
    path[index, index + 1] = path[index + 1, index] = -1.0
    path -= torch.diag(path.sum(1))
    eye = torch.eye(N, dtype=torch.float64)
    return torch.kron(path, eye) + torch.kron(eye, path)    # rows (r) and columns (c) of the grid


def laplacian_modes(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal eigenmodes psi_k of the grid Laplacian, ordered by eigenvalue (seed004 §2.9).

    The free-boundary grid Laplacian is the sum of two path Laplacians, whose eigenvectors are the DCT-II cosines
    u_a(p) = cos(pi a (p + 1/2) / N) (normalised) with eigenvalues 2 - 2 cos(pi a / N). We return the products
    psi(r, c) = u_a(r) u_b(c) with eigenvalue mu_a + mu_b. They are an exact eigenbasis (as eigh's would be),
    but unlike eigh's they are reproducible inside degenerate eigenspaces: mode 0 is constant, and the two
    lambda=1 modes for N=3 are the column (a=0, b=1) and row (a=1, b=0) gradients. Ties are ordered by (a, b).

    Args:
      N: grid side.

    Returns:
      eigenvalues: (N^2,) float64, ascending (0, 1, 1, 2, 3, 3, 4, 4, 6 for N=3).
      modes: (N^2, N, N) float64; modes[k] is psi_k, orthonormal under the Frobenius inner product.
    """
    a = torch.arange(N, dtype=torch.float64)
    p = torch.arange(N, dtype=torch.float64)
    cosines = torch.cos(math.pi * a[:, None] * (p[None, :] + 0.5) / N)                 # (N, N): [a, p]
    cosines = cosines / cosines.norm(dim=1, keepdim=True)
    path_eigenvalues = 2 - 2 * torch.cos(math.pi * a / N)
    eigenvalues = (path_eigenvalues[:, None] + path_eigenvalues[None, :]).flatten()    # index a N + b
    modes = torch.einsum("ar,bc->abrc", cosines, cosines).reshape(N * N, N, N)
    order = sorted(range(N * N), key=lambda k: (round(eigenvalues[k].item(), 9), k))
    return eigenvalues[order], modes[order]


def laplacian_spectrum(weight: torch.Tensor) -> torch.Tensor:
    """Energy of a conv layer's filters on each grid-Laplacian mode: a_k = mean_s <w_s, psi_k>^2 (seed004 §2.9).

    The weight is read as out*in filter slices w_s of size N x N; there is no per-filter normalisation. By
    Parseval, sum_k a_k is the mean squared Frobenius norm of the slices; an i.i.d. Gaussian filter bank has a flat
    spectrum in expectation, a constant filter has all its energy in a_0.

    Args:
      weight: (out, in, N, N) conv weight (square kernel), any float dtype and device.

    Returns:
      (N^2,) float64 tensor on the weight's device, ordered like `laplacian_modes(N)`.
    """
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"need a conv weight (out, in, N, N) with a square kernel, got {tuple(weight.shape)}")
    N = weight.shape[-1]
    _, modes = laplacian_modes(N)
    slices = weight.detach().reshape(-1, N * N).double()                               # (out*in, N^2)
    coefficients = slices @ modes.reshape(N * N, N * N).to(weight.device).T            # (out*in, N^2)
    return coefficients.pow(2).mean(0)
