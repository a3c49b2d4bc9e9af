"""Class-specific filters and the decomposed final layer (seed003, Badola et al., "Decomposing the Deep").

Features are the non-negative global-average-pooled activations f (N, D) of one layer (the classifier input for
the decomposition). For every class c a small set S_c of influential filters is read off L1-normalised frequency
histograms (§4): each instance votes for its k strongest filters and S_c keeps the filters with the most votes.
The final layer is then decomposed so that logit c only reads S_c (§5),

    logit_c(x) = sum_{j in S_c} W[c, j] f_j(x) + b_c  =  [f (W * M)^T + b]_c,     M[c, j] = 1 iff j in S_c,

the essentiality test replaces the features of S_c (or all the others) by N(0, 1) noise (§7), and the mutual
information between the class membership vectors, Psi and the class selectivity index measure how
class-specific the sets and units are (§9, §10).

    sets = class_filters(features, labels, 5)                       # list of C LongTensors
    logits = decomposed_logits(features, fc.weight, fc.bias, sets)  # == decomposed_logits_masked(...)
    filter_sets_mutual_info(shipped_top5_sets, 64)                  # 0.03453775959861226 (the authors' value)

Ties are broken the same way everywhere: among equal activations or equal counts the lower filter index ranks
first. Statistics (masses, frequencies, means, MI) are computed in float64 on the inputs' device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from utils.device import draw_device

__all__ = [
    "l1_normalize", "filter_histograms", "class_filters", "sets_to_mask", "overlap_summary",
    "topk_weight_overlap", "decomposed_logits", "decomposed_logits_masked", "DecomposedHead",
    "replace_features", "essentiality_counts", "membership_mutual_info", "filter_sets_mutual_info",
    "psi_selectivity", "class_selectivity_index", "selectivity_from_means", "LayerSelectivity",
]


# ---- influential filters (§4) ---------------------------------------------------------------------------
def l1_normalize(features: torch.Tensor) -> torch.Tensor:
    """Per-instance L1 normalisation p_i = a_i / ||a_i||_1 (seed003 §4).

    Args:
      features: (N, D) activations.

    Returns:
      (N, D) float64; every non-zero row sums to 1 (for non-negative input), an all-zero row stays zero.
    """
    features = features.to(torch.float64)
    norms = features.abs().sum(dim=1, keepdim=True)
    return features / torch.where(norms > 0, norms, torch.ones_like(norms))


def _descending_order(values: torch.Tensor) -> torch.Tensor:
    """Indices sorting each row of `values` in decreasing order; ties: lower index first (stable sort)."""
    return torch.sort(values, dim=-1, descending=True, stable=True).indices


def _mass_rank_counts(features: torch.Tensor, k: float) -> torch.Tensor:
    """n_i = #{ranks r : cumulative sum of the sorted L1-normalised p_i up to rank r is < k} (seed003 §4, §10), (N,).

    An all-zero row has cumulative sum 0 everywhere, so n_i = D.
    """
    mass = torch.cumsum(l1_normalize(features).sort(dim=1, descending=True).values, dim=1)  # (N, D)
    return (mass < k).sum(dim=1)


def _check_labels(labels: torch.Tensor, num_classes: int, n: int) -> torch.Tensor:
    """Per-class instance counts (C,); raises if a label is out of range or a class has no instance."""
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the features, got {tuple(labels.shape)}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    sizes = torch.bincount(labels, minlength=num_classes)
    empty = (sizes == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"classes {empty} have no instances; filter sets need at least one image per class")
    return sizes


def _top_rank_counts(order: torch.Tensor, labels: torch.Tensor, ranks: torch.Tensor, num_classes: int
                     ) -> torch.Tensor:
    """h[c, j] = #{i with label c : j among the first ranks[i] entries of order[i]}, (C, D) long."""
    d = order.shape[1]
    voted = torch.arange(d, device=order.device)[None, :] < ranks[:, None]   # (N, D) rank r < ranks[i]
    cells = (labels[:, None] * d + order)[voted]                             # flat (class, filter) of each vote
    return torch.bincount(cells, minlength=num_classes * d).view(num_classes, d)


