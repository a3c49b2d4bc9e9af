"""Tests of measures/alignment.py's activations (seed002 §5.1-§5.2: moments, Procrustes, alignment to the mean,
transported weights) against scipy (orthogonal_procrustes, ortho_group), numpy formulas written from the spec and
known invariances (rotated copies of one representation); the weights: test_alignment_weights.py."""
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats
import torch
import torch.nn.functional as F
from alignment_cases import correlated, np_rows, rng, rotate_channels, rotation

from measures.alignment import (
    CovarianceAccumulator,
    Moments,
    align_to_mean,
    alignment_error,
    alignment_r2,
    as_samples,
    cross_covariance,
    procrustes,
    weight_from_reference,
    weight_to_reference,
)

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
