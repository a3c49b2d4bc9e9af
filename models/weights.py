"""Load weights from a checkpoint file into a model, whatever wrapper the file uses.

Accepts a plain state dict or a dict holding it under "state_dict" (akamaster), "model" (this toolkit) or
"net" (seed000's original scripts); strips DataParallel's "module." prefix; tolerates missing BatchNorm
`num_batches_tracked` buffers (akamaster's files lack them). Always `torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from utils.errors import ToolkitError
from utils.io import load_torch

WRAPPER_KEYS = ("state_dict", "model", "net")


def extract_state_dict(obj, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object, with any 'module.' prefix removed."""
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ToolkitError(f"{path} holds no state dict (expected tensors, or a dict with one of {WRAPPER_KEYS})")
    return {key.removeprefix("module."): value for key, value in obj.items()}


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the file's weights into `model`; a mismatch names the offending keys in one line."""
    state = extract_state_dict(load_torch(path), path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                   if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        details = "; ".join(f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                            for label, items in (("missing", missing), ("unexpected", unexpected),
                                                 ("shape", wrong_shape)) if items)
        raise ToolkitError(f"{path} does not fit {type(model).__name__} ({details})")
    model.load_state_dict(state, strict=False)
    return model
