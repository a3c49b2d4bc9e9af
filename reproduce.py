"""Run the fixed order train -> measure -> extract -> average over a grid, locally or on Slurm.

    python reproduce.py                                  # the demo: every implemented paper on digits
    python reproduce.py --paper 000 --full --launcher slurm --partition gpu --gpus-per-task 1 --detach
    python reproduce.py --traindata cifar10 --models vgg13 resnet18 --num_seed 3 --epochs 200 --print

A grid is one or more parts, each datasets x models x seeds trained one way (DEMO_GRIDS, FULL_GRIDS; the
flags override every part), in --workdir or a sub-workdir of its own (a run's path names neither width nor recipe);
a width sweep (--widths, seed002's full grid) is a part trained in one workdir per width, <workdir>/width<s>,
whose sweep stage (rainbow-width) runs once every width is done. Each (dataset, model, seed) is one chain of
commands: train, the per-run measurement stages of the papers that measure it, extract. Stages that combine
seeds (rainbow) run once all chains of their (dataset, model) are done, and averaging (once per workdir) runs
last (on Slurm, every stage is a job: the chains one job array, rainbow and averaging jobs depending on the
jobs they need; --detach leaves them running, and the same command later reports their state and submits only
what is missing). A stage whose _done.json records the same command line is skipped, so an interrupted grid
resumes where it stopped; training itself resumes from last.pt. Each command's output goes to
<run>/logs/<stage>.log. Commands run as forks of one process that imported torch once (pipeline/stage_process.py):
`--print` shows them as the equivalent `python SCRIPT ...` lines, which behave the same.
"""
from __future__ import annotations

import contextlib
import io
import signal
from collections import Counter

