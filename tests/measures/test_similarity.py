"""Tests of measures/similarity.py (Kornblith et al. 2019; seed000 §8; Nguyen et al. 2021) against the published demo
constants, direct numpy/scipy references (n x n Grams, explicit U-centring, Song et al.'s HSIC) and invariances."""
import numpy as np
import pytest
import scipy.linalg
import torch

from measures.similarity import (
    GramFactor,
    MinibatchCKA,
    center_gram,
    cka,
    cka_spectrum,
    gram_factor,
    gram_factor_from_gram,
    gram_linear,
    linear_cka,
)

# ------------------------------------------------------------------------------------------- numpy references


def np_center(K):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return H @ K @ H


def np_u_center(K):
    """Szekely-Rizzo U-centring written element by element."""
    n = K.shape[0]
    K = K.copy()
    np.fill_diagonal(K, 0.0)
    rows, total = K.sum(1), K.sum()
    U = K - rows[:, None] / (n - 2) - rows[None, :] / (n - 2) + total / ((n - 1) * (n - 2))
    np.fill_diagonal(U, 0.0)
    return U


def np_cka(X, Y, debiased=False):
    center = np_u_center if debiased else np_center
    K, L = center(X @ X.T), center(Y @ Y.T)
    return np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L))


def np_hsic_unbiased(X, Y):
    """Song et al. (2012) unbiased HSIC: [tr(K~L~) + 1'K~1 1'L~1/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))."""
    n = X.shape[0]
    K, L = X @ X.T, Y @ Y.T
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return (np.trace(K @ L) + one @ K @ one * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


def np_spectra(Xa, Xb, threshold=1e-6):
    """seed000 §8 literally: centred n x n Grams, eigh, P = Va^T Vb, the four spectra by eigh / svd."""
    def eig_desc(K):
        w, V = np.linalg.eigh(K)
        w, V = w[::-1], V[:, ::-1]
        keep = w > threshold * w[0]
        return w[keep], V[:, keep]

    def keep(v):
        v = np.sort(v)[::-1]
        return v[v > threshold * v[0]]

    la, Va = eig_desc(np_center(Xa @ Xa.T))
    lb, Vb = eig_desc(np_center(Xb @ Xb.T))
    P = Va.T @ Vb
    M = np.sqrt(la)[:, None] * P * np.sqrt(lb)[None, :]
    MM = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
    return {
        "cka": keep(np.linalg.eigvalsh(MM) / np.sqrt(np.sum(la**2) * np.sum(lb**2))),
        "cca": keep(np.linalg.svd(P, compute_uv=False)),
        "reg1": keep(np.linalg.eigvalsh(P @ np.diag(lb) @ P.T) / lb.sum()),
        "reg0": keep(np.linalg.eigvalsh(P.T @ np.diag(la) @ P) / la.sum()),
    }


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.fixture
def demo_data():
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y


# ------------------------------------------------------------------------------------------- CKA


def test_kornblith_demo_constants_gram_and_feature_forms(demo_data):
    X, Y = map(t, demo_data)
    assert round(float(linear_cka(X, Y)), 5) == 0.55761
    assert round(float(cka(gram_linear(X), gram_linear(Y))), 5) == 0.55761
    assert round(float(linear_cka(X, Y, debiased=True)), 5) == 0.51346
    assert round(float(cka(gram_linear(X), gram_linear(Y), debiased=True)), 5) == 0.51346


@pytest.mark.parametrize("n, dx, dy", [(50, 7, 12), (20, 60, 45), (30, 4, 80)])
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matches_numpy_reference(n, dx, dy, debiased):
    rng = np.random.default_rng(n + dx)
    X = rng.standard_normal((n, dx)) + 3.0
    Y = X @ rng.standard_normal((dx, dy)) + rng.standard_normal((n, dy))
    expected = np_cka(X, Y, debiased)
    assert float(linear_cka(t(X), t(Y), debiased)) == pytest.approx(expected, rel=1e-10)
    assert float(cka(gram_linear(t(X)), gram_linear(t(Y)), debiased)) == pytest.approx(expected, rel=1e-10)


def test_center_gram_matches_explicit_centring():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 4))
    K = X @ X.T
    np.testing.assert_allclose(center_gram(t(K)).numpy(), np_center(K), atol=1e-12)
    np.testing.assert_allclose(center_gram(t(K), unbiased=True).numpy(), np_u_center(K), atol=1e-12)


