"""Statistics of the aligned weights of M networks (seed002 §2, §5.3, §5.5, §7): the channel covariance of
conv kernels, the clipping basis, the Gaussianity diagnostics (Marchenko-Pastur, Kolmogorov-Smirnov), the
tutorial's cosine matrices and the small read-outs of rainbow.py's summary. Pure functions, no file I/O; the
alignments, covariances and spectra themselves are in measures.alignment.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from measures import alignment as al


def rows(weight: torch.Tensor) -> torch.Tensor:
    """A weight (N, D) or (N, C, k, k) as float64 rows (N, D_flat), the rows of C_j = W^T W / N (seed002 §5.3)."""
    return weight.reshape(weight.shape[0], -1).to(torch.float64)


def channel_covariance(weights: list[torch.Tensor]) -> torch.Tensor:
    """(C, C) covariance over input channels of conv kernels (N, C, k, k), every kernel tap a row ((M N k k, C)),
    the channel basis that clipping a conv layer uses (seed002 §5.5); C_j itself (§5.3) for 2-D weights."""
    return al.weight_covariance([w.movedim(1, -1).reshape(-1, w.shape[1]) for w in weights])


def weight_basis(aligned: list[torch.Tensor], eigenvectors: torch.Tensor) -> torch.Tensor:
    """A complete basis of layer l's input channels by decreasing weight variance: C_l's eigenvectors (for k x k
    kernels the channel covariance of the kernel taps), completed when C_l is rank-deficient: the "C_j PCA" basis
    of clipping (seed002 §5.5). `eigenvectors` (D_flat, rank) are C_l's, from measures.alignment.weight_spectrum."""
    if aligned[0].dim() > 2:
        return al.principal_components(channel_covariance(aligned))[1]
    dim, rank = eigenvectors.shape
    return eigenvectors if rank == dim else al.principal_components(al.weight_covariance(aligned))[1]


def pairwise_quality(train: list, test: list) -> tuple[np.ndarray, np.ndarray]:
    """(r2 on train, alignment error on test), each (layers, M-1), A fitted on train (seed002 §5.2): train[l][k]
    and test[l][k] are the Moments of (net 1, net k + 2) at layer l + 1."""
    r2 = [[float(al.alignment_r2(m.cross, m.sq_norm_a, m.sq_norm_b)) for m in pairs] for pairs in train]
    error = [[float(al.alignment_error(al.procrustes(fit.cross), m.cross, m.sq_norm_a, m.sq_norm_b))
              for fit, m in zip(fits, pairs)] for fits, pairs in zip(train, test)]
    return np.array(r2), np.array(error)


def convergence_counts(requested: list[int], nets: int) -> list[int]:
    """The numbers of nets C_l is estimated from (seed002 §2 covariance_convergence, M = 1 / 10 / 50): the
    requested ones below M, then M."""
    return sorted({count for count in requested if count < nets} | {nets})


def normalised(eigenvalues: torch.Tensor) -> np.ndarray:
    """Eigenvalues normalised to mean 1, as the Marchenko-Pastur panel draws them (seed002 §2 marchenko_pastur)."""
    return (eigenvalues / eigenvalues.mean()).cpu().numpy()


