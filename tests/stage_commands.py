"""The tiny command line of every stage, on one resnet20 and two rainbow MLPs trained on digits, shared by the fault
tests (tests/test_faults.py) and the contract test (tests/test_contract.py)."""
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import contract
from utils.rundir import RunDir, report_dir

RUN = ["--model-name", "resnet20", "--traindata", "digits", "--device", "cpu"]
RAINBOW = ["--model-name", "rainbow_mlp", "--traindata", "digits", "--device", "cpu"]
SMALL = ["--max-samples", "120", "--batchsize", "32"]
NARROW = "narrow"   # the sub-workdir of the width sweep's narrower nets


def train_tiny_runs(workdir: Path, trained_run) -> Path:
    """A resnet20 (width 0.25, 1 epoch) and two rainbow MLPs on digits under `workdir`; two narrower rainbow MLPs
    (width 0.125) with their rainbow stage under <workdir>/narrow, for the width sweep."""
    import rainbow

    trained_run(workdir, "resnet20", "digits", 0, "--width", "0.25", "--epochs", "1")
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


def csg_gates(workdir: Path) -> list[str]:
    """A CSG gate matrix (classes, filters) for the resnet20 at width 0.25 (16 filters at the classifier input)."""
    path = workdir / "csg_gates.npy"
    np.save(path, np.random.default_rng(0).random((10, 16)))
    return ["--csg-gates", str(path)]

def narrow_rainbow(workdir: Path) -> list[str]:
    """The narrower rainbow MLPs of train_tiny_runs, for the width sweep."""
    return ["--sweep_workdirs", str(workdir / NARROW)]


STAGES = {
    "decompose indices": Stage(["decompose.py", "indices", *RUN, "-k", "3", *SMALL], "decompose-indices"),
    "decompose validate": Stage(["decompose.py", "validate", *RUN, "-k", "3", *SMALL], "decompose-validate",
                                needs=["decompose indices"]),
    "decompose essential": Stage(["decompose.py", "essential", *RUN, "-k", "3", *SMALL], "decompose-essential",
                                 needs=["decompose indices"]),
    "decompose finetune": Stage(["decompose.py", "finetune", *RUN, "-k", "3", "--epochs", "2", *SMALL],
                                "decompose-finetune", needs=["decompose indices"]),
    "csg indices": Stage(["decompose.py", "indices", *RUN, "-k", "3", *SMALL], "decompose-csg-indices",
                         inputs=csg_gates),
    **{f"csg {sub}": Stage(["decompose.py", sub, *RUN, "-k", "3", "--source", "csg", *SMALL,
                            *(["--epochs", "1"] if sub == "finetune" else [])], f"decompose-csg-{sub}",
                           needs=["csg indices"]) for sub in ("validate", "essential", "finetune")},
    "analyzing": Stage(["analyzing.py", *RUN, "--ratios", "3", "--num_grams", "80", "--num_stability", "16", *SMALL],
                       "analysis"),
    "features": Stage(["features.py", *RUN, *SMALL], "features"),
    "kernels": Stage(["kernels.py", *RUN, *SMALL], "kernels", needs=["analyzing"]),
    "stability": Stage(["stability.py", *RUN, "--by_layer", "--P", "40"], "stability"),
    "stability init": Stage(["stability.py", *RUN, "--by_layer", "--P", "40", "--init"], "stability-init"),
    "stability shuffled": Stage(["stability.py", *RUN, "--by_layer", "--P", "40", "--shuffle_channels"],
                                "stability-shuffled"),
    "stability fresh": Stage(["stability.py", *RUN, "--P", "40", "--init", "fresh"], "stability-fresh"),
    "stability shuffled2": Stage(["stability.py", *RUN, "--P", "40", "--shuffle_channels", "2"],
                                 "stability-shuffled2"),
    "laplacian": Stage(["stability.py", *RUN, "--laplacian"], "laplacian"),
    "scale1d": Stage(["stability.py", *RUN, "--scale1d", "--scale1d_channels", "16", "--scale1d_length", "32",
                      "--scale1d_xi", "8", "--scale1d_ptr", "64", "--scale1d_epochs", "2"], "scale1d"),
    "rainbow": Stage(["rainbow.py", *RAINBOW, "--num_samples", "2", "--clip_points", "3", "--ks_ranks", "1", "10"],
                     "rainbow", model=MLP),
    "rainbow width": Stage(["rainbow.py", *RAINBOW, *SMALL], "rainbow-width", model=MLP, needs=["rainbow"],
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
