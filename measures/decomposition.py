"""Class-specific filters (seed003, Badola et al., "Decomposing the Deep").

Features are the non-negative global-average-pooled activations f (N, D) at the classifier input. For each
class c the k most influential filters S_c are found from L1-normalised frequency histograms (§4); the final
layer is then decomposed so that logit c only reads S_c (§5); essentiality replaces chosen features by noise
(§7); mutual information and selectivity measure how class-specific the sets are (§9, §10).

    sets = class_filters(features, labels, 5)                       # list of LongTensors, one per class
    logits = decomposed_logits(features, fc.weight, fc.bias, sets)  # equals the masked-Linear form
"""
from __future__ import annotations

import math

import torch
from torch import nn


def l1_normalize(features: torch.Tensor) -> torch.Tensor:
    """p_i = a_i / ||a_i||_1 per row (seed003 §4); all-zero rows stay zero."""
    return features / features.abs().sum(dim=1, keepdim=True).clamp_min(1e-30)


def filter_histograms(features: torch.Tensor, labels: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """h_c[j] = #{i in class c : j among the k largest activations of instance i} (seed003 §4), (C, D)."""
    top = features.topk(k, dim=1).indices  # (N, k)
    counts = torch.zeros(num_classes, features.shape[1], dtype=torch.long, device=features.device)
    rows = labels.to(features.device)[:, None].expand_as(top)
    counts.index_put_((rows.reshape(-1), top.reshape(-1)), torch.ones(top.numel(), dtype=torch.long,
                                                                     device=features.device), accumulate=True)
    return counts


def _stable_order(values: torch.Tensor, descending: bool) -> torch.Tensor:
    """Indices sorting `values`, ties broken by the lower filter index."""
    return torch.sort(values, dim=-1, descending=descending, stable=True).indices


def class_filters(features: torch.Tensor, labels: torch.Tensor, k: float, num_classes: int | None = None
                  ) -> list[torch.Tensor]:
    """The influential filter set S_c of every class (seed003 §4).

    Integer k: the k filters most often among the per-instance top-k (ties: lower index first).
    Fraction k in (0, 1) (the journal code): k_c = floor(mean_i #{ranks whose cumulative L1 mass is < k});
    histogram of the per-instance top-k_c, normalised to sum 1; sort filters by ascending frequency and keep
    those whose ascending cumulative frequency exceeds k (drop the rarest filters holding mass k).

    Args:
      features: (N, D) non-negative activations.  labels: (N,) class indices.  k: int >= 1 or float in (0, 1).
    Returns:
      list of num_classes LongTensors of filter indices (sorted by decreasing influence for integer k).
    """
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if k >= 1:
        counts = filter_histograms(features, labels, int(k), num_classes)
        return [_stable_order(counts[c], descending=True)[:int(k)] for c in range(num_classes)]
    mass = torch.cumsum(l1_normalize(features).sort(dim=1, descending=True).values, dim=1)  # (N, D)
    below = (mass < k).sum(dim=1).float()
    sets = []
    for c in range(num_classes):
        member = labels == c
        k_c = max(1, int(math.floor(below[member].mean().item())))
        freq = filter_histograms(features[member], torch.zeros(int(member.sum()), dtype=torch.long), k_c, 1)[0]
        freq = freq.double() / freq.sum().clamp_min(1)
        order = _stable_order(freq, descending=False)
        keep = torch.cumsum(freq[order], dim=0) > k
        sets.append(order[keep].flip(0))
    return sets


def sets_to_mask(sets: list[torch.Tensor], n_filters: int) -> torch.Tensor:
    """(C, D) boolean mask M with M[c, j] = j in S_c."""
    mask = torch.zeros(len(sets), n_filters, dtype=torch.bool)
    for c, chosen in enumerate(sets):
        mask[c, chosen.long()] = True
    return mask


def decomposed_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      sets: list[torch.Tensor]) -> torch.Tensor:
    """logit_c = sum_{j in S_c} W[c, j] f_j + b_c, gathered form (seed003 §5); sets may differ in size.

    Args:
      features: (N, D).  weight: (C, D).  bias: (C,) or None.  sets: C LongTensors.
    Returns:
      (N, C) logits.
    """
    size = max(len(s) for s in sets)
    index = torch.zeros(len(sets), size, dtype=torch.long, device=features.device)
    valid = torch.zeros(len(sets), size, dtype=features.dtype, device=features.device)
    for c, chosen in enumerate(sets):
        index[c, :len(chosen)] = chosen.to(features.device)
        valid[c, :len(chosen)] = 1
    gathered_w = weight.to(features.dtype).gather(1, index) * valid       # (C, k)
    logits = (features[:, index] * gathered_w).sum(-1)                     # (N, C, k) -> (N, C)
    return logits if bias is None else logits + bias.to(features.dtype)


def decomposed_logits_masked(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             sets: list[torch.Tensor]) -> torch.Tensor:
    """The same logits as a masked Linear layer: f (W * M)^T + b (seed003 §5)."""
    mask = sets_to_mask(sets, weight.shape[1]).to(weight.device)
    return nn.functional.linear(features, weight.to(features.dtype) * mask,
                                None if bias is None else bias.to(features.dtype))


