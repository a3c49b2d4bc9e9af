"""Tests of measures/alignment.py (seed002 §5: alignment, weight covariances, rainbow sampling, clipping) against
scipy (orthogonal_procrustes, ortho_group, kurtosis), numpy formulas written from the spec, a PyTorch BatchNorm and
known invariances (rotated copies of one representation)."""
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats
import torch
import torch.nn.functional as F

from measures.alignment import (
    CovarianceAccumulator,
    Moments,
    align_to_mean,
    alignment_error,
    alignment_r2,
    as_samples,
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
    procrustes,
    random_basis,
    recompute_standardization,
    relative_operator_error,
    rescale_cross_covariance,
    sample_from_spectrum,
    sample_rainbow_weights,
    weight_covariance,
    weight_dynamics,
    weight_from_reference,
    weight_spectrum,
    weight_to_reference,
    whiten_weights,
)

# ------------------------------------------------------------------------------------------------ helpers


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


# ------------------------------------------------------------------------------- activation moments (§5.1)


def test_as_samples_reads_one_channel_vector_per_position():
    x = torch.randn(2, 3, 4, 5, generator=rng(0))
    rows = as_samples(x)
    assert rows.shape == (2 * 4 * 5, 3)
    for b, h, w in [(0, 0, 0), (0, 2, 3), (1, 3, 4), (1, 0, 1)]:
        assert torch.equal(rows[b * 20 + h * 5 + w], x[b, :, h, w])
    flat = torch.randn(7, 3)
    assert as_samples(flat) is flat


