"""The class-selectivity regulariser (Leavitt & Morcos 2021, "Selectivity considered harmful"; seed003 §10).

    loss = cross-entropy - alpha * mean_layers(mean_units SI),   SI = measures.decomposition.class_selectivity_index

computed on each training batch from the class-conditional means of the hooked activations, each channel averaged
over space, over the classes the batch holds (measures.decomposition.batch_class_selectivity: no host sync per
step). The hooked layers are the outputs of the network's stages (children named layer1, layer2, ...: the last ReLU
of each stage, as seed003's repo 2 hooks layer1/2/3 of ResNet20). Sign as in Leavitt & Morcos: alpha < 0
lowers selectivity, alpha > 0 raises it; seed003's regularised ResNet20 (CE + 0.1 SI) is alpha = -0.1.

    regularizer = SelectivityRegularizer(model, alpha=-0.1, num_classes=10)
    with regularizer.watch():
        output = model(x)
    loss = F.cross_entropy(output, y) + regularizer.penalty(y)
"""
from __future__ import annotations

import re

import torch
from torch import nn

from measures.decomposition import batch_class_selectivity
from utils.errors import ToolkitError
from utils.taps import LayerTaps, spatial_mean

STAGE_NAME = re.compile(r"layer\d+")


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """The stages of a ResNet-like model (its children named layer<N>, in order): where the regulariser hooks."""
    stages = [(int(name[5:]), child) for name, child in model.named_children() if STAGE_NAME.fullmatch(name)]
    if not stages:
        raise ToolkitError(f"--selectivity_reg hooks the outputs of a network's stages (children layer1, "
                           f"layer2, ...; seed003 §10); {type(model).__name__} has none: use a ResNet (resnet20, "
                           "resnet18, ...)")
    return [child for _, child in sorted(stages, key=lambda pair: pair[0])]


class SelectivityRegularizer:
    """Forward hooks on the stage outputs (kept in the graph) and the penalty -alpha * mean selectivity."""

    def __init__(self, model: nn.Module, alpha: float, num_classes: int):
        self.alpha, self.num_classes = float(alpha), int(num_classes)
        self.modules = stage_modules(model)
        self._taps: LayerTaps | None = None

    def watch(self) -> LayerTaps:
        """A context in which one forward pass records the (B, C) spatial means of every stage output."""
        self._taps = LayerTaps(self.modules, reduce=spatial_mean, capture="output", detach=False)
        return self._taps

    def mean_selectivity(self, labels: torch.Tensor) -> torch.Tensor:
        """Mean over the hooked layers of the mean SI of their units on the last watched batch (differentiable);
        0 for a batch holding a single class."""
        if self._taps is None or any(value is None for value in self._taps.values):
            raise RuntimeError("run a forward pass inside watch() first")
        return torch.stack([batch_class_selectivity(value.float(), labels, self.num_classes).mean()
                            for value in self._taps.values]).mean()

    def penalty(self, labels: torch.Tensor) -> torch.Tensor:
        """The term added to the loss: -alpha * mean selectivity."""
        return -self.alpha * self.mean_selectivity(labels)
