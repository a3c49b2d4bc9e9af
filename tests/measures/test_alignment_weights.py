"""Tests of measures/alignment.py's weights (seed002 §5.3-§5.5: weight covariances, rainbow sampling, restandardising,
clipping, Marchenko-Pastur, operator errors) against scipy (ortho_group, kurtosis), numpy formulas written from the
spec and a PyTorch BatchNorm (the activations: test_alignment.py)."""
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats
import torch
from alignment_cases import correlated, rng, rotation

from measures.alignment import (
    CovarianceAccumulator,
    clip_weight,
    clipping_grid,
    clipping_projector,
    cross_covariance,
    excess_kurtosis,
    marchenko_pastur_density,
    marchenko_pastur_edges,
    marchenko_pastur_fraction,
    positive_eigenpairs,
    principal_components,
    random_basis,
    recompute_standardization,
    relative_operator_error,
    rescale_cross_covariance,
    sample_from_spectrum,
    sample_rainbow_weights,
    weight_covariance,
    weight_dynamics,
    weight_spectrum,
    whiten_weights,
)

# ------------------------------------------------------------------------------------ weight covariance (§5.3)


def test_weight_covariance_stacks_rows_without_centring():
    weights = [torch.randn(7, 5, 1, 1, generator=rng(60 + k)) + 1.0 for k in range(3)]
    rows = np.vstack([w.reshape(7, 5).double().numpy() for w in weights])
    np.testing.assert_allclose(weight_covariance(weights).numpy(), rows.T @ rows / 21, rtol=1e-12)
    np.testing.assert_allclose(weight_covariance(weights[0]).numpy(), rows[:7].T @ rows[:7] / 7, rtol=1e-12)


