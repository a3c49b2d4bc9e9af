"""measures.decomposition (seed003) against the authors' numbers, scikit-learn, numpy formulas and hand examples."""
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from measures.decomposition import (
    DecomposedHead,
    LayerSelectivity,
    batch_class_selectivity,
    class_filters,
    class_selectivity_index,
    decomposed_logits,
    decomposed_logits_masked,
    essentiality_counts,
    filter_histograms,
    filter_sets_mutual_info,
    l1_normalize,
    membership_mutual_info,
    overlap_summary,
    psi_selectivity,
    replace_features,
    sets_to_mask,
    topk_weight_overlap,
)

# seed003 §4: the top-5 ResNet20 sets shipped with the authors' code (class: filters).
SHIPPED_TOP5 = [[7, 23, 54, 50, 22], [9, 47, 40, 55, 6], [1, 23, 13, 61, 53], [17, 57, 49, 53, 59],
                [46, 48, 57, 61, 25], [63, 37, 13, 42, 49], [56, 52, 9, 48, 61], [53, 16, 25, 0, 56],
                [9, 2, 29, 21, 22], [21, 8, 55, 54, 40]]
SETS = [torch.tensor(s) for s in SHIPPED_TOP5]
AUTHORS_MI = 0.03453775959861226  # seed003 §2, §9: mutual_info.py, ours, k = 5


def membership(chosen, n=64):
    z = np.zeros(n, dtype=int)
    z[chosen] = 1
    return z


def sorted_sets(sets):
    return [sorted(s.tolist()) for s in sets]


# ---- mutual information (§9) --------------------------------------------------------------------------------
def test_mutual_information_of_the_shipped_sets_is_the_authors_value():
    assert filter_sets_mutual_info(SETS, 64) == pytest.approx(AUTHORS_MI, rel=0, abs=1e-12)


def test_pairwise_mutual_information_equals_sklearn():
    reference = np.array([[mutual_info_score(membership(a), membership(b)) for b in SHIPPED_TOP5]
                          for a in SHIPPED_TOP5])
    np.testing.assert_allclose(membership_mutual_info(SETS, 64).numpy(), reference, rtol=0, atol=1e-15)
    uneven = [[0, 1, 2], [2, 3], [5, 6, 7, 8, 9, 10, 11], [0, 11]]
    reference = np.mean([mutual_info_score(membership(a, 12), membership(b, 12)) for a in uneven for b in uneven])
    assert filter_sets_mutual_info([torch.tensor(s) for s in uneven], 12) == pytest.approx(reference, abs=1e-15)


def test_diagonal_is_the_binary_entropy_and_dominates_the_mean():
    """seed003 §9: diagonal = H(5/64) = 0.274 nats; mean = 0.1 H + 0.9 (mean off-diagonal MI)."""
    entropy = -(5 / 64 * np.log(5 / 64) + 59 / 64 * np.log(59 / 64))
    assert entropy == pytest.approx(0.274, abs=5e-4)
    mi = membership_mutual_info(SETS, 64)
    np.testing.assert_allclose(mi.diagonal().numpy(), entropy, rtol=0, atol=1e-15)
    off = filter_sets_mutual_info(SETS, 64, include_self=False)
    assert off == pytest.approx(0.00791, abs=5e-6)  # seed003 §9 table, "ours off-diag", k = 5
    assert filter_sets_mutual_info(SETS, 64) == pytest.approx(0.1 * entropy + 0.9 * off, abs=1e-15)


def test_mutual_information_ignores_how_filters_are_numbered():
    permutation = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    relabelled = [permutation[s] for s in SETS]
    assert filter_sets_mutual_info(relabelled, 64) == pytest.approx(AUTHORS_MI, abs=1e-15)
    torch.testing.assert_close(membership_mutual_info(SETS[::-1], 64), membership_mutual_info(SETS, 64).flip(0, 1))


# ---- set statistics (§4) ------------------------------------------------------------------------------------
def test_shipped_sets_union_and_pairwise_overlap():
    """seed003 §4: union 32 distinct filters, mean pairwise overlap 0.47."""
    summary = overlap_summary(SETS, 64)
    assert summary["union"] == 32 == len(set(itertools.chain(*SHIPPED_TOP5)))
    pairs = [len(set(a) & set(b)) for a, b in itertools.combinations(SHIPPED_TOP5, 2)]
    assert summary["mean_pairwise_overlap"] == pytest.approx(np.mean(pairs), abs=1e-15)
    assert round(summary["mean_pairwise_overlap"], 2) == 0.47
    assert summary["sizes"] == [5] * 10


