"""Shared timing, memory and reporting helpers for the benchmarks.

A benchmark module `benchmarks/bench_<name>.py` defines `run(size: str, device: torch.device) -> list[Result]`;
each Result compares the toolkit's way with a straightforward reference on the same inputs, timed in the same
process: ratio = reference time / toolkit time (> 1 means the toolkit is faster).
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.io import atomic_write

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nratio = reference time / toolkit time (> 1: the toolkit is faster).\n"


def machine(device: torch.device) -> str:
    """The device, its thread count on CPU, and the torch version, for a RESULTS.md section title."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def append_results(section: str) -> None:
    """Append a dated section to benchmarks/RESULTS.md, atomically."""
    old = RESULTS.read_text() if RESULTS.is_file() else HEADER
    atomic_write(RESULTS, lambda handle: handle.write((old + section).encode()))


@dataclass
class Result:
    name: str
    toolkit_s: float
    reference_s: float
    max_rel_diff: float | None = None      # largest relative difference between the two outputs
    toolkit_peak_mb: float | None = None
    reference_peak_mb: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.reference_s / self.toolkit_s

    def line(self) -> str:
        diff = "-" if self.max_rel_diff is None else f"{self.max_rel_diff:.1e}"
        mem = "-" if self.toolkit_peak_mb is None else f"{self.toolkit_peak_mb:.0f}/{self.reference_peak_mb:.0f} MB"
        return (f"{self.name:<44} {self.ratio:7.1f}x  toolkit {self.toolkit_s * 1e3:9.1f} ms  "
                f"reference {self.reference_s * 1e3:9.1f} ms  diff {diff:>7}  peak {mem}  {self.note}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of `repeat` calls after `warmup` calls (seconds)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call: CUDA allocator peak, or on CPU the max RSS growth of a forked child."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure and report through the pipe
        os.close(read)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        os.write(write, str(grown).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        grown_kb = float(handle.read() or "nan")
    os.waitpid(pid, 0)
    return grown_kb / 1024


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
