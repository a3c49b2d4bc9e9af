"""The plan of a grid: its parts resolved from the catalogue and the flags, then one chain of commands per run
(train, the per-run stages, extract), the group stages that combine seeds, and the averaging of each workdir.

    parts = resolve_grid(args)                       # pipeline.grid parts, flags applied, shared runs merged
    chains, group_cmds, final = build_plan(args, parts)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

from pipeline import contract
from pipeline.commands import Chain, Command
from pipeline.grid import (
    AKAMASTER,
    AKAMASTER_FILE,
    ALL_PAPERS_DEMO,
    DEMO_GRIDS,
    FULL_GRID_GAPS,
    FULL_GRIDS,
    PAPER_ORDER,
    STAGES,
    GridPart,
)
from utils.errors import ToolkitError
from utils.rundir import DEFAULT_PTR, RunDir, report_dir, run_variant, variant_flags


def resolve_grid(args) -> list[GridPart]:
    """The demo grids of the chosen papers, or one paper's published grid with --full; flags override every part.

    Parts that train the same (dataset, model, seed) are merged into one training measured by all their papers,
    keeping the first part's epochs, width and recipe (a run directory holds one training)."""
    papers = list(PAPER_ORDER) if args.paper == "all" else [args.paper]
    if args.full and len(papers) > 1:
        raise ToolkitError("--full reproduces one paper at a time (each trains with its own recipe); add "
                           "--paper 000, 002, 003 or 004")
    if args.full:
        grids = [FULL_GRIDS[paper] for paper in papers]
        for paper in papers:
            if paper in FULL_GRID_GAPS:
                print(f"note: {FULL_GRID_GAPS[paper]}", file=sys.stderr)
        parts = [part for grid in grids for part in (grid if isinstance(grid, tuple) else (grid,))]
        for part in parts:
            if part.note:
                print(f"note: {part.note}", file=sys.stderr)
    else:
        parts = list(ALL_PAPERS_DEMO) if args.paper == "all" else [DEMO_GRIDS[args.paper]]
    overrides = {"traindata": args.traindata, "models": args.models, "epochs": args.epochs, "width": args.width,
                 "recipe": args.recipe, "corruptions": args.gaussian_corruption_std, "widths": args.widths,
                 "seeds": args.seeds or (list(range(args.num_seed)) if args.num_seed else None)}
    overrides = {key: tuple(value) if isinstance(value, list) else value for key, value in overrides.items()
                 if value is not None}
    if args.width is not None:  # one width for every part: no sweep
        overrides["widths"] = ()
    merged: list[GridPart] = []
    if args.selectivity_reg is not None:  # a seed003 experiment: the other papers' parts keep their plain runs
        if not any("003" in part.papers for part in parts):
            raise ToolkitError("--selectivity_reg is seed003's (§10); add --paper 003 or --paper all")
        parts = [replace(part, selectivity_regs=tuple(args.selectivity_reg)) if "003" in part.papers else part
                 for part in parts]
    imported = [replace(AKAMASTER, weights=str(Path(args.akamaster_weights).resolve()),
                        selectivity_regs=tuple(args.selectivity_reg or (0.0,)))] \
        if args.akamaster_weights and "003" in papers else []
    if args.akamaster_weights and not imported:
        raise ToolkitError("--akamaster-weights is seed003's network (§3); add --paper 003 or --paper all")
    if args.full and "003" in papers and not imported and not args.print:   # --print lists it as a comment
        print(f"note: {akamaster_placeholder(args)}", file=sys.stderr)
    for part in [*(replace(part, **overrides) for part in parts), *imported]:
        for index, other in enumerate(merged):
            if _shares_runs(part, other):
                if part.training() != other.training():
                    print(f"note: paper {'/'.join(part.papers)} measures the runs of paper {'/'.join(other.papers)} "
                          f"(epochs {other.epochs}, width {other.width}, recipe {other.recipe or 'default'})",
                          file=sys.stderr)
                merged[index] = replace(other, traindata=_union([other.traindata, part.traindata]),
                                        models=_union([other.models, part.models]),
                                        seeds=_union([other.seeds, part.seeds]),
                                        papers=_union([other.papers, part.papers]))
                break
        else:
            merged.append(part)
    return merged


def akamaster_placeholder(args) -> str:
    """What a 003 grid without --akamaster-weights leaves out: the import and measurement of the paper's network."""
    workdir = Path(args.workdir) / AKAMASTER.workdir
    return (f"003 measures its own trained ResNet-20 only; the paper's numbers (91.71 / 88.59 / 0.0345) came from "
            f"akamaster's checkpoint, not measured here: give reproduce.py --akamaster-weights {AKAMASTER_FILE} to "
            f"run `python import_weights.py --model-name resnet20 --traindata cifar10 --seed 0 --workdir {workdir} "
            f"--weights {AKAMASTER_FILE}` and the 003 stages on it")


