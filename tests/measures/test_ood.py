"""Tests of measures/ood.py (seed000 §6.3, §7, §9) against numpy covariances and inverses, an explicit patch loop,
scikit-learn's roc_auc_score / average_precision_score / roc_curve / precision_recall_curve (seed000's 13-value
metric vector), a brute-force FPR95, scipy's softmax / numpy's log for the MSP and log-sensitivity scores, and, for
seed000's own reading of the vector, a hand count and a loop written from the words of the spec (§9)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.special import softmax
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from measures.ood import (
    METRIC_NAMES,
    ClassGaussians,
    dims_eps,
    dims_exp,
    fpr_at_tpr,
    log_sensitivity_score,
    mahalanobis,
    metric_vector,
    msp_score,
    paper_metric_vector,
    patch_energy,
    projection_energy,
    projection_ratio,
    tpr_at_fpr,
)
from measures.ood import detection_metrics as metrics
from measures.spectra import truncate, weight_svd

# ------------------------------------------------------------------------------------------- Gaussians, §7


def class_data(n=300, D=6, nc=4, seed=0, offset=1e3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, nc, n)
    centres = rng.standard_normal((nc, D)) * 3
    mixing = rng.standard_normal((D, D)) * np.logspace(0, -2, D)
    return centres[labels] + rng.standard_normal((n, D)) @ mixing + offset, labels


def fitted(X, y, nc, ridge=0.0, batch=64):
    g = ClassGaussians(nc, ridge=ridge)
    for i in range(0, len(X), batch):
        g.update(torch.from_numpy(X[i:i + batch]).float(), torch.from_numpy(y[i:i + batch]))
    return g.finalize()


def test_class_gaussians_match_numpy():
    X, y = class_data()
    g = fitted(X, y, 4)
    Xf = torch.from_numpy(X).float().double().numpy()             # the values the accumulator saw
    means = np.stack([Xf[y == c].mean(0) for c in range(4)])
    tied = sum(np.cov(Xf[y == c], rowvar=False, bias=True) * np.sum(y == c) for c in range(4)) / len(X)
    np.testing.assert_allclose(g.means.numpy(), means, rtol=1e-12)
    np.testing.assert_allclose(g.covariance.numpy(), tied, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.eigenvalues.numpy(), np.linalg.eigvalsh(tied)[::-1], rtol=1e-8)
    assert g.counts.tolist() == [float(np.sum(y == c)) for c in range(4)]


def test_class_gaussians_ridge_and_errors():
    X, y = class_data(D=4)
    plain, ridged = fitted(X, y, 4), fitted(X, y, 4, ridge=0.1)
    shift = 0.1 * np.trace(plain.covariance.numpy()) / 4
    np.testing.assert_allclose(ridged.covariance.numpy(), plain.covariance.numpy() + shift * np.eye(4), atol=1e-12)
    with pytest.raises(ValueError, match="without samples: \\[4\\]"):
        fitted(X, y, 5)
    bad = ClassGaussians(3)
    bad.update(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]))
    bad.update(torch.randn(4, 2), torch.tensor([0, 1, 2, 3]))   # checked once, at finalize: no sync per batch
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got \[0, 3\]"):
        bad.finalize()
    with pytest.raises(ValueError, match="reduce"):
        ClassGaussians(3).update(torch.randn(4, 2, 3, 3), torch.tensor([0, 1, 2, 0]))


def test_mahalanobis_matches_direct_formula():
    X, y = class_data(D=5, seed=1, offset=0.0)
    g = fitted(X, y, 4)
    Z = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    dims = [1, 2, 5]
    dist, cls = mahalanobis(Z, g, dims)
    assert dist.shape == (7, 3) and cls.shape == (7, 3)
    w, V = np.linalg.eigh(g.covariance.numpy())
    w, V = w[::-1], V[:, ::-1]
    for j, d in enumerate(dims):
        precision = V[:, :d] @ np.diag(1 / w[:d]) @ V[:, :d].T
        diffs = Z.numpy()[:, None, :] - g.means.numpy()[None]
        per_class = np.einsum("bci,ij,bcj->bc", diffs, precision, diffs)
        np.testing.assert_allclose(dist[:, j].numpy(), per_class.min(1), rtol=1e-9)
        assert cls[:, j].tolist() == per_class.argmin(1).tolist()
    full = np.einsum("bci,ij,bcj->bc", diffs, np.linalg.inv(g.covariance.numpy()), diffs).min(1)
    np.testing.assert_allclose(dist[:, -1].numpy(), full, rtol=1e-8)   # d = D: the usual Mahalanobis distance


def test_mahalanobis_in_chunks_of_classes_is_one_pass():
    """One class per chunk (chunk_bytes=1) gives the one-pass distances and classes, ties to the lowest class."""
    X, y = class_data(D=6, nc=7, seed=4, offset=0.0)
    g = fitted(X, y, 7)
    Z = torch.randn(9, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    Z[0] = g.means[3]                      # distance 0 to class 3 at every d
    dims = [1, 3, 6]
    whole, whole_cls = mahalanobis(Z, g, dims)
    for chunk_bytes in (1, 8 * 9 * 6 * 2):   # one class, then two classes per chunk
        dist, cls = mahalanobis(Z, g, dims, chunk_bytes=chunk_bytes)
        torch.testing.assert_close(dist, whole, rtol=0, atol=0)
        assert torch.equal(cls, whole_cls)
    assert whole_cls[0].tolist() == [3, 3, 3] and float(whole[0, -1]) == pytest.approx(0.0, abs=1e-12)
    g.means = torch.cat([g.means, g.means[3:4]])   # class 7 repeats class 3: the tie goes to 3, chunked or not
    assert mahalanobis(Z[:1], g, dims, chunk_bytes=1)[1][0].tolist() == [3, 3, 3]


def test_mahalanobis_refuses_zero_variance_components():
    X = np.zeros((8, 3))
    X[:, 0] = np.arange(8.0)
    g = fitted(X, np.array([0, 1] * 4), 2)
    assert int(dims_eps(g.eigenvalues)[-1]) == 1
    mahalanobis(torch.zeros(2, 3), g, [1])
    with pytest.raises(ValueError, match="zero variance"):
        mahalanobis(torch.zeros(2, 3), g, [3])
    with pytest.raises(ValueError, match="must lie in"):
        mahalanobis(torch.zeros(2, 3), g, [0, 1])


def test_dims_exp_grid():
    lengths = {D: len(dims_exp(D)) for D in (512, 256, 128, 64)}
    assert lengths == {512: 49, 256: 43, 128: 37, 64: 30}
    assert int(dims_exp(512)[-1]) - 1 == 481 and int(dims_exp(64)[-1]) - 1 == 58   # the original stores d - 1
    grid = dims_exp(512)
    assert grid[:10].tolist() == list(range(1, 11)) and bool((grid[1:] > grid[:-1]).all())
    assert dims_exp(5).tolist() == [1, 2, 3, 4, 5]


def test_dims_eps_counts():
    eigenvalues = torch.tensor([10.0, 4.0, 1.0, 1e-2, 1e-5, 1e-9], dtype=torch.float64)
    counts = dims_eps(eigenvalues)
    ratios = eigenvalues.numpy() / 10.0
    eps = [5e-1, 2e-1, 1e-1, 5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4,
           5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 5e-7, 2e-7, 1e-7]
    assert counts.tolist() == [int(np.sum(ratios > e)) for e in eps]
    assert counts[0] == 1 and counts[-1] == 5


# ------------------------------------------------------------------------------------------- projection score, §6.3


def patch_loop_energy(x, conv, weight=None):
    """Sum over output positions of ||patch||^2 (or ||weight_matrix @ patch||^2), by explicit slicing."""
    kh, kw = conv.kernel_size
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    xp = torch.nn.functional.pad(x.double(), (pw, pw, ph, ph))
    H_out = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    W_out = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for i in range(H_out):
        for j in range(W_out):
            patch = xp[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
            patch = patch.reshape(x.shape[0], -1)
            if weight is not None:
                patch = patch @ weight.reshape(weight.shape[0], -1).double().T
            total += patch.square().sum(1)
    return total


GEOMETRIES = [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=2, padding=1),
              dict(kernel_size=3, stride=1, padding=0), dict(kernel_size=1, stride=2, padding=0),
              dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_patch_and_projection_energy_match_patch_loop(geometry):
    conv = nn.Conv2d(3, 5, bias=False, **geometry)
    x = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(patch_energy(x, conv), patch_loop_energy(x, conv))
    _, Pi = truncate(weight_svd(conv.weight), 2)
    torch.testing.assert_close(projection_energy(x, conv, Pi), patch_loop_energy(x, conv, Pi))


def multiplicity(conv, size):
    """How many patches cover each pixel: patch_energy of one-pixel images."""
    pixels = torch.eye(size * size).reshape(size * size, 1, size, size)
    return patch_energy(pixels, conv).reshape(size, size)


def test_patch_multiplicity_pattern():
    conv = nn.Conv2d(1, 1, 3, padding=1)
    expected = torch.full((5, 5), 9.0, dtype=torch.float64)
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 6.0
    expected[0, 0] = expected[0, -1] = expected[-1, 0] = expected[-1, -1] = 4.0    # all four corners, no bug
    torch.testing.assert_close(multiplicity(conv, 5), expected)
    torch.testing.assert_close(multiplicity(conv, 2), torch.full((2, 2), 4.0, dtype=torch.float64))
    stride2 = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    factor = torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0, 1.0], dtype=torch.float64)      # odd and not last -> 2
    torch.testing.assert_close(multiplicity(stride2, 6), factor[:, None] * factor[None, :])


def test_projection_ratio_linear_and_conv():
    fc = nn.Linear(12, 5)
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(1))
    _, _, Vt = np.linalg.svd(fc.weight.detach().double().numpy())
    for k in (1, 3, 5):
        expected = np.sum((x.double().numpy() @ Vt[:k].T) ** 2, 1) / np.sum(x.double().numpy() ** 2, 1)
        np.testing.assert_allclose(projection_ratio(x, fc, k).numpy(), expected, rtol=1e-10)
    assert projection_ratio(x, fc, [1, 5]).shape == (4, 2)
    torch.testing.assert_close(patch_energy(x, fc), x.double().square().sum(1))

    conv = nn.Conv2d(4, 6, 3, padding=1)
    xc = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(2))
    svd = weight_svd(conv.weight)
    ratios = projection_ratio(xc, conv, [1, 2, 6], svd=svd)
    for j, k in enumerate((1, 2, 6)):
        direct = projection_energy(xc, conv, truncate(svd, k)[1]) / patch_energy(xc, conv)
        torch.testing.assert_close(ratios[:, j], direct)
    assert bool((ratios[:, 1:] >= ratios[:, :-1]).all()) and bool((ratios <= 1).all())
    with pytest.raises(ValueError, match="ranks k"):
        projection_ratio(xc, conv, 7, svd=svd)


# ------------------------------------------------------------------------------------------- metrics, §9


def brute_force_fpr95(s_id, s_ood):
    """Largest threshold accepting at least 95% of ID; fraction of OOD at or above it."""
    candidates = [t for t in np.unique(s_id) if np.mean(s_id >= t) >= 0.95]
    return np.mean(s_ood >= max(candidates))


@pytest.mark.parametrize("n_id, n_ood, decimals", [(200, 150, 1), (57, 301, 3), (100, 100, 8)])
def test_detection_metrics_match_sklearn(n_id, n_ood, decimals):
    rng = np.random.default_rng(n_id)
    s_id = np.round(rng.standard_normal(n_id) + 1.0, decimals)       # rounding creates ties
    s_ood = np.round(rng.standard_normal(n_ood), decimals)
    labels = np.r_[np.ones(n_id), np.zeros(n_ood)]
    scores = np.r_[s_id, s_ood]
    m = metrics(torch.from_numpy(s_id), torch.from_numpy(s_ood))
    assert m["AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m["AUPR_IN"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert m["AUPR_OUT"] == pytest.approx(average_precision_score(1 - labels, -scores), abs=1e-12)
    assert m["FPR95"] == pytest.approx(brute_force_fpr95(s_id, s_ood), abs=1e-12)
    assert m["TNR95"] == pytest.approx(1 - m["FPR95"])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert m["TPR05"] == pytest.approx(tpr[fpr <= 0.05].max(), abs=1e-12)


def test_detection_orientation_id_positive_higher_is_id():
    gen = torch.Generator().manual_seed(0)
    s_id, s_ood = torch.randn(500, generator=gen) + 4.0, torch.randn(400, generator=gen)
    good = metrics(s_id, s_ood)
    assert good["AUROC"] > 0.99 and good["FPR95"] < 0.05 and good["AUPR_IN"] > 0.99
    bad = metrics(s_ood, s_id)
    assert bad["AUROC"] < 0.01 and bad["FPR95"] > 0.95


def test_detection_resampling_is_seeded_and_matches_sklearn():
    rng = np.random.default_rng(3)
    s_id, s_ood = torch.from_numpy(rng.standard_normal(80) + 0.5), torch.from_numpy(rng.standard_normal(30))
    first = metrics(s_id, s_ood, resample_generator=torch.Generator().manual_seed(7))
    assert first == metrics(s_id, s_ood, resample_generator=torch.Generator().manual_seed(7))
    pick = torch.randint(30, (80,), generator=torch.Generator().manual_seed(7))
    resampled = s_ood[pick].numpy()
    labels = np.r_[np.ones(80), np.zeros(80)]
    assert first["AUROC"] == pytest.approx(roc_auc_score(labels, np.r_[s_id.numpy(), resampled]), abs=1e-12)
    assert first != metrics(s_id, s_ood, resample_generator=torch.Generator().manual_seed(8))


# ------------------------------------------------------------------------------------- output scores, §9


def test_msp_score_matches_scipy_softmax():
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((64, 7)) * np.logspace(-2, 1.5, 64)[:, None]).astype(np.float32)
    logits[0] = 0.0                                  # uniform: p = 1/7
    logits[1, 3] = 40.0                              # 1 - p below the 1e-7 floor
    expected = -np.log(1 - softmax(logits.astype(np.float64), axis=1).max(1) + 1e-7)
    scores = msp_score(torch.from_numpy(logits))
    assert scores.dtype == torch.float64 and scores.shape == (64,)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-8)
    assert float(scores[0]) == pytest.approx(-np.log(6 / 7 + 1e-7), rel=1e-12)
    assert float(scores[1]) == pytest.approx(-np.log(1e-7), rel=1e-6)         # saturates at -log(1e-7)
    np.testing.assert_allclose(msp_score(logits).numpy(), scores.numpy())    # arrays are accepted
    # higher = more in-distribution: the score increases with the maximum softmax probability
    order = np.argsort(softmax(logits.astype(np.float64), axis=1).max(1))
    assert (np.diff(scores.numpy()[order]) >= -1e-12).all()


def test_log_sensitivity_score_matches_numpy():
    rng = np.random.default_rng(6)
    chi = np.exp(rng.uniform(-25, 2, (30, 4, 5)))
    chi[:, 2, :2] = np.nan                           # layers before the perturbed one
    chi[0, 0, 0] = 0.0
    scores = log_sensitivity_score(torch.from_numpy(chi))
    assert scores.dtype == torch.float64 and scores.shape == chi.shape
    np.testing.assert_allclose(scores.numpy(), -np.log(chi + 1e-7), rtol=1e-12, equal_nan=True)
    assert float(scores[0, 0, 0]) == pytest.approx(7 * np.log(10), rel=1e-12)
    assert np.isnan(scores[:, 2, :2].numpy()).all()
    # OOD is the more sensitive: a smaller chi scores higher (more in-distribution)
    assert float(log_sensitivity_score(np.array(1e-3))) > float(log_sensitivity_score(np.array(1e-1)))


# ------------------------------------------------------------------------------------- the 13-value vector, §9


def step_area(x, y):
    """sum_k (x_k - x_{k-1}) y_k over points sorted by x ascending (the average-precision rule); x is rounded to
    1e-9 first, so that rates recomputed from precisions sort equal rates in the curve's own order."""
    x = np.round(x, 9)
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x)[order], np.asarray(y)[order]
    return float(np.sum(np.diff(x, prepend=0.0) * y))


