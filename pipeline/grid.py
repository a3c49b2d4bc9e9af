"""The grid catalogue, as data: the stages a grid schedules with their demo and published flags, and the parts
(datasets x models x seeds trained one way) of each paper's demo and published grid.

    from pipeline.grid import DEMO_GRIDS, FULL_GRIDS, STAGES
    FULL_GRIDS["000"].models          # ('vgg13', 'vgg16', 'resnet18', 'resnet34')

Each stage's flags live in its pipeline.contract record (Schedule); reproduce.py reads this through pipeline.plan;
nothing here runs anything.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipeline import contract
from utils.rundir import DEFAULT_PTR

# the stages reproduce.py schedules, in the contract's order (each declared once, with its Schedule, there)
STAGES: tuple[contract.Stage, ...] = tuple(s for s in contract.STAGES.values()
                                           if s.schedule is not None and s.name != contract.TRAIN)


@dataclass(frozen=True)
class GridPart:
    """One block of a grid: datasets x models x seeds trained one way, then measured by the stages of `papers`."""

    traindata: tuple[str, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    width: float
    recipe: str | None
    papers: tuple[str, ...]
    corruptions: tuple[float, ...] = (0.0,)   # seed004 §2.7: one run per Gaussian corruption std (a sigma sweep)
    stages: tuple[str, ...] | None = None     # the stages of `papers` this part runs (None: all of them)
    # A run's path names neither its recipe nor its width (utils.rundir.run_variant), so a part that trains the
    # runs of another part differently lives in its own sub-workdir <--workdir>/<workdir> ("": --workdir itself).
    workdir: str = ""
    save_epochs: tuple[int, ...] = ()          # train_classifier.py --save-epochs (seed002 §5.6 training dynamics)
    widths: tuple[float, ...] = ()             # a width sweep: the part trained at each width (`width` unused), each
                                               # in <workdir>/width<s>, then the sweep stages (rainbow-width)
    selectivity_regs: tuple[float, ...] = (0.0,)   # seed003 §10: one run per selectivity regulariser alpha
    note: str = ""                             # what --full says of the part (its nets, the report's label)
    ptrs: tuple[int, ...] = (DEFAULT_PTR,)         # seed004 §2.8: one twopoints run per training size (<model>@ptr<n>)
    weights: str = ""                          # a weights file imported (import_weights.py) instead of training

    def training(self) -> tuple:
        return self.epochs, self.width, self.recipe, self.save_epochs

    def members(self, root: str) -> list[tuple[str, GridPart]]:
        """(workdir, part trained at one width) for each width of a sweep, ascending; [(workdir, self)] otherwise.
        The workdir of a part in --workdir itself is `root` as given (commands, and their _done.json, unchanged)."""
        here = str(Path(root) / self.workdir) if self.workdir else root
        if not self.widths:
            return [(here, self)]
        return [(str(Path(here) / f"width{s:g}"), replace(self, width=s, widths=())) for s in sorted(self.widths)]


SEED004_SIGMAS = (0.0, 1e-2, 1e-1, 1.0, 10.0, 30.0, 100.0)   # seed004 §1 Fig. 1/10: training corruption stds
TWOPOINTS_NETS = ("vgg11_nobn", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "alexnet",
                  "lenet", "efficientnet_b0")                # seed004 §1 Fig. 8
SEED002_EPOCHS = (0, 1, 2, 5, 10, 20, 50, 100)               # seed002 §4: the kept checkpoints
# The published grids (specs: seed000 §3-§4, seed004 §1 and §3, seed003 §3, seed002 §4); a paper may have parts.
FULL_GRIDS = {
    "000": GridPart(("cifar10", "cifar100", "svhn", "mnist"), ("vgg13", "vgg16", "resnet18", "resnet34"),
                    tuple(range(10)), 1200, 1.0, "seed000", ("000",),
                    note="seed000 set: 4 ID sets x VGG13/16, ResNet-18/34 x 10 seeds, 1200 epochs, every threshold, "
                         "10,000 Gram and noise samples (report: paper; rows chosen on the validation OOD set and "
                         "scikit-learn's metrics: extra)"),
    "004": (  # seed004 README (experiments.md): Fig. 1/10 (CNNs, FCNs), Fig. 3/11, Fig. 5-9 (twopoints: ptr 1024, 2048)
        GridPart(("cifar10",), ("vgg11_nobn", "vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "alexnet",
                                "lenet", "efficientnet_b0"), tuple(range(4)), 250, 1.0, "seed004", ("004",),
                 SEED004_SIGMAS, ("stability", "stability-init", "stability-shuffled", "laplacian"),
                 note="seed004 CNN set: 10 CNNs x 7 training corruptions x 4 seeds, by node, init by node (report: "
                      "paper; the channel-mean curves: extra)"),
        GridPart(("cifar10",), ("fcn2", "fcn4", "fcn6"), tuple(range(11)), 250, 1.0, "seed004_fcn", ("004",),
                 SEED004_SIGMAS, ("stability", "stability-init"),
                 note="seed004 FCN set: 3 FCNs x 7 training corruptions x 11 seeds (report: paper)"),
        GridPart(("twopoints",), TWOPOINTS_NETS, tuple(range(10)), 300, 1.0, "twopoints", ("004",),
                 note="seed004 twopoints set: 11 nets x 10 seeds at ptr 1024, and the 1-D model of Fig. 7 with the "
                      "original's stopping rule (report: paper)"),
        # Fig. 8's second training size, in <model>@ptr2048/ (the 1-D model of Fig. 7 runs with the ptr-1024 part)
        GridPart(("twopoints",), TWOPOINTS_NETS, tuple(range(10)), 300, 1.0, "twopoints", ("004",),
                 stages=("stability", "stability-init", "stability-shuffled", "laplacian"), ptrs=(2048,),
                 note="seed004 twopoints set at ptr 2048, Fig. 8's second training size (report: paper)"),
    ),
    "003": GridPart(("cifar10",), ("resnet20",), (0,), 200, 1.0, "akamaster", ("003",),
                    note="seed003 set: our own ResNet-20 trained by akamaster's recipe (report: paper's protocol on "
                         "another network; the paper's numbers are akamaster's checkpoint: --akamaster-weights)"),
    "002": (  # seed002 §4 "Experiment sets"
        # 50 seeds of the J8 net ("gaussiantest", wd 1e-4): alignment, C_j, rainbow nets (+ retrained), clipping
        GridPart(("cifar10",), ("scattering",), tuple(range(50)), 150, 1.0, "seed002", ("002",),
                 note="seed002 J8 set: 50 'scattering' nets with N ('Fw Std Pr N'), wd 1e-4 (report: paper)"),
        # 50 seeds of the 4-block net without N (scattering4), nowd, at s = 1: covariance convergence over M = 1 / 10
        # / 50 at j = 2 (§2, §6: ref 80.94%) and the training dynamics of net 1 alone, its epochs kept (§5.6:
        # a_r(t), c_r(t), num_exps=1; issue 28 items 7-8)
        GridPart(("cifar10",), ("scattering4",), tuple(range(50)), 150, 1.0, "seed002_nowd", ("002",),
                 workdir="convergence", save_epochs=SEED002_EPOCHS,
                 note="seed002 convergence set: 50 'scattering4' 4-block nets WITHOUT N ('Fw Std Pr', nowd) at s = 1, "
                      "C_j from M = 1 / 10 / 50 and net 1's training dynamics (report: paper)"),
        # 10 seeds x 9 widths of the 4-block scale-width nets, nowd (covariance convergence against width, ref 2^5)
        GridPart(("cifar10",), ("scattering4",), tuple(range(10)), 150, 1.0, "seed002_nowd", ("002",),
                 workdir="scalewidth", widths=tuple(2.0 ** k for k in range(-3, 6)),
                 note="seed002 scale-width set: 10 'scattering4' 4-block nets WITHOUT N ('Fw Std Pr', nowd) per "
                      "width s = 2^-3..2^5 (report: paper)"),
        # J8 plain and skip at s = 2^-3..2^3 (resampling and alignment against width, ref 2^3): the paper trains
        # 1 net per width, the rainbow stage here needs 2 seeds
        GridPart(("cifar10",), ("scattering", "scattering_skip"), (0, 1), 150, 1.0, "seed002", ("002",),
                 workdir="j8width", widths=tuple(2.0 ** k for k in range(-3, 4)),
                 note="seed002 J8 width set: 'scattering' and 'scattering_skip' (with N) at s = 2^-3..2^3, 2 seeds "
                      "per width where the paper trains 1 (report: paper, M = 2 beside the paper's M = 1)"),
    ),
}
# seed003 §1-§3: the paper's numbers came from akamaster's ResNet-20 checkpoint; reproduce.py --akamaster-weights FILE
# imports it (import_weights.py: ImageNet statistics, as it was trained) into its own sub-workdir and measures it
# with the 003 stages beside the nets trained here
AKAMASTER_FILE = "resnet20-12fca82f.th"
AKAMASTER = GridPart(("cifar10",), ("resnet20",), (0,), 0, 1.0, None, ("003",), workdir="akamaster")
# What a published grid leaves out, and why (said by --full and --help).
FULL_GRID_GAPS = {
    "002": "seed002's ResNet-18 ImageNet widths (s = 2^-3..2^3, spec §4) are left out: train_classifier.py and "
           "rainbow.py need in-memory datasets (ImageNet is streamed from folders), and the paper's ResNet-18 variant "
           "(no biases, non-affine BN after ReLU) is not a registry model",
}
# One paper's demo on the bundled digits (a few minutes on 2 CPU cores); seed003's is its own resnet20,
# seed002's the tutorial MLP and CNN.
DEMO_GRIDS = {
    "000": GridPart(("digits",), ("resnet18",), (0, 1), 5, 0.25, None, ("000",)),
    "004": GridPart(("digits",), ("resnet18",), (0, 1), 5, 0.25, "seed004", ("004",), (0.0, 10.0, 30.0)),
    "003": GridPart(("digits",), ("resnet20",), (0, 1), 15, 1.0, None, ("003",)),
    "002": GridPart(("digits",), ("rainbow_mlp", "rainbow_cnn"), (0, 1, 2, 3, 4), 5, 1.0, "seed002_tutorial",
                    ("002",)),
}
# The default demo (`python reproduce.py`): every paper in about 5 minutes, so one ResNet-18 serves 000, 004, 003
# and seed002 takes the MLP only.
ALL_PAPERS_DEMO = (replace(DEMO_GRIDS["000"], papers=("000", "004", "003")),
                   replace(DEMO_GRIDS["002"], models=("rainbow_mlp",)))
PAPER_ORDER = ("000", "004", "003", "002")