def test_sets_to_mask_and_its_checks():
    mask = sets_to_mask(SETS, 10, 64)
    assert mask.shape == (10, 64) and mask.sum() == 50
    assert all(set(mask[c].nonzero().flatten().tolist()) == set(SHIPPED_TOP5[c]) for c in range(10))
    with pytest.raises(ValueError, match="one filter set per class"):
        sets_to_mask(SETS, 9, 64)
    with pytest.raises(ValueError, match="outside"):
        sets_to_mask(SETS, 10, 60)


def test_topk_weight_overlap_on_a_hand_example():
    weight = torch.zeros(2, 10)
    weight[0, [1, 2, 3]] = torch.tensor([3.0, 2.0, 1.0])
    weight[1, [4, 5, 6]] = torch.tensor([1.0, 2.0, 3.0])
    sets = [torch.tensor([1, 2, 9]), torch.tensor([6, 8, 9])]
    assert topk_weight_overlap(sets, weight, 3).tolist() == [2, 1]
    assert topk_weight_overlap(sets, weight, 1).tolist() == [1, 1]


# ---- finding the sets (§4) ----------------------------------------------------------------------------------
def planted(num_classes=4, per_class=40, d=32, k=3, seed=0):
    """Class c fires strongly on filters k c .. k c + k - 1 (its planted set), weakly and randomly elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = torch.rand(len(labels), d, generator=generator)
    for c in range(num_classes):
        features[labels == c, k * c:k * c + k] += 5 + torch.rand(per_class, k, generator=generator)
    return features, labels


def test_l1_normalize():
    features = torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    expected = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.5]], dtype=torch.float64)
    assert torch.equal(l1_normalize(features), expected)


def test_integer_k_recovers_planted_filters_and_histograms_count_votes():
    features, labels = planted()
    sets, counts = class_filters(features, labels, 3, return_histograms=True)
    assert sorted_sets(sets) == [[3 * c, 3 * c + 1, 3 * c + 2] for c in range(4)]
    assert counts.tolist() == filter_histograms(features, labels, 3, 4).tolist()
    assert counts.sum(1).tolist() == [3 * 40] * 4
    # a direct numpy count of the per-instance top-3 (no ties in continuous data)
    top = np.argsort(-features.numpy(), axis=1)[:, :3]
    reference = np.stack([np.bincount(top[labels.numpy() == c].ravel(), minlength=32) for c in range(4)])
    np.testing.assert_array_equal(counts.numpy(), reference)


def test_fraction_k_keeps_only_planted_filters():
    features, labels = planted()
    for c, chosen in enumerate(class_filters(features, labels, 0.5)):
        assert 1 <= len(chosen) and set(chosen.tolist()) <= {3 * c, 3 * c + 1, 3 * c + 2}


def test_integer_sets_need_not_be_nested():
    """Filter 0 is first in 3 of 7 instances but never second: it wins at k = 1 and is dropped at k = 2."""
    a_b, c_b, d_c = [4.0, 3.0, 1.0, 0.0], [0.0, 3.0, 4.0, 1.0], [1.0, 0.0, 3.0, 4.0]
    features = torch.tensor([a_b, a_b, a_b, c_b, c_b, d_c, d_c])
    labels = torch.zeros(7, dtype=torch.long)
    assert filter_histograms(features, labels, 1, 1).tolist() == [[3, 0, 2, 2]]
    assert filter_histograms(features, labels, 2, 1).tolist() == [[3, 5, 4, 2]]
    assert class_filters(features, labels, 1)[0].tolist() == [0]
    assert class_filters(features, labels, 2)[0].tolist() == [1, 2]


def test_ties_go_to_the_lower_filter_index():
    features = torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])  # instance ties, then class-level ties
    labels = torch.zeros(2, dtype=torch.long)
    assert filter_histograms(features, labels, 1, 1).tolist() == [[1, 1, 0, 0]]
    assert class_filters(features, labels, 1)[0].tolist() == [0]
    assert class_filters(features, labels, 2)[0].tolist() == [1, 0]


def test_fraction_rule_on_a_hand_example():
    """seed003 §4, k = 0.5, D = 6, every row sums to 20.

    Class 0: each instance's sorted masses are (.25, .2, ...) -> 2 ranks below 0.5 -> k_0 = 2. Per-instance top-2
    (ties to the lower index): {0,1}, {1,2}, {2,0}, {4,1} -> counts (2,3,2,0,1,0), frequencies
    (.25,.375,.25,0,.125,0). Ascending order f5 f3 f4 f2 f0 f1 (f2 before f0: the lower index is kept longer),
    cumulative 0, 0, .125, .375, .625, 1 -> keep f0, f1 -> [1, 0].
    Class 1: (.45, .3, ...) -> 1 rank, (.225, .2, .175, ...) -> 2 ranks; k_1 = floor(1.5) = 1; both vote f3 -> [3].
    """
    features = torch.tensor([[5, 4, 3, 3, 3, 2], [3, 5, 4, 4, 2, 2], [4, 4, 5, 3, 2, 2], [3, 4, 2, 2, 5, 4],
                             [6, 5, 0, 9, 0, 0], [3.5, 3, 3, 4.5, 2, 4]], dtype=torch.float32)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    sets, counts = class_filters(features, labels, 0.5, return_histograms=True)
    assert counts.tolist() == [[2, 3, 2, 0, 1, 0], [0, 0, 0, 2, 0, 0]]
    assert [s.tolist() for s in sets] == [[1, 0], [3]]


def test_fraction_rule_keeps_at_least_one_vote_per_instance():
    """One filter holds more than k of every instance's mass: 0 ranks below k, k_c is raised to 1."""
    features = torch.tensor([[8.0, 1.0, 1.0], [1.0, 9.0, 0.0], [7.0, 2.0, 1.0]])
    assert class_filters(features, torch.zeros(3, dtype=torch.long), 0.5)[0].tolist() == [0]