def sklearn_vector(s_id, s_ood):
    """The 13 metrics from scikit-learn's curves only (independent sorting and tie handling)."""
    n_id, n_ood = len(s_id), len(s_ood)
    labels, scores = np.r_[np.ones(n_id), np.zeros(n_ood)], np.r_[s_id, s_ood]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    # ID positive: precision = ppv at recall = tpr; the end point (nothing accepted) has precision 1. FP = accepted
    # - TP, the accepted counted by numpy at sklearn's thresholds
    ppv, recall_id, thresholds = precision_recall_curve(labels, scores)
    accepted = np.r_[[np.sum(scores >= t) for t in thresholds], 0]
    tnr_of_ppv = 1 - (accepted - recall_id * n_id) / n_ood
    # OOD positive on -score: precision = npv at recall = tnr; the end point (nothing rejected) has npv 1
    npv, recall_ood, thresholds = precision_recall_curve(1 - labels, -scores)
    rejected = np.r_[[np.sum(-scores >= t) for t in thresholds], 0]
    tpr_of_npv = 1 - (rejected - recall_ood * n_ood) / n_id
    vector = [roc_auc_score(labels, scores), average_precision_score(labels, scores), step_area(tpr_of_npv, npv),
              average_precision_score(1 - labels, -scores), step_area(tnr_of_ppv, ppv)]
    for rho in (0.90, 0.95):
        fpr_at = lambda x: fpr[tpr >= x - 1e-9].min()   # noqa: E731 - the smallest FPR reaching TPR x
        tpr_at = lambda y: tpr[fpr <= y + 1e-9].max()   # noqa: E731 - the largest TPR within FPR y
        vector += [1 - fpr_at(rho), fpr_at(1 - rho), tpr_at(1 - rho), 1 - tpr_at(rho)]
    return np.array(vector)


