"""Aligning networks, their weight covariances and rainbow (resampled) networks (Guth et al. 2024; seed002 §5).

Activations are read at the input of a weight layer, with space treated as samples (seed002 §5.1): a conv
activation (B, C, H, W) becomes rows (B H W, C). All second moments are UNCENTRED (the nets standardise with BN):

    K = E[phi_ref phi_other^T]  (D_ref, D_other)    cross-covariance; Re E[phi_ref^H phi_other] for complex phi
    K = U S V^T,  A = U V^T                         alignment (orthogonal Procrustes): A phi_other ~ phi_ref
    r2 = tr S / sqrt(E||phi_ref||^2 E||phi_other||^2)

One convention everywhere: an alignment is (D_ref, D_other) and maps the other net's activations to the reference
space. A weight W_other acting on phi_other acts on phi_ref as W_other A^T; a weight W_ref acts on phi_other as
W_ref A (`weight_to_reference`, `weight_from_reference`; conv weights (N, C, k, k) contract over C only). The
spec's code stores the transpose, (D_net, D_mean), so its "W A" is our W A^T.

Weights of M aligned nets stacked row-wise give C = W^T W / N_tot (seed002 §5.3, no centring), and a rainbow net
draws each layer's rows i.i.d. N(0, C) (§5.4), transports them with the previous layer's alignment and
re-standardises the next layer's BN from the new activations' moments:

    acc = CovarianceAccumulator()
    for x in loader: acc.update(ref_taps(x), new_taps(x))     # one forward pass, every layer
    moments = acc.compute()                                    # per layer: cross, means, per-channel powers
    A = procrustes(moments[j].cross)                           # (D_ref, D_new)
    r2 = alignment_r2(moments[j].cross, moments[j].sq_norm_a, moments[j].sq_norm_b)

Statistics are accumulated in float64 (complex128 for complex activations) on the inputs' device.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from utils.device import draw_device

__all__ = [
    "as_samples", "Moments", "CovarianceAccumulator", "cross_covariance",
    "procrustes", "alignment_r2", "alignment_error", "MeanAlignment", "align_to_mean",
    "weight_to_reference", "weight_from_reference",
    "weight_covariance", "principal_components", "weight_spectrum", "whiten_weights", "relative_operator_error",
    "weight_dynamics",
    "random_basis", "sample_rainbow_weights", "sample_from_spectrum",
    "recompute_standardization", "rescale_cross_covariance",
    "clipping_projector", "clipping_grid", "clip_weight",
    "marchenko_pastur_edges", "marchenko_pastur_density", "marchenko_pastur_fraction", "positive_eigenpairs",
    "excess_kurtosis",
]


# ----------------------------------------------------------------------------------------------------------------
# Activation second moments (seed002 §5.1)
# ----------------------------------------------------------------------------------------------------------------

def as_samples(activation: torch.Tensor) -> torch.Tensor:
    """Activations as rows of channel vectors, space treated as samples (seed002 §5.1).

    Args:
      activation: (B, C, H, W) conv activation (any number of spatial dims), or (B, D) already flat.

    Returns:
      (B H W, C) with row b H W + h W + w holding activation[b, :, h, w]; a 2-D input is returned unchanged.
    """
    if activation.ndim == 2:
        return activation
    return activation.movedim(1, -1).reshape(-1, activation.shape[1])


def _samples_shape(activation: torch.Tensor) -> tuple[int, int]:
    """(rows, channels) of as_samples(activation), without reshaping."""
    return activation.shape[0] * math.prod(activation.shape[2:]), activation.shape[1]


def _to64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex128 if x.is_complex() else torch.float64)


def _real_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Re(x^H y) for rows x (n, d_x), y (n, d_y): x^T y when both are real (seed002 §3, §8: always a^H b)."""
    if not (x.is_complex() or y.is_complex()):
        return x.T @ y
    x, y = x.to(torch.complex128), y.to(torch.complex128)
    return x.real.T @ y.real + x.imag.T @ y.imag


@dataclass(frozen=True)
class Moments:
    """Uncentred first and second moments of a pair of activations over the same samples (seed002 §5.1).

    Attributes:
      cross: (D_a, D_b) float64 Re E[a^H b] (a^T b for real activations); the covariance of a when b is a.
      mean_a, mean_b: (D_a,), (D_b,) E[a], E[b] (complex for complex activations).
      power_a, power_b: (D_a,), (D_b,) float64 per-channel E|a_c|^2, E|b_c|^2 (the m2 of seed002 §5.4 c).
      rows: number of samples (rows) accumulated.
    """

    cross: torch.Tensor
    mean_a: torch.Tensor
    mean_b: torch.Tensor
    power_a: torch.Tensor
    power_b: torch.Tensor
    rows: int

    @property
    def sq_norm_a(self) -> torch.Tensor:
        """E||a||^2 = tr Cov(a) (uncentred), 0-d float64."""
        return self.power_a.sum()

    @property
    def sq_norm_b(self) -> torch.Tensor:
        """E||b||^2 = tr Cov(b) (uncentred), 0-d float64."""
        return self.power_b.sum()