def test_class_filters_rejects_bad_k_and_empty_classes():
    features, labels = planted()
    for k in (0, 1.5, 33, -0.2):
        with pytest.raises(ValueError, match="k must be"):
            class_filters(features, labels, k)
    with pytest.raises(ValueError, match="no instances"):
        class_filters(features, labels, 3, num_classes=5)


# ---- decomposed final layer (§5, §6) ------------------------------------------------------------------------
def layer(seed=1, n=20, d=64, c=10):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=generator), torch.randn(c, d, generator=generator),
            torch.randn(c, generator=generator))


UNEVEN = SETS[:8] + [torch.tensor([1, 2]), torch.tensor([63])]


def test_decomposed_logits_against_a_direct_sum():
    features, weight, bias = layer()
    f, w, b = features.double().numpy(), weight.double().numpy(), bias.double().numpy()
    reference = np.stack([[sum(w[c, j] * f[n, j] for j in s.tolist()) + b[c] for c, s in enumerate(UNEVEN)]
                          for n in range(len(f))])
    np.testing.assert_allclose(decomposed_logits(features, weight, bias, UNEVEN).numpy(), reference, atol=1e-5)


def test_gathered_and_masked_forms_agree_and_full_sets_give_the_linear_layer():
    features, weight, bias = layer()
    for sets in (SETS, UNEVEN):
        gathered = decomposed_logits(features, weight, bias, sets)
        assert (gathered - decomposed_logits_masked(features, weight, bias, sets)).abs().max() < 1e-6
    everything = [torch.arange(64)] * 10
    full = torch.nn.functional.linear(features, weight, bias)
    assert (decomposed_logits(features, weight, bias, everything) - full).abs().max() < 1e-5
    assert (decomposed_logits_masked(features, weight, None, everything) - (full - bias)).abs().max() < 1e-5
    with pytest.raises(ValueError, match="repeats"):
        decomposed_logits(features, weight, bias, SETS[:9] + [torch.tensor([1, 1])])


