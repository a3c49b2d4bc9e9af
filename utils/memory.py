"""Memory that adapts: a measurement pass that runs out of device memory runs again with half the batch.

    result, batch = halving_batch(lambda batch: measure(data, batch), args.batchsize, "analysis of cifar10")

A stage records the batch it used beside the one it was asked for. A pass must be restartable: it starts from
nothing it wrote before (files it appends to are opened inside `run_pass`).
"""
from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import TypeVar

import torch

from utils.errors import ToolkitError

T = TypeVar("T")


def free_device_memory() -> None:
    """Drop what the failed attempt still held, and hand the cached blocks back to the device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def halving_batch(run_pass: Callable[[int], T], batch: int, what: str) -> tuple[T, int]:
    """`run_pass(batch)`, retried with batch // 2 (down to 1) each time it raises torch.OutOfMemoryError; returns
    its result and the batch that worked. Below a batch of 1, a one-line ToolkitError naming `what`."""
    while True:
        try:
            return run_pass(batch), batch
        except torch.OutOfMemoryError:
            failed = batch
        # out of the except block, so that the traceback's frames (and the tensors they hold) are released
        free_device_memory()
        if failed == 1:
            raise ToolkitError(f"{what}: out of device memory even with a batch of 1; use a device with more "
                               f"memory, or --device cpu")
        batch = failed // 2
        print(f"{what}: out of device memory with a batch of {failed}; running the pass again with {batch}",
              file=sys.stderr)
