"""Across seeds: figures (PNG + PDF, or PNG alone with --no-pdf), CSV tables and report.md in <workdir>/report/.

    python averaging.py --num_seed 10            # seeds 0..9 of every (dataset, model) under --workdir
    python averaging.py --seeds 0 2 3 --workdir runs

Every (dataset, model) folder whose runs have a finished extract/ is averaged by each paper module
(reports/<paper>.py); statistics across seeds are medians with 25-75% bands.
"""
from __future__ import annotations

import importlib
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline import contract
from reports import Group, ReportOptions, figures, paper_modules
from utils.cli import ToolkitParser, run_main
from utils.cpus import allotted_cpus
from utils.errors import ToolkitError
from utils.io import atomic_write
from utils.rundir import report_dir, seed_dirs, split_variant


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs", help="root of all run directories")
    parser.add_argument("--num_seed", type=int, default=None, help="use seeds 0..N-1 (default: every seed found)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="use exactly these seeds")
    parser.add_argument("--oracle", action="store_true",
                        help="seed000's figures: choose the Mahalanobis d and the rank threshold on the reported "
                             "near-OOD set, as the paper did (default: on the validation OOD set, which is never "
                             "reported); the main table always has both, each row labelled with its protocol")
    parser.add_argument("--mean-std", action="store_true",
                        help="seed000: mean +- std beside median (IQR/2) in the table, and a `-mean` twin of every "
                             "figure drawn with mean +- std bands (seed000's *-mean figures)")
    parser.add_argument("--per-seed", action="store_true",
                        help="seed000: draw every seed's own curve beside the statistic across seeds")
    parser.add_argument("--no-pdf", action="store_true",
                        help="write the figures as PNG only, not also as PDF (drawing takes half the time; the demo "
                             "of reproduce.py uses it)")
    parser.add_argument("--jobs", type=int, default=allotted_cpus(),
                        help="papers' reports drawn in parallel processes (default: the cores this process may use; "
                             "within a Slurm task, its allocation)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def find_groups(workdir: Path, seeds: set[int] | None) -> list[Group]:
    """Every (dataset, model) with at least one extracted run among `seeds`."""
    groups = []
    for dataset_dir in sorted(p for p in workdir.iterdir() if p.is_dir() and p != report_dir(workdir)):
        for model_dir in sorted(p for p in dataset_dir.iterdir() if p.is_dir()):
            runs = [run for run in seed_dirs(workdir, dataset_dir.name, *split_variant(model_dir.name))
                    if contract.done(run, "extract")
                    and (seeds is None or run.seed in seeds)]
            if runs:
                groups.append(Group(dataset_dir.name, model_dir.name, tuple(runs)))
    return groups


def _paper_section(module: str, groups: list[Group], out: Path, options: ReportOptions) -> str:
    return importlib.import_module(module).average(groups, out, options)


def paper_sections(groups: list[Group], out: Path, options: ReportOptions, jobs: int) -> list[str]:
    """Each paper's report section (its figures and tables written into `out`), the papers drawn in up to `jobs`
    forked processes (matplotlib draws on one core; the papers write disjoint files)."""
    names = [paper.__name__ for paper in paper_modules()]
    if jobs <= 1 or len(names) <= 1:
        return [_paper_section(name, groups, out, options) for name in names]
    with ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_paper_section, name, groups, out, options) for name in names]
        return [future.result() for future in futures]


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir)
    seeds = set(args.seeds) if args.seeds else (set(range(args.num_seed)) if args.num_seed else None)
    if not workdir.is_dir():
        raise ToolkitError(f"--workdir {workdir} does not exist; train and extract runs first (python reproduce.py)")
    groups = find_groups(workdir, seeds)
    if not groups:
        wanted = f" for seeds {sorted(seeds)}" if seeds else ""
        raise ToolkitError(f"no run under {workdir} has a finished extract/{wanted}; run extractor.py first")
    if seeds:
        for group in groups:
            found = {run.seed for run in group.runs}
            if found != seeds:
                print(f"note: {group.label} has extracted seeds {sorted(found)} of the {sorted(seeds)} asked for")
    out = report_dir(workdir)
    options = ReportOptions(oracle=args.oracle, mean_std=args.mean_std, per_seed=args.per_seed)
    with figures.figure_formats(["png"] if args.no_pdf else ["png", "pdf"]):
        sections = paper_sections(groups, out, options, args.jobs)
    header = (f"# Report\n\nGenerated {time.strftime('%Y-%m-%d %H:%M')} from {len(groups)} (dataset, model) "
              f"group(s): " + ", ".join(f"{g.label} ({len(g.runs)} seeds)" for g in groups) + "\n")
    if args.no_pdf:
        header += ("\nFigures are PNG only (--no-pdf); for PDFs as well, run averaging.py again with the same "
                   "flags, leaving out --no-pdf.\n")
    text = "\n\n".join([header, *[s for s in sections if s]]) + "\n"
    atomic_write(out / "report.md", lambda handle: handle.write(text.encode()))
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    run_main(main)
