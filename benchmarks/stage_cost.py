"""The cost of every stage of a grid on this machine: wall time and peak memory (RSS) of each command.

    python benchmarks/stage_cost.py -- --paper 000 --traindata mnist --models resnet18 --seeds 0 --epochs 1
    python benchmarks/stage_cost.py --set ratios=6 -- --full --paper 000 --traindata mnist --models resnet18 ...

The grid is the one `reproduce.py ARGS --print` lists (ARGS after `--`); each of its commands runs here as its own
process, one after the other, and os.wait4 gives that process's own peak RSS (not the maximum over all children,
as getrusage would). `--set FLAG=VALUE` replaces the value of --FLAG in every command that has it (e.g. measure
6 of the 53 thresholds and project the rest). A failed command is recorded with its exit status and the grid
goes on. Prints a markdown table (stage, run, wall s, peak RSS GB, status) and writes it to --out when given.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def grid_commands(reproduce_args: list[str]) -> list[list[str]]:
    """The grid's commands as argv lists (`python` dropped), in reproduce.py's order."""
    listed = subprocess.run([sys.executable, "reproduce.py", *reproduce_args, "--print"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    return [shlex.split(line)[1:] for line in listed.splitlines() if line.startswith("python ")]


def with_values(argv: list[str], values: dict[str, str]) -> list[str]:
    """argv with the value after each --FLAG of `values` replaced."""
    argv = list(argv)
    for flag, value in values.items():
        if f"--{flag}" in argv:
            argv[argv.index(f"--{flag}") + 1] = value
    return argv


def stage_name(argv: list[str]) -> str:
    """script[ subcommand][ mode flag]: e.g. 'decompose.py indices', 'stability.py --init'."""
    words = [argv[0]] + ([argv[1]] if len(argv) > 1 and not argv[1].startswith("-") else [])
    modes = [flag for flag in ("--init", "--shuffle_channels", "--laplacian", "--scale1d") if flag in argv]
    return " ".join(words + modes)


def run_label(argv: list[str]) -> str:
    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1] if flag in argv else "-"
    seed = value("--seed") if "--seed" in argv else "seeds " + value("--seeds")
    return f"{value('--traindata')}/{value('--model-name')}/{seed}"


def measure(argv: list[str], log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GB, exit status) of `python argv`, its output appended to `log`."""
    with open(log, "a") as handle:
        handle.write(f"$ python {shlex.join(argv)}\n")
        handle.flush()
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 2 ** 20, process.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                        help="replace --FLAG's value in every command that has it")
    parser.add_argument("--log", type=Path, default=Path("stage_cost.log"), help="the commands' output")
    parser.add_argument("reproduce_args", nargs=argparse.REMAINDER, help="-- then reproduce.py's flags")
    args = parser.parse_args(argv)
    reproduce_args = [a for a in args.reproduce_args if a != "--"]
    rows = ["| stage | run | wall s | peak RSS GB | status |", "|---|---|---|---|---|"]
    total = 0.0
    values = dict(item.split("=", 1) for item in args.set)
    for command in (with_values(c, values) for c in grid_commands(reproduce_args)):
        seconds, rss, status = measure(command, args.log.resolve())
        total += seconds
        rows.append(f"| {stage_name(command)} | {run_label(command)} | {seconds:.0f} | {rss:.2f} | "
                    f"{'ok' if status == 0 else f'exit {status}'} |")
        print(rows[-1], flush=True)
    rows.append(f"| all | | {total:.0f} | | |")
    table = "\n".join(rows) + "\n"
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