def test_cka_invariances(demo_data):
    X, Y = map(t, demo_data)
    Q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    base = linear_cka(X, Y)
    assert float(linear_cka(X @ Q, 3.7 * Y + 5.0)) == pytest.approx(float(base), rel=1e-12)
    assert float(linear_cka(X, Y @ Q, debiased=True)) == pytest.approx(float(linear_cka(X, Y, True)), rel=1e-12)
    assert float(linear_cka(X, X)) == pytest.approx(1.0, abs=1e-12)
    assert float(linear_cka(X, X, debiased=True)) == pytest.approx(1.0, abs=1e-12)
    anisotropic = X * torch.linspace(0.1, 10.0, 10, dtype=torch.float64)
    assert abs(float(linear_cka(anisotropic, Y)) - float(base)) > 1e-3   # not invariant to general linear maps
    assert 0.0 <= float(base) <= 1.0


def test_debiased_needs_more_than_three_examples():
    X = torch.randn(3, 5)
    with pytest.raises(ValueError, match="more than 3"):
        linear_cka(X, X, debiased=True)


# ------------------------------------------------------------------------------------------- spectra (seed000 §8)


def assert_spectra_equal(ours, ref):
    for name in ("cka", "cca", "reg0", "reg1"):
        assert ours[name].shape[0] == len(ref[name]), name
        np.testing.assert_allclose(ours[name].numpy(), ref[name], rtol=1e-7, atol=1e-10, err_msg=name)


def correlated_pair(n, da, db, seed):
    rng = np.random.default_rng(seed)
    Xa = rng.standard_normal((n, da)) * np.logspace(0, -1, da) + 1.0
    Xb = np.tanh(Xa @ rng.standard_normal((da, db))) + 0.3 * rng.standard_normal((n, db))
    return Xa, Xb


@pytest.mark.parametrize("n, da, db", [(60, 8, 12), (25, 40, 70), (40, 100, 10)])
def test_cka_spectrum_matches_n_by_n_reference_and_sums_to_cka(n, da, db):
    Xa, Xb = correlated_pair(n, da, db, seed=n)
    ours = cka_spectrum(t(Xa), t(Xb))
    assert_spectra_equal(ours, np_spectra(Xa, Xb))
    assert float(ours["cka"].sum()) == pytest.approx(np_cka(Xa, Xb), rel=1e-9)


def test_cka_spectrum_mixed_forms_agree():
    Xa, Xb = correlated_pair(50, 6, 80, seed=3)
    ref = np_spectra(Xa, Xb)
    from_gram = gram_factor_from_gram(t(Xa @ Xa.T))               # layer a stored as a Gram, b as features
    assert_spectra_equal(cka_spectrum(from_gram, t(Xb)), ref)
    assert_spectra_equal(cka_spectrum(gram_factor(t(Xa)), gram_factor_from_gram(t(Xb @ Xb.T))), ref)


def test_gram_factor_reproduces_centred_gram_both_routes():
    rng = np.random.default_rng(1)
    for d in (5, 40):                                             # covariance route (d < n) and Gram route
        X = rng.standard_normal((20, d)) + 2.0
        f = gram_factor(t(X))
        assert isinstance(f, GramFactor)
        np.testing.assert_allclose((f.factor @ f.factor.T).numpy(), np_center(X @ X.T), atol=1e-9)
        np.testing.assert_allclose((f.factor.T @ f.factor).numpy(), torch.diag(f.eigenvalues).numpy(), atol=1e-9)