def test_decomposed_head_starts_from_the_original_weights_and_trains_only_the_sets():
    features, weight, bias = layer()
    head = DecomposedHead(weight, bias, UNEVEN)
    assert torch.equal(head.final_weights[0], weight[0, SETS[0]])
    assert torch.equal(head.final_weights[9], torch.tensor([weight[9, 63], 0, 0, 0, 0]))
    assert (head(features) - decomposed_logits(features, weight, bias, UNEVEN)).abs().max() < 1e-6
    features.requires_grad_(True)
    head(features).sum().backward()
    mask = sets_to_mask(UNEVEN, 10, 64)
    torch.testing.assert_close(features.grad, (weight * mask).sum(0).expand(20, 64))  # d logit / d f = (W * M)
    assert head.final_weights.grad[9, 1:].abs().sum() == 0  # padding gets no gradient
    assert head.final_bias.grad.tolist() == [20.0] * 10


# ---- essentiality (§7) --------------------------------------------------------------------------------------
def test_replace_features_is_seeded_and_local():
    features = torch.rand(6, 64)
    chosen = torch.tensor([3, 7])
    a = replace_features(features, chosen, torch.Generator().manual_seed(0))
    assert torch.equal(a, replace_features(features, chosen, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, replace_features(features, chosen, torch.Generator().manual_seed(1)))
    others = torch.ones(64, dtype=torch.bool)
    others[chosen] = False
    assert torch.equal(a[:, others], features[:, others])
    assert (a[:, chosen] != features[:, chosen]).all()
    c = replace_features(features, chosen, torch.Generator().manual_seed(0), complement=True)
    assert torch.equal(c[:, chosen], features[:, chosen]) and (c[:, others] != features[:, others]).all()


def test_replace_features_with_per_sample_sets():
    features, labels = torch.rand(30, 64), torch.arange(30) % 10
    mask = sets_to_mask(SETS, 10, 64)[labels]
    noisy = replace_features(features, mask, torch.Generator().manual_seed(0))
    assert torch.equal(noisy[~mask], features[~mask]) and (noisy[mask] != features[mask]).all()
    with pytest.raises(ValueError, match="mask shape"):
        replace_features(features, mask[:5])


def test_replacement_draws_are_standard_normal():
    noise = replace_features(torch.zeros(4000, 8), torch.arange(8), torch.Generator().manual_seed(0)).double()
    assert abs(noise.mean()) < 0.025 and abs(noise.std() - 1) < 0.02   # 32,000 draws: s.e. 0.0056 and 0.004


def test_essentiality_counts():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2, 1])
    assert essentiality_counts(logits, labels).tolist() == [1, 2, 0]


# ---- selectivity (§10) --------------------------------------------------------------------------------------
def numpy_mass_ranks(features, k):
    p = np.sort(features, axis=1)[:, ::-1]
    return (np.cumsum(p / p.sum(1, keepdims=True), axis=1) < k).sum(1)


def test_psi_on_a_hand_example():
    """D = 4. (.7, .1, .1, .1): 0 ranks below 0.5 -> Psi = 1; uniform: 1 rank -> 0.75; (.4, .3, .2, .1): 1 rank."""
    peaked, flat, graded = [7.0, 1.0, 1.0, 1.0], [1.0] * 4, [4.0, 3.0, 2.0, 1.0]
    one_class = torch.zeros(2, dtype=torch.long)
    assert psi_selectivity(torch.tensor([peaked, peaked]), one_class, 0.5) == 1.0
    assert psi_selectivity(torch.tensor([flat, flat]), one_class, 0.5) == 0.75
    # median of the counts (0, 1) is numpy's 0.5, not torch.median's lower middle value 0
    assert psi_selectivity(torch.tensor([peaked, flat]), one_class, 0.5) == (4 - 0.5) / 4
    # two classes: mean of (1 + 0.75) / 2; at k = 0.8 graded has 2 ranks (.4, .7) -> Psi = 0.5
    assert psi_selectivity(torch.tensor([peaked, flat]), torch.tensor([0, 1]), 0.5) == 0.875
    assert psi_selectivity(torch.tensor([graded, graded]), one_class, 0.8) == 0.5


def test_psi_against_numpy():
    features, labels = planted(d=16)
    features = features.pow(3)  # spread the mass so the counts differ between instances
    ranks = numpy_mass_ranks(features.double().numpy(), 0.6)
    y = labels.numpy()
    for reduce, typical in (("median", np.median), ("mean", np.mean)):
        expected = np.mean([(16 - typical(ranks[y == c])) / 16 for c in range(4)])
        assert psi_selectivity(features, labels, 0.6, reduce) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="reduce"):
        psi_selectivity(features, labels, 0.6, "max")


