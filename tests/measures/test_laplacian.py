"""Tests of measures/laplacian.py (seed004 §2.9) against numpy/scipy references and known spectra."""
import numpy as np
import pytest
import scipy.linalg
import torch

from measures.laplacian import grid_laplacian, laplacian_modes, laplacian_spectrum


def numpy_grid_laplacian(N):
    """Reference: D - A built pixel by pixel from the 4-neighbour rule."""
    L = np.zeros((N * N, N * N))
    for r in range(N):
        for c in range(N):
            for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= r + dr < N and 0 <= c + dc < N:
                    L[r * N + c, (r + dr) * N + c + dc] = -1.0
                    L[r * N + c, r * N + c] += 1.0
    return L


@pytest.mark.parametrize("N", [1, 2, 3, 5])
def test_grid_laplacian_matches_pixelwise_construction(N):
    np.testing.assert_array_equal(grid_laplacian(N).numpy(), numpy_grid_laplacian(N))


def test_eigenvalues_3x3_are_the_published_ones():
    eigenvalues, _ = laplacian_modes(3)
    np.testing.assert_allclose(eigenvalues.numpy(), [0, 1, 1, 2, 3, 3, 4, 4, 6], atol=1e-12)


@pytest.mark.parametrize("N", [2, 3, 5, 7])
def test_modes_are_an_orthonormal_eigenbasis_with_scipy_eigenvalues(N):
    eigenvalues, modes = laplacian_modes(N)
    L = numpy_grid_laplacian(N)
    psi = modes.reshape(N * N, N * N).numpy()                       # rows are the flattened modes
    np.testing.assert_allclose(psi @ psi.T, np.eye(N * N), atol=1e-12)
    np.testing.assert_allclose(psi @ L, eigenvalues.numpy()[:, None] * psi, atol=1e-12)
    np.testing.assert_allclose(eigenvalues.numpy(), scipy.linalg.eigh(L, eigvals_only=True), atol=1e-12)


def test_mode_zero_is_the_constant_filter():
    _, modes = laplacian_modes(5)
    np.testing.assert_allclose(modes[0].numpy(), np.full((5, 5), 1 / 5), atol=1e-12)


def test_constant_filter_puts_all_energy_in_mode_zero():
    weight = torch.randn(4, 3, 1, 1).expand(4, 3, 3, 3)             # every slice constant, of random height
    spectrum = laplacian_spectrum(weight)
    expected = (weight[:, :, 0, 0].double() ** 2 * 9).mean()
    assert spectrum[0] == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(spectrum[1:].numpy(), 0, atol=1e-12)


def test_parseval_sum_is_mean_squared_frobenius_norm():
    weight = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(1))
    spectrum = laplacian_spectrum(weight)
    frobenius = weight.double().pow(2).sum((2, 3)).mean()
    assert spectrum.sum().item() == pytest.approx(frobenius.item(), rel=1e-12)


def test_degenerate_groups_agree_with_a_scipy_eigh_basis():
    """Per-eigenvalue sums of a_k do not depend on the basis chosen inside a degenerate eigenspace."""
    N = 5
    weight = torch.randn(7, 4, N, N, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    values, vectors = scipy.linalg.eigh(numpy_grid_laplacian(N))
    reference = ((weight.reshape(-1, N * N).numpy() @ vectors) ** 2).mean(0)
    eigenvalues, _ = laplacian_modes(N)
    spectrum = laplacian_spectrum(weight).numpy()
    for level in np.unique(np.round(values, 8)):
        ours = spectrum[np.isclose(eigenvalues.numpy(), level, atol=1e-8)].sum()
        theirs = reference[np.isclose(values, level, atol=1e-8)].sum()
        assert ours == pytest.approx(theirs, rel=1e-10)


def test_column_gradient_filter_lives_on_the_first_lambda_one_mode():
    column_gradient = torch.tensor([[1.0, 0.0, -1.0]] * 3).expand(2, 2, 3, 3)
    spectrum = laplacian_spectrum(column_gradient)
    assert spectrum[1].item() == pytest.approx(6.0)                  # ||w||^2 = 6, all on (a=0, b=1)
    np.testing.assert_allclose(spectrum[[0, *range(2, 9)]].numpy(), 0, atol=1e-12)


def test_iid_gaussian_filter_bank_has_a_flat_spectrum():
    weight = 0.5 * torch.randn(64, 64, 3, 3, generator=torch.Generator().manual_seed(3))   # 4096 slices
    spectrum = laplacian_spectrum(weight).numpy()
    # each a_k is a mean of 4096 variables 0.25 chi^2_1: relative std sqrt(2/4096) = 2.2%
    np.testing.assert_allclose(spectrum, 0.25, rtol=0.1)


def test_spectrum_rejects_non_square_kernels():
    with pytest.raises(ValueError, match="square"):
        laplacian_spectrum(torch.zeros(2, 2, 3, 5))
