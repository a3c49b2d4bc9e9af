"""Out-of-distribution scores and detection metrics (seed000 §6.3, §7, §9; ecosystem §1.6-§1.7).

Convention everywhere: scores are oriented **higher = more in-distribution**, and the in-distribution (ID) set is
the positive class. A distance (Mahalanobis) is turned into a score by negating it.

    g = ClassGaussians(num_classes=10)
    for z, y in train_features: g.update(z, y)                # (B, D) features, (B,) labels
    g.finalize()
    dist, cls = mahalanobis(z_test, g, dims_exp(D))           # partial distances on the top-d components
    detection_metrics(-dist_id[:, -1], -dist_ood[:, -1])      # AUROC, AUPR_IN, AUPR_OUT, FPR95, TNR95, TPR05
    projection_ratio(x, fc, k)                                # ||V_k^T x||^2 / ||x||^2, the proposed score
    msp_score(logits); log_sensitivity_score(chi)             # -log(1 - max softmax + 1e-7); -log(chi + 1e-7)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from measures.spectra import WeightSVD, weight_svd

__all__ = ["ClassGaussians", "mahalanobis", "dims_exp", "dims_eps", "patch_energy", "projection_energy",
           "projection_ratio", "msp_score", "log_sensitivity_score", "detection_metrics"]

MSP_EPS = 1e-7            # seed000 §9: -log(1 - max softmax + 1e-7)
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
        """Add a batch. features: (B, D) (reduce conv maps first, e.g. a spatial sum); labels: (B,) in [0, nc)."""
        if features.ndim != 2:
            raise ValueError(f"features must be (B, D), got {tuple(features.shape)}; reduce feature maps first")
        labels = labels.to(features.device).long()
        low, high = (int(labels.min()), int(labels.max())) if labels.numel() else (0, 0)
        if low < 0 or high >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got [{low}, {high}]")
        x = features.to(torch.float64)
        if self.shift is None:
            D = x.shape[1]
            self.shift = x.mean(0)
            self.counts = x.new_zeros(self.num_classes)
            self.sums, self.second = x.new_zeros(self.num_classes, D), x.new_zeros(D, D)
        x = x - self.shift
        onehot = F.one_hot(labels, self.num_classes).to(torch.float64)            # (B, nc)
        self.counts += onehot.sum(0)
        self.sums += onehot.T @ x
        self.second += x.T @ x

    def finalize(self) -> ClassGaussians:
        """Compute means, tied covariance and its eigendecomposition (sorted descending); returns self."""
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


def mahalanobis(features: torch.Tensor, gaussians: ClassGaussians, dims: Sequence[int] | torch.Tensor):
    """Partial Mahalanobis distance to the closest class on the leading d components (seed000 §7).

    M_d(x) = min_c sum_{j<=d} (v_j^T (x - mu_c))^2 / l_j, the minimum taken separately for every d. The features
    are projected once and the sum over components is a cumulative sum: memory B * nc * max(dims), no B x B matrix.

    Args:
      features: (B, D) features; gaussians: a finalized ClassGaussians.
      dims: numbers of leading components d, each in [1, D] (the original stores d - 1).

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
    offsets = (z[:, None, :] - (gaussians.means @ basis)[None]).square() / eigenvalues    # (B, nc, d_max)
    partial = offsets.cumsum(-1)[..., dims - 1]                                          # (B, nc, n_dims)
    distances, classes = partial.min(dim=1)
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
    x2 = x.to(torch.float64).square()
    if isinstance(layer, nn.Linear):
        return _sum_per_sample(x2)
    channel_sums = x2.sum(1, keepdim=True)  # (B, 1, H, W): one window sum instead of one per channel, same value
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
    return _sum_per_sample(projected.to(torch.float64).square())


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


def _average_precision(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Average precision sum_t (R_t - R_{t-1}) P_t over distinct thresholds t, descending (sklearn's definition)."""
    scores = torch.cat([positive, negative])
    order = scores.argsort(descending=True)
    hits = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])[order]
    ranked = scores[order]
    group_end = torch.cat([ranked[1:] != ranked[:-1], ranked.new_ones(1, dtype=torch.bool)])
    tp, seen = hits.cumsum(0)[group_end], torch.arange(1, len(hits) + 1, device=hits.device)[group_end]
    recall = tp / positive.numel()
    return (torch.diff(recall, prepend=recall.new_zeros(1)) * tp / seen).sum()


def detection_metrics(score_id: torch.Tensor, score_ood: torch.Tensor,
                      resample_generator: torch.Generator | None = None) -> dict[str, float]:
    """ID-vs-OOD detection metrics with ID positive and higher score = more ID (seed000 §9).

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
    s_id, s_ood = score_id.flatten().to(torch.float64), score_ood.flatten().to(torch.float64)
    n_id = s_id.numel()
    if resample_generator is not None and s_ood.numel() != n_id:
        pick = torch.randint(s_ood.numel(), (n_id,), generator=resample_generator, device=resample_generator.device)
        s_ood = s_ood[pick.to(s_ood.device)]
    n_ood = s_ood.numel()
    ranked, inverse, counts = torch.unique(torch.cat([s_id, s_ood]), return_inverse=True, return_counts=True)
    counts = counts.to(torch.float64)
    mid_rank = counts.cumsum(0) - (counts - 1) / 2                                    # average 1-based rank per value
    auroc = (mid_rank[inverse[:n_id]].sum() - n_id * (n_id + 1) / 2) / (n_id * n_ood)
    threshold = s_id.sort().values[(5 * n_id) // 100]
    fpr = (s_ood >= threshold).to(torch.float64).mean()
    tpr = (s_id > s_ood.sort(descending=True).values[(5 * n_ood) // 100]).to(torch.float64).mean()
    return {"AUROC": float(auroc), "AUPR_IN": float(_average_precision(s_id, s_ood)),
            "AUPR_OUT": float(_average_precision(-s_ood, -s_id)), "FPR95": float(fpr), "TNR95": float(1 - fpr),
            "TPR05": float(tpr)}
