"""Capture the inputs (or outputs) of any list of modules in ONE forward pass (DESIGN.md, "Layers").

"Layer i" is the input of the i-th weight layer, so a stage taps `model.weight_layers()` (or
`models.layers.analysis_layers(model, x)` for any nn.Module) and reads `taps.values[i]` after a forward
pass. A `reduce` callback turns each captured tensor into what the stage keeps (a spatial sum, a running
statistic), so the activations of a whole dataset are never stored.

    with LayerTaps(model.weight_layers()) as taps:
        logits = model(x)
    feats = taps.values            # list of tensors, one per layer, (B, C, H, W) or (B, D)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class LayerTaps:
    """Forward hooks that record the first positional input (default) or the output of each module."""

    def __init__(
        self,
        modules: Sequence[nn.Module],
        reduce: Callable[[int, torch.Tensor], object] | None = None,
        capture: str = "input",
        detach: bool = True,
    ):
        if capture not in ("input", "output"):
            raise ValueError("capture must be 'input' or 'output'")
        self.modules = list(modules)
        self.reduce = reduce
        self.capture = capture
        self.detach = detach
        self.values: list[object] = [None] * len(self.modules)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerTaps:
        for index, module in enumerate(self.modules):
            self._handles.append(module.register_forward_hook(self._hook(index)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, index: int):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            value = inputs[0] if self.capture == "input" else output
            if self.detach:
                value = value.detach()
            self.values[index] = self.reduce(index, value) if self.reduce else value

        return hook


def spatial_mean(index: int, tensor: torch.Tensor) -> torch.Tensor:
    """A `reduce` for LayerTaps: conv maps (B, C, H, W) -> per-channel spatial means (B, C); (B, D) unchanged."""
    return tensor.mean(dim=(2, 3)) if tensor.dim() == 4 else tensor


@torch.no_grad()
def capture_inputs(model: nn.Module, modules: Sequence[nn.Module], x: torch.Tensor) -> tuple[list, torch.Tensor]:
    """One forward pass of `model` on `x`; returns (inputs of each module, model output)."""
    with LayerTaps(modules) as taps:
        output = model(x)
    return taps.values, output