def test_cross_covariance_matches_numpy_uncentred_formula():
    A, B = correlated((4, 6, 3, 3), 1) + 3.0, correlated((4, 5, 3, 3), 2)       # non-zero mean: nothing subtracted
    a, b = np_rows(A), np_rows(B)
    np.testing.assert_allclose(cross_covariance(A, B).numpy(), a.T @ b / a.shape[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cross_covariance(A).numpy(), a.T @ a / a.shape[0], rtol=1e-12, atol=1e-12)
    assert cross_covariance(A.float(), B.float()).dtype == torch.float64


def test_streaming_covariance_equals_one_shot_for_several_layers():
    conv_a, conv_b = correlated((16, 6, 3, 2), 3), correlated((16, 4, 3, 2), 4)
    flat_a, flat_b = correlated((16, 5), 5) + 1.0, correlated((16, 7), 6)
    acc = CovarianceAccumulator()
    for start, stop in [(0, 3), (3, 8), (8, 9), (9, 16)]:
        acc.update([conv_a[start:stop], flat_a[start:stop]], [conv_b[start:stop], flat_b[start:stop]])
    moments = acc.compute()
    assert isinstance(moments, list) and len(moments) == 2
    for m, (A, B) in zip(moments, [(conv_a, conv_b), (flat_a, flat_b)]):
        a, b = np_rows(A), np_rows(B)
        assert m.rows == a.shape[0]
        np.testing.assert_allclose(m.cross.numpy(), a.T @ b / a.shape[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m.mean_a.numpy(), a.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m.power_b.numpy(), (b ** 2).mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.sq_norm_a.item(), (a ** 2).sum(1).mean(), rtol=1e-12)


def test_single_layer_auto_covariance_returns_one_moments():
    x = correlated((12, 5), 7)
    acc = CovarianceAccumulator()
    acc.update(x[:5])
    acc.update(x[5:])
    m = acc.compute()
    assert isinstance(m, Moments)
    np.testing.assert_allclose(m.cross.numpy(), x.numpy().T @ x.numpy() / 12, rtol=1e-12)
    np.testing.assert_allclose(m.cross.diagonal().numpy(), m.power_a.numpy(), rtol=1e-12)


def test_complex_activations_use_the_conjugate_transpose():
    g = rng(8)
    A = torch.complex(correlated((3, 4, 2, 2), 9), torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64))
    B = torch.complex(correlated((3, 5, 2, 2), 10), torch.randn(3, 5, 2, 2, generator=g, dtype=torch.float64))
    a, b = np_rows(A), np_rows(B)
    expected = np.real(a.conj().T @ b) / a.shape[0]
    np.testing.assert_allclose(cross_covariance(A, B).numpy(), expected, rtol=1e-12, atol=1e-12)
    assert np.abs(np.real(a.T @ b) / a.shape[0] - expected).max() > 0.1      # the a^T b variant (pitfall §8)
    cov = cross_covariance(A).numpy()
    np.testing.assert_allclose(cov, cov.T, atol=1e-12)
    assert np.linalg.eigvalsh(cov).min() > -1e-12
    np.testing.assert_allclose(np.diag(cov), (np.abs(a) ** 2).mean(0), rtol=1e-12)
    acc = CovarianceAccumulator()
    acc.update(A[:1], B[:1])
    acc.update(A[1:], B[1:])
    m = acc.compute()
    np.testing.assert_allclose(m.cross.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.mean_a.numpy(), a.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.power_b.numpy(), (np.abs(b) ** 2).mean(0), rtol=1e-12)


def test_accumulator_rejects_inconsistent_input():
    acc = CovarianceAccumulator()
    with pytest.raises(ValueError, match="same samples"):
        acc.update(torch.zeros(4, 3), torch.zeros(5, 3))
    acc.update([torch.zeros(4, 3), torch.zeros(4, 2)])
    with pytest.raises(ValueError, match="layer"):
        acc.update([torch.zeros(4, 3)])
    with pytest.raises(ValueError, match="channels"):
        acc.update([torch.zeros(4, 3), torch.zeros(4, 5)])
    with pytest.raises(ValueError, match="before any update"):
        CovarianceAccumulator().compute()


# ------------------------------------------------------------------------------------------ alignment (§5.2)


def test_procrustes_equals_scipy_orthogonal_procrustes():
    other = correlated((300, 6), 11)
    ref = rotate_channels(rotation(6, 12), other) + 0.5 * correlated((300, 6), 13)
    R, _ = scipy.linalg.orthogonal_procrustes(other.numpy(), ref.numpy())     # argmin ||X_other R - X_ref||
    np.testing.assert_allclose(procrustes(cross_covariance(ref, other)).numpy(), R.T, atol=1e-10)


def test_procrustes_recovers_a_known_rotation_from_noiseless_conv_data():
    Q = rotation(8, 14)
    other = correlated((5, 8, 4, 4), 15)
    ref = rotate_channels(Q, other)
    A = procrustes(cross_covariance(ref, other))
    np.testing.assert_allclose(A.numpy(), Q.numpy(), atol=1e-10)
    np.testing.assert_allclose(rotate_channels(A, other).numpy(), ref.numpy(), atol=1e-10)


def test_procrustes_between_widths_is_a_partial_isometry():
    embedding = rotation(12, 16)[:, :8]                        # (12, 8) orthonormal columns: narrow net inside wide
    other = correlated((200, 8), 17)
    ref = rotate_channels(embedding, other)                    # (200, 12)
    A = procrustes(cross_covariance(ref, other))
    assert A.shape == (12, 8)
    np.testing.assert_allclose((A.T @ A).numpy(), np.eye(8), atol=1e-10)
    np.testing.assert_allclose(A.numpy(), embedding.numpy(), atol=1e-10)
    back = procrustes(cross_covariance(other, ref))            # (8, 12): wide to narrow
    np.testing.assert_allclose((back @ back.T).numpy(), np.eye(8), atol=1e-10)
    np.testing.assert_allclose(rotate_channels(back, ref).numpy(), other.numpy(), atol=1e-10)


def test_alignment_r2_is_one_for_rotated_copies_and_matches_samples_otherwise():
    other = correlated((400, 6), 18)
    ref = rotate_channels(rotation(6, 19), other)
    K, tr_ref, tr_other = cross_covariance(ref, other), cross_covariance(ref).trace(), cross_covariance(other).trace()
    assert alignment_r2(K, tr_ref, tr_other).item() == pytest.approx(1.0, abs=1e-12)
    noisy = ref + correlated((400, 6), 20)
    R, _ = scipy.linalg.orthogonal_procrustes(other.numpy(), noisy.numpy())
    x, y = other.numpy(), noisy.numpy()
    expected = np.mean(np.sum((x @ R) * y, 1)) / np.sqrt(np.mean(np.sum(x ** 2, 1)) * np.mean(np.sum(y ** 2, 1)))
    r2 = alignment_r2(cross_covariance(noisy, other), cross_covariance(noisy).trace(), tr_other).item()
    assert r2 == pytest.approx(expected, rel=1e-10)
    assert 0.3 < r2 < 0.99


def test_alignment_error_matches_the_paper_formula_on_held_out_data():
    other = correlated((600, 6), 21)
    ref = rotate_channels(rotation(6, 22), other) + 0.7 * correlated((600, 6), 23)
    train, test = slice(0, 400), slice(400, 600)
    A = procrustes(cross_covariance(ref[train], other[train]))
    # seed002 §5.2 literally: scale by 1/sqrt(C), error = 2(1 - E<A phi_hat, phi> / sqrt(E|phi_hat|^2 E|phi|^2))
    phi_hat, phi = other[test].numpy() / np.sqrt(6), ref[test].numpy() / np.sqrt(6)
    inner = np.mean(np.sum((phi_hat @ A.numpy().T) * phi, 1))
    expected = 2 * (1 - inner / np.sqrt(np.mean(np.sum(phi_hat ** 2, 1)) * np.mean(np.sum(phi ** 2, 1))))
    m = CovarianceAccumulator()
    m.update(ref[test], other[test])
    m = m.compute()
    assert alignment_error(A, m.cross, m.sq_norm_a, m.sq_norm_b).item() == pytest.approx(expected, rel=1e-10)
    assert 0.05 < expected < 1.5
    K, tr_ref, tr_other = cross_covariance(ref, other), cross_covariance(ref).trace(), cross_covariance(other).trace()
    assert alignment_error(procrustes(K), K, tr_ref, tr_other).item() == pytest.approx(
        2 * (1 - alignment_r2(K, tr_ref, tr_other).item()), rel=1e-10)


def np_align_to_mean(nets, num_iters):
    """In-memory numpy reference of seed002 §5.2's mean alignment (all activations held at once)."""
    mean, unexplained = nets[0], []
    for _ in range(num_iters + 1):
        alignments = []
        for x in nets:
            U, _, Vt = np.linalg.svd(mean.T @ x / len(x), full_matrices=False)
            alignments.append(U @ Vt)
        average_trace = np.mean([np.mean(np.sum(x ** 2, 1)) for x in nets])
        unexplained.append(1 - np.mean(np.sum(mean ** 2, 1)) / average_trace)
        mean = np.mean([x @ A.T for A, x in zip(alignments, nets)], axis=0)
    return alignments, unexplained


def batches_of(nets, size):
    return lambda: ([net[i:i + size] for net in nets] for i in range(0, len(nets[0]), size))


def test_align_to_mean_recovers_rotated_copies_of_one_representation():
    base = correlated((6, 5, 3, 3), 24)
    rotations = [rotation(5, seed) for seed in (25, 26, 27, 28)]
    nets = [rotate_channels(Q, base) for Q in rotations]
    aligner = align_to_mean(batches_of(nets, 4), num_iters=2)
    assert len(aligner.unexplained_variance) == 3
    assert abs(aligner.unexplained_variance[-1].item()) < 1e-12
    for A, Q, net in zip(aligner.alignments, rotations, nets):
        np.testing.assert_allclose(A.numpy(), (rotations[0] @ Q.T).numpy(), atol=1e-10)   # mean space = net 1's
        np.testing.assert_allclose(rotate_channels(A, net).numpy(), nets[0].numpy(), atol=1e-10)


def test_align_to_mean_streams_like_the_in_memory_algorithm():
    base = correlated((500, 6), 29)
    widths = [6, 8, 5, 6]
    nets = [rotate_channels(rotation(max(w, 6), 30 + k)[:w, :6], base) + 0.6 * correlated((500, w), 40 + k)
            for k, w in enumerate(widths)]
    aligner = align_to_mean(batches_of(nets, 128), num_iters=2)
    expected_alignments, expected_unexplained = np_align_to_mean([x.numpy() for x in nets], num_iters=2)
    for A, expected in zip(aligner.alignments, expected_alignments):
        assert A.shape == (6, expected.shape[1])
        np.testing.assert_allclose(A.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose([u.item() for u in aligner.unexplained_variance], expected_unexplained, atol=1e-12)
    assert 0.05 < expected_unexplained[-1] < 0.6                       # noise does not align: the mean shrinks


def test_align_to_mean_aligns_several_layers_from_the_same_batches_as_one_layer_each():
    """Batches of layers (rainbow.py's streamed forward passes) give each layer what it gets alone."""
    layers = [[correlated((40, 5), 60 + k) for k in range(3)], [correlated((4, 3, 2, 5), 70 + k) for k in range(3)]]
    together = align_to_mean(lambda: ([[net[i:i + 16] for net in layer] for layer in layers]
                                      for i in range(0, 40, 16)), num_iters=1)
    assert isinstance(together, list) and len(together) == 2
    for layer, aligner in zip(layers, together):
        alone = align_to_mean(batches_of(layer, 16), num_iters=1)
        for A, B in zip(aligner.alignments, alone.alignments):
            assert torch.equal(A, B)
        assert [u.item() for u in aligner.unexplained_variance] == [u.item() for u in alone.unexplained_variance]


def test_transported_weights_give_the_same_outputs():
    Q = rotation(6, 50)
    x_other = correlated((3, 6, 5, 5), 51)
    x_ref = rotate_channels(Q, x_other)
    conv = torch.randn(4, 6, 3, 3, generator=rng(52), dtype=torch.float64)
    np.testing.assert_allclose(F.conv2d(x_ref, weight_to_reference(conv, Q), padding=1).numpy(),
                               F.conv2d(x_other, conv, padding=1).numpy(), atol=1e-10)
    np.testing.assert_allclose(F.conv2d(x_other, weight_from_reference(conv, Q), padding=1).numpy(),
                               F.conv2d(x_ref, conv, padding=1).numpy(), atol=1e-10)
    linear = torch.randn(4, 6, generator=rng(53))
    moved = weight_to_reference(linear, Q)
    assert moved.dtype == torch.float32
    np.testing.assert_allclose(moved.numpy(), linear.double().numpy() @ Q.numpy().T, rtol=1e-5, atol=1e-6)


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
