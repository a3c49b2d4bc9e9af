"""The cost of every stage of a grid on this machine: wall time and peak memory (RSS) of each command.

    python benchmarks/stage_cost.py -- --paper 000 --traindata mnist --models resnet18 --seeds 0 --epochs 1
    python benchmarks/stage_cost.py --set ratios=6 -- --full --paper 000 --traindata mnist --models resnet18 ...

The grid is the one `reproduce.py ARGS --print` lists (ARGS after `--`); each of its commands runs here as its own
process, one after the other, and os.wait4 gives that process's own peak RSS (not the maximum over all children,
as getrusage would). `--set FLAG=VALUE` replaces the value of --FLAG in every command that has it (e.g. measure
6 of the 53 thresholds and project the rest). A failed command is recorded with its exit status and the grid
goes on. Prints a markdown table (stage, run, wall s, peak RSS GB, status) and writes it to --out when given.

`--samples N1 N2 ...` measures how the stages grow with the sample size: the grid runs once as it is (training
included), then for each N its sample-sized stages again, in order, with --force (--num_grams, --num_stability and
--P set to N; kernels.py reads the analysis just made). The table gives wall time and peak RSS per N with the
log-log slope between the first and the last N (1: linear; 2: the n x n Gram quantities of seed000 §6.4, §8).
Stages without a sample size are left out.

    python benchmarks/stage_cost.py --samples 500 1000 2000 --set ratios=2 -- --full --paper 000 --traindata mnist \
        --models resnet18 --seeds 0 --width 0.25 --epochs 1 --stages train analysis kernels stability
"""
from __future__ import annotations

import argparse
import math
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
    modes = [flag for flag in ("--init", "--shuffle_channels", "--laplacian") if flag in argv]
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


SAMPLE_FLAGS = ("num_grams", "num_stability", "P")   # the flags that set a stage's sample size n
READS_SIZED = ("kernels.py",)                        # stages whose n is that of the analysis they read


def sized(argv: list[str]) -> bool:
    """Whether the command's cost depends on the sample size (it has a sample-size flag, or reads one that has)."""
    return argv[0] in READS_SIZED or any(f"--{flag}" in argv for flag in SAMPLE_FLAGS)


def slope(first: tuple[int, float], last: tuple[int, float]) -> float:
    """log-log growth exponent between two (n, value) points."""
    return math.log(last[1] / first[1]) / math.log(last[0] / first[0])


def scaling(commands: list[list[str]], samples: list[int], log: Path) -> str:
    """The markdown table of wall time and peak RSS of every sample-sized command at each n (module docstring).
    For each n the sized commands run in the grid's order, so kernels.py reads the analysis just made at n."""
    for command in commands:   # once as listed: trainings and the stages the sized ones read
        measure(command, log)
    sized_commands = list(filter(sized, commands))
    points: dict[int, list] = {index: [] for index in range(len(sized_commands))}
    for n in samples:
        for index, command in enumerate(sized_commands):
            argv = [*with_values(command, dict.fromkeys(SAMPLE_FLAGS, str(n))), "--force"]
            points[index].append((n, *measure(argv, log)))
            print(f"n={n} {stage_name(command)} {run_label(command)}: {points[index][-1][1]:.0f} s, "
                  f"{points[index][-1][2]:.2f} GB", flush=True)
    head = " | ".join(f"n={n:,} s / GB" for n in samples)
    rows = [f"| stage | run | {head} | growth of time, RSS |", "|---|---|" + "---|" * len(samples) + "---|"]
    for index, command in enumerate(sized_commands):
        found = points[index]
        cells = " | ".join(f"{s:.0f} / {r:.2f}" if status == 0 else f"exit {status}" for _, s, r, status in found)
        growth = (f"n^{slope(found[0][:2], found[-1][:2]):.2f}, "
                  f"n^{slope((found[0][0], found[0][2]), (found[-1][0], found[-1][2])):.2f}")
        rows.append(f"| {stage_name(command)} | {run_label(command)} | {cells} | {growth} |")
    return "\n".join(rows) + "\n"


def costs(commands: list[list[str]], log: Path) -> str:
    """The markdown table of wall time and peak RSS of every command, run once each in order."""
    rows = ["| stage | run | wall s | peak RSS GB | status |", "|---|---|---|---|---|"]
    total = 0.0
    for command in commands:
        seconds, rss, status = measure(command, log)
        total += seconds
        rows.append(f"| {stage_name(command)} | {run_label(command)} | {seconds:.0f} | {rss:.2f} | "
                    f"{'ok' if status == 0 else f'exit {status}'} |")
        print(rows[-1], flush=True)
    rows.append(f"| all | | {total:.0f} | | |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                        help="replace --FLAG's value in every command that has it")
    parser.add_argument("--log", type=Path, default=Path("stage_cost.log"), help="the commands' output")
    parser.add_argument("--samples", type=int, nargs="+", default=None, metavar="N",
                        help="measure the sample-sized stages at each N instead (module docstring)")
    parser.add_argument("reproduce_args", nargs=argparse.REMAINDER, help="-- then reproduce.py's flags")
    args = parser.parse_args(argv)
    values = dict(item.split("=", 1) for item in args.set)
    commands = [with_values(c, values) for c in grid_commands([a for a in args.reproduce_args if a != "--"])]
    log = args.log.resolve()
    table = scaling(commands, args.samples, log) if args.samples else costs(commands, log)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
