"""What an architecture must have for a stage to measure it, checked on the built model: by the grid before anything
runs or is submitted (pipeline.plan.validate), and by the stages themselves.

    reason = unmeasurable("rainbow", build_model("resnet18", 10), "resnet18")   # a one-line reason, or None
"""
from __future__ import annotations

import torch
from torch import nn

from models.layers import analysis_layers
from pipeline.rainbow_nets import unsupported as rainbow_unsupported

EXAMPLE_INPUT = (1, 3, 32, 32)   # what a registry or torchvision classifier accepts for finding its layers


def square_conv_filters(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> weight of every Conv2d with a square kernel of side >= 2, in module order (seed004 §2.9)."""
    return {name: module.weight for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and module.kernel_size[0] == module.kernel_size[1] >= 2}


def no_square_convs(model: nn.Module, name: str) -> str | None:
    if square_conv_filters(model):
        return None
    return f"{name} has no conv layer with a square kernel of side >= 2; the grid-Laplacian spectra (seed004 §2.9) " \
           "have nothing to measure"


def no_linear_classifier(model: nn.Module, name: str) -> str | None:
    """seed003 decomposes the classifier: the last analysis weight layer must be a Linear layer."""
    _, layers = analysis_layers(model, torch.zeros(EXAMPLE_INPUT))
    if layers and isinstance(layers[-1], nn.Linear):
        return None
    return f"the last weight layer of {name} is not a Linear classifier, which seed003's decomposition needs"


# stage -> the check of an architecture (a reason it cannot be measured, or None)
CHECKS = {"rainbow": rainbow_unsupported, "rainbow-width": rainbow_unsupported, "laplacian": no_square_convs,
          **{stage: no_linear_classifier for stage in ("decompose-indices", "decompose-csg-indices")}}
# stage -> training sets whose runs it cannot measure, and why
DATASET_LIMITS = {stage: {"twopoints": "twopoints trains a one-output hinge head, for which class-specific filter sets "
                                       "are undefined (seed003 needs one output per class)"}
                  for stage in ("decompose-indices", "decompose-csg-indices")}


def unmeasurable(stage: str, model: nn.Module, name: str) -> str | None:
    """Why `stage` cannot measure the architecture `model` (registered as `name`), or None."""
    check = CHECKS.get(stage)
    return check(model, name) if check else None