def validate(parts: list[GridPart], data_root: str, check_files: bool = True, only: list[str] | None = None) -> None:
    """Every model and training set of the grid exists, every stage that runs (those named in `only` when given)
    can measure them, and (check_files) a file-backed set's files, plain or gzipped, are under `data_root`: else a
    one-line ToolkitError (exit 2) before anything runs or is submitted. (Imports torch, through the registries.)"""
    from datasets.files import missing_files
    from datasets.registry import FILE_LOADERS, is_folder_dataset, list_datasets
    from models.registry import is_model, list_models

    for part in parts:
        if check_files and part.weights and not Path(part.weights).is_file():
            raise ToolkitError(f"no weights file {part.weights} (--akamaster-weights): pass the path of akamaster's "
                               f"{AKAMASTER_FILE}")
    for model in dict.fromkeys(m for part in parts for m in part.models):
        if not is_model(model):
            raise ToolkitError(f"unknown model {model!r} in --models; choose among {', '.join(list_models())} "
                               "(or torchvision:<arch>)")
    check_measurable(parts, only)
    for dataset in dict.fromkeys(d for part in parts for d in part.traindata):
        if not (dataset in list_datasets() or is_folder_dataset(dataset)):
            raise ToolkitError(f"unknown dataset {dataset!r} in --traindata; choose among "
                               f"{', '.join(list_datasets())}")
        absent = missing_files(data_root, dataset) if check_files and dataset in FILE_LOADERS else []
        missing = [path for path in absent if not path.with_name(f"{path.name}.gz").is_file()]
        if missing:
            how = ("python -m datasets.prepare mnist writes them" if dataset == "mnist" else
                   "README: Data says where torchvision's files go")
            raise ToolkitError(f"{dataset}: {len(missing)} file(s) missing under --data-root {data_root}, e.g. "
                               f"{missing[0]}; {how}, or point --data-root at them")


def check_measurable(parts: list[GridPart], only: list[str] | None = None) -> None:
    """Every stage of a part (named in `only`, when given) can measure every model and training set of the part
    (pipeline.capabilities), else a one-line ToolkitError naming the paper, the stage and why."""
    from models.registry import build_model
    from pipeline.capabilities import CHECKS, DATASET_LIMITS, unmeasurable

    built = {}
    for part in parts:
        for stage in (s for s in STAGES if s.paper in part.papers and (part.stages is None or s.name in part.stages)
                      and (only is None or s.name in only)):
            for dataset in part.traindata:
                why = DATASET_LIMITS.get(stage.name, {}).get(dataset)
                if why:
                    raise ToolkitError(f"paper {stage.paper}'s {stage.name} cannot measure runs on {dataset}: {why}")
            for model in part.models if stage.name in CHECKS else ():
                if model not in built:
                    built[model] = build_model(model, num_classes=10)
                why = unmeasurable(stage.name, built[model], model)
                if why:
                    raise ToolkitError(f"paper {stage.paper} cannot measure {model} ({stage.name}): {why}; drop it "
                                       f"from --models or choose another --paper")


def _shares_runs(a: GridPart, b: GridPart) -> bool:
    return bool(set(a.traindata) & set(b.traindata) and set(a.models) & set(b.models) and set(a.seeds) & set(b.seeds)
                and set(a.corruptions) & set(b.corruptions) and set(a.selectivity_regs) & set(b.selectivity_regs)
                and set(a.ptrs) & set(b.ptrs)
                and a.workdir == b.workdir and a.widths == b.widths)


def available_stages(papers: list[str], only: list[str] | None) -> list[contract.Stage]:
    """The stages of the chosen papers (only those named in --stages, when given)."""
    names = {s.name for s in STAGES} | {"train", "extract", "average"}
    unknown = sorted(set(only or ()) - names)
    if unknown:
        raise ToolkitError(f"unknown --stages {unknown}; choose among {sorted(names)}")
    return [s for s in STAGES if s.paper in papers and (only is None or s.name in only)]