class DecomposedHead(nn.Module):
    """The decomposed final layer with trainable per-class weights over S_c (seed003 §5-§6).

    final_weights (C, k_max) start from W[c, S_c] (zero-padded for smaller sets, kept at zero by a mask),
    final_bias from b; forward equals `decomposed_logits` with the current weights.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, sets: list[torch.Tensor]):
        super().__init__()
        size = max(len(s) for s in sets)
        index = torch.zeros(len(sets), size, dtype=torch.long)
        valid = torch.zeros(len(sets), size)
        for c, chosen in enumerate(sets):
            index[c, :len(chosen)] = chosen.cpu()
            valid[c, :len(chosen)] = 1
        self.register_buffer("index", index.to(weight.device))
        self.register_buffer("valid", valid.to(weight.device, weight.dtype))
        self.final_weights = nn.Parameter(weight.detach().gather(1, self.index) * self.valid)
        self.final_bias = nn.Parameter(bias.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features[:, self.index] * (self.final_weights * self.valid)).sum(-1) + self.final_bias


def replace_features(features: torch.Tensor, chosen: torch.Tensor, generator: torch.Generator | None = None,
                     complement: bool = False) -> torch.Tensor:
    """The essentiality test of seed003 §7: the chosen features (or all the others) are REPLACED by N(0, 1).

    Args:
      features: (N, D).  chosen: LongTensor of filter indices.  complement: replace the other features.
    Returns:
      (N, D) copy with fresh standard-normal draws (from `generator`) at the replaced positions.
    """
    mask = torch.zeros(features.shape[1], dtype=torch.bool, device=features.device)
    mask[chosen.to(features.device)] = True
    if complement:
        mask = ~mask
    noise = torch.randn(features.shape, generator=generator, dtype=features.dtype,
                        device=generator.device if generator is not None else features.device).to(features.device)
    return torch.where(mask, noise, features)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    p = p[p > 0]
    return -(p * p.log()).sum()


def _binary_mutual_info(a: torch.Tensor, b: torch.Tensor) -> float:
    """Plug-in mutual information (nats) between two binary vectors, from their 2x2 contingency table."""
    joint = torch.stack([((a == i) & (b == j)).sum() for i in (0, 1) for j in (0, 1)]).double() / len(a)
    pa = torch.stack([joint[0] + joint[1], joint[2] + joint[3]])
    pb = torch.stack([joint[0] + joint[2], joint[1] + joint[3]])
    return float(_entropy(pa) + _entropy(pb) - _entropy(joint))


def filter_sets_mutual_info(sets: list[torch.Tensor], n_filters: int, include_self: bool = True) -> float:
    """Mean plug-in MI (nats) between the membership vectors z_a, z_b over the n_filters filters (seed003 §9).

    Mean over ordered class pairs (a, b), including a = b when include_self (the original's choice, where
    the diagonal terms equal the binary entropy of k/n_filters); lower = more class-specific sets.
    """
    mask = sets_to_mask(sets, n_filters)
    pairs = [(a, b) for a in range(len(sets)) for b in range(len(sets)) if include_self or a != b]
    return sum(_binary_mutual_info(mask[a], mask[b]) for a, b in pairs) / len(pairs)


def topk_weight_overlap(sets: list[torch.Tensor], weight: torch.Tensor, k: int) -> torch.Tensor:
    """|S_c ∩ top-k entries of W[c]| per class (the seed003 §4 sanity check), (C,)."""
    top = weight.topk(k, dim=1).indices.cpu()
    return torch.tensor([len(set(s.tolist()) & set(t.tolist())) for s, t in zip(sets, top)])


def psi_selectivity(features: torch.Tensor, labels: torch.Tensor, k: float = 0.5, reduce: str = "median") -> float:
    """Psi selectivity of a layer (seed003 §10): mean over classes of (D - reduce_i n_i) / D, where n_i is the
    number of top sorted L1-normalised activations of instance i whose cumulative sum is still < k."""
    mass = torch.cumsum(l1_normalize(features).sort(dim=1, descending=True).values, dim=1)
    counts = (mass < k).sum(dim=1).double()
    d = features.shape[1]
    per_class = []
    for c in labels.unique():
        n = counts[labels == c]
        typical = n.median() if reduce == "median" else n.mean()
        per_class.append((d - typical) / d)
    return float(torch.stack(per_class).mean())


def class_selectivity_index(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Morcos et al. / Leavitt & Morcos selectivity per unit: (mu_max - mu_-max) / (mu_max + mu_-max + 1e-7),
    with mu the class-conditional mean activation and mu_-max the mean over the other classes (seed003 §10)."""
    classes = labels.unique()
    means = torch.stack([features[labels == c].double().mean(0) for c in classes])  # (C, D)
    best = means.argmax(0)
    mu_max = means.gather(0, best[None])[0]
    mu_rest = (means.sum(0) - mu_max) / (len(classes) - 1)
    return (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7)
