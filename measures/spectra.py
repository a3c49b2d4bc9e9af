"""Weight singular values, low-rank truncation and spectral dimensions (seed000 §6.1, §10).

A conv weight (out, in, kh, kw) is read as the matrix (out, in kh kw) acting on flattened patches; a Linear weight
is already (out, in). Its plain SVD W = U diag(s) V^T gives, for a relative threshold r, the rank
k(r) = #{s_j > r s_0} and two weights of the original shape:

    W_k  = U_k diag(s_1..s_k) V_k^T     (rank-k truncation; the "compressed" net of seed000 §6.2)
    Pi_k = U_k V_k^T                    (the "projector": ||Pi_k p|| = ||V_k^T p|| for every patch p)

    svd = weight_svd(conv.weight)                        # one SVD per layer ...
    ks = rank_at_ratio(svd.S, threshold_ratios())        # ... for all 53 ratios
    W_k, Pi_k = truncate(svd, int(ks[10]))

Effective dimensions: stable_rank = sum v^2 / max v^2 (v = singular values of a weight, or eigenvalues of a
covariance, seed000 §10) and participation_ratio = (sum l)^2 / sum l^2 (eigenvalues l of a covariance).
SVDs are computed in float64; truncated weights come back in the weight's dtype and on its device.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = [
    "conv_weight_matrix", "threshold_ratios", "rank_at_ratio", "stable_rank", "participation_ratio",
    "WeightSVD", "weight_svd", "truncate", "low_rank", "full_rank_params", "residual_params",
]


def conv_weight_matrix(w: torch.Tensor) -> torch.Tensor:
    """Weight as the matrix acting on flattened patches (seed000 §6.1).

    Args:
      w: (out, in, kh, kw) conv weight (any number of kernel dims) or (out, in) Linear weight.

    Returns:
      (out, in * kh * kw) view of w; a 2-D weight is returned unchanged.
    """
    return w.reshape(w.shape[0], -1)


def threshold_ratios(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 53 relative singular-value thresholds of seed000 §6.1, ascending.

    [1e-6, 1e-5, 1e-4] + [10^(0.1 i - 3), i = 0..9] + [10^(0.05 i - 2), i = 0..39]; the largest is 10^-0.05 ~ 0.891.

    Returns:
      (53,) tensor.
    """
    exponents = [-6.0, -5.0, -4.0] + [0.1 * i - 3 for i in range(10)] + [0.05 * i - 2 for i in range(40)]
    return torch.tensor([10.0**e for e in exponents], dtype=dtype)


def rank_at_ratio(s: torch.Tensor, r: float | torch.Tensor) -> torch.Tensor:
    """Number of singular values above a relative threshold, k(r) = #{s_j > r s_0} clipped to [1, len(s)] (§6.1).

    Args:
      s: (m,) singular values, descending (s_0 the largest).
      r: a ratio or a tensor of ratios of any shape.

    Returns:
      int64 tensor with the shape of r.
    """
    r = torch.as_tensor(r, dtype=s.dtype, device=s.device)
    counts = (s > r.unsqueeze(-1) * s[0]).sum(-1)
    return counts.clamp(1, s.numel())


def stable_rank(values: torch.Tensor) -> torch.Tensor:
    """Stable rank sum v^2 / max v^2 along the last dimension (seed000 §10).

    For the singular values of a weight this is (||W||_F / ||W||_2)^2; for the eigenvalues of a covariance it is
    sum l^2 / l_max^2, the quantity seed000 plots for the tied feature covariance.

    Args:
      values: (..., m) non-negative singular values or eigenvalues.

    Returns:
      (...) float64 tensor, between 1 and m.
    """
    values = values.to(torch.float64)
    return values.square().sum(-1) / values.amax(-1).square()


def participation_ratio(eigs: torch.Tensor) -> torch.Tensor:
    """Participation ratio (sum l)^2 / sum l^2 of covariance eigenvalues, along the last dimension.

    Args:
      eigs: (..., m) non-negative eigenvalues.

    Returns:
      (...) float64 tensor, between 1 and m.
    """
    eigs = eigs.to(torch.float64)
    return eigs.sum(-1).square() / eigs.square().sum(-1)