def build_plan(args, parts: list[GridPart]) -> tuple[list[Chain], list[Command], list[Command]]:
    """(per-run chains, group commands, final commands) for every part of the grid.

    A width sweep (GridPart.widths) is one part per width, each in its own workdir; its sweep stages
    (rainbow-width) follow the group stages of every width, in the widest one's workdir. Averaging runs once per
    workdir."""
    wanted = set(args.stages) if args.stages else None
    mode = "full" if args.full else "demo"
    chains, group_cmds = [], []
    averaged: dict[str, set[int]] = {}   # workdir -> the seeds trained there
    for part in parts:
        stages = [s for s in available_stages(list(part.papers), args.stages)
                  if part.stages is None or s.name in part.stages]
        group_stages = [s for s in stages if s.scope == "group" and not s.schedule.sweep_flag]
        extract = wanted is None or "extract" in wanted
        members = part.members(args.workdir)
        for workdir, member in members:
            averaged.setdefault(workdir, set()).update(member.seeds)
            common = ["--workdir", workdir, "--device", args.device]
            built: dict[Cell, Chain] = {}
            for dataset, model, sigma, alpha, ptr in product(member.traindata, member.models, member.corruptions,
                                                             member.selectivity_regs, member.ptrs):
                for seed in member.seeds:
                    cell = Cell(dataset, model, seed, sigma, alpha, ptr)
                    built[cell] = _chain(args, member, stages, cell, workdir, mode, common, wanted,
                                         extract and not group_stages)
            chains += _finetunes_after_their_start(args, member, built, workdir, mode, common, wanted)
            for dataset, model, sigma, alpha, ptr in product(member.traindata, member.models, member.corruptions,
                                                             member.selectivity_regs, member.ptrs):
                first = Cell(dataset, model, member.seeds[0], sigma, alpha, ptr)
                group = first.run(workdir)
                for scheduled in group_stages:
                    group_cmds.append(_group_command(args, scheduled, first, member.seeds, workdir, mode))
                if group_stages and extract:  # extraction reads the group stages' outputs too
                    group_cmds += [replace(_extract_command(replace(first, seed=seed), workdir, common),
                                           group=group.group) for seed in member.seeds]
        if len(members) < 2:
            continue
        (widest, _), others = members[-1], [workdir for workdir, _ in members[:-1]]
        for scheduled in (s for s in stages if s.schedule.sweep_flag):
            for dataset, model, sigma, alpha, ptr in product(part.traindata, part.models, part.corruptions,
                                                             part.selectivity_regs, part.ptrs):
                first = Cell(dataset, model, part.seeds[0], sigma, alpha, ptr)
                command = _group_command(args, scheduled, first, part.seeds, widest, mode)
                command.argv += [scheduled.schedule.sweep_flag, *others]
                command.needs = tuple(first.run(workdir).group for workdir in others)
                group_cmds.append(command)
    final = []
    if wanted is None or "average" in wanted:
        for workdir, seeds in averaged.items():
            pdf = [] if args.full else ["--no-pdf"]   # the demo draws PNGs only (half the drawing time)
            final.append(Command("average", ["averaging.py", "--workdir", workdir, "--seeds",
                                              *map(str, sorted(seeds)), *pdf], None,
                                 contract.log_path(report_dir(workdir), "averaging")))
    return chains, group_cmds, final


def _finetunes_after_their_start(args, part: GridPart, built: dict[Cell, Chain], workdir: str, mode: str,
                                 common: list[str], wanted: set[str] | None) -> list[Chain]:
    """The chains of `built`, each selectivity-regularised run's commands after those of the plain run it fine-tunes
    (seed003 §10; train_classifier.py --selectivity_reg): appended to the plain run's chain when the grid has it,
    else after that run's training, so that the plain network is trained before, and never by two chains at once."""
    chains = []
    for cell, chain in built.items():
        if not cell.selectivity_reg:
            chains.append(chain)
            continue
        plain = replace(cell, selectivity_reg=0.0)
        if plain in built:
            built[plain].commands += chain.commands
            continue
        if wanted is None or "train" in wanted:
            chain.commands[:0] = _chain(args, part, [], plain, workdir, mode, common, wanted, False).commands
        chains.append(chain)
    return chains


def _group_command(args, scheduled: contract.Stage, first: Cell, seeds: tuple[int, ...], workdir: str,
                   mode: str) -> Command:
    """A stage combining the seeds of first's (dataset, model) in `workdir`."""
    script, *rest = scheduled.argv(mode)
    common = ["--workdir", workdir, "--device", args.device]
    argv = [script, *first.identity(common, seeds=[str(s) for s in seeds]), "--data-root", args.data_root, *rest]
    group = first.run(workdir)
    return Command(scheduled.name, argv, scheduled.dir(group), contract.log_path(group.group, scheduled.name),
                   group.group)


