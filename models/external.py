"""Any torchvision classification architecture by name: `build_model("torchvision:resnet50", 1000)`.

The model is torchvision's own (same module names, so its published state-dict files load with
models.weights.load_weights, plain or `module.`-prefixed); nothing is downloaded (weights=None). Its
analysis layers come from the generic rule of models.layers (conv and linear modules in forward order,
downsample/shortcut convs excluded), traced once on a zero image of `image_size` and attached as
`model.weight_layers()`, so every stage treats it like a registry model.
"""
from __future__ import annotations

import torch
from torch import nn

from models.layers import analysis_layers
from models.registry import register_family
from utils.errors import ToolkitError

TORCHVISION_PREFIX = "torchvision:"


def build_torchvision(name: str, num_classes: int, in_channels: int = 3, image_size: int = 224) -> nn.Module:
    import torchvision

    arch = name.removeprefix(TORCHVISION_PREFIX)
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ToolkitError(f"unknown torchvision model {arch!r}; e.g. {', '.join(sorted(available)[:8])} ...")
    if in_channels != 3:
        raise ToolkitError(f"{name} takes 3-channel images, not {in_channels}")
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    _, layers = analysis_layers(model, torch.zeros(1, 3, image_size, image_size))
    model.weight_layers = lambda: list(layers)
    return model


register_family(TORCHVISION_PREFIX, build_torchvision)