def filter_histograms(features: torch.Tensor, labels: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """Frequency histograms of the per-instance top-k filters (seed003 §4, steps 1-2).

    h_c[j] = #{i in class c : j is among the k largest activations of instance i} (ties: lower index first).

    Args:
      features: (N, D) activations.
      labels: (N,) class indices in [0, num_classes).
      k: filters per instance, 1 <= k <= D.
      num_classes: C.

    Returns:
      (C, D) long counts; every row sums to k times the class size.
    """
    labels = labels.to(features.device).long()
    _check_labels(labels, num_classes, features.shape[0])
    ranks = torch.full((features.shape[0],), int(k), dtype=torch.long, device=features.device)
    return _top_rank_counts(_descending_order(features), labels, ranks, num_classes)


def _fraction_histograms(features: torch.Tensor, labels: torch.Tensor, k: float, num_classes: int
                         ) -> torch.Tensor:
    """Histograms of the per-instance top-k_c with k_c = max(1, floor(mean_{i in c} n_i)) (seed003 §4), (C, D)."""
    sizes = _check_labels(labels, num_classes, features.shape[0])
    mass_ranks = torch.zeros(num_classes, dtype=torch.long, device=features.device)
    mass_ranks.index_add_(0, labels, _mass_rank_counts(features, k))
    k_c = torch.div(mass_ranks, sizes, rounding_mode="floor").clamp(1, features.shape[1])   # (C,)
    return _top_rank_counts(_descending_order(features), labels, k_c[labels], num_classes)


def class_filters(features: torch.Tensor, labels: torch.Tensor, k: float, num_classes: int | None = None,
                  return_histograms: bool = False):
    """The influential filter set S_c of every class (seed003 §4).

    Integer k (the rule behind the shipped index files): each instance votes for its k largest activations,
    h_c counts the votes of class c, and S_c = the k filters with the largest h_c. Sets for different k need not
    be nested (a filter that is often first but never second can lose its place when k grows); the shipped
    5/10/20 sets happen to be.

    Fraction k in (0, 1) (the journal code): n_i = number of sorted L1-normalised activations whose cumulative
    sum is still < k; k_c = floor(mean_{i in c} n_i), raised to 1 when it would be 0 (our guard: a class whose
    instances mostly put at least k of their mass on one filter would otherwise get an empty set); h_c counts the
    per-instance top-k_c and is normalised to sum 1; with the filters sorted by ascending frequency, S_c keeps
    those whose ascending cumulative frequency exceeds k (the rarest filters holding frequency mass k are
    dropped). |S_c| varies by class.

    Ties, at both levels: the lower filter index ranks first (numpy's argsort in the original code leaves
    this unspecified).

    Args:
      features: (N, D) non-negative activations (e.g. GAP of the last block).
      labels: (N,) class indices; every class in [0, num_classes) needs at least one instance.
      k: integer >= 1 (at most D) or a fraction in (0, 1).
      num_classes: C (default: labels.max() + 1).
      return_histograms: also return the (C, D) vote counts the sets were read from.

    Returns:
      list of C LongTensors, each sorted by decreasing frequency; with return_histograms, (sets, (C, D) counts).
    """
    labels = labels.to(features.device).long()
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    integer_k = k >= 1 and float(k).is_integer() and k <= features.shape[1]
    if integer_k:
        counts = filter_histograms(features, labels, int(k), num_classes)
    elif 0 < k < 1:
        counts = _fraction_histograms(features, labels, float(k), num_classes)
    else:
        raise ValueError(f"k must be an integer in [1, {features.shape[1]}] or a fraction in (0, 1), got {k}")
    order = _descending_order(counts)                                            # (C, D)
    if integer_k:
        sizes = [int(k)] * num_classes
    else:  # ascending order = reversed descending order; the kept filters are a prefix of the descending order
        frequency = counts.double().gather(1, order) / counts.sum(dim=1, keepdim=True)
        ascending_cumsum = frequency.flip(1).cumsum(1).flip(1)
        sizes = (ascending_cumsum > k).sum(dim=1).tolist()
    sets = [order[c, :sizes[c]] for c in range(num_classes)]
    return (sets, counts) if return_histograms else sets


def sets_to_mask(sets: Sequence[torch.Tensor], num_classes: int, n_filters: int) -> torch.Tensor:
    """Binary membership mask of the filter sets (seed003 §5, §9).

    Args:
      sets: num_classes LongTensors of filter indices in [0, n_filters).
      num_classes: C (must equal len(sets)).
      n_filters: D.

    Returns:
      (C, D) bool mask M with M[c, j] = (j in S_c), on the device of the first set.
    """
    if len(sets) != num_classes:
        raise ValueError(f"expected one filter set per class ({num_classes}), got {len(sets)}")
    device = torch.as_tensor(sets[0]).device if len(sets) else None
    mask = torch.zeros(num_classes, n_filters, dtype=torch.bool, device=device)
    for c, chosen in enumerate(sets):
        chosen = torch.as_tensor(chosen, dtype=torch.long, device=device)
        if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= n_filters):
            raise ValueError(f"filter set of class {c} has indices outside [0, {n_filters}): {chosen.tolist()}")
        mask[c, chosen] = True
    return mask