@dataclass(frozen=True)
class Cell:
    """One run of the grid: dataset, model, seed and the run-defining corruption std, selectivity regulariser and
    twopoints training size (utils.rundir.run_variant)."""

    dataset: str
    model: str
    seed: int
    corruption: float = 0.0
    selectivity_reg: float = 0.0
    ptr: int = DEFAULT_PTR

    @property
    def variant(self) -> str:
        return run_variant(self.dataset, self.corruption, self.ptr, self.selectivity_reg)

    def run(self, workdir: str) -> RunDir:
        return RunDir.of(workdir, self.dataset, self.model, self.seed, self.variant)

    def identity(self, common: list[str], seeds: list[str] | None = None) -> list[str]:
        """The flags that name the run (or, with `seeds`, the group of those seeds), plus the workdir and device."""
        who = ["--seeds", *seeds] if seeds is not None else ["--seed", str(self.seed)]
        return ["--model-name", self.model, "--traindata", self.dataset, *who, *variant_flags(self.variant), *common]


def _chain(args, part: GridPart, stages: list[contract.Stage], cell: Cell, workdir: str, mode: str, common: list[str],
           wanted: set[str] | None, extract: bool) -> Chain:
    """train -> the part's per-run stages -> extract (unless group stages come first), for one run."""
    run = cell.run(workdir)
    ident = cell.identity(common)
    chain = Chain(str(run.root.relative_to(args.workdir)), contract.lock_path(run))
    if part.weights and not cell.selectivity_reg and (wanted is None or "train" in wanted):
        chain.commands.append(Command(contract.TRAIN, ["import_weights.py", *ident, "--weights", part.weights,
                                                       "--data-root", args.data_root], run.root,
                                      contract.log_path(run.root, contract.TRAIN)))
    elif wanted is None or "train" in wanted:
        # a regularised run fine-tunes the plain one by its own recipe (seed003 §10): no epochs or recipe of the part
        script, *scheduled_flags = contract.stage(contract.TRAIN).argv(mode)
        epochs = [] if cell.selectivity_reg else ["--epochs", str(part.epochs)]
        train = [script, *ident, *epochs, "--width", str(part.width), "--data-root", args.data_root, "--resume",
                 "--no-progress"]
        if part.recipe and not cell.selectivity_reg:
            train += ["--recipe", part.recipe]
        if part.save_epochs and not cell.selectivity_reg:
            train += ["--save-epochs", *map(str, part.save_epochs)]
        chain.commands.append(Command(contract.TRAIN, [*train, *scheduled_flags], run.root,
                                      contract.log_path(run.root, contract.TRAIN)))
    for scheduled in (s for s in stages if s.scope == "run"):
        demo_seeds = scheduled.schedule.demo_seeds
        if mode == "demo" and demo_seeds is not None and cell.seed not in part.seeds[:demo_seeds]:
            continue
        script, *rest = scheduled.argv(mode)
        argv = [script, *rest[:len(scheduled.subcommand)], *ident, "--data-root", args.data_root,
                *rest[len(scheduled.subcommand):]]
        if scheduled.schedule.ood:
            argv += ood_flags(args)
        chain.commands.append(Command(scheduled.name, argv, scheduled.dir(run),
                                      contract.log_path(run.root, scheduled.name)))
    if extract:
        chain.commands.append(_extract_command(cell, workdir, common))
    return chain


def ood_flags(args) -> list[str]:
    """The grid's OOD-set flags, as the seed000 stages take them (only those given)."""
    flags = ["--ood-sets", *args.ood_sets] if args.ood_sets else []
    for flag, value in (("--near-ood", args.near_ood), ("--validation-ood", args.validation_ood)):
        if value:
            flags += [flag, value]
    return flags


def _extract_command(cell: Cell, workdir: str, common: list[str]) -> Command:
    run = cell.run(workdir)
    extract = contract.stage("extract")
    return Command(extract.name, [extract.script, *cell.identity(common)], extract.dir(run),
                   contract.log_path(run.root, extract.name))


def run_group(chain: Chain) -> Path:
    """The <dataset>/<model> folder of a chain's run (its lock is <group>/<run>/logs/.lock)."""
    return chain.lock.parents[2]


def group_waits(chains: list[Chain], group_cmds: list[Command]) -> list[list[Chain | Command]]:
    """What each group command waits for, as both launchers schedule it: every chain and earlier group command of
    its group and of the groups it needs (a width sweep: every other width's), in the plan's order."""
    placed: dict[Path, list[Chain | Command]] = {}
    for chain in chains:
        placed.setdefault(run_group(chain), []).append(chain)
    waits = []
    for command in group_cmds:
        waits.append([task for group in (command.group, *command.needs) for task in placed.get(group, [])])
        placed.setdefault(command.group, []).append(command)
    return waits


def _union(sequences) -> tuple:
    out = []
    for items in sequences:
        out += [x for x in items if x not in out]
    return tuple(out)