@pytest.mark.parametrize("n_id, n_ood, decimals", [(200, 200, 12), (200, 150, 1), (57, 301, 3), (100, 100, 0),
                                                   (1000, 1000, 2)])
def test_metric_vector_matches_sklearn_curves(n_id, n_ood, decimals):
    """Untied (12 decimals) and heavily tied (0-1 decimals) scores; n = 1000 puts TPR = 0.9 on the grid exactly."""
    rng = np.random.default_rng(n_id + n_ood + decimals)
    s_id = np.round(rng.standard_normal(n_id) + 1.0, decimals)
    s_ood = np.round(rng.standard_normal(n_ood), decimals)
    got = metric_vector(torch.from_numpy(s_id), torch.from_numpy(s_ood))
    assert got.shape == (13,) and got.dtype == torch.float64 and len(METRIC_NAMES) == 13
    np.testing.assert_allclose(got.numpy(), sklearn_vector(s_id, s_ood), atol=1e-12)
    assert fpr_at_tpr(s_id, s_ood, 0.95) == pytest.approx(brute_force_fpr95(s_id, s_ood), abs=1e-12)
    labels = np.r_[np.ones(n_id), np.zeros(n_ood)]
    fpr, tpr, _ = roc_curve(labels, np.r_[s_id, s_ood], drop_intermediate=False)
    assert tpr_at_fpr(s_id, s_ood, 0.1) == pytest.approx(tpr[fpr <= 0.1 + 1e-9].max(), abs=1e-12)
    # detection_metrics reads the same vector
    m = metrics(torch.from_numpy(s_id), torch.from_numpy(s_ood))
    assert m["FPR95"] == pytest.approx(1 - float(got[9])) and m["TPR05"] == float(got[11])


