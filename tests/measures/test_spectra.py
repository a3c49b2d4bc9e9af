"""Tests of measures/spectra.py (seed000 §6.1, §10) against numpy.linalg (svd, matrix_rank, norms), Eckart-Young and
the full-rank parameter counts quoted in the spec."""
import numpy as np
import pytest
import torch

from measures.spectra import (
    conv_weight_matrix,
    full_rank_params,
    low_rank,
    participation_ratio,
    rank_at_ratio,
    residual_params,
    stable_rank,
    threshold_ratios,
    truncate,
    weight_svd,
)


def decaying_weight(shape, seed=0):
    """Random weight whose matrix form has singular values spread over several decades."""
    gen = torch.Generator().manual_seed(seed)
    out, fan_in = shape[0], int(np.prod(shape[1:]))
    m = min(out, fan_in)
    U, _ = torch.linalg.qr(torch.randn(out, m, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(fan_in, m, generator=gen, dtype=torch.float64))
    return ((U * torch.logspace(0, -4, m, dtype=torch.float64)) @ V.T).reshape(shape)


# vgg13 / resnet18 of seed000 §4-§5: main-path convs in forward order, then the classifier (shortcuts excluded)
RESNET18_SHAPES = ([(64, 3, 3, 3)] + [(64, 64, 3, 3)] * 4
                   + [(128, 64, 3, 3)] + [(128, 128, 3, 3)] * 3
                   + [(256, 128, 3, 3)] + [(256, 256, 3, 3)] * 3
                   + [(512, 256, 3, 3)] + [(512, 512, 3, 3)] * 3 + [(10, 512)])
VGG13_CHANNELS = [3, 64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
VGG13_SHAPES = [(o, i, 3, 3) for i, o in zip(VGG13_CHANNELS[:-1], VGG13_CHANNELS[1:])] + [(10, 512)]


def test_conv_weight_matrix_layout():
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    M = conv_weight_matrix(w)
    assert M.shape == (2, 12)
    assert M[1, 2 * 4 + 1 * 2 + 0] == w[1, 2, 1, 0]
    linear = torch.randn(5, 7)
    assert torch.equal(conv_weight_matrix(linear), linear)


def test_threshold_ratios():
    r = threshold_ratios()
    assert r.shape == (53,)
    assert bool((r[1:] > r[:-1]).all())
    assert float(r[0]) == pytest.approx(1e-6)
    assert float(r[3]) == pytest.approx(1e-3) and float(r[13]) == pytest.approx(1e-2)
    assert float(r[-1]) == pytest.approx(0.8913, abs=1e-4)


def test_rank_at_ratio_matches_numpy_matrix_rank():
    W = decaying_weight((12, 4, 3, 3), seed=1)
    M = W.reshape(12, -1).numpy()
    s = torch.from_numpy(np.linalg.svd(M, compute_uv=False))
    ratios = threshold_ratios()
    ks = rank_at_ratio(s, ratios)
    expected = [max(1, np.linalg.matrix_rank(M, tol=float(r) * float(s[0]))) for r in ratios]
    assert ks.tolist() == expected
    assert len(set(expected)) > 5                        # the sweep really moves through ranks
    assert int(rank_at_ratio(s, 0.0)) == 12 and int(rank_at_ratio(s, 1.0)) == 1   # clipped to [1, len(s)]
    assert int(rank_at_ratio(s, 0.5)) == int((s > 0.5 * s[0]).sum())


def test_stable_rank_and_participation_ratio():
    W = decaying_weight((20, 30), seed=2).numpy()
    s = torch.from_numpy(np.linalg.svd(W, compute_uv=False))
    assert float(stable_rank(s)) == pytest.approx((np.linalg.norm(W, "fro") / np.linalg.norm(W, 2)) ** 2)
    C = np.cov(np.random.default_rng(0).standard_normal((200, 6)) * np.arange(1, 7), rowvar=False)
    eigs = torch.from_numpy(np.linalg.eigvalsh(C))
    assert float(participation_ratio(eigs)) == pytest.approx(np.trace(C) ** 2 / np.trace(C @ C))
    assert float(stable_rank(eigs)) == pytest.approx(np.trace(C @ C) / np.linalg.norm(C, 2) ** 2)
    assert float(participation_ratio(torch.ones(7))) == pytest.approx(7.0)
    assert float(stable_rank(torch.tensor([3.0, 0.0, 0.0]))) == pytest.approx(1.0)
    assert stable_rank(torch.rand(4, 9)).shape == (4,)


@pytest.mark.parametrize("shape", [(16, 4, 3, 3), (10, 40)])
def test_low_rank_matches_numpy_svd_and_eckart_young(shape):
    W = decaying_weight(shape, seed=3).to(torch.float32)
    M = W.reshape(shape[0], -1).double().numpy()
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    for k in (1, 3, 7):
        W_k, Pi_k = low_rank(W, k)
        assert W_k.shape == W.shape and Pi_k.shape == W.shape and W_k.dtype == torch.float32
        np.testing.assert_allclose(W_k.reshape(shape[0], -1).numpy(), (U[:, :k] * s[:k]) @ Vt[:k], atol=1e-6)
        error = M - W_k.reshape(shape[0], -1).double().numpy()
        assert np.sum(error**2) == pytest.approx(np.sum(s[k:] ** 2), rel=1e-4)
        assert np.linalg.norm(error, 2) == pytest.approx(s[k], rel=1e-3)


def test_projector_is_idempotent_on_the_row_space():
    W = decaying_weight((8, 3, 3, 3), seed=4)
    svd = weight_svd(W)
    k = 5
    W_k, Pi_k = truncate(svd, k)
    P = Pi_k.reshape(8, -1)
    Q = P.T @ P                                                  # (27, 27) projector onto span of V_k
    torch.testing.assert_close(Q @ Q, Q)
    torch.testing.assert_close(Q @ W_k.reshape(8, -1).T, W_k.reshape(8, -1).T)
    x = torch.randn(27, 6, dtype=torch.float64)
    torch.testing.assert_close((P @ x).norm(dim=0), (svd.Vh[:k] @ x).norm(dim=0))
    assert int(torch.linalg.matrix_rank(P)) == k
    orthogonal = x - svd.Vh.T @ (svd.Vh @ x)                     # outside W's row space: projected to zero
    torch.testing.assert_close(P @ orthogonal, torch.zeros(8, 6, dtype=torch.float64))


def test_truncate_reuses_one_svd_and_checks_k():
    W = decaying_weight((6, 5), seed=5)
    svd = weight_svd(W)
    for k in (1, 4):
        for ours, ref in zip(truncate(svd, k), low_rank(W, k)):
            torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="rank k"):
        truncate(svd, 6)


def test_full_rank_params_match_spec_counts():
    assert len(RESNET18_SHAPES) == 18 and len(VGG13_SHAPES) == 11
    assert full_rank_params(RESNET18_SHAPES) == 12_385_789
    assert full_rank_params(VGG13_SHAPES) == 10_624_509


def test_residual_params():
    shapes = VGG13_SHAPES
    full = torch.tensor([min(s[0], int(np.prod(s[1:]))) for s in shapes])
    assert float(residual_params(full, shapes)) == pytest.approx(1.0)
    ones = torch.ones(len(shapes), dtype=torch.long)
    expected = sum(s[0] + int(np.prod(s[1:])) for s in shapes) / 10_624_509
    assert float(residual_params(ones, shapes)) == pytest.approx(expected)
    sweep = torch.stack([full, ones, full // 2])                  # (3, L): one row per threshold ratio
    fractions = residual_params(sweep, shapes)
    assert fractions.shape == (3,)
    assert float(fractions[2]) == pytest.approx(sum(int(k) * (s[0] + int(np.prod(s[1:])))
                                                    for k, s in zip(full // 2, shapes)) / 10_624_509)
