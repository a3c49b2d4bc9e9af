"""Analysis layers of ANY nn.Module by the one rule of DESIGN.md ("Layers"; seed000 §5), and the small
building helpers that the model files share.

"Layer i" is the INPUT of the i-th weight layer in forward order: the conv and linear modules of the main
path, shortcut/downsample convs excluded; the last index is the input of the classifier. Registry models list
these modules themselves (`model.weight_layers()`). For any other model (a torchvision architecture, a user's
own net) the list is found by tracing one forward pass:

    names, modules = analysis_layers(torchvision.models.resnet18(num_classes=10), torch.zeros(1, 3, 32, 32))
    len(modules)   # 18: conv1, 16 block convs, fc (the three downsample convs are left out)

The traced rule keeps every Conv2d/Linear that runs, so side paths that are not named downsample/shortcut
(the squeeze-and-excitation convs of an EfficientNet, for instance) are kept; registry models that have such
paths leave them out in their own `weight_layers()` and say so.
"""
from __future__ import annotations

import torch
from torch import nn

SKIPPED_NAMES = ("downsample", "shortcut")
WEIGHT_TYPES = (nn.Conv2d, nn.Linear)


@torch.no_grad()
def analysis_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[list[str], list[nn.Module]]:
    """The analysis weight layers of `model`, in forward order (DESIGN.md "Layers", seed000 §5).

    Uses `model.weight_layers()` when the model has it; otherwise runs `model` once in eval mode on
    `example_input` with forward hooks on every nn.Conv2d / nn.Linear whose qualified name contains neither
    "downsample" nor "shortcut", and keeps the modules in the order of their first call (a module called twice
    is listed once; a module that never runs is not listed). The model's train/eval mode is restored.

    Args:
      model: any nn.Module.
      example_input: one batch the model accepts, e.g. (1, C, H, W) on the model's device; only used when
        the model has no `weight_layers()`.

    Returns:
      (names, modules): the qualified module names (as in `model.named_modules()`) and the modules.
    """
    names = {module: name for name, module in model.named_modules()}
    if hasattr(model, "weight_layers"):
        modules = list(model.weight_layers())
        return [names[m] for m in modules], modules
    called: list[nn.Module] = []
    candidates = [m for m, name in names.items()
                  if isinstance(m, WEIGHT_TYPES) and not any(skip in name for skip in SKIPPED_NAMES)]
    handles = [m.register_forward_hook(lambda module, inputs, output: called.append(module)) for m in candidates]
    was_training = model.training
    try:
        model.eval()
        model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    modules = list(dict.fromkeys(called))  # first call order, each module once
    return [names[m] for m in modules], modules


def scaled(channels: int, width: float) -> int:
    """A channel count (or hidden width) scaled by the width multiplier: max(1, round(channels * width))."""
    return max(1, round(channels * width))


def torchvision_conv_init_(convs: list[nn.Module]) -> None:
    """torchvision's default init for conv layers of VGG and ResNet (seed000 §4): weight ~ kaiming normal
    with mode "fan_out" and the ReLU gain, i.e. N(0, 2 / (out_channels * k * k)); bias 0."""
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


def pytorch_default_init_(model: nn.Module) -> nn.Module:
    """PyTorch's default initialisation of every layer (each module's own `reset_parameters()`: conv and linear
    weights kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BN weight 1, bias 0), as
    seed004 §3 trains its VGG, ResNet, LeNet, AlexNet and EfficientNet; layers that define their own
    `reset_parameters` (the mean-field FCN layers) keep it. Draws from torch's global generator; returns `model`."""
    for module in model.modules():
        if module is not model and callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return model


class GlobalMeanPool(nn.Module):
    """Global average pooling as a plain mean over the spatial axes, (B, C, H, W) -> (B, C, 1, 1): the same
    numbers as AdaptiveAvgPool2d(1) up to rounding, with a backward that uses no atomics on CUDA."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((-2, -1), keepdim=True)


def deterministic_pooling(model: nn.Module) -> nn.Module:
    """Replace, in place, every AdaptiveAvgPool2d to a 1 x 1 output by GlobalMeanPool (its CUDA backward is not
    deterministic); the state dict is unchanged (neither has parameters). Returns `model`."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            size = getattr(child, "output_size", None)
            if isinstance(child, nn.AdaptiveAvgPool2d) and size in (1, (1, 1)):
                setattr(parent, name, GlobalMeanPool())
    return model
