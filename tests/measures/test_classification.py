"""measures.classification.top_k_accuracy (seed002 §5.4 reports top-1 and top-5) against a numpy loop."""
import numpy as np
import pytest
import torch

from measures.classification import accuracy, evaluate, top_k_accuracy


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


def test_evaluate_counts_top1_and_topk_over_batches_as_numpy_does():
    """measures.classification.evaluate over uneven batches equals numpy's argmax / argsort counts on the whole set,
    and reads a hinge head by its sign (top-2 of two classes: every sample)."""
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((23, 7)), rng.integers(0, 7, 23)
    batches = [(torch.from_numpy(logits[i:i + 5]), torch.from_numpy(labels[i:i + 5])) for i in range(0, 23, 5)]
    top1, top3 = evaluate(lambda x: x, batches, "cross_entropy", k=3)
    assert top1 == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert top3 == pytest.approx(np.mean([label in np.argsort(-row)[:3] for row, label in zip(logits, labels)]))
    margin = rng.standard_normal(9)
    hinge_labels = rng.integers(0, 2, 9)
    top1, top2 = evaluate(lambda x: x, [(torch.from_numpy(margin), torch.from_numpy(hinge_labels))], "hinge", k=2)
    assert top1 == pytest.approx(np.mean((margin > 0) == hinge_labels)) and top2 == 1.0
