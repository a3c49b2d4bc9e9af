"""Out-of-distribution scores and detection metrics (seed000 §6.3, §7, §9; ecosystem §1.6-§1.7).

Convention everywhere: scores are oriented **higher = more in-distribution**, and the in-distribution (ID) set is
the positive class. A distance (Mahalanobis) is turned into a score by negating it.

    g = ClassGaussians(num_classes=10)
    for z, y in train_features: g.update(z, y)                # (B, D) features, (B,) labels
    g.finalize()
    dist, cls = mahalanobis(z_test, g, dims_exp(D))           # partial distances on the top-d components
    detection_metrics(-dist_id[:, -1], -dist_ood[:, -1])      # AUROC, AUPR_IN, AUPR_OUT, FPR95, TNR95, TPR05
    paper_metric_vector(-dist_id[:, -1], -dist_ood[:, -1])    # seed000's 13 metrics as its extractor computes them
    metric_vector(-dist_id[:, -1], -dist_ood[:, -1])          # the same 13 with scikit-learn's conventions
    projection_ratio(x, fc, k)                                # ||V_k^T x||^2 / ||x||^2, the proposed score
    msp_score(logits); log_sensitivity_score(chi)             # -log(1 - max softmax + 1e-7); -log(chi + 1e-7)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from measures.spectra import WeightSVD, weight_svd

__all__ = ["ClassGaussians", "mahalanobis", "dims_exp", "dims_eps", "patch_energy", "projection_energy",
           "projection_ratio", "msp_score", "log_sensitivity_score", "roc_counts", "fpr_at_tpr", "tpr_at_fpr",
           "metric_vector", "paper_metric_vector", "METRIC_NAMES", "detection_metrics"]

MSP_EPS = 1e-7            # seed000 §9: -log(1 - max softmax + 1e-7)
MAHALANOBIS_CHUNK_BYTES = 256 * 2**20   # the peak of mahalanobis()'s per-class offsets
SENSITIVITY_EPS = 1e-7    # seed000 §9: log(chi + 1e-7)
DIMS_EPSILONS = (5e-1, 2e-1, 1e-1, 5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4,
                 5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 5e-7, 2e-7, 1e-7)  # seed000 §7


class ClassGaussians:
    """Class means and tied (within-class) covariance, fitted by streaming float64 sums (seed000 §7).

    Sigma = (1/N) sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T, the standard pooled estimate. The original
    multiplies this by an extra 1/nc; that rescales every distance by nc and leaves AUROC unchanged. As in
    seed000 no regularisation is added unless `ridge` > 0, which adds ridge * trace(Sigma) / D to the diagonal.
    Sums are taken around the first batch's mean to limit cancellation.

    After finalize(): counts (nc,), means (nc, D), covariance (D, D), eigenvalues (D,) descending and
    eigenvectors (D, D) (columns), all float64 on the features' device.
    """

    def __init__(self, num_classes: int, ridge: float = 0.0) -> None:
        self.num_classes, self.ridge = num_classes, ridge
        self.shift = self.counts = self.sums = self.second = None

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch. features: (B, D) (reduce conv maps first, e.g. a spatial sum); labels: (B,) in [0, nc), a
        label outside it being reported by finalize()."""
        if features.ndim != 2:
            raise ValueError(f"features must be (B, D), got {tuple(features.shape)}; reduce feature maps first")
        labels = labels.to(features.device).long()
        x = features.to(torch.float64)
        if self.shift is None:
            D = x.shape[1]
            self.shift = x.mean(0)
            self.counts = x.new_zeros(self.num_classes)
            self.sums, self.second = x.new_zeros(self.num_classes, D), x.new_zeros(D, D)
            self.label_range = torch.zeros(2, dtype=torch.long, device=x.device)
        if labels.numel():   # the range is checked in finalize(): no host sync per batch
            self.label_range = torch.stack([self.label_range[0].minimum(labels.min()),
                                            self.label_range[1].maximum(labels.max())])
        x = x - self.shift
        classes = torch.arange(self.num_classes, device=x.device)
        onehot = (labels[:, None] == classes).to(torch.float64)               # (B, nc); a bad label's row is 0
        self.counts += onehot.sum(0)
        self.sums += onehot.T @ x
        self.second += x.T @ x

    def finalize(self) -> ClassGaussians:
        """Compute means, tied covariance and its eigendecomposition (sorted descending); returns self."""
        if self.counts is not None:
            low, high = self.label_range.tolist()
            if low < 0 or high >= self.num_classes:
                raise ValueError(f"labels must lie in [0, {self.num_classes}), got [{low}, {high}]")
        if self.counts is None or bool((self.counts == 0).any()):
            missing = [] if self.counts is None else torch.nonzero(self.counts == 0).flatten().tolist()
            raise ValueError(f"every class needs at least one sample; classes without samples: {missing or 'all'}")
        centred_means = self.sums / self.counts[:, None]
        scatter = self.second - (centred_means * self.counts[:, None]).T @ centred_means
        self.means = centred_means + self.shift
        self.covariance = scatter / self.counts.sum()
        if self.ridge > 0:
            D = self.covariance.shape[0]
            self.covariance += self.ridge * self.covariance.trace() / D * torch.eye(D, dtype=torch.float64,
                                                                                      device=self.covariance.device)
        eigenvalues, eigenvectors = torch.linalg.eigh(self.covariance)
        self.eigenvalues, self.eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        return self