def overlap_summary(sets: Sequence[torch.Tensor], n_filters: int) -> dict:
    """How much the class sets share (seed003 §4): union size, mean overlap over unordered pairs, set sizes.

    The shipped ResNet20 top-5 sets give union 32 and mean pairwise overlap 21/45 = 0.47.

    Returns:
      {"union": int, "mean_pairwise_overlap": float, "sizes": list[int]}.
    """
    mask = sets_to_mask(sets, len(sets), n_filters).double()
    shared = mask @ mask.T                                           # (C, C) |S_a ∩ S_b|
    pairs = torch.triu(torch.ones_like(shared, dtype=torch.bool), diagonal=1)
    return {"union": int(mask.any(0).sum()),
            "mean_pairwise_overlap": float(shared[pairs].mean()) if pairs.any() else 0.0,
            "sizes": [int(s) for s in mask.sum(1).tolist()]}


def topk_weight_overlap(sets: Sequence[torch.Tensor], weight: torch.Tensor, k: int) -> torch.Tensor:
    """|S_c ∩ (the k largest entries of W[c])| per class, the sanity check of seed003 §4 (4.3/5 on average there).

    Args:
      sets: C LongTensors.  weight: (C, D) final-layer weight.  k: entries of W[c] to compare with.

    Returns:
      (C,) long overlaps.
    """
    top = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    top.scatter_(1, weight.topk(k, dim=1).indices, True)
    return (sets_to_mask(sets, weight.shape[0], weight.shape[1]).to(weight.device) & top).sum(1)


