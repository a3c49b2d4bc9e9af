"""Tests of measures/rainbow_weights.py (seed002 §2, §5.3, §5.5, §7) against numpy and scipy written out by hand."""
import numpy as np
import pytest
import scipy.stats
import torch

from measures import rainbow_weights as rw
from measures.alignment import weight_spectrum


def rng(seed):
    return np.random.default_rng(seed)


def test_channel_covariance_stacks_every_kernel_tap_of_every_net_as_a_row():
    weights = [rng(s).standard_normal((4, 3, 2, 2)) for s in (1, 2)]
    taps = np.concatenate([w.transpose(0, 2, 3, 1).reshape(-1, 3) for w in weights])     # (2 * 4 * 2 * 2, 3)
    expected = taps.T @ taps / len(taps)
    result = rw.channel_covariance([torch.from_numpy(w) for w in weights])
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12)


def test_weight_basis_of_a_conv_layer_is_the_channel_covariance_by_decreasing_variance():
    weights = [rng(s).standard_normal((5, 4, 3, 3)) * np.array([3.0, 1.0, 2.0, 0.5])[:, None, None] for s in (3, 4)]
    taps = np.concatenate([w.transpose(0, 2, 3, 1).reshape(-1, 4) for w in weights])
    values, vectors = np.linalg.eigh(taps.T @ taps / len(taps))
    basis = rw.weight_basis([torch.from_numpy(w) for w in weights], torch.eye(36)).numpy()
    np.testing.assert_allclose(np.abs(basis.T @ vectors[:, ::-1]), np.eye(4), atol=1e-10)


def test_weight_basis_completes_a_rank_deficient_covariance():
    """Two rows in D = 6: C has rank 2; the basis is orthonormal and its first two columns span the rows."""
    weights = rng(5).standard_normal((2, 6))
    values, vectors = np.linalg.eigh(weights.T @ weights / 2)
    basis = rw.weight_basis([torch.from_numpy(weights)], torch.from_numpy(vectors[:, ::-1][:, :2].copy())).numpy()
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-10)
    projector = basis[:, :2] @ basis[:, :2].T
    np.testing.assert_allclose(projector @ weights.T, weights.T, atol=1e-10)
    assert values[::-1][0] == pytest.approx(float(basis[:, 0] @ (weights.T @ weights / 2) @ basis[:, 0]))


def test_gaussianity_whitens_with_the_given_spectrum_and_ks_tests_like_scipy():
    """M = 3 nets of (40, 5) rows: C = W^T W / 120 (numpy), whitened (W V) / sqrt(lambda) per direction; the KS
    p-value of column r against N(0, 1) is scipy's exact one (the original's mode='exact'); the MP fractions count
    the mean-1 eigenvalues of net 2's W^T W (the original's panel) outside [(1 - sqrt q)^2, (1 + sqrt q)^2]."""
    scales = np.array([4.0, 2.0, 1.0, 1.0, 0.1])
    weights = [rng(s).standard_normal((40, 5)) * scales for s in (6, 7, 8)]
    stacked = np.concatenate(weights)
    values, vectors = np.linalg.eigh(stacked.T @ stacked / len(stacked))
    values, vectors = values[::-1].copy(), vectors[:, ::-1].copy()
    result = rw.gaussianity([torch.from_numpy(w) for w in weights], torch.from_numpy(values),
                            torch.from_numpy(vectors), [0, 3, 7])
    whitened = stacked @ vectors / np.sqrt(values)
    np.testing.assert_allclose(result["whitened"][:, :2], whitened[:, [0, 3]], rtol=1e-10)
    assert np.isnan(result["whitened"][:, 2]).all() and np.isnan(result["ks_pvalue"][2])   # no column 7 in D = 5
    for i, column in enumerate((0, 3)):
        exact = scipy.stats.kstest(whitened[:, column], "norm", method="exact").pvalue
        assert result["ks_pvalue"][i] == pytest.approx(exact, rel=1e-12)
    q = 5 / 40
    low, high = (1 - np.sqrt(q)) ** 2, (1 + np.sqrt(q)) ** 2
    for key, single in (("mp_colored", weights[1]), ("mp_white", weights[1] @ vectors / np.sqrt(values))):
        eigs = np.linalg.eigvalsh(single.T @ single / 40)
        eigs = eigs / eigs.mean()
        assert result[key] == pytest.approx(np.mean((eigs < low) | (eigs > high)))
    assert result["mp_colored"] > 0.5 and result["q"].tolist() == [q, q]
    np.testing.assert_allclose(np.sort(result["eigs_colored"]), np.sort(np.linalg.eigvalsh(weights[1].T @ weights[1])
                                                                       / np.trace(weights[1].T @ weights[1]) * 5))