from pipeline.commands import (
    STOPPING,
    THREADS,
    Command,
    ThreadShare,
    run_command,
    server_blas_threads,
    stop_on_sigterm,
)
from pipeline.grid import FULL_GRID_GAPS, FULL_GRIDS, PAPER_ORDER, STAGES
from pipeline.local import place_devices, run_local
from pipeline.plan import akamaster_placeholder, build_plan, resolve_grid, validate
from pipeline.slurm import launch_local, run_group_stages, run_on_slurm
from pipeline.stage_process import start_server
from utils.cli import EXIT_INTERRUPTED, ToolkitParser, finite_float, non_negative_float, positive_float, run_main


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper", choices=["000", "002", "003", "004", "all"], default="all",
                        help="which paper's stages to run (all: every implemented paper)")
    parser.add_argument("--full", action="store_true",
                        help="use the paper's published grid (datasets, models, seeds, epochs) instead of the demo; "
                             "002: its four experiment sets, each in its own workdir (README); "
                             + FULL_GRID_GAPS["002"])
    parser.add_argument("--traindata", nargs="+", default=None, help="datasets (demo: digits)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="architectures (demo: resnet18; resnet20 for 003 alone; rainbow_mlp, rainbow_cnn for 002)")
    parser.add_argument("--num_seed", type=int, default=None, help="seeds 0..N-1 (demo: 2; 5 for 002)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="exactly these seeds")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (demo: 5; 15 for 003 alone; 5 for 002)")
    widths = parser.add_mutually_exclusive_group()
    widths.add_argument("--width", type=float, default=None,
                        help="channel-width multiplier (demo: 0.25; 1 for 003 alone and 002)")
    widths.add_argument("--widths", type=positive_float, nargs="+", default=None, metavar="S",
                        help="a width sweep: every part trained at each width, in <workdir>/width<S>/, then (002) "
                             "rainbow_width.py over them in the widest one's workdir; e.g. --paper 002 "
                             "--widths 0.5 1 2 --num_seed 3 (default: none; with --full, 002 sweeps its "
                             "scattering4 and J8 nets)")
    parser.add_argument("--recipe", default=None, help="training recipe (see train_classifier.py --help)")
    parser.add_argument("--gaussian_corruption_std", type=non_negative_float, nargs="+", default=None, metavar="STD",
                        help="train one run per std of Gaussian corruption (seed004 §2.7: a sigma sweep; each lives in "
                             "<model>@sigma<std>/; default: 0, except --paper 004: 0 10 30 in the demo, the "
                             "paper's 0 0.01 0.1 1 10 30 100 with --full)")
    parser.add_argument("--ood-sets", nargs="+", default=None, metavar="NAME",
                        help="seed000: the reported OOD sets, passed to analyzing.py and features.py (registered "
                             "datasets or imagefolder:PATH; default: the paper's)")
    parser.add_argument("--near-ood", default=None, metavar="NAME", help="seed000: the near-OOD set among them")
    parser.add_argument("--validation-ood", default=None, metavar="NAME",
                        help="seed000: the set that chooses d and the rank threshold (default: <dataset>_vflip)")
    parser.add_argument("--selectivity_reg", type=finite_float, nargs="+", default=None, metavar="ALPHA",
                        help="seed003 §10: train one run per class-selectivity regulariser alpha (0 = plain; "
                             "each other lives in <model>@si<ALPHA>/, e.g. 0 -0.1 adds regularised nets that the "
                             "003 report compares with the plain ones; default: 0)")
    parser.add_argument("--akamaster-weights", default=None, metavar="FILE",
                        help="seed003: akamaster's ResNet-20 checkpoint (resnet20-12fca82f.th, spec §1-§3), the "
                             "network of the paper's numbers: imported (import_weights.py) into <workdir>/akamaster/ "
                             "and measured by the 003 stages beside the nets trained here (default: not measured; "
                             "--full --paper 003 says so)")
    parser.add_argument("--stages", nargs="+", default=None,
                        help="only these stages (train, " + ", ".join(s.name for s in STAGES) + ", extract, average)")
    parser.add_argument("--workdir", default="runs", help="root of all run directories")
    parser.add_argument("--data-root", default="data", help="folder holding dataset files")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda, passed to every stage")
    parser.add_argument("--print", action="store_true", help="print the commands, one per line, without running them")
    parser.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local",
                        help="local processes; every stage a Slurm job through submitit (the chains a job array, "
                             "rainbow and averaging jobs depending on them); or submitit's local executor")
    parser.add_argument("--jobs", type=int, default=None,
                        help="local launcher: chains and group stages (rainbow, once its seeds are done) run "
                             "side by side on N workers; a stage gets cores / (tasks running) threads, so what runs "
                             "alone (the last chain, averaging) gets every core (default: with CUDA, the GPUs x "
                             "--jobs-per-gpu; on the CPU 2, or 1 on one core)")
    parser.add_argument("--jobs-per-gpu", type=int, default=1, metavar="K",
                        help="local launcher with CUDA: each running stage gets a GPU of its own "
                             "(CUDA_VISIBLE_DEVICES, from those visible); K > 1 lets K stages share one, each held "
                             "to 1/K of its memory (default: 1)")
    parser.add_argument("--partition", default=None, help="slurm: partition (default: the cluster's default)")
    parser.add_argument("--gpus-per-task", type=int, default=0, help="slurm: GPUs per task")
    parser.add_argument("--cpus-per-task", type=int, default=4,
                        help="slurm: CPU cores per task; a stage's threads and image-loading workers use them, not "
                             "the node's (default: 4)")
    parser.add_argument("--detach", action="store_true",
                        help="slurm: exit once every job is submitted; the same command run again reports the grid's "
                             "state and submits only what is missing or failed")
    parser.add_argument("--time", type=int, default=24 * 60,
                        help="slurm: time limit per task in minutes; a chain that needs longer is requeued")
    parser.add_argument("--mem", type=int, default=None,
                        help="slurm: memory per task in GB (default: the cluster's default per task)")
    parser.add_argument("--signal-delay", type=int, default=None,
                        help="slurm: seconds before --time at which Slurm signals a chain to save and requeue "
                             "(default: 90, or --time/10 when shorter; Slurm sends it up to a minute early)")
    parser.add_argument("--max-timeouts", type=int, default=3,
                        help="slurm: requeues after reaching --time in a row, none finishing a stage or a "
                             "training epoch, before a chain is given up (pre-emptions do not count)")
    parser.add_argument("--force", action="store_true", help="rerun stages even when done")
    args = parser.parse_args(argv)
    if args.detach and args.launcher != "slurm":
        parser.error("--detach leaves a grid's jobs to Slurm: add --launcher slurm")
    if args.cpus_per_task < 1:
        parser.error(f"--cpus-per-task must be at least 1, got {args.cpus_per_task}")
    if args.widths is not None and len(set(args.widths)) < 2:
        parser.error("--widths needs at least 2 different widths (a single width: --width)")
    return args