# ---- decomposed final layer (§5, §6) ---------------------------------------------------------------------
def _padded_sets(sets: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sets as a (C, m) index matrix padded with filter 0 and a (C, m) bool validity mask, m = max |S_c|."""
    size = max((len(s) for s in sets), default=0)
    index = torch.zeros(len(sets), size, dtype=torch.long, device=device)
    valid = torch.zeros(len(sets), size, dtype=torch.bool, device=device)
    for c, chosen in enumerate(sets):
        chosen = torch.as_tensor(chosen, dtype=torch.long, device=device)
        if len(chosen.unique()) != len(chosen):
            raise ValueError(f"filter set of class {c} repeats an index: {chosen.tolist()}")
        index[c, :len(chosen)] = chosen
        valid[c, :len(chosen)] = True
    return index, valid


def _gathered_logits(features: torch.Tensor, index: torch.Tensor, weights: torch.Tensor,
                     bias: torch.Tensor | None) -> torch.Tensor:
    """logit[n, c] = sum_m weights[c, m] f[n, index[c, m]] + bias[c]; padded weights must be zero."""
    logits = (features[:, index] * weights).sum(-1)        # (N, C, m) -> (N, C)
    return logits if bias is None else logits + bias


def decomposed_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      sets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Decomposed final layer, gathered form: logit_c = sum_{j in S_c} W[c, j] f_j + b_c (seed003 §5).

    Only sum_c |S_c| multiply-adds per instance (50 instead of 640 for ResNet20, k = 5). Sets of unequal size
    are padded and the padding masked out. Equals `decomposed_logits_masked` and, with every S_c = all filters,
    the full Linear layer.

    Args:
      features: (N, D).  weight: (C, D).  bias: (C,) or None.  sets: C LongTensors of filter indices.

    Returns:
      (N, C) logits in the features' dtype.
    """
    index, valid = _padded_sets(sets, features.device)
    weights = weight.to(features.dtype).gather(1, index) * valid          # (C, m)
    return _gathered_logits(features, index, weights, None if bias is None else bias.to(features.dtype))


def decomposed_logits_masked(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             sets: Sequence[torch.Tensor]) -> torch.Tensor:
    """The same logits as a masked Linear layer, f (W * M)^T + b (seed003 §5).

    Args / Returns: as `decomposed_logits`.
    """
    mask = sets_to_mask(sets, weight.shape[0], weight.shape[1]).to(weight.device)
    return nn.functional.linear(features, weight.to(features.dtype) * mask,
                                None if bias is None else bias.to(features.dtype))


class DecomposedHead(nn.Module):
    """The decomposed final layer with trainable per-class weights over S_c (seed003 §5, §6).

    final_weights (C, m) start from W[c, S_c] (m = max |S_c|; the padding of smaller sets is held at zero by a
    mask, so it gets no gradient) and final_bias from b. Forward equals `decomposed_logits` with the current
    weights. Finetuning (§6) trains these together with the backbone; the sets stay fixed.

    Args:
      weight: (C, D) original classifier weight.  bias: (C,) or None.  sets: C LongTensors.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, sets: Sequence[torch.Tensor]):
        super().__init__()
        if len(sets) != weight.shape[0]:
            raise ValueError(f"expected one filter set per class ({weight.shape[0]}), got {len(sets)}")
        index, valid = _padded_sets(sets, weight.device)
        self.register_buffer("index", index)
        self.register_buffer("valid", valid)
        self.final_weights = nn.Parameter(weight.detach().gather(1, index) * valid)
        self.final_bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, C) logits."""
        return _gathered_logits(features, self.index, self.final_weights * self.valid, self.final_bias)

    def extra_repr(self) -> str:
        return f"classes={self.index.shape[0]}, filters_per_class<={self.index.shape[1]}"


# ---- essentiality (§7) -------------------------------------------------------------------------------------
def replace_features(features: torch.Tensor, chosen: torch.Tensor, generator: torch.Generator | None = None,
                     complement: bool = False) -> torch.Tensor:
    """The essentiality corruption of seed003 §7: chosen features are REPLACED (not perturbed) by N(0, 1) draws.

    `chosen` is either a LongTensor of filter indices (the same S_c for every row) or a bool mask of shape (D,)
    or (N, D); per-sample sets of a mixed batch are `sets_to_mask(sets, C, D)[labels]`. With complement=True
    every other feature is replaced instead. One standard-normal draw per entry of `features` is taken from
    `generator` (on the generator's device, or the features' device when None), so equal seeds give equal
    results whatever is replaced.

    Args:
      features: (N, D) floating-point features.
      chosen: LongTensor (k,) of indices, or bool mask (D,) or (N, D).
      generator: torch.Generator or None (global RNG).
      complement: replace the features NOT chosen.

    Returns:
      (N, D) new tensor; unreplaced entries are copied unchanged.
    """
    if chosen.dtype == torch.bool:
        if chosen.shape not in (features.shape[1:], features.shape):
            raise ValueError(f"mask shape {tuple(chosen.shape)} must be (D,) or (N, D) = {tuple(features.shape)}")
        mask = chosen.to(features.device)
    else:
        mask = torch.zeros(features.shape[1], dtype=torch.bool, device=features.device)
        mask[chosen.to(features.device).long()] = True
    if complement:
        mask = ~mask
    noise = torch.randn(features.shape, generator=generator, dtype=features.dtype,
                        device=draw_device(generator, features.device))
    return torch.where(mask, noise.to(features.device), features)


def essentiality_counts(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Correct predictions per class, #{i in class c : argmax logits_i = c} (seed003 §7 noise_at_inf/noninf).

    Args:
      logits: (N, C) outputs of the ORIGINAL full Linear layer on corrupted features.
      labels: (N,) true classes.
      num_classes: C (default: logits.shape[1]).

    Returns:
      (C,) long counts (divide by torch.bincount(labels) for accuracies).
    """
    num_classes = logits.shape[1] if num_classes is None else num_classes
    labels = labels.to(logits.device).long()
    return torch.bincount(labels[logits.argmax(1) == labels], minlength=num_classes)


# ---- how class-specific are the sets and units (§9, §10) --------------------------------------------------
def membership_mutual_info(sets: Sequence[torch.Tensor], n_filters: int) -> torch.Tensor:
    """Plug-in mutual information (nats) between every pair of membership vectors (seed003 §9).

    z_c in {0, 1}^D with z_c[j] = (j in S_c); the D filters are the samples. From the 2x2 contingency table
    n_uv = #{j : z_a[j] = u, z_b[j] = v}:  MI(a, b) = sum_uv (n_uv / D) log(D n_uv / (n_u. n_.v)), 0 log 0 = 0
    (what sklearn.metrics.mutual_info_score computes). The diagonal is the binary entropy of |S_c| / D.

    Returns:
      (C, C) symmetric float64 matrix.
    """
    z = sets_to_mask(sets, len(sets), n_filters).double()                 # (C, D)
    one_zero = torch.stack([z, 1 - z])                                    # (2, C, D): indicator of z = 1, z = 0
    joint = torch.einsum("uad,vbd->uvab", one_zero, one_zero)              # (2, 2, C, C) counts n_uv
    marginal = one_zero.sum(-1)                                           # (2, C) counts n_u
    expected = marginal[:, None, :, None] * marginal[None, :, None, :]    # (2, 2, C, C) n_u. n_.v
    present = joint > 0
    ratio = torch.where(present, n_filters * joint / torch.where(present, expected, 1.0), 1.0)
    return (joint / n_filters * ratio.log()).sum(dim=(0, 1))


def filter_sets_mutual_info(sets: Sequence[torch.Tensor], n_filters: int, include_self: bool = True) -> float:
    """Mean pairwise MI of the membership vectors (seed003 §9); lower = fewer shared filters = more specific.

    The mean runs over ordered class pairs (a, b), including a = b when include_self (the original's choice:
    then mean = H(k/D)/C + (1 - 1/C) * mean off-diagonal MI for sets of equal size k). The shipped ResNet20 top-5
    sets give 0.03453775959861226.

    Args:
      sets: C LongTensors.  n_filters: D.  include_self: keep the C diagonal terms.

    Returns:
      float, nats.
    """
    mi = membership_mutual_info(sets, n_filters)
    if include_self:
        return float(mi.mean())
    off_diagonal = ~torch.eye(len(sets), dtype=torch.bool, device=mi.device)
    return float(mi[off_diagonal].mean())


def psi_selectivity(features: torch.Tensor, labels: torch.Tensor, k: float = 0.5, reduce: str = "median") -> float:
    """Psi selectivity of a layer at mass fraction k (seed003 §10).

    For instance i, n_i = number of top sorted L1-normalised activations whose cumulative sum is still < k;
    Psi_c = (D - reduce_{i in c} n_i) / D with reduce the median (numpy's: the mean of the two middle values
    for an even count) or the mean; the layer score is the mean of Psi_c over the classes present. High Psi =
    few filters carry mass k. An all-zero instance has n_i = D.

    Args:
      features: (N, D) non-negative activations.  labels: (N,).  k: fraction in (0, 1].
      reduce: "median" or "mean".

    Returns:
      float in [0, 1].
    """
    return _psi_from_counts(_mass_rank_counts(features, k), labels.to(features.device), features.shape[1], reduce)


def _psi_from_counts(counts: torch.Tensor, labels: torch.Tensor, n_filters: int, reduce: str) -> float:
    """Psi from the mass-rank counts n_i (N,) of one layer of D = n_filters units (`psi_selectivity`)."""
    if reduce not in ("median", "mean"):
        raise ValueError(f"reduce must be 'median' or 'mean', got {reduce!r}")
    counts = counts.double()
    per_class = []
    for c in labels.unique():
        n = counts[labels == c]
        per_class.append(n.quantile(0.5) if reduce == "median" else n.mean())
    return float(((n_filters - torch.stack(per_class)) / n_filters).mean())


def class_selectivity_index(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class selectivity index per unit (Morcos et al. 2018; Leavitt & Morcos 2021; seed003 §10).

    SI = (mu_max - mu_-max) / (mu_max + mu_-max + 1e-7), with mu the class-conditional mean activation of the
    unit, mu_max its largest value over classes and mu_-max the mean of mu over the other classes. 0 = the unit
    responds equally to every class, 1 = only to one (for non-negative activations). For conv maps pass the
    spatially pooled activation per instance. Differentiable (the selectivity regulariser, training.selectivity).

    Args:
      features: (N, D) activations.  labels: (N,) with at least two distinct classes.

    Returns:
      (D,) float64.
    """
    classes, position = labels.to(features.device).unique(return_inverse=True)
    if len(classes) < 2:
        raise ValueError("the class selectivity index needs at least two classes")
    sums = torch.zeros(len(classes), features.shape[1], dtype=torch.float64, device=features.device)
    sums = sums.index_add(0, position, features.to(torch.float64))
    return selectivity_from_means(sums / torch.bincount(position, minlength=len(classes))[:, None])


def batch_class_selectivity(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`class_selectivity_index` over the classes present in one batch, without a host sync (the selectivity
    regulariser's training step, seed003 §10): labels in [0, num_classes); the classes are counted on the device
    and an absent class drops out of mu_max and mu_-max. A batch holding fewer than two classes gives 0 for
    every unit (where `class_selectivity_index` raises). With every class present the result is the same tensor.

    Args:
      features: (N, D) activations.  labels: (N,) integer classes.  num_classes: C.

    Returns:
      (D,) float64, differentiable.
    """
    labels = labels.to(features.device)
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=features.device)
    sums = sums.index_add(0, labels, features.to(torch.float64))
    sizes = torch.zeros(num_classes, dtype=torch.float64, device=features.device)
    sizes = sizes.index_add(0, labels, torch.ones_like(labels, dtype=torch.float64))
    present = sizes > 0
    means = sums / sizes.clamp(min=1)[:, None]   # (C, D), 0 for an absent class
    mu_max = means.masked_fill(~present[:, None], -torch.inf).max(0).values
    n_present = present.sum()
    mu_rest = (means.sum(0) - mu_max) / (n_present - 1).clamp(min=1)
    index = (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7)
    return torch.where(n_present >= 2, index, torch.zeros_like(index))


def selectivity_from_means(means: torch.Tensor) -> torch.Tensor:
    """The class selectivity index (`class_selectivity_index`) from class-conditional means (C, D), C >= 2: (D,)."""
    mu_max = means.max(0).values
    mu_rest = (means.sum(0) - mu_max) / (means.shape[0] - 1)
    return (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7)


class LayerSelectivity:
    """Psi at mass fraction k and the class selectivity index of several layers at once, streamed over batches
    (seed003 §10 per-layer tables): each `update` keeps one integer per instance and layer (the mass-rank count
    n_i of `psi_selectivity`) and per-class sums of the (spatially averaged) activations, never the activations.

        acc = LayerSelectivity(num_classes=10)
        for pooled, labels in batches:        # pooled: one (B, D_l) tensor per layer
            acc.update(pooled, labels)
        acc.psi()                             # (L,) = psi_selectivity of each layer's whole (N, D_l) matrix
        acc.unit_selectivity()                # [(D_l,)] = class_selectivity_index of each layer

    `signed()` tells the layers that took a negative value (e.g. the network input): both measures are defined
    for non-negative (post-ReLU) activations only.
    """

    def __init__(self, num_classes: int, k: float = 0.5):
        self.num_classes, self.k = num_classes, k
        self.counts: list[list[torch.Tensor]] = []
        self.sums: list[torch.Tensor] = []
        self.minimum: list[torch.Tensor] = []   # (), on the device
        self.labels: list[torch.Tensor] = []

    def update(self, features: Sequence[torch.Tensor], labels: torch.Tensor) -> None:
        """Add one batch: `features` one (B, D_l) tensor per layer, `labels` (B,)."""
        if not self.sums:
            self.counts = [[] for _ in features]
            self.sums = [torch.zeros(self.num_classes, f.shape[1], dtype=torch.float64, device=f.device)
                         for f in features]
            self.minimum = [torch.tensor(torch.inf, device=f.device) for f in features]
        labels = labels.long()
        for layer, f in enumerate(features):   # stays on the device: no host sync per batch
            self.counts[layer].append(_mass_rank_counts(f, self.k))
            self.sums[layer].index_add_(0, labels.to(f.device), f.to(torch.float64))
            self.minimum[layer] = torch.minimum(self.minimum[layer], f.min().to(torch.float64))
        self.labels.append(labels)

    def psi(self, reduce: str = "median") -> torch.Tensor:
        """(L,) float64: Psi of each layer (`psi_selectivity`)."""
        labels = torch.cat([batch.cpu() for batch in self.labels])
        return torch.tensor([_psi_from_counts(torch.cat(counts).cpu(), labels, sums.shape[1], reduce)
                             for counts, sums in zip(self.counts, self.sums)], dtype=torch.float64)

    def unit_selectivity(self) -> list[torch.Tensor]:
        """One (D_l,) float64 tensor per layer: the class selectivity index of its units over the classes seen."""
        sizes = torch.bincount(torch.cat([batch.cpu() for batch in self.labels]), minlength=self.num_classes)
        seen = sizes > 0
        if int(seen.sum()) < 2:
            raise ValueError("the class selectivity index needs at least two classes")
        return [selectivity_from_means(sums[seen] / sizes[seen, None].to(sums)).cpu() for sums in self.sums]

    def widths(self) -> list[int]:
        return [int(sums.shape[1]) for sums in self.sums]

    def signed(self) -> list[bool]:
        return [bool(m < 0) for m in self.minimum]   # one host sync per layer and set
