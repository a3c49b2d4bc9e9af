"""Centred kernel alignment (CKA) and the Gram spectra between layers (Kornblith et al. 2019; seed000 §8).

For n examples with features X (n, d_x) and Y (n, d_y), linear CKA compares the centred Gram matrices
K = X X^T and L = Y Y^T:

    CKA(K, L) = <K_c, L_c>_F / (||K_c||_F ||L_c||_F),     K_c = H K H,  H = I - 1 1^T / n.

With centred features the same number is ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), which needs no n x n matrix.
The debiased variant replaces H K H by the U-centred Gram of Szekely & Rizzo (an unbiased HSIC estimator).
CKA is a similarity in [0, 1] (1 - CKA is the distance); the debiased estimate can dip slightly below 0.

    linear_cka(X, Y)                      # 0.55761 on Kornblith's demo data, debiased 0.51346
    fa, fb = gram_factor(Xa), gram_factor(Xb)
    cka_spectrum(fa, fb)["cka"].sum()     # == linear_cka(Xa, Xb) (seed000 §8)
    acc = MinibatchCKA(); acc.update([f1, f2, f3]); acc.compute()     # (3, 3), Nguyen et al. 2021

`gram_factor` reduces a layer to F (n, r) with centred K = F F^T and orthogonal columns, from features (through the
d x d covariance when d < n, through the n x n Gram otherwise) or from a stored Gram, so two layers stored in
different forms can be compared. All statistics are computed in float64 on the inputs' device.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "gram_linear", "center_gram", "cka", "linear_cka",
    "GramFactor", "gram_factor", "gram_factor_from_gram", "cka_spectrum", "MinibatchCKA",
]

SPECTRUM_THRESHOLD = 1e-6  # seed000 §8: keep eigenvalues (and spectrum values) above 1e-6 x the largest


def _flat64(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (n, d) float64."""
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _check_debiasable(n: int) -> None:
    if n <= 3:
        raise ValueError(f"the unbiased HSIC needs more than 3 examples (it divides by n-3), got n={n}; "
                         "drop or merge the last small batch")


def gram_linear(X: torch.Tensor) -> torch.Tensor:
    """Gram matrix of a linear kernel, K = X X^T (Kornblith et al. 2019).

    Args:
      X: (n, ...) features; trailing dimensions are flattened.

    Returns:
      (n, n) float64 Gram matrix.
    """
    X = _flat64(X)
    return X @ X.T


