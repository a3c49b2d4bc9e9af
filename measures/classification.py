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