def summarize(commands: list[Command]) -> int:
    """Print done/skipped/failed/interrupted counts and time per stage; returns the exit status."""
    counts = Counter(c.status for c in commands)
    seconds = Counter()
    for command in commands:
        seconds[command.stage] += command.seconds
    print(f"summary: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, "
          f"{counts['interrupted']} interrupted, {counts['busy']} left to another running process, "
          f"{counts['pending']} not reached")
    if counts["done"] == 0 and counts["failed"] == 0 and counts["interrupted"] == 0:
        print("nothing to do: every stage was already done")
    if seconds:
        print("time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items() if v > 0))
    for command in commands:
        if command.status == "failed":
            print(f"FAILED {command.stage}: {command.shell()}  (log: {command.log})")
        elif command.status == "interrupted":
            print(f"INTERRUPTED {command.stage} (rerun the same reproduce.py command to continue): "
                  f"{command.shell()}  (log: {command.log})")
    return 1 if counts["failed"] or counts["interrupted"] else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    parts = resolve_grid(args)
    chains, group_cmds, final = build_plan(args, parts)
    if not args.print and args.launcher == "local":
        start_server()   # its imports overlap the validation's
    validate(parts, args.data_root, check_files=not args.print, only=args.stages)
    if args.print:
        for command in [c for chain in chains for c in chain.commands] + group_cmds + final:
            print(command.shell())
        if args.full and args.paper == "003" and not args.akamaster_weights:
            print(f"# {akamaster_placeholder(args)}")
        return 0
    args.jobs = place_devices(args.launcher, args.device, args.jobs, args.jobs_per_gpu)
    THREADS.jobs, THREADS.cores = args.jobs, ThreadShare.usable_cores()
    STOPPING.clear()
    if args.force:
        for command in [c for chain in chains for c in chain.commands] + group_cmds:
            command.argv.append("--force")
    reports = [command.log.parent / "report.md" for command in final]   # averaging: one per workdir
    if args.launcher == "slurm":   # every stage a job: the tasks' threads follow their allocations
        commands = run_on_slurm(chains, group_cmds, final, args)
        if args.detach:
            return 0
    else:
        commands = run_here(args, chains, group_cmds, final, reports)
    status = summarize(commands)
    for report in reports:
        if report.is_file():
            print(f"report: {report}")
    if not args.full and status == 0:
        print(full_run_summary(args))
    return EXIT_INTERRUPTED if STOPPING.is_set() else status


def run_here(args, chains, group_cmds, final, reports) -> list[Command]:
    """The local launcher, or submitit's local executor for the chains followed by the group stages here; then
    averaging (when a stage was done now or a report is missing). Returns every command with its status."""
    with server_blas_threads(max(1, THREADS.cores // args.jobs)):
        if args.launcher == "local":
            signal.signal(signal.SIGTERM, stop_on_sigterm)
            # a background job of a non-interactive shell starts with SIGINT ignored: Ctrl-C / kill -INT still stop
            signal.signal(signal.SIGINT, signal.default_int_handler)
            run_local(chains, group_cmds, args.jobs)
        else:
            chains = launch_local(chains, args)   # submitit returns the chains it ran (copies)
            run_group_stages(chains, group_cmds)
        ran = [c for chain in chains for c in chain.commands] + group_cmds
        for command, report in zip(final, reports):
            if STOPPING.is_set():
                command.status = "interrupted"
            elif any(c.status == "done" for c in ran) or not report.is_file():
                run_command(command)
    return ran + final


def full_run_summary(args) -> str:
    """What the papers' own grids (--full) add to the demo just run: per paper its runs, epochs and stages."""
    papers = list(PAPER_ORDER) if args.paper == "all" else [args.paper]
    lines = ["This was the demo. Each paper's published grid (python reproduce.py --paper P --full --print lists "
             "its commands; CIFAR and SVHN are read from torchvision's files under --data-root, README: Data):"]
    for paper in papers:
        grid = FULL_GRIDS[paper]
        parts = grid if isinstance(grid, tuple) else (grid,)
        full = parse_args(["--paper", paper, "--full", "--workdir", args.workdir])
        with contextlib.redirect_stderr(io.StringIO()):  # the grid's notes are --full's to print
            chains, group_cmds, _ = build_plan(full, resolve_grid(full))
        commands = [c for chain in chains for c in chain.commands] + group_cmds
        trainings = sum(c.stage == "train" for c in commands)
        what = "; ".join(f"{'/'.join(p.traindata)} x {len(p.models)} models x {len(p.seeds)} seeds, {p.epochs} epochs"
                         for p in parts)
        lines.append(f"  {paper}: {trainings} training(s), {len(commands) - trainings} measuring stages ({what})")
    if "003" in papers:
        lines.append("  003 there also measures the paper's network, akamaster's ResNet-20, when given "
                     "--akamaster-weights FILE")
    if "000" in papers:
        analysis = STAGES[0].schedule
        full, demo = (dict(zip(flags[0::2], flags[1::2])) for flags in (analysis.full, analysis.demo))
        lines.append("  000's analysis there: " + ", ".join(
            f"{flag} {full[flag]} (demo {demo[flag]})" for flag in ("--ratios", "--num_grams", "--num_stability",
                                                                    "--stability_variants")))
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