def mahalanobis(features: torch.Tensor, gaussians: ClassGaussians, dims: Sequence[int] | torch.Tensor,
                chunk_bytes: int = MAHALANOBIS_CHUNK_BYTES):
    """Partial Mahalanobis distance to the closest class on the leading d components (seed000 §7).

    M_d(x) = min_c sum_{j<=d} (v_j^T (x - mu_c))^2 / l_j, the minimum taken separately for every d. The features
    are projected once and the sum over components is a cumulative sum, no B x B matrix. Classes are taken in
    chunks so that the (B, classes, max(dims)) float64 offsets stay within `chunk_bytes` (a 1,000-class set at
    batch 500 and d = 2,048 would otherwise need 8 GB); ties keep the lowest class, as one pass would.

    Args:
      features: (B, D) features; gaussians: a finalized ClassGaussians.
      dims: numbers of leading components d, each in [1, D] (the original stores d - 1).
      chunk_bytes: the peak memory of one chunk of classes (at least one class per chunk).

    Returns:
      (distances, classes): (B, len(dims)) float64 distances and int64 arg-min classes.
    """
    dims = torch.as_tensor(dims, dtype=torch.long, device=features.device)
    d_max, D = int(dims.max()), gaussians.eigenvalues.numel()
    if int(dims.min()) < 1 or d_max > D:
        raise ValueError(f"dims count leading components and must lie in [1, {D}], got [{int(dims.min())}, {d_max}]")
    eigenvalues = gaussians.eigenvalues[:d_max]
    if bool((eigenvalues <= 0).any()):
        raise ValueError("dims reach components with zero variance; use dims <= dims_eps(eigenvalues)[-1] or a ridge")
    basis = gaussians.eigenvectors[:, :d_max]                                            # (D, d_max)
    z = features.to(torch.float64) @ basis                                               # (B, d_max)
    centres = gaussians.means @ basis                                                    # (nc, d_max)
    chunk = max(1, chunk_bytes // (8 * max(1, z.shape[0] * d_max)))
    distances = classes = None
    for start in range(0, centres.shape[0], chunk):
        offsets = (z[:, None, :] - centres[None, start:start + chunk]).square() / eigenvalues  # (B, c, d_max)
        part, index = offsets.cumsum(-1)[..., dims - 1].min(dim=1)                          # (B, n_dims)
        if distances is None:
            distances, classes = part, index + start
        else:
            better = part < distances
            distances, classes = torch.where(better, part, distances), torch.where(better, index + start, classes)
    return distances, classes


def dims_exp(D: int) -> torch.Tensor:
    """Geometric grid of component counts d of seed000 §7 ("dims_exp").

    Indices 0..9, then i <- floor(i * 10^0.05) starting from i = 9 while i < D; returned as counts d = i + 1.
    Lengths 49, 43, 37, 30 for D = 512, 256, 128, 64 (last counts 482 and 59, i.e. indices 481 and 58).
    """
    step, index = 10**0.05, 9
    indices = list(range(min(index + 1, D)))
    while (index := int(index * step)) < D:
        indices.append(index)
    return torch.tensor(indices) + 1


def dims_eps(eigenvalues: torch.Tensor, epsilons: Sequence[float] = DIMS_EPSILONS) -> torch.Tensor:
    """Component counts d = #{l_j / l_max > eps} for the 21 thresholds of seed000 §7 ("dims_eps").

    Args:
      eigenvalues: (D,) covariance eigenvalues.

    Returns:
      (len(epsilons),) int64 counts, non-decreasing for decreasing eps (the original stores d - 1).
    """
    ratios = eigenvalues / eigenvalues.max()
    return (ratios[None, :] > torch.tensor(epsilons, dtype=ratios.dtype, device=ratios.device)[:, None]).sum(1)


def _apply_like(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply `weight` (no bias) with the layer's geometry: a Conv2d's kernel size, stride, padding and dilation
    (any number of input channels), or a Linear."""
    if isinstance(layer, nn.Linear):
        return x @ weight.reshape(weight.shape[0], -1).T
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1 or layer.padding_mode != "zeros":
        raise ValueError(f"projection scores need an nn.Linear or an ungrouped zero-padded nn.Conv2d, got {layer}")
    return F.conv2d(x, weight.reshape(weight.shape[0], -1, *layer.kernel_size), None, layer.stride,
                    layer.padding, layer.dilation)


def _sum_per_sample(y: torch.Tensor) -> torch.Tensor:
    return y.reshape(y.shape[0], -1).sum(1)


def squared_norms(y: torch.Tensor) -> torch.Tensor:
    """||y_i||^2 per sample, (B, ...) -> (B,) float64, accumulated in float64 without a float64 copy of y (one
    fused pass: ~3x faster than upcasting, squaring and summing)."""
    return torch.linalg.vector_norm(y.reshape(y.shape[0], -1), dim=1, dtype=torch.float64).square()


def patch_energy(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """norm0 = sum over the layer's input patches of ||patch||^2 (seed000 §6.3), exact for any conv geometry.

    For a Conv2d this is the window sum of the channel-summed x^2 with the layer's kernel size, stride, padding and
    dilation, summed (each pixel counted once per receptive field covering it: x9 / x6 / x4 for 3x3, stride 1,
    pad 1); for a Linear, ||x||^2.

    Args:
      x: (B, C, H, W) or (B, in) float input of `layer`; layer: nn.Conv2d or nn.Linear.

    Returns:
      (B,) float64.
    """
    if isinstance(layer, nn.Linear):
        return squared_norms(x)
    # (B, 1, H, W): one window sum of the channel-summed x^2 instead of one per channel, the same value
    channel_sums = x.to(torch.float64).square().sum(1, keepdim=True)
    ones = torch.ones(1, 1, *layer.weight.shape[2:], dtype=torch.float64, device=x.device)
    return _sum_per_sample(_apply_like(layer, ones, channel_sums))


def projection_energy(x: torch.Tensor, layer: nn.Module, projector_weight: torch.Tensor) -> torch.Tensor:
    """norm1 = ||conv_{Pi}(x)||^2 summed over outputs, with the layer's own geometry (seed000 §6.3).

    With Pi_k = U_k V_k^T (spectra.truncate) this equals sum_patches ||V_k^T patch||^2. The convolution runs in
    x's dtype (float32 features: relative error ~1e-7, far below any score difference), squares sum in float64.

    Args:
      x: (B, C, H, W) or (B, in) input of `layer`; projector_weight: weight shaped like layer.weight.

    Returns:
      (B,) float64.
    """
    projected = _apply_like(layer, projector_weight.to(x.dtype), x)  # in the features' own precision (fast)
    return squared_norms(projected)


def projection_ratio(x: torch.Tensor, layer: nn.Module, k: int | Sequence[int], svd: WeightSVD | None = None):
    """Proposed score normr = norm1 / norm0: fraction of the input energy in the weight's top-k row space (§6.3).

    One conv with all right singular vectors V^T gives per-direction energies; norm1(k) is their cumulative sum,
    so every k costs the same single pass. Higher = more in-distribution.

    Args:
      x: (B, C, H, W) or (B, in) input of `layer` (nn.Conv2d or nn.Linear).
      k: a rank or a sequence of ranks in [1, min(out, fan_in)].
      svd: weight_svd(layer.weight), to reuse across batches (computed when None).

    Returns:
      (B,) float64 for an int k, (B, len(k)) for a sequence.
    """
    svd = weight_svd(layer.weight) if svd is None else svd
    ks = torch.as_tensor(k, device=x.device)
    if bool((ks < 1).any() or (ks > svd.S.numel()).any()):
        raise ValueError(f"ranks k must lie in [1, {svd.S.numel()}] for this layer, got {k}")
    directions = _apply_like(layer, svd.Vh, x.to(torch.float64)).square()                # (B, m, ...)
    energies = directions.reshape(*directions.shape[:2], -1).sum(-1).cumsum(1)           # (B, m)
    ratios = energies / patch_energy(x, layer)[:, None]
    return ratios[:, ks - 1]


def msp_score(logits: torch.Tensor, eps: float = MSP_EPS) -> torch.Tensor:
    """The maximum-softmax-probability score -log(1 - max_c softmax(logits)_c + eps) (seed000 §9, `detection`).

    Increasing in the maximum softmax probability p, so higher = more in-distribution; the log spreads p close
    to 1 (1 - p down to eps = 1e-7, where float64 still resolves it). Computed in float64.

    Args:
      logits: (N, classes) network outputs (a tensor or an array).

    Returns:
      (N,) float64 scores.
    """
    p = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).amax(1)
    return -torch.log(1 - p + eps)


def log_sensitivity_score(chi: torch.Tensor, eps: float = SENSITIVITY_EPS) -> torch.Tensor:
    """The noise-sensitivity score -log(chi + eps) of seed000 §9 (`sensitivity ... scored on log(chi + 1e-7)`).

    chi = ||f(x~) - f(x)||^2 / ||f(x)||^2 is the relative change of a feature when an earlier layer is perturbed
    (seed000 §6.5); OOD samples are expected to be more sensitive, so the log is negated to make higher = more
    in-distribution. Element-wise, in float64; NaN (layers before the perturbed one) stays NaN.

    Args:
      chi: sensitivities of any shape (a tensor or an array).

    Returns:
      float64 scores of the same shape.
    """
    return -torch.log(torch.as_tensor(chi, dtype=torch.float64) + eps)


# ---- detection metrics (seed000 §9) ------------------------------------------------------------------------------
# The 13-value metric vector of seed000's extractor, every entry for scores oriented higher = more in-distribution
# with ID positive (so every entry reads the same way for every score: the original's lower-is-ID scores read the
# swapped entries of its vector instead). rho in {0.90, 0.95}. Two readings of the same names:
# `paper_metric_vector` is the original's arithmetic (per-sample curves, trapezoids, exact rate matches, NaN when no
# point sits at a rate), `metric_vector` scikit-learn's conventions (ties grouped, step sums, nearest operating point).
METRIC_NAMES = ("AUROC", "AUPR_IN", "AUNPV_TPR", "AUPR_OUT", "AUPPV_TNR",
                "TNR@TPR90", "FPR@TPR10", "TPR@FPR10", "FNR@FPR90",
                "TNR@TPR95", "FPR@TPR05", "TPR@FPR05", "FNR@FPR95")
OPERATING_RHOS = (0.90, 0.95)
RATE_TOLERANCE = 1e-9   # a rate x counts as reached when rate >= x - 1e-9 (1 - 0.95 is 0.050000000000000044)
PAPER_RATE_TOLERANCE = 1e-6   # seed000's extractor: a point sits at rate x when |rate - x| < 1e-6


def _scores(score_id, score_ood, resample_generator: torch.Generator | None):
    s_id = torch.as_tensor(score_id).flatten().to(torch.float64)
    s_ood = torch.as_tensor(score_ood).flatten().to(torch.float64)
    if bool(torch.isnan(s_id).any() or torch.isnan(s_ood).any()):
        raise ValueError("detection scores contain NaN")
    if s_id.numel() == 0 or s_ood.numel() == 0:
        raise ValueError("detection needs at least one ID and one OOD score")
    if resample_generator is not None and s_ood.numel() != s_id.numel():
        pick = torch.randint(s_ood.numel(), (s_id.numel(),), generator=resample_generator,
                             device=resample_generator.device)
        s_ood = s_ood[pick.to(s_ood.device)]
    return s_id, s_ood


def roc_counts(score_id, score_ood) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative (TP, FP) of the partitions "accept score >= t", t the distinct scores in descending order.

    Entry 0 accepts nothing (0, 0), the last everything (n_id, n_ood); tied scores are accepted together, so these
    are exactly the points of sklearn's roc_curve(drop_intermediate=False) times (n_id, n_ood).

    Args:
      score_id: (n_id,) scores of the in-distribution (positive) samples; score_ood: (n_ood,) scores.

    Returns:
      (tp, fp): two (T + 1,) float64 tensors, T the number of distinct scores.
    """
    s_id, s_ood = _scores(score_id, score_ood, None)
    scores = torch.cat([s_id, s_ood])
    positive = torch.cat([torch.ones_like(s_id), torch.zeros_like(s_ood)])
    order = scores.argsort(descending=True, stable=True)
    ranked, hits = scores[order], positive[order]
    group_end = torch.cat([ranked[1:] != ranked[:-1], ranked.new_ones(1, dtype=torch.bool)])
    zero = ranked.new_zeros(1)
    return torch.cat([zero, hits.cumsum(0)[group_end]]), torch.cat([zero, (1 - hits).cumsum(0)[group_end]])


def _fpr_at_tpr(tp, fp, n_id: int, n_ood: int, tpr: float) -> torch.Tensor:
    return (fp[tp / n_id >= tpr - RATE_TOLERANCE] / n_ood).min()


def _tpr_at_fpr(tp, fp, n_id: int, n_ood: int, fpr: float) -> torch.Tensor:
    return (tp[fp / n_ood <= fpr + RATE_TOLERANCE] / n_id).max()


def fpr_at_tpr(score_id, score_ood, tpr: float) -> float:
    """FPR (fraction of OOD accepted) at the largest threshold accepting at least a fraction `tpr` of ID, i.e. the
    smallest FPR of a ROC point with TPR >= tpr; OOD scores equal to the threshold count as accepted."""
    tp, fp = roc_counts(score_id, score_ood)
    return float(_fpr_at_tpr(tp, fp, int(tp[-1]), int(fp[-1]), tpr))


def tpr_at_fpr(score_id, score_ood, fpr: float) -> float:
    """TPR (fraction of ID accepted) at the lowest threshold accepting at most a fraction `fpr` of OOD, i.e. the
    largest TPR of a ROC point with FPR <= fpr."""
    tp, fp = roc_counts(score_id, score_ood)
    return float(_tpr_at_fpr(tp, fp, int(tp[-1]), int(fp[-1]), fpr))


def metric_vector(score_id, score_ood, resample_generator: torch.Generator | None = None) -> torch.Tensor:
    """seed000's 13 detection metrics (names in METRIC_NAMES) with scikit-learn's conventions, ID positive, higher
    score = more ID: the toolkit's reading, reported beside `paper_metric_vector` (the original's arithmetic).

    On the partitions of `roc_counts` (accept score >= t, ties together; j = 0 accepts nothing, T everything), with
    tpr = TP / n_id, fpr = FP / n_ood, tnr = 1 - fpr, ppv = TP / (TP + FP) (ID fraction of the accepted) and
    npv = TN / (TN + FN) (OOD fraction of the rejected), ppv = 1 when nothing is accepted and npv = 1 when nothing
    is rejected (sklearn's precision at its curve's end point):
      [0] AUROC: trapezoid area under (fpr, tpr) = sklearn roc_auc_score (ties count 1/2);
      [1] AUPR_IN = sum_j (tpr_j - tpr_{j-1}) ppv_j, the area under ppv vs tpr (= average_precision_score);
      [2] AUNPV_TPR = sum_j (tpr_j - tpr_{j-1}) npv_j, the area under npv vs tpr;
      [3] AUPR_OUT = sum_j (tnr_j - tnr_{j+1}) npv_j, the area under npv vs tnr = 1 - fpr (= average precision with
          OOD positive and score -s);
      [4] AUPPV_TNR = sum_j (tnr_j - tnr_{j+1}) ppv_j, the area under ppv vs tnr;
      for rho = 0.90 then 0.95 ([5..8], [9..12]): 1 - FPR@TPR=rho, FPR@TPR=1-rho, TPR@FPR=1-rho, 1 - TPR@FPR=rho,
      where FPR@TPR=x is `fpr_at_tpr` (the conservative operating point: the smallest FPR reaching TPR x) and
      TPR@FPR=y `tpr_at_fpr`; always defined.
    These are not seed000's numbers: its areas are trapezoids of per-sample curves and its operating points the mean
    over the points exactly at a rate, NaN when there is none (`paper_metric_vector`; e.g. TNR@TPR95 0.56 here
    against 0.34 there on 10,000 samples of a CIFAR-100 stand-in). Swapping ID and OOD and negating the scores
    permutes the vector: [1] <-> [3], [2] <-> [4], [5] <-> [7], [6] <-> [8] (and the same for 0.95).

    Args:
      score_id: (n_id,) scores; score_ood: (n_ood,) scores (tensors or arrays; NaN is an error).
      resample_generator: if given and n_ood != n_id, OOD scores are first resampled with replacement to n_id (§9).

    Returns:
      (13,) float64 tensor.
    """
    tp, fp = roc_counts(*_scores(score_id, score_ood, resample_generator))
    n_id, n_ood = int(tp[-1]), int(fp[-1])
    tpr, fpr = tp / n_id, fp / n_ood
    accepted = tp + fp
    rejected = (n_id + n_ood) - accepted
    ppv = torch.where(accepted > 0, tp / accepted.clamp(min=1), torch.ones_like(tp))
    npv = torch.where(rejected > 0, (n_ood - fp) / rejected.clamp(min=1), torch.ones_like(tp))
    tnr = 1 - fpr
    d_tpr, d_tnr = torch.diff(tpr), -torch.diff(tnr)
    values = [torch.trapezoid(tpr, fpr), (d_tpr * ppv[1:]).sum(), (d_tpr * npv[1:]).sum(),
              (d_tnr * npv[:-1]).sum(), (d_tnr * ppv[:-1]).sum()]
    for rho in OPERATING_RHOS:
        values += [1 - _fpr_at_tpr(tp, fp, n_id, n_ood, rho), _fpr_at_tpr(tp, fp, n_id, n_ood, 1 - rho),
                   _tpr_at_fpr(tp, fp, n_id, n_ood, 1 - rho), 1 - _tpr_at_fpr(tp, fp, n_id, n_ood, rho)]
    return torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values])