def gaussianity(aligned: list[torch.Tensor], eigenvalues: torch.Tensor, eigenvectors: torch.Tensor,
                ks_ranks: list[int], mp_net: int = 1) -> dict:
    """MP fractions of net 1's weight before/after whitening, KS p-values and whitened samples (seed002 §2
    gaussian_histograms_new, marchenko_pastur; whitening (W V) / sqrt(lambda), §5.3).

    The Marchenko-Pastur spectra are those of net `mp_net` (0-based; default 1: net 2, as the original's
    marchenko_pastur panel), whitened by the C_j of all M nets, its own rows included; this biases it towards
    white for small M and makes it exactly white when M N <= D (its rows are then part of an orthogonal matrix),
    so mp_white is NaN there. The KS p-values test the whitened weights of all M nets along each direction, the
    original's 0-based columns `ks_ranks`, against N(0, 1) with scipy's exact distribution (the original's
    kstest(mode='exact')).
    """
    values, vectors = al.positive_eigenpairs(eigenvalues, eigenvectors)
    single = rows(aligned[min(mp_net, len(aligned) - 1)])
    colored = al.weight_spectrum(single)[0]
    white = al.weight_spectrum(al.whiten_weights(single, values, vectors))[0]
    q_colored, q_white = single.shape[1] / single.shape[0], values.numel() / single.shape[0]
    degenerate = len(aligned) * single.shape[0] <= single.shape[1]
    whitened = al.whiten_weights(torch.cat([rows(w) for w in aligned]), values, vectors)
    samples = np.full((whitened.shape[0], len(ks_ranks)), np.nan)
    pvalues = np.full(len(ks_ranks), np.nan)
    for i, rank in enumerate(ks_ranks):
        if rank < whitened.shape[1]:  # the original's 0-based column r
            samples[:, i] = whitened[:, rank].cpu().numpy()
            pvalues[i] = stats.kstest(samples[:, i], "norm", method="exact").pvalue
    return {"mp_colored": float(al.marchenko_pastur_fraction(colored, q_colored)),
            "mp_white": float("nan") if degenerate else float(al.marchenko_pastur_fraction(white, q_white)),
            "eigs_colored": normalised(colored), "eigs_white": normalised(white),
            "q": np.array([q_colored, q_white]), "whitened": samples, "ks_pvalue": pvalues}


def within_one_percent(grid: np.ndarray, curve: np.ndarray, reference: float) -> int:
    """The smallest grid d whose accuracy is >= reference - 0.01 (-1 if none): seed002 §6's "within 1%"."""
    good = curve >= reference - 0.01
    return int(grid[np.argmax(good)]) if good.any() else -1


def padded(rows: list, width: int | None = None, fill: float = np.nan) -> np.ndarray:
    """Ragged 1-D rows -> (len(rows), width) float array, padded with `fill`."""
    width = max((len(row) for row in rows), default=0) if width is None else width
    out = np.full((len(rows), width), fill)
    for i, row in enumerate(rows):
        out[i, :len(row)] = np.asarray(row, dtype=float)
    return out


def weight_cosines(first: torch.Tensor, second: torch.Tensor, alignment: torch.Tensor | None, rank: int) \
        -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's weight cosine matrices of net 1 vs net 2 (seed002 §7 steps 5 and 7): (|V_1 V_2^T|,
    |V_1 A V_2^T|) of the leading `rank` right singular vectors (input space) of the weights (N, D) or (N, C, k, k).

    `alignment` A (D_1, D_2) = procrustes(E[phi_1 phi_2^T]) brings net 2's rows to net 1's input space (W A^T,
    conv kernels over input channels; None: the shared input, A = I). The plain matrix is NaN when the two input
    spaces differ in size."""
    weights = [first.to(torch.float64), second.to(torch.float64)]
    vectors = [torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)[2] for w in weights]
    k = min(rank, vectors[0].shape[0], vectors[1].shape[0])
    top, other = vectors[0][:k], vectors[1][:k]
    moved = other if alignment is None else al.weight_to_reference(other.reshape(k, *weights[1].shape[1:]), alignment)
    plain = (top @ other.T).abs().cpu().numpy() if top.shape == other.shape else np.full((k, k), np.nan)
    return plain, (top @ moved.reshape(k, -1).T).abs().cpu().numpy()


def activation_cosines(first: torch.Tensor, second: torch.Tensor, alignment: torch.Tensor, rank: int) \
        -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's activation cosine matrices (seed002 §7 steps 5 and 7): (|E_1^T E_2|, |E_1^T A E_2|) of the
    leading `rank` eigenvectors of two nets' activation covariances (D_1, D_1) and (D_2, D_2), A (D_1, D_2) their
    alignment. The plain matrix is NaN when D_1 != D_2."""
    E1, E2 = al.principal_components(first)[1], al.principal_components(second)[1]
    k = min(rank, E1.shape[1], E2.shape[1])
    plain = (E1[:, :k].T @ E2[:, :k]).abs().cpu().numpy() if E1.shape == E2.shape else np.full((k, k), np.nan)
    return plain, (E1[:, :k].T @ alignment @ E2[:, :k]).abs().cpu().numpy()