def test_class_selectivity_index_against_numpy():
    features, labels = planted()
    means = np.stack([features[labels == c].numpy().astype(np.float64).mean(0) for c in range(4)])
    mu_max = means.max(0)
    mu_rest = (means.sum(0) - mu_max) / 3
    reference = (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7)
    np.testing.assert_allclose(class_selectivity_index(features, labels).numpy(), reference, rtol=1e-12)


def test_class_selectivity_index_extremes_and_label_values():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    only_class_1 = torch.tensor([[0.0], [0.0], [2.0], [4.0], [0.0], [0.0]])
    uniform = torch.ones(6, 1)
    assert class_selectivity_index(only_class_1, labels).item() == pytest.approx(1.0, abs=1e-7)
    assert class_selectivity_index(uniform, labels).item() == 0.0
    # class ids need not be 0..C-1
    torch.testing.assert_close(class_selectivity_index(only_class_1, labels * 7 + 3),
                               class_selectivity_index(only_class_1, labels))


def test_streamed_layer_selectivity_equals_the_numpy_formulas_on_the_whole_set():
    """LayerSelectivity over batches = numpy's Psi and SI on each layer's whole matrix; a layer with a negative
    value is flagged signed (§10 defines both measures on non-negative activations)."""
    features, labels = planted(d=16)
    wide, narrow = features.pow(3), features[:, :5] - 0.5
    streamed = LayerSelectivity(num_classes=6, k=0.6)   # classes 4 and 5 never seen
    for rows in torch.arange(len(labels)).split(7):
        streamed.update([wide[rows], narrow[rows]], labels[rows])
    y = labels.numpy()
    ranks = numpy_mass_ranks(wide.double().numpy(), 0.6)
    expected_psi = np.mean([(16 - np.median(ranks[y == c])) / 16 for c in range(4)])
    assert streamed.psi()[0].item() == pytest.approx(expected_psi, abs=1e-12)
    means = np.stack([wide.double().numpy()[y == c].mean(0) for c in range(4)])
    mu_max, mu_rest = means.max(0), (means.sum(0) - means.max(0)) / 3
    np.testing.assert_allclose(streamed.unit_selectivity()[0].numpy(), (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7),
                               rtol=1e-12)
    assert streamed.widths() == [16, 5] and streamed.signed() == [False, True]


def test_batch_selectivity_equals_the_index_over_the_classes_present_and_zero_below_two():
    """batch_class_selectivity (the regulariser's sync-free form): the same tensor as class_selectivity_index with
    every class present, the index over the present classes when some are absent, 0 for a one-class batch (where
    class_selectivity_index keeps raising)."""
    features, labels = planted(d=16)   # classes 0..3
    assert torch.equal(batch_class_selectivity(features, labels, 4), class_selectivity_index(features, labels))
    torch.testing.assert_close(batch_class_selectivity(features, labels, 7), class_selectivity_index(features, labels),
                               rtol=1e-15, atol=0)
    some = labels < 2
    torch.testing.assert_close(batch_class_selectivity(features[some], labels[some], 4),
                               class_selectivity_index(features[some], labels[some]), rtol=1e-15, atol=0)
    one = labels == 2
    assert torch.equal(batch_class_selectivity(features[one], labels[one], 4), torch.zeros(16, dtype=torch.float64))
    with pytest.raises(ValueError, match="two classes"):
        class_selectivity_index(features[one], labels[one])
    streamed = LayerSelectivity(num_classes=4)
    streamed.update([features[one]], labels[one])
    with pytest.raises(ValueError, match="two classes"):
        streamed.unit_selectivity()
    weights = features.clone().requires_grad_()
    batch_class_selectivity(weights, labels, 4).sum().backward()
    assert torch.isfinite(weights.grad).all() and weights.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are a CUDA matter (issue 27)")
def test_streamed_layer_selectivity_and_batch_selectivity_do_not_sync_per_batch():
    features, labels = planted(d=16)
    features, labels = features.cuda(), labels.cuda()
    streamed = LayerSelectivity(num_classes=4, k=0.6)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for rows in torch.arange(len(labels), device="cuda").split(7):
            streamed.update([features[rows]], labels[rows])
            batch_class_selectivity(features[rows], labels[rows], 4)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert streamed.signed() == [False]