def center_gram(K: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Centre a symmetric Gram matrix (Kornblith et al. 2019).

    Biased: H K H with H = I - 1 1^T / n. Unbiased: the U-centring of Szekely & Rizzo (2014), which zeroes the
    diagonal and, off the diagonal, subtracts row and column sums / (n-2) and adds back the total /((n-1)(n-2));
    <U(K), U(L)>_F / (n (n-3)) is then the unbiased HSIC estimator of Song et al. (2012).

    Args:
      K: (n, n) symmetric Gram matrix.
      unbiased: use the U-centring (needs n > 3).

    Returns:
      (n, n) float64 centred Gram matrix (a new tensor).
    """
    K = K.to(torch.float64).clone()
    n = K.shape[0]
    if unbiased:
        _check_debiasable(n)
        K.fill_diagonal_(0.0)
        means = K.sum(0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
    else:
        means = K.mean(0)
        means = means - means.mean() / 2
    K -= means[:, None]
    K -= means[None, :]
    if unbiased:
        K.fill_diagonal_(0.0)
    return K


def cka(K: torch.Tensor, L: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """CKA between two Gram matrices, <K_c, L_c>_F / (||K_c||_F ||L_c||_F) (Kornblith et al. 2019, eq. 4).

    Args:
      K, L: (n, n) Gram matrices of the same n examples.
      debiased: centre with the U-centring (debiased CKA, n > 3).

    Returns:
      0-d float64 tensor, a similarity in [0, 1] (debiased: can be slightly negative).
    """
    Kc, Lc = center_gram(K, debiased), center_gram(L, debiased)
    return (Kc * Lc).sum() / (torch.linalg.norm(Kc) * torch.linalg.norm(Lc))


def _debiased_dot(xty_sq: torch.Tensor, rows_x: torch.Tensor, rows_y: torch.Tensor, n: int) -> torch.Tensor:
    """<U(X X^T), U(Y Y^T)> up to the factor common to all pairs, from centred features (Song et al. 2012).

    xty_sq = ||Y^T X||_F^2 and rows_x[i] = ||x_i||^2 (centred X); the diagonal of K is removed and the mean
    terms collapse because centred features have zero column sums.
    """
    return xty_sq - n / (n - 2) * rows_x.dot(rows_y) + rows_x.sum() * rows_y.sum() / ((n - 1) * (n - 2))


def linear_cka(X: torch.Tensor, Y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Linear CKA between two representations of the same examples (Kornblith et al. 2019).

    Uses the feature-space form ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred features when the
    d_x x d_y cross block is cheaper than the Gram matrices (no n x n matrix), and the Gram form otherwise.
    Both give the same number.

    Args:
      X: (n, ...) features; Y: (n, ...) features of the same n examples.
      debiased: the unbiased-HSIC variant (n > 3).

    Returns:
      0-d float64 tensor in [0, 1] (debiased: can be slightly negative).
    """
    X, Y = _flat64(X), _flat64(Y)
    n, dx, dy = X.shape[0], X.shape[1], Y.shape[1]
    if dx * dy > n * (dx + dy):
        return cka(gram_linear(X), gram_linear(Y), debiased)
    X, Y = X - X.mean(0), Y - Y.mean(0)
    xty, xtx, yty = (Y.T @ X).square().sum(), (X.T @ X).square().sum(), (Y.T @ Y).square().sum()
    if not debiased:
        return xty / (xtx.sqrt() * yty.sqrt())
    _check_debiasable(n)
    rows_x, rows_y = X.square().sum(1), Y.square().sum(1)
    return _debiased_dot(xty, rows_x, rows_y, n) / (
        _debiased_dot(xtx, rows_x, rows_x, n).sqrt() * _debiased_dot(yty, rows_y, rows_y, n).sqrt())


# ----------------------------------------------------------------------------------------------------------------
# Spectra of the centred Grams (seed000 §8)
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GramFactor:
    """A layer's centred Gram matrix in factored form, K_c = F F^T with F^T F = diag(eigenvalues).

    Attributes:
      factor: (n, r) float64 F = V Lambda^(1/2), with V the leading eigenvectors of K_c.
      eigenvalues: (r,) float64 eigenvalues of K_c, descending, all > threshold x the largest.
    """

    factor: torch.Tensor
    eigenvalues: torch.Tensor

    def to(self, device) -> GramFactor:
        return GramFactor(self.factor.to(device), self.eigenvalues.to(device))


def _leading(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, threshold: float):
    """Sort an eigh result descending and keep eigenvalues > threshold x the largest."""
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    keep = eigenvalues > threshold * eigenvalues[0]
    return eigenvalues[keep], eigenvectors[:, keep]


def gram_factor(X: torch.Tensor, threshold: float = SPECTRUM_THRESHOLD) -> GramFactor:
    """Factor of the centred linear Gram of features, without an n x n matrix when d < n (seed000 §8).

    With centred X: if d < n, X^T X = W Lambda W^T (d x d) and F = X W; otherwise K_c = X X^T = V Lambda V^T
    (n x n) and F = V Lambda^(1/2). Either way K_c = F F^T on the kept eigenvalues.

    Args:
      X: (n, ...) features; trailing dimensions are flattened.
      threshold: keep eigenvalues > threshold x the largest (seed000 §8: 1e-6).

    Returns:
      GramFactor with an (n, r) factor, r <= min(n - 1, d).
    """
    X = _flat64(X)
    X = X - X.mean(0)
    n, d = X.shape
    if d < n:
        eigenvalues, W = _leading(*torch.linalg.eigh(X.T @ X), threshold)
        return GramFactor(X @ W, eigenvalues)
    return gram_factor_from_gram(X @ X.T, threshold)


def gram_factor_from_gram(K: torch.Tensor, threshold: float = SPECTRUM_THRESHOLD) -> GramFactor:
    """Factor of a stored (uncentred) Gram matrix: centre it, eigh, keep the leading part (seed000 §8).

    Args:
      K: (n, n) symmetric Gram matrix, e.g. X X^T of a layer (seed000 §6.4 stores these uncentred).
      threshold: keep eigenvalues > threshold x the largest.

    Returns:
      GramFactor with an (n, r) factor F = V Lambda^(1/2).
    """
    eigenvalues, V = _leading(*torch.linalg.eigh(center_gram(K)), threshold)
    return GramFactor(V * eigenvalues.sqrt(), eigenvalues)


def _keep_large(values: torch.Tensor, threshold: float) -> torch.Tensor:
    values = values.sort(descending=True).values
    return values[values > threshold * values[0]]


def cka_spectrum(
    Xa: torch.Tensor | GramFactor, Xb: torch.Tensor | GramFactor, threshold: float = SPECTRUM_THRESHOLD
) -> dict[str, torch.Tensor]:
    """Spectra relating two layers' centred Grams K_a = V_a L_a V_a^T and K_b = V_b L_b V_b^T (seed000 §8).

    With P = V_a^T V_b and M = L_a^(1/2) P L_b^(1/2) = F_a^T F_b (r_a x r_b, never n x n):
      cka  = eig(M M^T) / sqrt(sum L_a^2 sum L_b^2)   (squared singular values of M); its sum is linear CKA
      cca  = singular values of P                     (cosines of the principal angles between the eigenspaces)
      reg1 = eig(P L_b P^T) / sum L_b                 (part of K_b's variance inside span V_a)
      reg0 = eig(P^T L_a P) / sum L_a                 (part of K_a's variance inside span V_b)
    On the diagonal (Xa is Xb): cka = L^2 / sum L^2, cca = ones, reg0 = reg1 = L / sum L.

    Args:
      Xa, Xb: (n, ...) features of the same n examples, or their GramFactor (the forms may be mixed).
      threshold: keep each Gram's eigenvalues and each spectrum's values > threshold x its largest.

    Returns:
      dict with keys "cka", "cca", "reg0", "reg1", each a 1-D float64 tensor sorted descending.
    """
    fa = Xa if isinstance(Xa, GramFactor) else gram_factor(Xa, threshold)
    la = fa.eigenvalues
    if Xb is Xa:
        spectra = {"cka": la.square() / la.square().sum(), "cca": torch.ones_like(la),
                   "reg0": la / la.sum(), "reg1": la / la.sum()}
        return {name: _keep_large(values, threshold) for name, values in spectra.items()}
    fb = Xb if isinstance(Xb, GramFactor) else gram_factor(Xb, threshold)
    lb = fb.eigenvalues
    M = fa.factor.T @ fb.factor                                               # (r_a, r_b)
    ra, rb = la.rsqrt(), lb.rsqrt()
    # Squared singular values as eigenvalues of the Gram forms M^T M and M M^T (a symmetric eigensolve is about
    # twice as fast as an SVD); the absolute error eps |M|^2 is far below the kept values (> threshold x max).
    # cca keeps the SVD: its values are not squared, so the Gram form would square their relative error.
    MtM, MMt = M.T @ M, M @ M.T
    spectra = {
        "cka": _eigenvalues(MtM) / (la.square().sum() * lb.square().sum()).sqrt(),
        "cca": torch.linalg.svdvals(ra[:, None] * M * rb[None, :]).clamp(max=1.0),
        "reg0": _eigenvalues(rb[:, None] * MtM * rb[None, :]) / la.sum(),       # svdvals(M L_b^-1/2)^2
        "reg1": _eigenvalues(ra[:, None] * MMt * ra[None, :]) / lb.sum(),       # svdvals(L_a^-1/2 M)^2
    }
    return {name: _keep_large(values, threshold) for name, values in spectra.items()}


def _eigenvalues(gram: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric positive semi-definite matrix, rounding below zero clipped."""
    return torch.linalg.eigvalsh(gram).clamp(min=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Minibatch CKA (Nguyen, Raghu & Kornblith 2021)
# ----------------------------------------------------------------------------------------------------------------

class MinibatchCKA:
    """Streaming L x L linear CKA between layers, averaged over minibatches (Nguyen et al. 2021, eq. 3).

    Per minibatch of n > 3 examples, every layer's Gram is U-centred and flattened into a row of G (L, n^2);
    one matmul G G^T / (n (n-3)) adds the unbiased HSIC of every layer pair to the accumulator. compute()
    returns CKA_ij = sum_b HSIC_ij / sqrt(sum_b HSIC_ii sum_b HSIC_jj): a ratio of averaged HSICs, not an
    average of per-batch CKAs. Memory is L n^2, independent of the dataset size.

    Example:
      acc = MinibatchCKA()
      for x in loader: acc.update([f(x) for f in layers])
      acc.compute()   # (L, L), diagonal 1
    """

    def __init__(self) -> None:
        self.hsic: torch.Tensor | None = None   # (L, L) float64 running sum of unbiased HSICs

    def update(self, features: Sequence[torch.Tensor]) -> None:
        """Add one minibatch.

        Args:
          features: L tensors (n, ...) holding the same n > 3 examples at L layers (always in the same order).
        """
        sizes = [f.shape[0] for f in features]
        n = sizes[0]
        if any(size != n for size in sizes):
            raise ValueError(f"all layers must hold the same examples, got batch sizes {sizes}")
        _check_debiasable(n)
        grams = torch.stack([center_gram(gram_linear(f), unbiased=True).reshape(-1) for f in features])  # (L, n^2)
        batch_hsic = grams @ grams.T / (n * (n - 3))
        if self.hsic is not None and self.hsic.shape != batch_hsic.shape:
            raise ValueError(f"expected {self.hsic.shape[0]} layers per update, got {len(features)}")
        self.hsic = batch_hsic if self.hsic is None else self.hsic + batch_hsic

    def compute(self) -> torch.Tensor:
        """CKA between every pair of layers.

        Returns:
          (L, L) float64 symmetric tensor with unit diagonal.
        """
        if self.hsic is None:
            raise ValueError("MinibatchCKA.compute() called before any update()")
        scale = self.hsic.diagonal().rsqrt()
        return self.hsic * scale[:, None] * scale[None, :]