def test_metric_vector_operating_points_by_hand():
    """Four ID and four OOD scores, one tie between them: every entry written out."""
    s_id, s_ood = np.array([4.0, 3.0, 2.0, 1.0]), np.array([2.0, 0.5, 0.0, -1.0])
    v = dict(zip(METRIC_NAMES, metric_vector(s_id, s_ood).tolist()))
    # pairs won: ID 4, 3 beat all 4; ID 2 beats 3 and ties 1; ID 1 beats 3 -> (4 + 4 + 3.5 + 3) / 16
    assert v["AUROC"] == pytest.approx(14.5 / 16)
    # accepting >= 1 takes all ID and the OOD 2 (FPR 1/4); >= 3 takes half the ID and no OOD
    assert v["TNR@TPR90"] == pytest.approx(0.75) and v["TNR@TPR95"] == pytest.approx(0.75)
    assert v["FPR@TPR10"] == 0.0 and v["TPR@FPR10"] == pytest.approx(0.5) and v["TPR@FPR05"] == pytest.approx(0.5)
    assert v["FNR@FPR90"] == 0.0
    # partitions j = 0..7 (TP, FP): (0,0) (1,0) (2,0) (3,1) (4,1) (4,2) (4,3) (4,4)
    # ppv: 1 (nothing accepted), 1, 1, 3/4, 4/5, 4/6, 4/7, 4/8; npv: 4/8, 4/7, 4/6, 3/4, 3/3, 2/2, 1/1, 1
    # tpr rises by 1/4 at j = 1..4; tnr = 1, 1, 1, 3/4, 3/4, 2/4, 1/4, 0 falls by 1/4 after j = 2, 4, 5, 6
    assert v["AUPR_IN"] == pytest.approx(0.25 * (1 + 1 + 3 / 4 + 4 / 5))
    assert v["AUNPV_TPR"] == pytest.approx(0.25 * (4 / 7 + 4 / 6 + 3 / 4 + 1))
    assert v["AUPR_OUT"] == pytest.approx(0.25 * (4 / 6 + 1 + 1 + 1))
    assert v["AUPPV_TNR"] == pytest.approx(0.25 * (1 + 4 / 5 + 4 / 6 + 4 / 7))