def _area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x) for x monotone either way, positive (sklearn.metrics.auc's rule)."""
    area = float(np.trapezoid(y, x))
    return -area if bool((np.diff(x) < 0).any()) else area


def _mean_at(rate: np.ndarray, target: float, values: np.ndarray) -> float:
    """Mean of `values` over the points whose `rate` lies within PAPER_RATE_TOLERANCE of `target`; NaN if none."""
    hit = np.abs(rate - target) < PAPER_RATE_TOLERANCE
    return float(values[hit].mean()) if hit.any() else float("nan")


def paper_metric_vector(score_id, score_ood, resample_generator: torch.Generator | None = None,
                        higher_is_id: bool = True) -> torch.Tensor:
    """seed000's 13 detection metrics (names in METRIC_NAMES) exactly as its extractor computes them (spec §9).

    The n ID (positive) and m OOD scores are pooled, ID first, and ordered by descending score, ties in the order of
    numpy's default `argsort` reversed. After the i-th sample (i = 1..N, N = n + m) tp_i and fp_i count the ID and
    OOD samples so far; TPR_i = tp_i / n, FPR_i = fp_i / m, with a leading point TPR_0 = FPR_0 = 0 (N + 1 points);
    PPV_i = tp_i / i and NPV_i = (m - fp_i) / (N - i + 1) for i = 1..N (the original's arrays: its NPV counts one
    more rejected sample than there is, and its i-th value is paired with the point before, TPR_{i-1}).
      [0] area of TPR against FPR; [1] PPV against TPR_1..N; [2] NPV against TPR_0..N-1; [3] NPV against
      1 - FPR_0..N-1; [4] PPV against 1 - FPR_1..N (trapezoids, sklearn.metrics.auc);
      for rho = 0.90 then 0.95 ([5..8], [9..12]): 1 - mean FPR where TPR = rho, mean FPR where TPR = 1 - rho,
      mean TPR where FPR = 1 - rho, 1 - mean TPR where FPR = rho, each mean over every point within 1e-6 of the
      rate and NaN when no point is (e.g. TPR = 0.95 with n = 150).
    Per-sample points make tied scores count in their sort order, not 1/2 as in `metric_vector`.
    A score where lower means in-distribution (a Mahalanobis distance, a noise sensitivity) is passed as it is with
    higher_is_id=False: the vector v is computed on it unchanged, as the original does, and read back the way
    seed000's averaging reads it (its table prints 1 - v[0], 1 - v[2], 1 - v[4], v[6], v[8], v[10], v[12]), so that
    every entry carries its name: [1 - v0, 1 - v2, 1 - v1, 1 - v4, 1 - v3, v6, v5, v8, v7, v10, v9, v12, v11].
    This is not the vector of the negated score: the NPV denominator and the ordering of ties make them differ (by
    0.015 in AUPR_OUT on 400 + 400 Gaussian scores).

    Args:
      score_id: (n,) scores; score_ood: (m,) scores (tensors or arrays; NaN is an error).
      resample_generator: if given and m != n, OOD scores are first resampled with replacement to n (§9).
      higher_is_id: False for scores oriented higher = more OOD (read as above).

    Returns:
      (13,) float64 tensor (NaN entries where a rate is not on the grid).
    """
    s_id, s_ood = (s.cpu().numpy() for s in _scores(score_id, score_ood, resample_generator))
    n, m = len(s_id), len(s_ood)
    order = np.argsort(np.concatenate([s_id, s_ood]))[::-1]
    hits = (order < n).astype(np.float64)                                      # (N,) 1 for an ID sample
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    tpr, fpr = np.r_[0.0, tp / n], np.r_[0.0, fp / m]                          # (N + 1,)
    i = np.arange(1, n + m + 1)
    ppv = tp / i                                                               # i = 1..N
    npv = (m - fp) / (n + m - i + 1)                                           # paired with TPR_0..N-1
    values = [_area(fpr, tpr), _area(tpr[1:], ppv), _area(tpr[:-1], npv), _area(1 - fpr[:-1], npv),
              _area(1 - fpr[1:], ppv)]
    for rho in OPERATING_RHOS:
        values += [1 - _mean_at(tpr, rho, fpr), _mean_at(tpr, 1 - rho, fpr), _mean_at(fpr, 1 - rho, tpr),
                   1 - _mean_at(fpr, rho, tpr)]
    v = torch.tensor(values, dtype=torch.float64)
    if higher_is_id:
        return v
    read = v[[0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11]]
    read[:5] = 1 - read[:5]
    return read


def detection_metrics(score_id: torch.Tensor, score_ood: torch.Tensor,
                      resample_generator: torch.Generator | None = None) -> dict[str, float]:
    """ID-vs-OOD detection metrics with ID positive and higher score = more ID (seed000 §9), from `metric_vector`.

    AUROC: probability that an ID score beats an OOD score, ties counting 1/2 (= sklearn roc_auc_score).
    AUPR_IN / AUPR_OUT: average precision with ID / OOD positive (OOD ranked by -score).
    FPR95: fraction of OOD accepted (score >= t) at t = the floor(0.05 n_id)-th smallest ID score, the largest
    threshold accepting at least 95% of ID; OOD scores equal to t count as accepted. TNR95 = 1 - FPR95.
    TPR05: fraction of ID accepted at the lowest threshold accepting at most 5% of OOD, i.e. ID scores strictly
    above the (floor(0.05 n_ood) + 1)-th largest OOD score (the largest TPR on the ROC curve with FPR <= 0.05).

    Args:
      score_id: (n_id,) scores; score_ood: (n_ood,) scores.
      resample_generator: if given and n_ood != n_id, OOD scores are resampled with replacement to n_id (§9).

    Returns:
      dict of floats with keys AUROC, AUPR_IN, AUPR_OUT, FPR95, TNR95, TPR05.
    """
    vector = dict(zip(METRIC_NAMES, metric_vector(score_id, score_ood, resample_generator).tolist()))
    return {"AUROC": vector["AUROC"], "AUPR_IN": vector["AUPR_IN"], "AUPR_OUT": vector["AUPR_OUT"],
            "FPR95": 1 - vector["TNR@TPR95"], "TNR95": vector["TNR@TPR95"], "TPR05": vector["TPR@FPR05"]}
