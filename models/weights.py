"""Load weights from a checkpoint file into a model, whatever wrapper the file uses.

Accepted layouts: a plain state dict, or a dict holding it under "state_dict" (akamaster's ResNet-20 files,
seed003 §3), "model" (this toolkit's checkpoints) or "net" (seed000's scripts, §4); DataParallel's "module."
prefix is stripped. BatchNorm `num_batches_tracked` buffers may be missing (akamaster's files lack them).
Files are always read with `torch.load(path, map_location="cpu", weights_only=True)` (utils.io.load_torch), so
a pickle that would run code is refused; a truncated or foreign file is a ToolkitError, never a traceback.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from utils.errors import ToolkitError
from utils.io import load_torch

WRAPPER_KEYS = ("state_dict", "model", "net")
OPTIONAL_SUFFIX = "num_batches_tracked"
SHOWN = 4  # keys named per kind of mismatch


def extract_state_dict(obj: object, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object, with any "module." prefix removed.

    Args:
      obj: what torch.load returned: a state dict or a dict with one of WRAPPER_KEYS holding it.
      path: the file name, for the error message.

    Returns:
      {parameter name: tensor}.
    """
    if isinstance(obj, dict):
        wrapped = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), dict)), None)
        obj = obj if wrapped is None else wrapped
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ToolkitError(f"{path} holds no state dict (expected a dict of tensors, or one under a key among "
                           f"{', '.join(WRAPPER_KEYS)})")
    return {key.removeprefix("module."): value for key, value in obj.items()}


def _listed(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the checkpoint at `path` into `model` (in place) and return the model.

    Every parameter and buffer of the model must be in the file with the same shape (num_batches_tracked may
    be missing), and the file may hold nothing else; otherwise a one-line ToolkitError names the first few
    missing keys, unexpected keys and shape mismatches.

    Args:
      model: the architecture to fill, e.g. `build_model("resnet20", 10)`.
      path: a .pt/.pth/.th file in one of the layouts of the module docstring.

    Returns:
      `model`, with the file's weights.
    """
    state = extract_state_dict(load_torch(path), path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)} in the model"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label}: {_listed(items)}" for label, items in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if items]
    if problems:
        raise ToolkitError(f"{path} does not fit {type(model).__name__} ({'; '.join(problems)}); "
                           f"check --model-name, --width and the number of classes")
    model.load_state_dict(state, strict=False)
    return model