class _RunningSums:
    """Running sums behind one Moments: sum a^H b, sum a, sum b, sum |a|^2, sum |b|^2 and the row count."""

    def __init__(self) -> None:
        self.sums: list[torch.Tensor] | None = None
        self.rows = 0

    def check(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Raise before anything is added if activations a, b do not fit this layer (shapes only, no copy)."""
        (rows_a, channels_a), (rows_b, channels_b) = _samples_shape(a), _samples_shape(b)
        if rows_a != rows_b:
            raise ValueError(f"a and b must hold the same samples, got {rows_a} and {rows_b} rows")
        if self.sums is not None and self.sums[0].shape != (channels_a, channels_b):
            raise ValueError(f"expected activations with {tuple(self.sums[0].shape)} channels, "
                             f"got {(channels_a, channels_b)}")

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        if b is a:  # auto-covariance: one conversion, and sum |a|^2 is the diagonal of Re a^H a
            a = _to64(as_samples(a))
            cross, total = _real_inner(a, a), a.sum(0)
            power = cross.diagonal().clone()
            batch = [cross, total, total, power, power]
        else:
            a, b = _to64(as_samples(a)), _to64(as_samples(b))
            batch = [_real_inner(a, b), a.sum(0), b.sum(0), a.abs().square().sum(0), b.abs().square().sum(0)]
        self.sums = batch if self.sums is None else [total + new for total, new in zip(self.sums, batch)]
        self.rows += a.shape[0]

    def moments(self) -> Moments:
        cross, sum_a, sum_b, power_a, power_b = (total / self.rows for total in self.sums)
        return Moments(cross, sum_a, sum_b, power_a, power_b, self.rows)


class CovarianceAccumulator:
    """Streaming uncentred (cross-)covariance E[a^T b] of one or many layers (seed002 §5.1).

    Each update adds sum_rows Re(a^H b) (float64) and divides by the number of rows at compute(); no mean is
    subtracted (seed002 §5.1). Conv activations are reshaped with `as_samples`. For complex activations (the
    skip variant of seed002 §3) the cross term is always the real part of a^H b, never a^T b (pitfall §8).

    Example:
      acc = CovarianceAccumulator()
      for x in loader: acc.update([f(x) for f in ref_layers], [g(x) for g in other_layers])
      moments = acc.compute()            # list of Moments, one per layer; moments[j].cross is (D_a, D_b)
      acc.update(x)                      # a single tensor and no b: the covariance E[a a^T] of one layer
    """

    def __init__(self) -> None:
        self._layers: list[_RunningSums] | None = None
        self._single: bool | None = None

    def update(self, a: torch.Tensor | Sequence[torch.Tensor],
               b: torch.Tensor | Sequence[torch.Tensor] | None = None) -> None:
        """Add one batch.

        Args:
          a: (B, C, H, W) or (B, D) activation, or a sequence of them (one per layer, same order every call).
          b: activations of the same samples, matching a's structure; None means b = a (auto-covariance).
        """
        single = isinstance(a, torch.Tensor)
        a_layers = [a] if single else list(a)
        b_layers = a_layers if b is None else ([b] if single else list(b))
        if len(a_layers) != len(b_layers):
            raise ValueError(f"a and b must list the same layers, got {len(a_layers)} and {len(b_layers)}")
        layers = self._layers or [_RunningSums() for _ in a_layers]
        if self._layers is not None and (single != self._single or len(a_layers) != len(layers)):
            raise ValueError(f"expected {len(layers)} layer(s) per update as in the first call, got {len(a_layers)}")
        for sums, x, y in zip(layers, a_layers, b_layers):
            sums.check(x, y)
        for sums, x, y in zip(layers, a_layers, b_layers):
            sums.add(x, y)
        self._layers, self._single = layers, single

    def compute(self) -> Moments | list[Moments]:
        """Moments of everything added so far.

        Returns:
          One Moments if update() was given tensors, a list (one per layer) if it was given sequences.
        """
        if self._layers is None:
            raise ValueError("CovarianceAccumulator.compute() called before any update()")
        moments = [sums.moments() for sums in self._layers]
        return moments[0] if self._single else moments


def cross_covariance(A: torch.Tensor, B: torch.Tensor | None = None) -> torch.Tensor:
    """Uncentred cross-covariance E[a b^T] of two activations of the same inputs, in one shot (seed002 §5.1).

    Args:
      A: (B, C_a, H, W) or (n, D_a) activations (space treated as samples); real or complex.
      B: (B, C_b, H, W) or (n, D_b) activations of the same inputs; None means B = A.

    Returns:
      (D_a, D_b) float64 Re(a^H b) / n over the n = B H W rows (a^T b / n for real activations).
    """
    a = _to64(as_samples(A))
    b = a if B is None else _to64(as_samples(B))
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"A and B must hold the same samples, got {a.shape[0]} and {b.shape[0]} rows")
    return _real_inner(a, b) / a.shape[0]


# ----------------------------------------------------------------------------------------------------------------
# Alignment (seed002 §5.2)
# ----------------------------------------------------------------------------------------------------------------

def procrustes(cross_cov: torch.Tensor) -> torch.Tensor:
    """Alignment A = U V^T from the SVD K = U S V^T of K = E[phi_ref phi_other^T] (seed002 §5.2).

    A is the orthogonal Procrustes solution: it maximises E<phi_ref, A phi_other> = tr(A^T K) over A with
    orthonormal rows or columns, so A phi_other ~ phi_ref. With rows as samples X_ref (n, D_ref), X_other (n, D),
    A^T is scipy's orthogonal_procrustes(X_other, X_ref). For D_ref != D_other, A is a partial isometry
    (A A^T = I when D_ref <= D_other, A^T A = I otherwise), as when nets of different widths are aligned.

    Args:
      cross_cov: (D_ref, D_other) cross-covariance E[phi_ref phi_other^T].

    Returns:
      (D_ref, D_other) float64 alignment.
    """
    U, _, Vh = torch.linalg.svd(cross_cov.to(torch.float64), full_matrices=False)
    return U @ Vh


def alignment_r2(cross_cov: torch.Tensor, cov_ref_trace: torch.Tensor | float,
                 cov_other_trace: torch.Tensor | float) -> torch.Tensor:
    """Fraction of activation energy explained by the alignment, r2 = tr S / sqrt(E||phi_ref||^2 E||phi_other||^2).

    S are the singular values of K = E[phi_ref phi_other^T]; tr S = E<phi_ref, A phi_other> with A = procrustes(K)
    (seed002 §5.2, the tutorial's r^2). 1 for identical nets up to a rotation.

    Args:
      cross_cov: (D_ref, D_other) cross-covariance.
      cov_ref_trace, cov_other_trace: E||phi_ref||^2 and E||phi_other||^2 (traces of the uncentred covariances,
        e.g. Moments.sq_norm_a and sq_norm_b).

    Returns:
      0-d float64 tensor in [0, 1].
    """
    nuclear = torch.linalg.svdvals(cross_cov.to(torch.float64)).sum()
    return nuclear / torch.sqrt(torch.as_tensor(cov_ref_trace, dtype=torch.float64)
                                * torch.as_tensor(cov_other_trace, dtype=torch.float64))


def alignment_error(alignment: torch.Tensor, cross_cov: torch.Tensor, cov_ref_trace: torch.Tensor | float,
                    cov_other_trace: torch.Tensor | float) -> torch.Tensor:
    """Normalised alignment error, 2 (1 - E<A phi_other, phi_ref> / sqrt(E||phi_other||^2 E||phi_ref||^2)).

    seed002 §5.2 "paper-style": activations scaled by 1/sqrt(C) so that E||phi||^2 ~ 1 after BN, error
    E||A phi_hat - phi||^2 ~ 2 (1 - E<A phi_hat, phi>); the normalisation above makes the 1/sqrt(C) scalings cancel,
    so they are not applied. Fit A on the train set and measure cross_cov and the traces on the test set.
    E<A phi_other, phi_ref> = sum(A * K) for K = E[phi_ref phi_other^T]; on the fitting data, error = 2 (1 - r2).

    Args:
      alignment: (D_ref, D_other) A, e.g. procrustes(train cross-covariance).
      cross_cov: (D_ref, D_other) E[phi_ref phi_other^T] on held-out data.
      cov_ref_trace, cov_other_trace: E||phi_ref||^2 and E||phi_other||^2 on the same held-out data.

    Returns:
      0-d float64 tensor in [0, 4]; 0 for a perfect alignment.
    """
    inner = (alignment.to(torch.float64) * cross_cov.to(torch.float64)).sum()
    scale = torch.sqrt(torch.as_tensor(cov_ref_trace, dtype=torch.float64)
                       * torch.as_tensor(cov_other_trace, dtype=torch.float64))
    return 2 * (1 - inner / scale)


def _apply_alignment(alignment: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Rows (n, D_other) -> aligned rows (n, D_ref), A phi per row."""
    return samples @ alignment.T.to(samples.dtype)


class MeanAlignment:
    """Iterative alignment of M networks to their mean representation, as a streaming accumulator (seed002 §5.2).

    Pass 0 takes net 1 as the mean. Each pass streams the M nets' activations of the same inputs, forms
    phi_mean = (1/M) sum_k A_k phi_k with the current alignments, and accumulates only K_k = E[phi_mean phi_k^T]
    (D_mean, D_k) and the traces; finish_pass() sets A_k = procrustes(K_k) (A_k phi_k ~ phi_mean) and records
    the unexplained variance 1 - tr Cov(phi_mean) / avg_k tr Cov(phi_k) of the mean used in that pass (uncentred
    covariances, so tr Cov = E||.||^2). The spec's default, num_iters = 2, is 3 passes. Several layers: one
    MeanAlignment per layer, all updated from the same forward passes.

    Example:
      aligner = MeanAlignment()
      for _ in range(3):
          for x in loader: aligner.update([net(x) for net in nets])
          aligner.finish_pass()
      aligner.alignments[k]          # (D_1, D_k): weights of net k go to mean space as weight_to_reference(W, A_k)
    """

    def __init__(self) -> None:
        self.alignments: list[torch.Tensor] | None = None     # A_k (D_mean, D_k); None before the first pass
        self.unexplained_variance: list[torch.Tensor] = []    # one 0-d float64 per finished pass
        self._acc = CovarianceAccumulator()

    def mean_activation(self, activations: Sequence[torch.Tensor]) -> torch.Tensor:
        """The current mean representation of one batch (e.g. for the covariance of the mean net, §5.5 "KPCA").

        Args:
          activations: M tensors (B, C_k, H, W) or (n, D_k), the M nets' activations of the same inputs.

        Returns:
          (n, D_mean) float64 rows phi_mean = (1/M) sum_k A_k phi_k; net 1's rows before the first pass.
        """
        return self._mean_of_samples([_to64(as_samples(a)) for a in activations])

    def _mean_of_samples(self, samples: list[torch.Tensor]) -> torch.Tensor:
        if self.alignments is None:
            return samples[0]
        if len(samples) != len(self.alignments):
            raise ValueError(f"expected activations of {len(self.alignments)} nets, got {len(samples)}")
        return sum(_apply_alignment(A, s) for A, s in zip(self.alignments, samples)) / len(samples)

    def update(self, activations: Sequence[torch.Tensor]) -> None:
        """Add one batch.

        Args:
          activations: M tensors (B, C_k, H, W) or (n, D_k), the M nets' activations of the same inputs.
        """
        samples = [_to64(as_samples(a)) for a in activations]
        self._acc.update([self._mean_of_samples(samples)] * len(samples), samples)

    def finish_pass(self) -> None:
        """Set A_k = procrustes(E[phi_mean phi_k^T]) and record this pass's unexplained variance."""
        moments = self._acc.compute()
        self.alignments = [procrustes(m.cross) for m in moments]
        average_trace = torch.stack([m.sq_norm_b for m in moments]).mean()
        self.unexplained_variance.append(1 - moments[0].sq_norm_a / average_trace)
        self._acc = CovarianceAccumulator()


def align_to_mean(batches: Callable[[], Iterable[Sequence]], num_iters: int = 2) -> MeanAlignment | list[MeanAlignment]:
    """Align M networks to their mean in num_iters + 1 passes over the data (seed002 §5.2).

    Args:
      batches: called once per pass; returns an iterable of batches (the same inputs in every pass). A batch is
        either one layer's M activations (B, C_k, H, W) or (n, D_k) of the same inputs, e.g.
        `lambda: ([net(x) for net in nets] for x, _ in loader)`, or, to align several layers from the same
        forward passes, a sequence over layers of such M-sequences (the same layers in every batch).
      num_iters: refinements after the pass that aligns everything to net 1 (spec default 2, i.e. 3 passes).

    Returns:
      The MeanAlignment (a list of them, one per layer, for batches of layers): .alignments[k] is (D_1, D_k) with
      A_k phi_k ~ phi_mean, .unexplained_variance[-1] the unexplained variance of the mean the final alignments
      were fitted to.
    """
    aligners: list[MeanAlignment] | None = None
    layered = False
    for _ in range(num_iters + 1):
        for batch in batches():
            if aligners is None:
                layered = not isinstance(batch[0], torch.Tensor)
                aligners = [MeanAlignment() for _ in (batch if layered else [batch])]
            for aligner, activations in zip(aligners, batch if layered else [batch], strict=True):
                aligner.update(activations)
        if aligners is None:
            raise ValueError("align_to_mean got no batch")
        for aligner in aligners:
            aligner.finish_pass()
    return aligners if layered else aligners[0]


def _contract_channels(weight: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """W'[n, d, ...] = sum_c W[n, c, ...] M[c, d], in float64, returned in the weight's dtype."""
    work = torch.promote_types(weight.dtype, torch.float64)
    moved = weight.to(work).movedim(1, -1) @ matrix.to(work)
    return moved.movedim(-1, 1).to(weight.dtype)


def weight_to_reference(weight: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor:
    """Bring another net's weight to the reference space, W_other A^T (seed002 §5.2).

    W_other phi_other = W_other A^T phi_ref when A phi_other = phi_ref with A orthogonal. Conv weights contract A
    over the input channels only; a classifier on flattened (C, H, W) features should be reshaped to
    (classes, C, H, W) first.

    Args:
      weight: (N, D_other) or (N, D_other, k, k) weight acting on phi_other.
      alignment: (D_ref, D_other) A with A phi_other ~ phi_ref.

    Returns:
      (N, D_ref) or (N, D_ref, k, k) weight in the input weight's dtype.
    """
    return _contract_channels(weight, alignment.T)


def weight_from_reference(weight: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor:
    """Transport a reference-space weight to act on another net's activations, W_ref A (seed002 §5.2, §5.4 b).

    Args:
      weight: (N, D_ref) or (N, D_ref, k, k) weight acting on phi_ref.
      alignment: (D_ref, D_other) A with A phi_other ~ phi_ref.

    Returns:
      (N, D_other) or (N, D_other, k, k) weight in the input weight's dtype; W_ref A phi_other ~ W_ref phi_ref.
    """
    return _contract_channels(weight, alignment)


# ----------------------------------------------------------------------------------------------------------------
# Weight covariances (seed002 §5.3)
# ----------------------------------------------------------------------------------------------------------------

def _stack_rows(weights: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """(N_tot, D) float64 rows of all weights; (N, D, 1, 1) convs are flattened to (N, D)."""
    weights = [weights] if isinstance(weights, torch.Tensor) else list(weights)
    return torch.cat([w.reshape(w.shape[0], -1).to(torch.float64) for w in weights])


def weight_covariance(weights: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Weight covariance C = W^T W / N_tot of aligned weights stacked row-wise, NOT centred (seed002 §5.3).

    Args:
      weights: one weight (N, D) / (N, D, 1, 1) or the M nets' weights, each already in the same (mean) space.

    Returns:
      (D, D) float64 C; rows of a Gaussian rainbow layer are drawn from N(0, C).
    """
    rows = _stack_rows(weights)
    return rows.T @ rows / rows.shape[0]


def principal_components(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition of a symmetric (covariance) matrix, sorted by decreasing eigenvalue.

    Gives the "C_j PCA" and activation "KPCA" clipping bases of seed002 §5.5.

    Args:
      matrix: (D, D) symmetric matrix.

    Returns:
      eigenvalues (D,) float64 descending, eigenvectors (D, D) float64 with one eigenvector per column.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix.to(torch.float64))
    return eigenvalues.flip(0), eigenvectors.flip(1)


def weight_spectrum(weights: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and eigenvectors of C = W^T W / N_tot, through the SVD of W when N_tot < D (seed002 §5.3).

    Args:
      weights: as in weight_covariance.

    Returns:
      eigenvalues (r,) float64 descending and eigenvectors (D, r) float64 columns, r = min(N_tot, D) (the other
      D - r eigenvalues are 0). Spectra are usually shown as eigenvalues x D or normalised to mean 1.
    """
    rows = _stack_rows(weights)
    n, d = rows.shape
    if n >= d:
        return principal_components(rows.T @ rows / n)
    _, singular_values, Vh = torch.linalg.svd(rows, full_matrices=False)
    return singular_values.square() / n, Vh.T


def whiten_weights(weight: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor) -> torch.Tensor:
    """Whitened weights (W V) / sqrt(lambda) per principal direction of C (seed002 §5.3).

    For rows drawn from N(0, C) the whitened entries are i.i.d. N(0, 1) (seed002 §2: Gaussian marginals and the
    Marchenko-Pastur spectrum after whitening).

    Args:
      weight: (N, D) or (N, D, 1, 1) aligned weight.
      eigenvalues: (r,) positive eigenvalues of C (drop the zero ones of a rank-deficient C first).
      eigenvectors: (D, r) matching eigenvectors.

    Returns:
      (N, r) float64 whitened weight.
    """
    return _stack_rows(weight) @ eigenvectors.to(torch.float64) / eigenvalues.to(torch.float64).sqrt()


def relative_operator_error(weights: torch.Tensor | Sequence[torch.Tensor],
                            reference: torch.Tensor | Sequence[torch.Tensor], scale: float = 1.0,
                            reference_scale: float = 1.0) -> torch.Tensor:
    """Relative operator-norm distance of two weight covariances, ||s C - s_ref C_ref||_2 / ||s_ref C_ref||_2.

    C = weight_covariance(weights) and C_ref = weight_covariance(reference), both in the same (reference) space;
    seed002 §2 "covariance_convergence" compares C_j of nets of width s with the widest nets' (scales s = D_j, the
    fan-in of each, "eigenvalues multiplied by D to be comparable"), and C_j from 1 or 10 nets with that of all
    M. No D x D matrix is formed: with U = [sqrt(s / n) R; sqrt(s_ref / n_ref) R_ref] (rows R stacked, n of them)
    and the signs S = diag(1.., -1..), s C - s_ref C_ref = U^T S U = Q (T S T^T) Q^T for the thin QR U^T = Q T, so
    its eigenvalues are those of the small symmetric T S T^T (when there are fewer rows than D; else directly).

    Args:
      weights, reference: (N, D) weights (or lists of them, e.g. M nets'), (N, D, k, k) flattened to D k^2.
      scale, reference_scale: the factors s and s_ref.

    Returns:
      0-d float64 tensor >= 0 (0 for identical covariances).
    """
    rows, ref_rows = _stack_rows(weights), _stack_rows(reference)
    if rows.shape[1] != ref_rows.shape[1]:
        raise ValueError(f"the weights act on {rows.shape[1]} inputs and the reference on {ref_rows.shape[1]}")
    stacked = torch.cat([rows * math.sqrt(scale / rows.shape[0]), ref_rows * math.sqrt(reference_scale /
                                                                                          ref_rows.shape[0])])
    signs = torch.cat([stacked.new_ones(rows.shape[0]), -stacked.new_ones(ref_rows.shape[0])])
    if stacked.shape[0] < stacked.shape[1]:
        _, triangle = torch.linalg.qr(stacked.T)                       # U^T = Q T, T (n, n)
        difference = (triangle * signs) @ triangle.T
    else:
        difference = (stacked.T * signs) @ stacked
    reference_norm = torch.linalg.eigvalsh(ref_rows.T @ ref_rows * (reference_scale / ref_rows.shape[0])
                                           if ref_rows.shape[0] >= ref_rows.shape[1] else
                                           ref_rows @ ref_rows.T * (reference_scale / ref_rows.shape[0]))[-1]
    return torch.linalg.eigvalsh(difference).abs().max() / reference_norm


def weight_dynamics(weight: torch.Tensor, initial: torch.Tensor, directions: torch.Tensor) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """How training moved a weight along fixed input directions (seed002 §5.6): for each direction e_r,

        a_r = ||W(t) e_r|| / ||W(0) e_r||        amplification
        c_r = cos(W(t) e_r, W(0) e_r)            cosine of the two vectors in neuron space R^N

    with e_r the eigenvectors of the final C_j (a_r ~ 1 and c_r ~ 1: the initialisation is kept along e_r).

    Args:
      weight, initial: (N, D) or (N, C, k, k) weights W(t) and W(0) of the same layer (flattened to D = C k^2).
      directions: (D, R) unit vectors e_r, one per column.

    Returns:
      (amplification (R,), cosine (R,)), float64.
    """
    now, start = _stack_rows(weight) @ directions.to(torch.float64), _stack_rows(initial) @ directions.to(torch.float64)
    norm_now, norm_start = now.norm(dim=0), start.norm(dim=0)
    return norm_now / norm_start, (now * start).sum(0) / (norm_now * norm_start)


# ----------------------------------------------------------------------------------------------------------------
# Rainbow sampling and BN re-standardisation (seed002 §5.4)
# ----------------------------------------------------------------------------------------------------------------

def _haar_partial_isometry(rows: int, cols: int, generator: torch.Generator | None,
                           device: torch.device) -> torch.Tensor:
    """Uniformly random (rows, cols) matrix with orthonormal columns (rows >= cols) or orthonormal rows."""
    tall = rows >= cols
    shape = (rows, cols) if tall else (cols, rows)
    gaussian = torch.randn(shape, generator=generator, dtype=torch.float64,
                           device=draw_device(generator, device)).to(device)
    Q, R = torch.linalg.qr(gaussian)
    Q = Q * torch.sign(R.diagonal())          # sign fix: the Haar measure, not QR's convention
    return Q if tall else Q.T


def random_basis(dim: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Random orthonormal basis drawn from the Haar measure (the "random" clipping basis of seed002 §5.5).

    Args:
      dim: D.
      generator: torch.Generator for the draw (None: the global RNG).
      device: device of the result.

    Returns:
      (D, D) float64 orthogonal matrix, one basis vector per column.
    """
    return _haar_partial_isometry(dim, dim, generator, torch.device(device) if device is not None else None)


def sample_rainbow_weights(cov: torch.Tensor, n: int, generator: torch.Generator | None = None,
                           method: str = "gaussian") -> torch.Tensor:
    """Draw a rainbow layer's weight, n rows with covariance C (seed002 §5.4 a).

    Scale decision (pitfall §8): C is the weight covariance W^T W / N of weight_covariance, and rows are drawn
    with E[w w^T] = C, so E||w||^2 = tr C per row and W'^T W' / n ~ C. The tutorial's rows had covariance W^T W,
    sqrt(N) too large; that is harmless only for positively homogeneous nets, so it is not reproduced.

    Methods:
      "gaussian":   rows i.i.d. N(0, C): W' = Z C^(1/2) with Z (n, D) standard normal and the symmetric square root
                    C^(1/2) = V Lambda^(1/2) V^T.
      "orthogonal": W' = sqrt(max(n, R)) Q Lambda^(1/2) V^T with Q a Haar-random (n, R) partial isometry, R the
                    rank of C; W'^T W' / n = C exactly when n >= R (the spec's sqrt(N) Q Lambda^(1/2) V^T), and
                    in expectation when n < R (Q then has orthonormal rows, E[Q^T Q] = n/R I).

    Args:
      cov: (D, D) symmetric positive semi-definite C.
      n: number of rows (output channels) of the new layer.
      generator: torch.Generator for the draw (None: the global RNG), on cov's device.
      method: "gaussian" or "orthogonal".

    Returns:
      (n, D) float64 weight on cov's device (reshape to (n, D, 1, 1) for a 1x1 conv).
    """
    return sample_from_spectrum(*principal_components(cov), n, generator, method)


def sample_from_spectrum(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, n: int,
                         generator: torch.Generator | None = None, method: str = "gaussian") -> torch.Tensor:
    """sample_rainbow_weights from C = V diag(lambda) V^T given as eigenvalues (r,) descending and eigenvectors
    (D, r), r <= D: principal_components(C), or the thin weight_spectrum of the weights, which needs no D x D
    matrix when there are fewer stacked rows than inputs."""
    eigenvalues = eigenvalues.clamp(min=0.0)
    dim, device = eigenvectors.shape[0], eigenvectors.device
    if method == "gaussian":
        root = (eigenvectors * eigenvalues.sqrt()) @ eigenvectors.T
        noise = torch.randn((n, dim), generator=generator, dtype=torch.float64,
                            device=draw_device(generator, device)).to(device)
        return noise @ root
    if method == "orthogonal":
        tolerance = eigenvalues[0] * dim * torch.finfo(torch.float64).eps
        rank = int((eigenvalues > tolerance).sum())
        Q = _haar_partial_isometry(n, rank, generator, device)
        return math.sqrt(max(n, rank)) * (Q * eigenvalues[:rank].sqrt()) @ eigenvectors[:, :rank].T
    raise ValueError(f"unknown sampling method {method!r}; expected 'gaussian' or 'orthogonal'")


def recompute_standardization(old_mean: torch.Tensor, old_var: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor,
                              eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """New running statistics of a non-affine BatchNorm from the moments of its outputs (seed002 §5.4 c).

    In eval mode the layer outputs y = (x - mu_old) / s_old with s_old = sqrt(old_var + eps). If y has per-channel
    moments m1 = E[y], m2 = E|y|^2 on the new net's data, then E[x] = s_old m1 + mu_old and
    Var[x] = s_old^2 (m2 - |m1|^2). Standardising x exactly needs mu_new = E[x] and new_var + eps = Var[x]:

        new_mean = sqrt(old_var + eps) m1 + old_mean
        new_var  = (old_var + eps) (m2 - |m1|^2) - eps

    the spec's sqrt(old_var) m1 + old_mean and old_var (m2 - |m1|^2) with eps kept exactly. Channels with
    Var[x] < eps cannot reach unit variance; their new_var is clamped at 0.

    Args:
      old_mean, old_var: (C,) the running_mean and running_var used to produce y.
      m1, m2: (C,) E[y] and E|y|^2 of the standardised outputs (Moments.mean_b and Moments.power_b).
      eps: the BatchNorm's eps (PyTorch default 1e-5).

    Returns:
      (new_mean, new_var), each (C,) float64 (new_mean complex if m1 is).
    """
    old_scale_sq = old_var.to(torch.float64) + eps
    new_mean = old_scale_sq.sqrt() * _to64(m1) + _to64(old_mean)
    new_var = (old_scale_sq * (m2.to(torch.float64) - m1.abs().to(torch.float64).square()) - eps).clamp(min=0.0)
    return new_mean, new_var


def rescale_cross_covariance(cross_cov: torch.Tensor, old_var: torch.Tensor, new_var: torch.Tensor,
                             eps: float = 1e-5, ref_mean: torch.Tensor | None = None,
                             m1: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-covariance E[phi_ref y^T] after the new net's BN statistics change (seed002 §5.4 c).

    With the statistics of recompute_standardization, y_new = (y_old - m1) sqrt((old_var + eps) / (new_var + eps)),
    so each column of K_old = E[phi_ref y_old^T] is rescaled by that factor (the spec's sqrt(old_var / new_var)),
    after subtracting Re(conj(E[phi_ref]) m1^T); that term vanishes when the reference activations have zero mean,
    as the spec assumes, and is applied only when ref_mean and m1 are given.

    Args:
      cross_cov: (D_ref, C) K_old, accumulated with the old statistics.
      old_var, new_var: (C,) running variances before and after the update.
      eps: the BatchNorm's eps.
      ref_mean, m1: (D_ref,) E[phi_ref] and (C,) E[y_old] (Moments.mean_a and Moments.mean_b), both or neither.

    Returns:
      (D_ref, C) float64 K_new = E[phi_ref y_new^T].
    """
    if (ref_mean is None) != (m1 is None):
        raise ValueError("give both ref_mean and m1 (the mean correction) or neither")
    cross_cov = cross_cov.to(torch.float64)
    if ref_mean is not None:
        cross_cov = cross_cov - (_to64(ref_mean).conj()[:, None] * _to64(m1)[None, :]).real
    scale = ((old_var.to(torch.float64) + eps) / (new_var.to(torch.float64) + eps)).sqrt()
    return cross_cov * scale[None, :]


# ----------------------------------------------------------------------------------------------------------------
# Clipping (seed002 §5.5)
# ----------------------------------------------------------------------------------------------------------------

def clipping_projector(basis: torch.Tensor, d: int) -> torch.Tensor:
    """Orthogonal projector P_d = B_d B_d^T on the first d basis vectors (seed002 §5.5).

    Args:
      basis: (D, D) orthonormal basis, one vector per column, most important first: principal_components(C_j)[1]
        ("C_j PCA"), principal_components(activation covariance of the mean net)[1] ("KPCA") or random_basis(D).
      d: number of kept directions, 0 <= d <= D.

    Returns:
      (D, D) float64 projector of rank d (0 for d = 0, the identity for d = D).
    """
    if not 0 <= d <= basis.shape[1]:
        raise ValueError(f"d must be in [0, {basis.shape[1]}], got {d}")
    kept = basis[:, :d].to(torch.float64)
    return kept @ kept.T


def clipping_grid(dim: int, points: int = 51) -> np.ndarray:
    """The kept dimensions d of a clipping curve, as the original: np.arange(0, D + 1, D / (points - 1)) truncated
    to int (seed002 §5.5: 51 values from 0 to D, step D / 50), duplicates (D < points - 1) dropped.

    Truncation, not rounding: for D = 320 the grid is 0, 6, 12, 19, 25, ... (the spec's §6 table reads d = 19, 25,
    217 at D = 320). As in the original, floating point makes the last value D - 1 instead of D for some D
    (e.g. 57, 113).

    Args:
      dim: D >= 1.
      points: number of grid values before deduplication, >= 2.

    Returns:
      (G,) int64 ascending values in [0, D].
    """
    return np.unique(np.arange(0, dim + 1, dim / (points - 1)).astype(np.int64))


def clip_weight(weight: torch.Tensor, alignment: torch.Tensor | None, basis: torch.Tensor, d: int) -> torch.Tensor:
    """Clip a weight to d directions of the mean space, W A^T P_d A (seed002 §5.5).

    The weight is brought to the mean (reference) space, projected on the first d basis vectors and brought back:
    the spec's W A P_d A^T with its transposed alignment convention. With d = D and a square A it is W itself.

    Args:
      weight: (N, D_net) or (N, D_net, k, k) weight of one net.
      alignment: (D_mean, D_net) A with A phi_net ~ phi_mean (e.g. MeanAlignment.alignments[k]); None = identity.
      basis: (D_mean, D_mean) orthonormal basis in mean space, most important first.
      d: number of kept directions.

    Returns:
      Clipped weight of the input's shape and dtype.
    """
    projector = clipping_projector(basis, d)
    if alignment is None:
        return _contract_channels(weight, projector)
    return weight_from_reference(_contract_channels(weight_to_reference(weight, alignment), projector), alignment)


# ----------------------------------------------------------------------------------------------------------------
# Diagnostics (seed002 §2)
# ----------------------------------------------------------------------------------------------------------------

def marchenko_pastur_edges(q: float) -> tuple[float, float]:
    """Edges ((1 - sqrt q)^2, (1 + sqrt q)^2) of the Marchenko-Pastur bulk with aspect ratio q <= 1 (mean 1)."""
    return (1 - math.sqrt(q)) ** 2, (1 + math.sqrt(q)) ** 2


def marchenko_pastur_density(x, q: float):
    """Marchenko-Pastur density of the mean-1 eigenvalues of W^T W / N for an (N, D) weight with i.i.d. entries,
    aspect ratio q = D / N <= 1 (the curve of seed002 §2's "marchenko_pastur" figure):

        p(x) = sqrt((x_+ - x)(x - x_-)) / (2 pi q x)  on (x_-, x_+) = marchenko_pastur_edges(q), 0 elsewhere.

    Args:
      x: array-like of eigenvalues (numpy array or tensor).
      q: aspect ratio in (0, 1].

    Returns:
      The density at x, same type and shape (float64).
    """
    low, high = marchenko_pastur_edges(q)
    values = torch.as_tensor(x, dtype=torch.float64)
    inside = (values > low) & (values < high)
    density = torch.zeros_like(values)
    density[inside] = torch.sqrt((high - values[inside]) * (values[inside] - low)) / (2 * math.pi * q * values[inside])
    return density if isinstance(x, torch.Tensor) else density.numpy()


def positive_eigenpairs(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor | None = None):
    """The eigenvalues above numerical zero, lambda > lambda_max D eps (D = number of eigenvalues, eps of float64),
    e.g. before whitening by a rank-deficient C (whiten_weights) or drawing a spectrum on log axes.

    Args:
      eigenvalues: (D,) descending eigenvalues (tensor or numpy array).
      eigenvectors: optional (., D) matching eigenvectors, one per column.

    Returns:
      The kept eigenvalues, or (eigenvalues, eigenvectors) with the matching columns when eigenvectors are given.
    """
    values = torch.as_tensor(eigenvalues)
    keep = values > values.max() * values.numel() * torch.finfo(torch.float64).eps
    kept = values[keep] if isinstance(eigenvalues, torch.Tensor) else eigenvalues[keep.numpy()]
    return kept if eigenvectors is None else (kept, eigenvectors[:, keep])


def marchenko_pastur_fraction(eigenvalues: torch.Tensor, q: float) -> torch.Tensor:
    """Fraction of eigenvalues outside the Marchenko-Pastur bulk (seed002 §2 "marchenko_pastur" diagnostic).

    The eigenvalues are normalised to mean 1 and compared with [(1 - sqrt q)^2, (1 + sqrt q)^2]. For an (N, D)
    weight, pass the min(N, D) nonzero eigenvalues of W^T W (e.g. weight_spectrum of one net, before or after
    whitening) and q = D / N; q > 1 is read as 1 / q, since the nonzero spectrum of W W^T is the same. A weight
    with i.i.d. entries gives ~0; the paper reports 21.1% -> 1.6% at j = 2 before -> after whitening.

    Args:
      eigenvalues: (r,) nonnegative eigenvalues.
      q: aspect ratio D / N.

    Returns:
      0-d float64 tensor in [0, 1].
    """
    low, high = marchenko_pastur_edges(min(q, 1 / q))
    normalised = eigenvalues.to(torch.float64) / eigenvalues.to(torch.float64).mean()
    return ((normalised < low) | (normalised > high)).to(torch.float64).mean()


def excess_kurtosis(samples: torch.Tensor) -> torch.Tensor:
    """Excess kurtosis E[(x - mu)^4] / Var[x]^2 - 3 per column: 0 for Gaussian marginals (seed002 §2).

    A cheap Gaussianity check of whitened weights (whiten_weights), one value per principal direction
    (uniform: -1.2, Laplace: 3).

    Args:
      samples: (n, r) values, one variable per column.

    Returns:
      (r,) float64 (the biased moment estimator, like scipy.stats.kurtosis with bias=True).
    """
    centred = samples.to(torch.float64) - samples.to(torch.float64).mean(0)
    variance = centred.square().mean(0)
    return centred.pow(4).mean(0) / variance.square() - 3