def test_operating_points_on_the_exact_grid():
    """TPR = 1 - 0.95 = 1 of 20 ID samples exactly (1 - 0.95 is 0.050000000000000044 in floating point)."""
    s_id, s_ood = np.arange(20.0), np.arange(20.0) + 0.5
    v = dict(zip(METRIC_NAMES, metric_vector(s_id, s_ood).tolist()))
    assert v["FPR@TPR05"] == pytest.approx(0.05)          # accept >= 19: one OOD (19.5)
    assert v["TNR@TPR95"] == pytest.approx(0.05)          # accept >= 1: 19 of 20 OOD
    assert v["TPR@FPR05"] == pytest.approx(0.05) and v["FNR@FPR95"] == pytest.approx(0.05)   # FP <= 1; FP <= 19


def test_metric_vector_swap_symmetry_and_orientation():
    """ID <-> OOD with negated scores permutes the vector (same partitions, roles swapped)."""
    rng = np.random.default_rng(11)
    s_id, s_ood = np.round(rng.standard_normal(300) + 0.7, 1), np.round(rng.standard_normal(240), 1)
    v, w = metric_vector(s_id, s_ood).numpy(), metric_vector(-s_ood, -s_id).numpy()
    np.testing.assert_allclose(w, v[[0, 3, 4, 1, 2, 7, 8, 5, 6, 11, 12, 9, 10]], atol=1e-12)
    assert v[0] > 0.6 and metric_vector(s_ood, s_id)[0] == pytest.approx(1 - v[0])


