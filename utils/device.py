"""Device choice in one place: `--device auto` takes CUDA when present, else the CPU."""
from __future__ import annotations

import torch

from utils.errors import ToolkitError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:N' as given (error if CUDA is absent)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ToolkitError(f"unknown --device {name!r}; use auto, cpu or cuda") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ToolkitError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return device


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator living on `device` (augmentation and sampling draw on the device of the data)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
