"""Analysis layers of ANY nn.Module, by the rule of DESIGN.md ("Layers").

Models of the registry list their weight layers themselves (`model.weight_layers()`). For any other model
(a torchvision architecture, a user's own net) the rule is derived by tracing one forward pass: every Conv2d
and Linear in the order they are called, shortcut/downsample convs excluded.
"""
from __future__ import annotations

import torch
from torch import nn

SKIPPED_NAMES = ("downsample", "shortcut")


@torch.no_grad()
def analysis_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[list[str], list[nn.Module]]:
    """(qualified names, modules) of the analysis weight layers, in forward order."""
    names = {module: name for name, module in model.named_modules()}
    if hasattr(model, "weight_layers"):
        modules = list(model.weight_layers())
        return [names[m] for m in modules], modules
    order: list[nn.Module] = []
    candidates = [m for m, name in names.items() if isinstance(m, (nn.Conv2d, nn.Linear))
                  and not any(part in SKIPPED_NAMES for part in name.split("."))]
    handles = [m.register_forward_hook(lambda module, inputs, output: order.append(module)) for m in candidates]
    was_training = model.training
    try:
        model.eval()
        model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    seen, modules = set(), []
    for module in order:
        if module not in seen:
            seen.add(module)
            modules.append(module)
    return [names[m] for m in modules], modules
