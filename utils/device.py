"""Device choice in one place: `--device auto` takes CUDA when present, else the CPU."""
from __future__ import annotations

import os

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


def measurement_device(name: str = "auto", allow_tf32: bool = False) -> torch.device:
    """`resolve_device` for a measurement stage, with TF32 off unless `allow_tf32`: on Ampere and newer GPUs float32
    convolutions (cuDNN's default) and matrix products would otherwise run in TF32, about 1e-3 relative error, far
    above the reduction-order differences a measurement may differ by between devices. No effect on the CPU."""
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    return resolve_device(name)


def make_generator(seed: int) -> torch.Generator:
    """A seeded generator on the CPU, for every random draw of a run (augmentation, noise, sampling): draws happen
    on the CPU and move to the data's device (`draw_device`), so one seed gives the same numbers on every device,
    and a checkpoint's generator state resumes on any device."""
    return torch.Generator().manual_seed(int(seed))


def draw_device(generator: torch.Generator | None, device) -> torch.device:
    """Where a random draw happens: on the generator's device (the CPU for `make_generator`'s), else on `device`;
    the caller moves the draw to `device`."""
    return generator.device if generator is not None else torch.device(device)


def deterministic_algorithms() -> None:
    """`--deterministic` (training): PyTorch's deterministic algorithms (an operation without one is an error, never
    a silent non-deterministic run), cuBLAS's fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts) and
    no cuDNN autotuning. With models.layers.deterministic_pooling, a CUDA run is then repeatable bit for bit on the
    same GPU, software and batch; on the CPU it changes nothing (CPU runs are repeatable already)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
