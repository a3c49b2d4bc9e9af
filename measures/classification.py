"""Predicted labels and accuracy from network outputs, for both heads the toolkit trains.

A cross-entropy head has one output per class: the prediction is the argmax. seed004's scale-detection runs
(spec seed004 §3) train one output with the hinge loss mean(relu(1 - y f(x))), y = 2 label - 1: the prediction
is label 1 when f(x) > 0, else 0.
"""
from __future__ import annotations

import torch

LOSSES = ("cross_entropy", "hinge")


def predictions(output: torch.Tensor, loss: str) -> torch.Tensor:
    """Predicted labels (N,) from outputs (N, classes), or (N,) / (N, 1) for the hinge head."""
    if loss == "hinge":
        return (output.reshape(-1) > 0).long()
    return output.argmax(dim=1)


def accuracy(output: torch.Tensor, labels: torch.Tensor, loss: str) -> float:
    """Fraction of samples whose predicted label equals `labels` (numpy arrays are accepted too)."""
    output, labels = torch.as_tensor(output), torch.as_tensor(labels)
    return float((predictions(output, loss) == labels.to(output.device)).double().mean())


def top_k_accuracy(output: torch.Tensor, labels: torch.Tensor, k: int, loss: str = "cross_entropy") -> float:
    """Fraction of samples whose label is among the k highest outputs (top-5 for k = 5, as seed002 §5.4 reports).

    With k at least the number of classes every sample counts (1.0); a one-output hinge head has two classes, so its
    top-1 is `accuracy` and its top-k for k >= 2 is 1.0.
    """
    output, labels = torch.as_tensor(output), torch.as_tensor(labels).to(output.device)
    classes = 2 if loss == "hinge" else output.shape[1]
    if k >= classes:
        return 1.0
    if k == 1:
        return accuracy(output, labels, loss)
    top = output.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).double().mean())


def _top_k_hits(output: torch.Tensor, labels: torch.Tensor, k: int, loss: str) -> torch.Tensor:
    """How many samples have their label among the k >= 2 highest outputs, a tensor on the outputs' device."""
    classes = 2 if loss == "hinge" else output.shape[1]
    if k >= classes:
        return torch.tensor(len(labels), device=output.device)
    return (output.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum()


@torch.no_grad()
def evaluate(forward, batches, loss: str, k: int = 5) -> tuple[float, float]:
    """(top-1, top-k) accuracy of `forward(x)` over (x, y) batches, the counts kept on the device (one host sync
    at the end). top-1 goes through `predictions` (argmax, or the sign of a hinge head), top-k as `top_k_accuracy`.

    Args:
      forward: x -> outputs (N, classes) (or (N,) / (N, 1) for a hinge head), e.g. a model in eval mode.
      batches: iterable of (x, y), y (N,) int labels.
      loss: "cross_entropy" or "hinge"; k: the top-k (seed002 reports top-5).

    Returns:
      (top-1, top-k) fractions; (nan, nan) for no sample.
    """
    hits = top = None
    count = 0
    for x, y in batches:
        output = forward(x)
        y = y.to(output.device)
        correct = (predictions(output, loss) == y).sum()
        in_top = correct if k == 1 else _top_k_hits(output, y, k, loss)
        hits, top = (correct, in_top) if hits is None else (hits + correct, top + in_top)
        count += len(y)
    if not count:
        return float("nan"), float("nan")
    return int(hits) / count, int(top) / count
