"""Atomic file I/O for run directories (DESIGN.md, "The run directory").

Every writer goes through `atomic_write`: the bytes land in a temporary file beside the target, are flushed
to disk, and only then renamed over the final name, so no partial file ever exists under a final name.
Every reader turns a missing, truncated or foreign file into a one-line `ToolkitError`.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from utils.errors import ToolkitError

if TYPE_CHECKING:
    import torch


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(handle)` on a temporary file beside `path`, fsync it, then rename it to `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise ToolkitError(f"cannot write to {path.parent}: {err.strerror}; choose a writable --workdir") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            raise ToolkitError(disk_full_message(path, err)) from err
        raise
    return path


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(path: Path, err: OSError) -> str:
    """One line for a write refused for lack of space or quota: the file, the free space, what to do."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    reason = "disk quota exceeded" if err.errno == errno.EDQUOT else "no space left on device"
    return (f"cannot write {path}: {reason} ({free} on that file system); free some space or choose another "
            "--workdir, then rerun the same command (finished files are kept)")


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 digest of a file's bytes (an imported weights file, the start of a fine-tuned run)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    data = (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()
    return atomic_write(path, lambda handle: handle.write(data))


def load_json(path: str | os.PathLike, required: Iterable[str] = ()) -> dict:
    """Read a JSON object; `required` keys must be present."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"missing file {path}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ToolkitError(f"{path} is not valid JSON ({err}); delete it and rerun the stage that writes it") from err
    if not isinstance(obj, dict):
        raise ToolkitError(f"{path} should hold a JSON object, found {type(obj).__name__}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise ToolkitError(f"{path} lacks the keys {missing}; it was not written by this toolkit")
    return obj


class Deferred:
    """An array that save_npz computes only when it writes it (numpy's writer takes one array at a time), so a
    file of many large arrays never holds more than one of them in memory."""

    def __init__(self, compute: Callable[[], Any]):
        self.compute = compute

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = _to_numpy(self.compute())
        return array if dtype is None else array.astype(dtype, copy=False)


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Write named arrays to an uncompressed .npz, atomically (never anonymous `arr_0` keys); a Deferred value is
    computed when its turn to be written comes."""
    if not arrays:
        raise ValueError("save_npz needs at least one named array")
    converted = {key: value if isinstance(value, Deferred) else _to_numpy(value) for key, value in arrays.items()}
    return atomic_write(path, lambda handle: np.savez(handle, **converted))


def load_npz(path: str | os.PathLike, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read every array of an .npz into a dict; `required` keys must be present."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"missing file {path}; run the stage that writes it first")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ToolkitError(f"{path} is truncated or not an .npz file; delete it and rerun its stage") from err
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ToolkitError(f"{path} lacks the arrays {missing} (has {sorted(arrays)}); rerun its stage with --force")
    return arrays


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """Write a checkpoint holding only tensors and plain Python values, atomically.

    The checkpoint is serialised in memory first, so a full disk surfaces as an OSError of the write (a one-line
    error, `disk_full_message`) rather than as an error deep inside torch's zip writer."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    return atomic_write(path, lambda handle: handle.write(data))


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint with `weights_only=True`: a pickle that would run code is refused, never executed."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"missing checkpoint {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated, foreign or unsafe pickles
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ToolkitError(f"{path} is not a readable checkpoint ({reason})") from err


def _is_tensor(value: Any) -> bool:
    """Whether `value` is a torch.Tensor, without importing torch (none exists before torch is imported): tools
    such as reproduce.py use this module and start faster without torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _to_numpy(value: Any) -> np.ndarray:
    if _is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray) or _is_tensor(value):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