def test_metric_vector_resampling_and_errors():
    rng = np.random.default_rng(4)
    s_id, s_ood = torch.from_numpy(rng.standard_normal(50) + 1), torch.from_numpy(rng.standard_normal(20))
    got = metric_vector(s_id, s_ood, resample_generator=torch.Generator().manual_seed(3))
    resampled = s_ood[torch.randint(20, (50,), generator=torch.Generator().manual_seed(3))].numpy()
    np.testing.assert_allclose(got.numpy(), sklearn_vector(s_id.numpy(), resampled), atol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        metric_vector(np.array([1.0, np.nan]), np.array([0.0]))


# ---- seed000's own arithmetic (spec §9, issue 25 item 13) ---------------------------------------------------------
def loop_paper_vector(s_id: np.ndarray, s_ood: np.ndarray) -> np.ndarray:
    """The 13 entries from the spec's words, one sample at a time: ID first, order by descending score (ties as
    numpy's argsort reversed); after i samples TPR_i = tp/n, FPR_i = fp/m with TPR_0 = FPR_0 = 0; PPV_i = tp_i / i
    (i >= 1); NPV after i >= 1 samples = (m - fp_i) / (N - i + 1), paired with TPR_{i-1}; trapezoids; each "@" entry
    the mean over the points within 1e-6 of its rate, NaN if none."""
    n, m = len(s_id), len(s_ood)
    N = n + m
    scores = list(s_id) + list(s_ood)
    order = list(np.argsort(np.array(scores))[::-1])
    tpr, fpr, ppv, npv, tp, fp = [0.0], [0.0], [], [], 0, 0
    for i, index in enumerate(order, start=1):
        tp, fp = tp + (index < n), fp + (index >= n)
        tpr.append(tp / n)
        fpr.append(fp / m)
        ppv.append(tp / i)
        npv.append((m - fp) / (N - i + 1))

    def area(x, y):
        return sum(abs(x[k + 1] - x[k]) * (y[k] + y[k + 1]) / 2 for k in range(len(x) - 1))

    def mean_at(rate, target, values):
        hits = [v for r, v in zip(rate, values) if abs(r - target) < 1e-6]
        return sum(hits) / len(hits) if hits else float("nan")

    vector = [area(fpr, tpr), area(tpr[1:], ppv), area(tpr[:-1], npv), area([1 - f for f in fpr[:-1]], npv),
              area([1 - f for f in fpr[1:]], ppv)]
    for rho in (0.90, 0.95):
        vector += [1 - mean_at(tpr, rho, fpr), mean_at(tpr, 1 - rho, fpr), mean_at(fpr, 1 - rho, tpr),
                   1 - mean_at(fpr, rho, tpr)]
    return np.array(vector)


def test_paper_metric_vector_by_hand():
    """10 ID and 10 OOD scores: the order I I O I I I I I I I O O O I O O O O O O puts four points at TPR = 0.9
    (FPR 0.1..0.4) and eight at FPR = 0.1 (TPR 0.2..0.9); no point lies at TPR 0.95 or 0.05, FPR 0.05 or 0.95."""
    s_id = np.arange(10.0, 0.0, -1.0)
    s_ood = np.array([8.5, 1.5, 1.4, 1.3, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    v = dict(zip(METRIC_NAMES, paper_metric_vector(s_id, s_ood).tolist()))
    assert v["AUROC"] == pytest.approx(0.89)               # (2 x 10 + 7 x 9 + 1 x 6) pairs won of 100
    assert v["TNR@TPR90"] == pytest.approx(1 - (0.1 + 0.2 + 0.3 + 0.4) / 4)   # the mean, not the smallest FPR
    assert v["FPR@TPR10"] == 0.0 and v["FNR@FPR90"] == pytest.approx(0.0)
    assert v["TPR@FPR10"] == pytest.approx(sum(range(2, 10)) / 8 / 10)        # 0.55, not the largest TPR 0.9
    assert all(np.isnan(v[name]) for name in ("TNR@TPR95", "FPR@TPR05", "TPR@FPR05", "FNR@FPR95"))
    np.testing.assert_allclose(list(v.values()), loop_paper_vector(s_id, s_ood), atol=1e-12, equal_nan=True)
    # scikit-learn's conventions give other numbers here: the test fails if they stand in for the paper's
    sk = dict(zip(METRIC_NAMES, metric_vector(s_id, s_ood).tolist()))
    assert sk["TNR@TPR90"] == pytest.approx(0.9) and sk["TPR@FPR10"] == pytest.approx(0.9)
    assert np.isfinite(sk["TNR@TPR95"]) and abs(sk["AUPR_OUT"] - v["AUPR_OUT"]) > 1e-3


@pytest.mark.parametrize("n_id, n_ood, decimals", [(200, 200, 12), (100, 100, 0), (50, 20, 2), (60, 160, 12)])
def test_paper_metric_vector_matches_the_loop(n_id, n_ood, decimals):
    """Untied, heavily tied (0 decimals: ties in argsort order) and m != n scores (resampled to n, seeded)."""
    rng = np.random.default_rng(n_id + 3 * n_ood + decimals)
    s_id = np.round(rng.standard_normal(n_id) + 0.8, decimals)
    s_ood = np.round(rng.standard_normal(n_ood), decimals)
    generator = torch.Generator().manual_seed(5) if n_id != n_ood else None
    got = paper_metric_vector(s_id, s_ood, resample_generator=generator).numpy()
    if n_id != n_ood:
        s_ood = s_ood[torch.randint(n_ood, (n_id,), generator=torch.Generator().manual_seed(5)).numpy()]
    np.testing.assert_allclose(got, loop_paper_vector(s_id, s_ood), atol=1e-12, equal_nan=True)
    if decimals == 12:          # no ties: the trapezoid AUROC is scikit-learn's
        assert got[0] == pytest.approx(roc_auc_score(np.r_[np.ones(n_id), np.zeros(n_id)], np.r_[s_id, s_ood]))
    if n_id == 200:             # TPR = 0.9 and 0.95 lie on the grid of 200
        assert np.isfinite(got).all()


def test_paper_reading_of_a_lower_is_id_score():
    """A distance read as seed000 reads it: the raw vector of the distance, entries swapped and complemented; its
    AUROC is that of the negated distance; its other entries differ from the negated score's (AUPR_OUT by 0.015
    here), which is why the paper's reading keeps the distance as it is."""
    rng = np.random.default_rng(8)
    d_id, d_ood = rng.standard_normal(400), rng.standard_normal(400) + 1.0
    raw = loop_paper_vector(d_id, d_ood)
    got = paper_metric_vector(d_id, d_ood, higher_is_id=False).numpy()
    expected = np.r_[1 - raw[[0, 2, 1, 4, 3]], raw[[6, 5, 8, 7, 10, 9, 12, 11]]]
    np.testing.assert_allclose(got, expected, atol=1e-12, equal_nan=True)
    labels = np.r_[np.ones(400), np.zeros(400)]
    assert got[0] == pytest.approx(roc_auc_score(labels, -np.r_[d_id, d_ood]), abs=1e-12)
    negated = paper_metric_vector(-d_id, -d_ood).numpy()
    np.testing.assert_allclose(got, negated, atol=0.03)
    assert np.abs(got - negated).max() > 0.01
    assert average_precision_score(labels, -np.r_[d_id, d_ood]) == pytest.approx(got[1], abs=0.03)
