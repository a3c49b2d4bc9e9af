"""measures.decomposition against the published numbers of seed003 and direct references."""
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from measures.decomposition import (
    DecomposedHead,
    class_filters,
    class_selectivity_index,
    decomposed_logits,
    decomposed_logits_masked,
    filter_sets_mutual_info,
    psi_selectivity,
    replace_features,
    topk_weight_overlap,
)

# seed003 §4: the top-5 ResNet-20 sets shipped with the paper's code.
SHIPPED_TOP5 = [[7, 23, 54, 50, 22], [9, 47, 40, 55, 6], [1, 23, 13, 61, 53], [17, 57, 49, 53, 59],
                [46, 48, 57, 61, 25], [63, 37, 13, 42, 49], [56, 52, 9, 48, 61], [53, 16, 25, 0, 56],
                [9, 2, 29, 21, 22], [21, 8, 55, 54, 40]]
SETS = [torch.tensor(s) for s in SHIPPED_TOP5]


def membership(chosen, n=64):
    z = np.zeros(n, dtype=int)
    z[chosen] = 1
    return z


def test_mutual_information_of_the_shipped_sets_matches_the_paper_and_sklearn():
    """seed003 §9: 0.03453775959861226 with self-pairs, the authors' printed value."""
    assert filter_sets_mutual_info(SETS, 64) == pytest.approx(0.03453775959861226, abs=1e-12)
    reference = np.mean([mutual_info_score(membership(a), membership(b)) for a in SHIPPED_TOP5 for b in SHIPPED_TOP5])
    assert filter_sets_mutual_info(SETS, 64) == pytest.approx(reference, abs=1e-12)
    off = filter_sets_mutual_info(SETS, 64, include_self=False)
    entropy = -(5 / 64 * np.log(5 / 64) + 59 / 64 * np.log(59 / 64))
    assert entropy == pytest.approx(0.274, abs=1e-3)
    assert filter_sets_mutual_info(SETS, 64) == pytest.approx(0.1 * entropy + 0.9 * off, abs=1e-12)


def test_shipped_sets_union_and_overlap():
    """seed003 §4: 32 distinct filters, mean pairwise overlap 0.47."""
    assert len(set(itertools.chain(*SHIPPED_TOP5))) == 32
    overlaps = [len(set(a) & set(b)) for a, b in itertools.combinations(SHIPPED_TOP5, 2)]
    assert np.mean(overlaps) == pytest.approx(0.47, abs=0.005)


def planted(num_classes=4, per_class=50, d=32, k=3, seed=0):
    """Features where class c fires strongly on filters 3c..3c+2 (its planted set)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = torch.rand(len(labels), d, generator=generator)
    for c in range(num_classes):
        features[labels == c, k * c:k * c + k] += 5 + torch.rand(per_class, k, generator=generator)
    return features, labels


def test_histogram_method_recovers_planted_filters():
    features, labels = planted()
    sets = class_filters(features, labels, 3)
    assert [sorted(s.tolist()) for s in sets] == [[3 * c, 3 * c + 1, 3 * c + 2] for c in range(4)]
    fractional = class_filters(features, labels, 0.5)  # drop the rarest filters holding half the frequency mass
    for c, chosen in enumerate(fractional):
        assert set(chosen.tolist()) <= {3 * c, 3 * c + 1, 3 * c + 2} and len(chosen) >= 1


def test_fraction_rule_on_a_hand_example():
    # one class; L1 masses: instance 0 = (0.6, 0.3, 0.1, 0): ranks with cumulative sum < 0.7 -> 1; instance 1
    # (0.5, 0.4, 0.1, 0) -> 1; k_c = 1. Top-1 histogram: filter 0 twice -> freq (1, 0, 0, 0) -> keep {0}.
    features = torch.tensor([[6.0, 3.0, 1.0, 0.0], [5.0, 4.0, 1.0, 0.0]])
    assert class_filters(features, torch.zeros(2, dtype=torch.long), 0.7)[0].tolist() == [0]


def test_gathered_and_masked_forms_agree_and_full_sets_give_the_linear_layer():
    generator = torch.Generator().manual_seed(1)
    features = torch.rand(20, 64, generator=generator)
    weight, bias = torch.randn(10, 64, generator=generator), torch.randn(10, generator=generator)
    uneven = SETS[:9] + [torch.tensor([1, 2])]
    assert torch.allclose(decomposed_logits(features, weight, bias, uneven),
                          decomposed_logits_masked(features, weight, bias, uneven), atol=1e-6)
    everything = [torch.arange(64)] * 10
    assert torch.allclose(decomposed_logits(features, weight, bias, everything), features @ weight.T + bias, atol=1e-5)
    head = DecomposedHead(weight, bias, uneven)
    assert torch.allclose(head(features), decomposed_logits(features, weight, bias, uneven), atol=1e-6)


def test_replace_features_is_seeded_and_local():
    features = torch.rand(6, 64)
    chosen = torch.tensor([3, 7])
    a = replace_features(features, chosen, torch.Generator().manual_seed(0))
    b = replace_features(features, chosen, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    untouched = torch.ones(64, dtype=torch.bool)
    untouched[chosen] = False
    assert torch.equal(a[:, untouched], features[:, untouched]) and not torch.equal(a[:, chosen], features[:, chosen])
    c = replace_features(features, chosen, torch.Generator().manual_seed(0), complement=True)
    assert torch.equal(c[:, chosen], features[:, chosen])


def test_class_selectivity_index_against_numpy():
    features, labels = planted()
    means = np.stack([features[labels == c].numpy().astype(np.float64).mean(0) for c in range(4)])
    mu_max = means.max(0)
    mu_rest = (means.sum(0) - mu_max) / 3
    reference = (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7)
    np.testing.assert_allclose(class_selectivity_index(features, labels).numpy(), reference, rtol=1e-10)


def test_psi_on_a_hand_example():
    # D = 4; every instance has mass (0.7, 0.1, 0.1, 0.1): cumulative < 0.5 -> 0 ranks -> psi = (4 - 0)/4 = 1;
    # (0.25 each): cumulative 0.25 < 0.5 -> 1 rank -> psi = 0.75.
    peaked = torch.tensor([[7.0, 1.0, 1.0, 1.0]] * 3)
    flat = torch.ones(3, 4)
    assert psi_selectivity(peaked, torch.zeros(3, dtype=torch.long), 0.5) == 1.0
    assert psi_selectivity(flat, torch.zeros(3, dtype=torch.long), 0.5) == 0.75


def test_topk_weight_overlap():
    weight = torch.zeros(2, 10)
    weight[0, [1, 2, 3]] = 1
    weight[1, [4, 5, 6]] = 1
    sets = [torch.tensor([1, 2, 9]), torch.tensor([7, 8, 9])]
    assert topk_weight_overlap(sets, weight, 3).tolist() == [2, 0]
