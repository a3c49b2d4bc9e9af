"""The model registry: `@register_model(name)` on a builder, `build_model(name, ...)`, `list_models()`.

Every builder takes (num_classes, in_channels, width, image_size) and returns an nn.Module with a
`weight_layers()` method: its analysis weight modules (conv and linear of the main path, shortcut convs
excluded) in forward order; "layer i" is the input of weight layer i (DESIGN.md, "Layers").
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from utils.errors import ToolkitError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CANONICAL: list[str] = []  # first name of each registration; the others are aliases


def register_model(*names: str):
    """Register a builder under one or more names (aliases)."""

    def decorate(builder):
        for name in names:
            if name in _BUILDERS:
                raise ValueError(f"model {name!r} registered twice")
            _BUILDERS[name] = builder
        _CANONICAL.append(names[0])
        return builder

    return decorate


def list_models(aliases: bool = False) -> list[str]:
    """Registered architecture names (with aliases such as 'vgg13bn' when asked)."""
    return sorted(_BUILDERS if aliases else _CANONICAL)


def build_model(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0,
                image_size: int = 32) -> nn.Module:
    """Build a registered architecture, or 'torchvision:<arch>' (models/external.py); `width` scales every
    channel count (hidden width for FCNs) of registry models."""
    if name.startswith("torchvision:"):
        from models.external import build_torchvision

        return build_torchvision(name, num_classes, in_channels, image_size)
    if name not in _BUILDERS:
        raise ToolkitError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    if width <= 0 or num_classes < 1:
        raise ToolkitError("--width must be > 0 and the number of classes >= 1")
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, width=width, image_size=image_size)


def scaled(channels: int, width: float) -> int:
    """A channel count scaled by the width multiplier, at least 1."""
    return max(1, round(channels * width))
