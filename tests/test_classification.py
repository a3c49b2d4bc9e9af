"""measures.classification.top_k_accuracy (seed002 §5.4 reports top-1 and top-5) against a numpy loop."""
import numpy as np
import pytest
import torch

from measures.classification import accuracy, top_k_accuracy


def test_top_k_accuracy_counts_labels_among_the_k_largest_outputs():
    g = torch.Generator().manual_seed(0)
    output, labels = torch.randn(200, 10, generator=g), torch.randint(0, 10, (200,), generator=g)
    for k in (1, 2, 5):
        expected = np.mean([label in np.argsort(-row)[:k] for row, label in zip(output.numpy(), labels.numpy())])
        assert top_k_accuracy(output, labels, k) == pytest.approx(expected)
    assert top_k_accuracy(output, labels, 1) == accuracy(output, labels, "cross_entropy")
    assert top_k_accuracy(output, labels, 10) == 1.0 and top_k_accuracy(output[:, :4], labels % 4, 5) == 1.0


def test_top_k_accuracy_of_a_hinge_head():
    output, labels = torch.tensor([0.5, -0.2, 1.0]), torch.tensor([1, 1, 0])
    assert top_k_accuracy(output, labels, 1, "hinge") == pytest.approx(1 / 3)
    assert top_k_accuracy(output, labels, 5, "hinge") == 1.0