def test_ks_ranks_are_the_original_0_based_columns_of_the_whitened_weights():
    """r = 0 is the top principal direction of C (the spec's KS table reads r = 1, 10, 100 as the original's
    columns); a rank beyond C's gives NaN."""
    generator = torch.Generator().manual_seed(0)
    aligned = [torch.randn(40, 6, generator=generator, dtype=torch.float64) * torch.linspace(3.0, 0.5, 6)
               for _ in range(3)]
    eigenvalues, eigenvectors = weight_spectrum(aligned)
    result = rw.gaussianity(aligned, eigenvalues, eigenvectors, [0, 1, 5, 6])
    rows = torch.cat(aligned)
    for column, rank in enumerate([0, 1, 5]):     # independent whitening: project on the rank-th eigenvector of C
        vector = np.linalg.eigh((rows.T @ rows / len(rows)).numpy())[1][:, ::-1][:, rank]
        projected = rows.numpy() @ vector
        expected = projected / np.sqrt(np.mean(projected ** 2))
        sign = np.sign(result["whitened"][0, column] * expected[0])
        np.testing.assert_allclose(result["whitened"][:, column], sign * expected, rtol=1e-8, atol=1e-10)
        assert result["ks_pvalue"][column] == pytest.approx(scipy.stats.kstest(sign * expected, "norm",
                                                                               method="exact").pvalue, rel=1e-6)
    assert np.isnan(result["ks_pvalue"][3]) and np.isnan(result["whitened"][:, 3]).all()


def test_ks_pvalues_ask_scipy_for_the_exact_distribution_as_the_original(monkeypatch):
    """The original's kstest(mode='exact'): scipy's "auto" has chosen the asymptotic distribution for large samples
    in some versions (M N >= 10,000 whitened weights at the paper's sizes), so the method is pinned."""
    methods = []
    kstest = scipy.stats.kstest

    def spy(*args, **kwargs):
        methods.append(kwargs.get("method", kwargs.get("mode", "auto")))
        return kstest(*args, **kwargs)

    monkeypatch.setattr(rw.stats, "kstest", spy)
    weights = [torch.from_numpy(rng(s).standard_normal((30, 4))) for s in (16, 17)]
    stacked = torch.cat(weights)
    values, vectors = torch.linalg.eigh(stacked.T @ stacked / 60)
    rw.gaussianity(weights, values.flip(0), vectors.flip(1), [0, 2])
    assert methods == ["exact", "exact"]


def test_gaussianity_leaves_mp_white_undefined_when_the_rows_do_not_outnumber_the_dimension():
    weights = [torch.from_numpy(rng(s).standard_normal((2, 6))) for s in (9, 10)]          # M N = 4 <= D = 6
    stacked = torch.cat(weights)
    values, vectors = torch.linalg.eigh(stacked.T @ stacked / 4)
    result = rw.gaussianity(weights, values.flip(0), vectors.flip(1), [0])
    assert np.isnan(result["mp_white"]) and np.isfinite(result["mp_colored"])


def test_within_one_percent_is_the_first_grid_point_within_0_01_of_the_reference():
    grid = np.array([0, 4, 8, 12, 16])
    assert rw.within_one_percent(grid, np.array([0.1, 0.78, 0.795, 0.70, 0.8]), 0.80) == 8
    assert rw.within_one_percent(grid, np.array([0.1, 0.2, 0.3, 0.4, 0.5]), 0.80) == -1


def test_weight_cosines_compare_right_singular_vectors_before_and_after_alignment():
    first, second = rng(11).standard_normal((6, 4)), rng(12).standard_normal((6, 4))
    A = np.linalg.qr(rng(13).standard_normal((4, 4)))[0]                                 # (D_1, D_2)
    V1, V2 = np.linalg.svd(first)[2][:3], np.linalg.svd(second)[2][:3]
    plain, aligned = rw.weight_cosines(torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(A), 3)
    np.testing.assert_allclose(plain, np.abs(V1 @ V2.T), atol=1e-12)
    np.testing.assert_allclose(aligned, np.abs(V1 @ A @ V2.T), atol=1e-12)
    # net 2 = net 1 in a rotated input space (W_2 = W_1 A): aligned, its singular vectors are net 1's
    _, aligned = rw.weight_cosines(torch.from_numpy(first), torch.from_numpy(first @ A), torch.from_numpy(A), 3)
    np.testing.assert_allclose(aligned, np.eye(3), atol=1e-10)


def test_activation_cosines_compare_covariance_eigenvectors_before_and_after_alignment():
    x = rng(14).standard_normal((50, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
    A = np.linalg.qr(rng(15).standard_normal((4, 4)))[0]
    first, second = x.T @ x / 50, A.T @ (x.T @ x / 50) @ A                               # net 2's phi = A^T phi_1
    E1, E2 = np.linalg.eigh(first)[1][:, ::-1], np.linalg.eigh(second)[1][:, ::-1]
    plain, aligned = rw.activation_cosines(torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(A), 2)
    np.testing.assert_allclose(plain, np.abs(E1[:, :2].T @ E2[:, :2]), atol=1e-12)
    np.testing.assert_allclose(aligned, np.eye(2), atol=1e-10)


def test_small_readouts():
    np.testing.assert_allclose(rw.normalised(torch.tensor([1.0, 2.0, 3.0])), [0.5, 1.0, 1.5])
    assert rw.convergence_counts([1, 10, 50], 12) == [1, 10, 12]
    np.testing.assert_array_equal(rw.padded([[1, 2], [3]], fill=-1), [[1, 2], [3, -1]])