def test_cca_is_cosine_of_principal_angles():
    Xa, Xb = correlated_pair(70, 5, 9, seed=7)
    Xa_c, Xb_c = Xa - Xa.mean(0), Xb - Xb.mean(0)
    cosines = np.sort(np.cos(scipy.linalg.subspace_angles(Xa_c, Xb_c)))[::-1]
    np.testing.assert_allclose(cka_spectrum(t(Xa), t(Xb))["cca"].numpy(), cosines, rtol=1e-9)


def test_reg_spectra_sum_to_linear_regression_r2():
    Xa, Xb = correlated_pair(80, 6, 4, seed=11)
    spectra = cka_spectrum(t(Xa), t(Xb))
    for source, target, key in ((Xa, Xb, "reg1"), (Xb, Xa, "reg0")):
        design = np.hstack([source, np.ones((len(source), 1))])
        residual = target - design @ np.linalg.lstsq(design, target, rcond=None)[0]
        r2 = 1 - np.sum(residual**2) / np.sum((target - target.mean(0)) ** 2)
        assert float(spectra[key].sum()) == pytest.approx(r2, rel=1e-9)


def test_cka_spectrum_diagonal():
    X, _ = correlated_pair(30, 6, 2, seed=5)
    f = gram_factor(t(X))
    lam = f.eigenvalues
    spectra = cka_spectrum(f, f)
    torch.testing.assert_close(spectra["cka"], lam**2 / (lam**2).sum())
    torch.testing.assert_close(spectra["cca"], torch.ones_like(lam))
    torch.testing.assert_close(spectra["reg0"], lam / lam.sum())
    torch.testing.assert_close(spectra["reg1"], lam / lam.sum())
    assert float(spectra["cka"].sum()) == pytest.approx(1.0)
    # the general formula on a copy gives the same values
    assert_spectra_equal(cka_spectrum(t(X), t(X.copy())), {k: v.numpy() for k, v in spectra.items()})


# ------------------------------------------------------------------------------------------- minibatch CKA


def test_minibatch_cka_equals_ratio_of_averaged_unbiased_hsic():
    rng = np.random.default_rng(2)
    batches = []
    for n in (16, 11, 20):
        a = rng.standard_normal((n, 6))
        batches.append([a, np.tanh(a @ rng.standard_normal((6, 2 * 3 * 3))).reshape(n, 2, 3, 3),
                        rng.standard_normal((n, 4)) + a[:, :4]])
    acc = MinibatchCKA()
    for layers in batches:
        acc.update([t(x) for x in layers])
    result = acc.compute().numpy()

    hsic = np.zeros((3, 3))
    for layers in batches:
        flat = [x.reshape(len(x), -1) for x in layers]
        hsic += np.array([[np_hsic_unbiased(a, b) for b in flat] for a in flat])
    expected = hsic / np.sqrt(np.outer(np.diag(hsic), np.diag(hsic)))
    np.testing.assert_allclose(result, expected, rtol=1e-9)
    np.testing.assert_allclose(np.diag(result), 1.0, rtol=1e-12)


def test_minibatch_cka_single_batch_is_debiased_cka():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((25, 5))
    Y = X @ rng.standard_normal((5, 7)) + rng.standard_normal((25, 7))
    acc = MinibatchCKA()
    acc.update([t(X), t(Y)])
    assert float(acc.compute()[0, 1]) == pytest.approx(np_cka(X, Y, debiased=True), rel=1e-10)


def test_minibatch_cka_rejects_tiny_batches_and_mismatches():
    acc = MinibatchCKA()
    with pytest.raises(ValueError, match="more than 3"):
        acc.update([torch.randn(3, 4), torch.randn(3, 2)])
    with pytest.raises(ValueError, match="same examples"):
        acc.update([torch.randn(8, 4), torch.randn(7, 2)])
    with pytest.raises(ValueError, match="before any update"):
        acc.compute()
