"""The tiny command line of every stage, on one resnet20 and two rainbow MLPs trained on digits, shared by the fault
tests (tests/stages/test_faults.py) and the contract test (tests/pipeline/test_contract.py). Each stage's script,
subcommand, folder-selecting flags and tiny sizes come from its pipeline.contract record (`tiny`)."""
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import contract
from utils.rundir import RunDir, report_dir

RUN = ["--model-name", "resnet20", "--traindata", "digits", "--device", "cpu"]
RAINBOW = ["--model-name", "rainbow_mlp", "--traindata", "digits", "--device", "cpu"]
SMALL = list(contract.SMALL)
NARROW = "narrow"   # the sub-workdir of the width sweep's narrower nets


def train_tiny_runs(workdir: Path, trained_run) -> Path:
    """A resnet20 (width 0.25, 1 epoch) and two rainbow MLPs on digits under `workdir`; two narrower rainbow MLPs
    (width 0.125) with their rainbow stage under <workdir>/narrow, for the width sweep."""
    import rainbow

    trained_run(workdir, "resnet20", "digits", 0, *contract.stage(contract.TRAIN).tiny)
    for seed in (0, 1):
        trained_run(workdir, "rainbow_mlp", "digits", seed, "--width", "0.25", "--epochs", "2",
                    "--recipe", "seed002_tutorial")
        trained_run(workdir / NARROW, "rainbow_mlp", "digits", seed, "--width", "0.125", "--epochs", "1",
                    "--recipe", "seed002_tutorial")
    assert rainbow.main([*RAINBOW, "--workdir", str(workdir / NARROW), "--num_samples", "1", "--clip_points", "3",
                         *SMALL]) == 0
    return workdir


@dataclass(frozen=True)
class Stage:
    """A stage's command line (script first), the contract stage it writes ("" for averaging: the report folder),
    the model of the run it measures and the stages it needs."""

    argv: list[str]
    stage: str
    model: str = "resnet20"
    needs: list[str] = field(default_factory=list)
    force: bool = True
    inputs: Callable[[Path], list[str]] | None = None  # writes input files under the workdir, returns their flags

    def command(self, workdir: Path) -> list[str]:
        """The full command line (script first) for `workdir`."""
        return [*self.argv, "--workdir", str(workdir), *(self.inputs(workdir) if self.inputs else [])]

    def main(self, workdir: Path, *extra: str) -> int:
        script, *argv = self.command(workdir)
        return importlib.import_module(Path(script).stem).main([*argv, *extra])

    def folder(self, workdir: Path) -> Path:
        if not self.stage:
            return report_dir(workdir)
        return contract.stage_dir(RunDir.of(workdir, "digits", self.model, 0), self.stage)


MLP = "rainbow_mlp"


def tiny(name: str, who: list[str] = RUN, *extra: str) -> list[str]:
    """The contract stage's command at its tiny sizes (script first) for the run named by `who`."""
    stage = contract.stage(name)
    return [stage.script, *stage.subcommand, *who, *stage.flags, *stage.tiny, *extra]


def csg_gates(workdir: Path) -> list[str]:
    """A CSG gate matrix (classes, filters) for the resnet20 at width 0.25 (16 filters at the classifier input)."""
    path = workdir / "csg_gates.npy"
    np.save(path, np.random.default_rng(0).random((10, 16)))
    return ["--csg-gates", str(path)]

def narrow_rainbow(workdir: Path) -> list[str]:
    """The narrower rainbow MLPs of train_tiny_runs, for the width sweep."""
    return ["--sweep_workdirs", str(workdir / NARROW)]


STAGES = {
    # the tiny run itself (train_tiny_runs trained it: this command finds it done, as a grid's rerun does)
    "train": Stage(tiny(contract.TRAIN, [*RUN, "--no-progress"]), contract.TRAIN, force=False),
    **{f"decompose {sub}": Stage(tiny(f"decompose-{sub}"), f"decompose-{sub}",
                                 needs=[] if sub == "indices" else ["decompose indices"])
       for sub in ("indices", "validate", "essential", "finetune")},
    # the CSG sets: indices from a gate matrix (--csg-gates, no --source), the other subcommands with --source csg
    "csg indices": Stage(["decompose.py", "indices", *RUN, *contract.stage("decompose-csg-indices").tiny],
                         "decompose-csg-indices", inputs=csg_gates),
    **{f"csg {sub}": Stage(tiny(f"decompose-csg-{sub}"), f"decompose-csg-{sub}", needs=["csg indices"])
       for sub in ("validate", "essential", "finetune")},
    "analyzing": Stage(tiny("analysis"), "analysis"),
    "features": Stage(tiny("features"), "features"),
    "kernels": Stage(tiny("kernels"), "kernels", needs=["analyzing"]),
    **{name.replace("-", " "): Stage(tiny(name), name) for name in ("stability", "stability-init",
                                                                     "stability-shuffled", "stability-fresh",
                                                                     "stability-shuffled2")},
    "laplacian": Stage(tiny("laplacian"), "laplacian"),
    "scale1d": Stage(tiny("scale1d"), "scale1d"),
    "rainbow": Stage(tiny("rainbow", RAINBOW), "rainbow", model=MLP),
    "rainbow width": Stage(tiny("rainbow-width", RAINBOW), "rainbow-width", model=MLP, needs=["rainbow"],
                           inputs=narrow_rainbow),
    "extractor": Stage(["extractor.py", *RUN], "extract",
                       needs=["analyzing", "features", "kernels", "stability", "stability init", "stability shuffled",
                              "stability fresh", "stability shuffled2", "laplacian", "scale1d", "decompose validate",
                              "decompose essential", "decompose finetune"]),
    "extractor rainbow": Stage(["extractor.py", *RAINBOW], "extract", model=MLP, needs=["rainbow"]),
    # one process: the fault test counts and kills at the writes of the process it runs (the parallel drawing is
    # compared with this in test_seed000_stages.py)
    "averaging": Stage(["averaging.py", "--jobs", "1"], "", needs=["extractor", "extractor rainbow"], force=False),
}


def ensure(workdir: Path, name: str) -> None:
    """Run a stage and its prerequisites to completion (each is skipped when already done)."""
    stage = STAGES[name]
    for need in stage.needs:
        ensure(workdir, need)
    assert stage.main(workdir) == 0
