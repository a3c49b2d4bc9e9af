"""Run every benchmark, print one line each (ratio, max numerical difference, peak memory), update RESULTS.md.

    python benchmarks/run_all.py                   # defaults: each under a minute on 2 CPU cores
    python benchmarks/run_all.py --size large      # the papers' scale
    python benchmarks/run_all.py --only kernels diffeo --device cuda
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from benchmarks.common import append_results, machine  # noqa: E402
from utils.device import resolve_device  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["default", "large"], default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="+", default=None, help="benchmark names (bench_<name>.py)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args()
    device = resolve_device(args.device)
    names = args.only or sorted(p.stem[6:] for p in (ROOT / "benchmarks").glob("bench_*.py"))
    lines = []
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        for result in module.run(args.size, device):
            print(result.line(), flush=True)
            lines.append(result.line())
    if not args.no_write:
        section = (f"\n## {time.strftime('%Y-%m-%d')} - {machine(device)} - size {args.size}\n\n```\n"
                   + "\n".join(lines) + "\n```\n")
        append_results(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
