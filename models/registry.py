"""The model registry: `@register_model(name)` on a builder, `build_model(name, ...)`, `list_models()`.

A model file registers each architecture with one decorator (extra names are aliases of the same builder):

    @register_model("resnet18")
    def resnet18(**kwargs):                 # kwargs: num_classes, in_channels, width, image_size
        return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)

Every builder returns an nn.Module with a `weight_layers()` method listing its analysis weight modules (the
conv and linear layers of the main path in forward order, shortcut convs excluded); "layer i" is the input of
weight layer i (DESIGN.md "Layers", seed000 §5). Names of the form "torchvision:<arch>" build torchvision's
own architecture (models/external.py).
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from utils.errors import ToolkitError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CANONICAL: list[str] = []  # the first name of each registration; the others are aliases
_FAMILIES: dict[str, Callable[..., nn.Module]] = {}  # "<prefix>:" -> builder(name, num_classes, in_channels, size)


def register_model(name: str, *aliases: str):
    """Decorator: register a builder under `name` (and optional aliases such as "vgg13bn")."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for key in (name, *aliases):
            if key in _BUILDERS:
                raise ValueError(f"model {key!r} is registered twice")
            _BUILDERS[key] = builder
        _CANONICAL.append(name)
        return builder

    return decorate


def register_family(prefix: str, builder: Callable[..., nn.Module]) -> None:
    """Register a builder for every name "<prefix><arch>" (models/external.py: "torchvision:")."""
    _FAMILIES[prefix] = builder


def list_models(aliases: bool = False) -> list[str]:
    """Sorted registered architecture names; with `aliases=True` the aliases too (e.g. "vgg13bn")."""
    return sorted(_BUILDERS if aliases else _CANONICAL)


def is_model(name: str) -> bool:
    """True for a name that `build_model` accepts: a registered architecture or alias, or a family's prefix."""
    return name in _BUILDERS or any(name.startswith(prefix) for prefix in _FAMILIES)


def build_model(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0,
                image_size: int = 32) -> nn.Module:
    """A freshly initialised registered architecture.

    Args:
      name: a name from `list_models(aliases=True)`, or "torchvision:<arch>" (models/external.py).
      num_classes: size of the output (1 for a hinge-loss head).
      in_channels: image channels (1 for MNIST or twopoints, 3 otherwise).
      width: multiplier of every channel count (of the hidden width for the FCNs), max(1, round(c * width));
        ignored for torchvision models.
      image_size: side of the square input images; models whose layout depends on it (LeNet's flatten, the
        padding of VGG/AlexNet below 32, the FCN input) use it.

    Returns:
      The nn.Module (train mode) with `weight_layers()`; it maps (B, in_channels, image_size, image_size) to
      (B, num_classes).
    """
    for prefix, family in _FAMILIES.items():
        if name.startswith(prefix):
            return family(name, num_classes, in_channels, image_size)
    if name not in _BUILDERS:
        families = "".join(f" (or {prefix}<arch>)" for prefix in _FAMILIES)
        raise ToolkitError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}{families}")
    if width <= 0 or num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ToolkitError(f"model {name!r} needs width > 0 and num_classes, in_channels, image_size >= 1; got "
                           f"width={width}, num_classes={num_classes}, in_channels={in_channels}, "
                           f"image_size={image_size}")
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, width=width, image_size=image_size)