@pytest.mark.parametrize("nets, rows, dim", [(3, 4, 20), (3, 10, 20)])        # N_tot < D (SVD) and N_tot > D
def test_weight_spectrum_matches_eigvalsh(nets, rows, dim):
    weights = [torch.randn(rows, dim, generator=rng(70 + k), dtype=torch.float64) for k in range(nets)]
    eigenvalues, eigenvectors = weight_spectrum(weights)
    stacked = np.vstack([w.numpy() for w in weights])                   # every net's rows, uncentred (§5.3)
    C = stacked.T @ stacked / len(stacked)
    r = min(nets * rows, dim)
    assert eigenvalues.shape == (r,) and eigenvectors.shape == (dim, r)
    np.testing.assert_allclose(eigenvalues.numpy(), np.linalg.eigvalsh(C)[::-1][:r], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((eigenvectors * eigenvalues) @ eigenvectors.T, C, atol=1e-10)
    np.testing.assert_allclose((eigenvectors.T @ eigenvectors).numpy(), np.eye(r), atol=1e-10)


def test_whitened_weights_have_identity_covariance():
    W = correlated((50, 8), 80)
    eigenvalues, eigenvectors = weight_spectrum(W)
    white = whiten_weights(W, eigenvalues, eigenvectors)
    np.testing.assert_allclose((white.T @ white / 50).numpy(), np.eye(8), atol=1e-10)


# ---------------------------------------------------------------------------------- rainbow sampling (§5.4)


def trained_like_covariance(seed, rows=64, dim=20):
    """C = W^T W / N of a weight with a decaying spectrum."""
    return weight_covariance(correlated((rows, dim), seed))


def test_gaussian_rainbow_weights_have_covariance_c_and_the_right_scale():
    C = trained_like_covariance(90)
    W = sample_rainbow_weights(C, 20000, generator=rng(91))
    assert W.shape == (20000, 20) and W.dtype == torch.float64
    empirical = W.T @ W / 20000
    assert (torch.linalg.norm(empirical - C) / torch.linalg.norm(C)).item() < 0.05
    mean_sq_norm = W.square().sum(1).mean().item()
    assert mean_sq_norm == pytest.approx(C.trace().item(), rel=0.03)        # tutorial scaling would give 64 tr C
    assert torch.equal(sample_rainbow_weights(C, 5, generator=rng(1)), sample_rainbow_weights(C, 5, generator=rng(1)))
    assert not torch.equal(sample_rainbow_weights(C, 5, generator=rng(1)),
                           sample_rainbow_weights(C, 5, generator=rng(2)))
    given = sample_from_spectrum(*principal_components(C), 5, generator=rng(1))
    assert torch.equal(given, sample_rainbow_weights(C, 5, generator=rng(1)))  # a precomputed spectrum: same draw


def test_orthogonal_rainbow_weights_match_c_exactly_when_n_covers_the_rank():
    C = weight_covariance(correlated((5, 20), 92))                          # rank 5 in D = 20
    W = sample_rainbow_weights(C, 8, generator=rng(93), method="orthogonal")
    np.testing.assert_allclose((W.T @ W / 8).numpy(), C.numpy(), atol=1e-10)


def test_orthogonal_rainbow_weights_match_c_on_average_when_n_is_below_the_rank():
    C = trained_like_covariance(94, dim=10)
    g = rng(95)
    draws = [sample_rainbow_weights(C, 4, generator=g, method="orthogonal") for _ in range(1000)]
    average = sum(W.T @ W / 4 for W in draws) / len(draws)
    assert (torch.linalg.norm(average - C) / torch.linalg.norm(C)).item() < 0.05


def test_unknown_sampling_method_is_rejected():
    with pytest.raises(ValueError, match="gaussian"):
        sample_rainbow_weights(torch.eye(3), 2, method="uniform")


def shifted_data(seed, scale=1.0):
    """(B, C, H, W) pre-BN activations with per-channel means and standard deviations that shift with scale."""
    means = torch.tensor([0.0, 2.0, -1.0, 5.0], dtype=torch.float64) * scale
    stds = torch.tensor([1.0, 0.5, 3.0, 2.0], dtype=torch.float64) * scale
    return torch.randn(64, 4, 3, 3, generator=rng(seed), dtype=torch.float64) * stds[:, None, None] \
        + means[:, None, None]


def trained_batchnorm(eps):
    bn = torch.nn.BatchNorm2d(4, affine=False, eps=eps, dtype=torch.float64)
    for seed in range(5):
        bn(shifted_data(100 + seed))
    return bn.eval()


@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_recompute_standardization_restandardizes_shifted_data(eps):
    bn = trained_batchnorm(eps)
    new_data = shifted_data(110, scale=2.5) + 1.0                               # the distribution shifts
    acc = CovarianceAccumulator()
    with torch.no_grad():
        acc.update(bn(new_data))
    m = acc.compute()
    old_var = bn.running_var.clone()
    new_mean, new_var = recompute_standardization(bn.running_mean, old_var, m.mean_a, m.power_a, eps)
    bn.running_mean.copy_(new_mean)
    bn.running_var.copy_(new_var)
    with torch.no_grad():
        y = bn(new_data)
    assert y.mean((0, 2, 3)).abs().max().item() < 1e-6
    assert (y.var((0, 2, 3), unbiased=False) - 1).abs().max().item() < 1e-6
    if eps > 0.01:                                           # dropping eps (old_var (m2 - m1^2)) is visibly off
        naive = old_var * (m.power_a - m.mean_a ** 2)
        assert ((naive + eps) / (new_var + eps) - 1).abs().max().item() > 1e-3


def test_rescaled_cross_covariance_equals_the_recomputed_one():
    eps = 0.05
    bn = trained_batchnorm(eps)
    new_data = shifted_data(120, scale=1.7) - 0.5
    reference = correlated((64, 3, 3, 3), 121) + 0.8                            # non-zero-mean reference net
    with torch.no_grad():
        acc = CovarianceAccumulator()
        acc.update(reference, bn(new_data))
        m = acc.compute()
        old_var = bn.running_var.clone()
        new_mean, new_var = recompute_standardization(bn.running_mean, old_var, m.mean_b, m.power_b, eps)
        bn.running_mean.copy_(new_mean)
        bn.running_var.copy_(new_var)
        recomputed = cross_covariance(reference, bn(new_data))
    rescaled = rescale_cross_covariance(m.cross, old_var, new_var, eps, ref_mean=m.mean_a, m1=m.mean_b)
    np.testing.assert_allclose(rescaled.numpy(), recomputed.numpy(), atol=1e-10)
    column_only = rescale_cross_covariance(m.cross, old_var, new_var, eps)        # the spec's form: off here
    assert (column_only - recomputed).abs().max().item() > 1e-2
    with pytest.raises(ValueError, match="both"):
        rescale_cross_covariance(m.cross, old_var, new_var, eps, ref_mean=m.mean_a)


# ------------------------------------------------------------------------------------------- clipping (§5.5)


def test_clipping_keeps_everything_at_d_equal_d_and_nothing_at_zero():
    Q = rotation(6, 130)
    basis = random_basis(6, generator=rng(131))
    W = torch.randn(4, 6, 3, 3, generator=rng(132), dtype=torch.float64)
    np.testing.assert_allclose(clipping_projector(basis, 6).numpy(), np.eye(6), atol=1e-12)
    np.testing.assert_allclose(clip_weight(W, Q, basis, 6).numpy(), W.numpy(), atol=1e-12)
    assert torch.count_nonzero(clip_weight(W, Q, basis, 0)) == 0
    with pytest.raises(ValueError, match="d must be"):
        clipping_projector(basis, 7)


def test_clip_weight_matches_the_spec_formula():
    Q = rotation(6, 133)                                     # ours maps net -> mean; the spec's A is Q^T
    _, basis = principal_components(trained_like_covariance(134, dim=6))
    W = torch.randn(4, 6, generator=rng(135), dtype=torch.float64)
    P = clipping_projector(basis, 2)
    assert torch.linalg.matrix_rank(P).item() == 2
    np.testing.assert_allclose((P @ P).numpy(), P.numpy(), atol=1e-12)
    spec_A = Q.T.numpy()
    np.testing.assert_allclose(clip_weight(W, Q, basis, 2).numpy(), W.numpy() @ spec_A @ P.numpy() @ spec_A.T,
                               atol=1e-12)
    np.testing.assert_allclose(clip_weight(W, None, basis, 2).numpy(), W.numpy() @ P.numpy(), atol=1e-12)


# The spec's §6 table (J8 CIFAR net, 51-point grids): smallest grid d within 1% per D and basis, read off the
# original's precomputed clipping files, so each lies on the original's grid of that D.
SPEC_CLIPPING_D = {320: [19, 25, 217], 640: [64, 89, 448], 1280: [51, 76, 793], 2560: [51, 153, 204, 1689, 1945, 1894]}


def test_clipping_grid_truncates_like_the_original():
    for dim, found in SPEC_CLIPPING_D.items():
        grid = clipping_grid(dim, 51)
        assert len(grid) == 51 and grid[0] == 0 and grid[-1] == dim
        assert set(found) <= set(grid.tolist()), dim
    rounded = np.round(np.linspace(0, 320, 51)).astype(int)                 # 25 (= int(25.6)) is not on it
    assert 25 not in rounded
    assert clipping_grid(128, 51)[:5].tolist() == [0, 2, 5, 7, 10]           # 2.56 k truncated
    assert clipping_grid(64, 3).tolist() == [0, 32, 64]
    small = clipping_grid(15, 51)                                            # step 0.3: duplicates dropped
    assert small.tolist() == list(range(16))


def test_bases_are_orthonormal_and_sorted():
    C = trained_like_covariance(136, dim=7)
    eigenvalues, vectors = principal_components(C)
    np.testing.assert_allclose(eigenvalues.numpy(), np.linalg.eigvalsh(C.numpy())[::-1], rtol=1e-10)
    np.testing.assert_allclose((C @ vectors).numpy(), (vectors * eigenvalues).numpy(), atol=1e-10)
    basis = random_basis(7, generator=rng(137))
    np.testing.assert_allclose((basis.T @ basis).numpy(), np.eye(7), atol=1e-12)
    assert torch.equal(basis, random_basis(7, generator=rng(137)))


# ---------------------------------------------------------------------------------------- diagnostics (§2)


def test_marchenko_pastur_fraction_is_small_for_noise_and_large_with_spikes():
    assert marchenko_pastur_edges(0.25) == pytest.approx((0.25, 2.25))
    G = torch.randn(2000, 500, generator=rng(140), dtype=torch.float64)
    eigenvalues, _ = weight_spectrum(G)
    assert marchenko_pastur_fraction(eigenvalues, 500 / 2000).item() < 0.01
    wide, _ = weight_spectrum(G.T)                            # (500, 2000): the 500 nonzero eigenvalues, q = 4
    assert marchenko_pastur_fraction(wide, 2000 / 500).item() < 0.01
    spiked = G.clone()
    spiked[:, :20] *= 5.0                                      # 20 directions with 25x the variance
    spiked_eigenvalues, _ = weight_spectrum(spiked)
    assert marchenko_pastur_fraction(spiked_eigenvalues, 500 / 2000).item() > 0.1


@pytest.mark.parametrize("q", [0.1, 0.25, 0.5, 1.0])
def test_marchenko_pastur_density_is_a_density_with_mean_one_and_variance_q(q):
    """Moments of the MP law of mean-1 eigenvalues: total mass 1, mean 1, variance q; zero outside the edges."""
    low, high = marchenko_pastur_edges(q)
    x = np.linspace(low, high, 400001)
    density = marchenko_pastur_density(x, q)
    assert isinstance(density, np.ndarray) and np.all(density >= 0)
    mass = scipy.integrate.simpson(density, x=x)
    mean = scipy.integrate.simpson(x * density, x=x)
    variance = scipy.integrate.simpson((x - 1) ** 2 * density, x=x)
    assert mass == pytest.approx(1.0, abs=2e-3) and mean == pytest.approx(1.0, abs=2e-3)
    assert variance == pytest.approx(q, abs=2e-3)
    outside = torch.tensor([low - 0.01, high + 0.01, 0.0]) if q < 1 else torch.tensor([high + 0.01])
    assert torch.equal(marchenko_pastur_density(outside, q), torch.zeros_like(outside, dtype=torch.float64))


def test_marchenko_pastur_density_matches_a_large_random_matrix():
    G = torch.randn(4000, 1000, generator=rng(141), dtype=torch.float64)
    eigenvalues, _ = weight_spectrum(G)
    normalised = (eigenvalues / eigenvalues.mean()).numpy()
    counts, edges = np.histogram(normalised, bins=20, range=marchenko_pastur_edges(0.25))
    centres = (edges[:-1] + edges[1:]) / 2
    expected = marchenko_pastur_density(centres, 0.25) * (edges[1] - edges[0]) * len(normalised)
    assert np.abs(counts - expected).max() < 0.2 * expected.max()


def test_positive_eigenpairs_drop_the_numerical_zeros_of_a_rank_deficient_covariance():
    W = correlated((6, 10), 142)                              # rank 6 in D = 10
    eigenvalues, eigenvectors = principal_components(weight_covariance(W))
    values, vectors = positive_eigenpairs(eigenvalues, eigenvectors)
    assert values.shape == (6,) and vectors.shape == (10, 6)
    np.testing.assert_allclose(values.numpy(), np.linalg.svd(W.numpy(), compute_uv=False) ** 2 / 6, rtol=1e-10)
    assert torch.equal(vectors, eigenvectors[:, :6])
    padded = np.concatenate([values.numpy(), np.zeros(4)])    # a numpy spectrum padded with zeros, as spectra.npz
    assert isinstance(positive_eigenpairs(padded), np.ndarray) and positive_eigenpairs(padded).shape == (6,)


def test_excess_kurtosis_matches_scipy_and_known_values():
    g = rng(150)
    samples = torch.stack([torch.randn(20000, generator=g, dtype=torch.float64),
                           torch.rand(20000, generator=g, dtype=torch.float64)], 1)
    kurtosis = excess_kurtosis(samples)
    np.testing.assert_allclose(kurtosis.numpy(), scipy.stats.kurtosis(samples.numpy(), axis=0), rtol=1e-10)
    assert abs(kurtosis[0].item()) < 0.1
    assert kurtosis[1].item() == pytest.approx(-1.2, abs=0.05)


@pytest.mark.parametrize("rows_a, rows_b, dim", [(7, 9, 30), (40, 60, 12), (5, 50, 20)])
def test_relative_operator_error_matches_numpy_on_the_full_covariances(rows_a, rows_b, dim):
    """||s C_a - s_ref C_b||_2 / ||s_ref C_b||_2 from the D x D matrices (numpy), thin (rows < D) or not."""
    g = rng(rows_a + dim)
    a = [torch.randn(rows_a, dim, generator=g, dtype=torch.float64) for _ in range(2)]
    b = torch.randn(rows_b, dim, generator=g, dtype=torch.float64) * torch.linspace(2, 0.1, dim)
    A, B = torch.cat(a).numpy(), b.numpy()
    C_a, C_b = A.T @ A / len(A), B.T @ B / len(B)
    for scale, ref_scale in ((1.0, 1.0), (3.0, 0.5)):
        expected = np.linalg.norm(scale * C_a - ref_scale * C_b, 2) / np.linalg.norm(ref_scale * C_b, 2)
        assert float(relative_operator_error(a, b, scale, ref_scale)) == pytest.approx(expected, rel=1e-9)
    assert float(relative_operator_error(b, [b[:3], b[3:]])) == pytest.approx(0.0, abs=1e-12)


def test_relative_operator_error_of_sampled_weights_shrinks_like_one_over_sqrt_n():
    """Rows drawn from N(0, C): the estimate's operator-norm error falls as the sample grows (about sqrt(D / n))."""
    g = rng(3)
    dim = 16
    cov = torch.diag(torch.linspace(4, 0.25, dim, dtype=torch.float64))
    reference = cov.sqrt()                     # dim rows whose W^T W / dim is C / dim: scaled by dim below
    errors = [float(relative_operator_error(sample_rainbow_weights(cov, n, g), reference, 1.0, dim))
              for n in (100, 10000)]
    assert errors[1] < errors[0] / 5 and errors[1] < 0.1


def test_weight_dynamics_matches_numpy_norms_and_cosines():
    g = rng(4)
    start = torch.randn(6, 3, 2, 2, generator=g, dtype=torch.float64)
    now = start * 2 + 0.3 * torch.randn(6, 3, 2, 2, generator=g, dtype=torch.float64)
    directions = torch.linalg.qr(torch.randn(12, 5, generator=g, dtype=torch.float64))[0]
    amplification, cosine = weight_dynamics(now, start, directions)
    W, W0, E = now.reshape(6, -1).numpy(), start.reshape(6, -1).numpy(), directions.numpy()
    for r in range(5):
        u, v = W @ E[:, r], W0 @ E[:, r]
        assert float(amplification[r]) == pytest.approx(np.linalg.norm(u) / np.linalg.norm(v), rel=1e-12)
        assert float(cosine[r]) == pytest.approx(u @ v / np.linalg.norm(u) / np.linalg.norm(v), rel=1e-12)
    same = weight_dynamics(start, start, directions)
    ones = torch.ones(5, dtype=torch.float64)
    assert torch.allclose(same[0], ones) and torch.allclose(same[1], ones)