class WeightSVD(NamedTuple):
    """Thin SVD of a weight matrix W = U diag(S) Vh, in float64, with the weight's own shape and dtype."""

    U: torch.Tensor        # (out, m), m = min(out, fan_in)
    S: torch.Tensor        # (m,) descending
    Vh: torch.Tensor       # (m, fan_in)
    shape: torch.Size      # original weight shape, e.g. (out, in, kh, kw)
    dtype: torch.dtype     # original weight dtype


def weight_svd(W: torch.Tensor) -> WeightSVD:
    """One float64 SVD of a conv or Linear weight, to be reused for every rank (seed000 §6.1).

    Args:
      W: (out, in, kh, kw) or (out, in) weight.

    Returns:
      WeightSVD of conv_weight_matrix(W).
    """
    U, S, Vh = torch.linalg.svd(conv_weight_matrix(W.detach()).to(torch.float64), full_matrices=False)
    return WeightSVD(U, S, Vh, W.shape, W.dtype)


def truncate(svd: WeightSVD, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-k truncation W_k = U_k diag(S_k) V_k^T and projector weight Pi_k = U_k V_k^T (seed000 §6.1).

    By Eckart-Young, W_k is the best rank-k approximation: ||W - W_k||_F^2 = sum_{j>k} s_j^2.

    Args:
      svd: result of weight_svd(W).
      k: rank, 1 <= k <= len(svd.S).

    Returns:
      (W_k, Pi_k), both with the original weight's shape and dtype.
    """
    if not 1 <= k <= svd.S.numel():
        raise ValueError(f"rank k must be in [1, {svd.S.numel()}], got {k}")
    Uk, Vhk = svd.U[:, :k], svd.Vh[:k]
    W_k = (Uk * svd.S[:k]) @ Vhk
    Pi_k = Uk @ Vhk
    return W_k.reshape(svd.shape).to(svd.dtype), Pi_k.reshape(svd.shape).to(svd.dtype)


def low_rank(W: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-k truncation and projector weight of one weight (seed000 §6.1); see `truncate` to reuse one SVD.

    Args:
      W: (out, in, kh, kw) or (out, in) weight.
      k: rank, 1 <= k <= min(out, in kh kw).

    Returns:
      (W_k, Pi_k) with W's shape and dtype.
    """
    return truncate(weight_svd(W), k)


def _fan_in_out(shape: Sequence[int]) -> tuple[int, int]:
    return math.prod(shape[1:]), shape[0]


def full_rank_params(shapes: Sequence[Sequence[int]]) -> int:
    """Parameters of the factored weights at full rank, sum_l m_l (fan_in_l + out_l), m_l = min(out_l, fan_in_l).

    This is the denominator of seed000 §10's "residual number of params": 12,385,789 for the CIFAR ResNet-18 and
    10,624,509 for VGG-13 with 10 classes (main-path convs and the classifier, shortcut convs excluded).

    Args:
      shapes: weight shapes (out, in, kh, kw) or (out, in), one per layer.

    Returns:
      the count as an int.
    """
    total = 0
    for shape in shapes:
        fan_in, out = _fan_in_out(shape)
        total += min(out, fan_in) * (fan_in + out)
    return total


def residual_params(ks: torch.Tensor | Sequence[int], shapes: Sequence[Sequence[int]]) -> torch.Tensor:
    """Residual number of params, sum_l k_l (fan_in_l + out_l) / full_rank_params(shapes) (seed000 §10).

    A rank-k layer is stored as U_k diag(s) (out x k) and V_k^T (k x fan_in), i.e. k (fan_in + out) numbers.

    Args:
      ks: (..., L) ranks, one per layer in the order of `shapes` (e.g. (53, L) for every threshold ratio).
      shapes: L weight shapes.

    Returns:
      (...) float64 tensor of fractions in (0, 1].
    """
    sizes = torch.tensor([sum(_fan_in_out(shape)) for shape in shapes], dtype=torch.float64)
    ks = torch.as_tensor(ks, dtype=torch.float64)
    return (ks * sizes.to(ks.device)).sum(-1) / full_rank_params(shapes)
