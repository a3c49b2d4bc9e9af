"""Run directories: where a run lives and its done marks (DESIGN.md, "The run directory").

    <workdir>/<dataset>/<model>[@<variant>]/rnd<seed>/
        config.json  train_log.csv  checkpoints/epoch_XXXX.pt  checkpoints/last.pt  checkpoints/best.pt
        <stage folders>/ ... _done.json         measurement stages and extract/ (pipeline.contract names them)
    <workdir>/<dataset>/<model>[@<variant>]/<group stage>/   stages that combine seeds (rainbow)
    <workdir>/report/                           figures, tables and report.md

`_done.json` records the flags a stage ran with, so that a rerun with the same flags is skipped unless `--force`;
the stages' own folders and files are named in pipeline/contract.py, nowhere else.
"""
from __future__ import annotations

import contextlib
import json
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from utils.errors import ToolkitError
from utils.io import load_json, save_json

if TYPE_CHECKING:
    import torch

DONE_FILE = "_done.json"
CHECKPOINT_FORMAT = "dimtoolkit-checkpoint-v1"


# The files training writes in a run's folder: the stage contract's "train" record (pipeline/contract.py) is made
# of these. They are spelled here, on the ground floor, because the run folder's own helpers below (write_config,
# saved_epochs, discard_checkpoints) read and write them.
TRAIN_FILES = {"config": "config.json", "log": "train_log.csv", "checkpoint": "checkpoints/epoch_{epoch:04d}.pt",
               "last": "checkpoints/last.pt", "best": "checkpoints/best.pt"}


@dataclass(frozen=True)
class RunDir:
    """Paths of one (dataset, model, seed) run."""

    root: Path

    @classmethod
    def of(cls, workdir: str | Path, dataset: str, model: str, seed: int, variant: str = "") -> RunDir:
        """<workdir>/<dataset>/<model>[@<variant>]/rnd<seed> (`run_variant` names the variant)."""
        folder = safe_name(model) + (f"{VARIANT_MARK}{variant}" if variant else "")
        return cls(Path(workdir) / safe_name(dataset) / folder / f"rnd{int(seed)}")

    @classmethod
    def from_args(cls, args, seed: int | None = None) -> RunDir:
        """The run named by --workdir, --traindata, --model-name, --seed (or `seed`) and the run-defining flags."""
        return cls.of(args.workdir, args.traindata, args.model_name, args.seed if seed is None else seed,
                      variant_of(args))

    @property
    def seed(self) -> int:
        return int(self.root.name[3:])

    @property
    def variant(self) -> str:
        """The run-defining suffix of its model folder ("sigma10", "si-0.1", ...; "" for none), see run_variant."""
        return split_variant(self.group.name)[1]

    def identity(self, seed: bool = True) -> list[str]:
        """The flags that name this run for every script (--model-name, --traindata, --seed, and the variant's
        --gaussian_corruption_std / --ptr / --selectivity_reg): the model and dataset as config.json records them
        when the run has one (a folder name is made folder-safe), else read from the folders."""
        recorded = {}
        if self.config.is_file():
            with contextlib.suppress(ToolkitError):
                recorded = load_json(self.config).get("flags") or {}
        model = recorded.get("model") or split_variant(self.group.name)[0]
        dataset = recorded.get("traindata") or self.group.parent.name
        who = ["--model-name", str(model), "--traindata", str(dataset)]
        return who + (["--seed", str(self.seed)] if seed else []) + variant_flags(self.variant)

    @property
    def config(self) -> Path:
        return self.root / TRAIN_FILES["config"]

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_FILES["log"]

    @property
    def checkpoints(self) -> Path:
        return self.last.parent

    @property
    def last(self) -> Path:
        return self.root / TRAIN_FILES["last"]

    @property
    def best(self) -> Path:
        return self.root / TRAIN_FILES["best"]

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.root / TRAIN_FILES["checkpoint"].format(epoch=int(epoch))

    def saved_epochs(self) -> list[int]:
        """Epochs with a kept checkpoint, ascending."""
        found = (re.fullmatch(r"epoch_(\d+)\.pt", p.name) for p in self.checkpoints.glob("epoch_*.pt"))
        return sorted(int(m.group(1)) for m in found if m)

    def discard_checkpoints(self) -> None:
        """Remove every checkpoint (--force retrains from scratch: an old epoch_XXXX.pt beyond the new run's last
        epoch, or its epoch 0 at another width, must not be taken for the new network's)."""
        for path in self.checkpoints.glob("*.pt"):
            path.unlink()

    @property
    def group(self) -> Path:
        """The <workdir>/<dataset>/<model>/ folder holding every seed of this run."""
        return self.root.parent


VARIANT_MARK = "@"
DEFAULT_PTR = 1024   # twopoints training points (seed004 §2.8)


def run_variant(dataset: str, corruption: float = 0.0, ptr: int = DEFAULT_PTR, selectivity_reg: float = 0.0) -> str:
    """The folder suffix of a run whose run-defining flags beyond dataset, model and seed differ from the defaults,
    so that such runs coexist in one workdir (a seed004 sigma sweep, seed003's regularised nets): "" by default,
    "sigma10" for a Gaussian corruption of 10 (seed004 §2.7), "ptr2048" for twopoints with 2048 training points,
    "si-0.1" for the class-selectivity regulariser at alpha -0.1 (seed003 §10), joined by "-".
    Width and recipe are not part of the path: a second width or recipe at the same path is refused by
    train_classifier.py (its run flags differ), never silently mixed."""
    parts = [f"sigma{corruption:g}"] if corruption else []
    if dataset == "twopoints" and ptr != DEFAULT_PTR:
        parts.append(f"ptr{ptr}")
    if selectivity_reg:
        parts.append(f"si{selectivity_reg:g}")
    return "-".join(parts)


def variant_of(args) -> str:
    """`run_variant` of parsed flags (utils.cli.add_run_flags)."""
    return run_variant(args.traindata, getattr(args, "gaussian_corruption_std", 0.0) or 0.0,
                       getattr(args, "ptr", DEFAULT_PTR), getattr(args, "selectivity_reg", 0.0) or 0.0)


def split_selectivity(variant: str) -> tuple[float, str]:
    """A variant -> (its selectivity regulariser alpha, the variant without it): "sigma10-si-0.1" -> (-0.1,
    "sigma10"), "" -> (0.0, "")."""
    found = re.search(r"(?:^|-)si(-?[0-9.]+(?:e[+-]?[0-9]+)?)$", variant)
    if found is None:
        return 0.0, variant
    return float(found.group(1)), variant[:found.start()]


def variant_flags(variant: str) -> list[str]:
    """The flags of a `run_variant` suffix: "sigma10-si-0.1" -> --gaussian_corruption_std 10 --selectivity_reg -0.1."""
    alpha, rest = split_selectivity(variant)
    flags = []
    for part in filter(None, rest.split("-")):
        if part.startswith("sigma"):
            flags += ["--gaussian_corruption_std", part[len("sigma"):]]
        elif part.startswith("ptr"):
            flags += ["--ptr", part[len("ptr"):]]
    return flags + (["--selectivity_reg", f"{alpha:g}"] if alpha else [])


def split_variant(folder: str) -> tuple[str, str]:
    """A model folder name -> (model folder, variant): "vgg11@sigma10" -> ("vgg11", "sigma10")."""
    model, _, variant = folder.partition(VARIANT_MARK)
    return model, variant


def safe_name(name: str) -> str:
    """A folder name for a dataset or model name (e.g. 'torchvision:resnet50' -> 'torchvision_resnet50')."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(name))


def git_commit() -> str:
    """The toolkit's current commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_config(run: RunDir, device: torch.device | str, **sections) -> Path:
    """Write the run's config.json: `sections` (flags, argv, model, data, recipe, ...; the keys pipeline.loaded
    reads) plus the versions, git commit, time and device, atomically. train_classifier.py and import_weights.py
    write every config through here."""
    import torch

    return save_json(run.config, {
        **sections,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "git_commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(device),
    })


def report_dir(workdir: str | Path) -> Path:
    return Path(workdir) / "report"


def seed_dirs(workdir: str | Path, dataset: str, model: str, variant: str = "") -> list[RunDir]:
    """Every rnd<seed> run of one (dataset, model folder), ordered by seed."""
    group = RunDir.of(workdir, dataset, model, 0, variant).group
    runs = [RunDir(p) for p in group.glob("rnd*") if _is_run_folder(p)]
    return sorted(runs, key=lambda run: run.seed)


def _is_run_folder(path: Path) -> bool:
    """True for a rnd<seed> run folder (the others under a (dataset, model) folder are group stages)."""
    return path.is_dir() and re.fullmatch(r"rnd\d+", path.name) is not None


def is_done(stage_dir: str | Path, flags: dict) -> bool:
    """True when `stage_dir/_done.json` exists and records exactly these flags."""
    marker = Path(stage_dir) / DONE_FILE
    if not marker.is_file():
        return False
    try:
        return load_json(marker).get("flags") == jsonable(flags)
    except ToolkitError:
        return False


def clear_done(stage_dir: str | Path) -> None:
    """Remove a stage's `_done.json`, if any, before its files are rewritten."""
    (Path(stage_dir) / DONE_FILE).unlink(missing_ok=True)


def invalidate_measurements(run: RunDir) -> None:
    """Remove the done marks of the run and of every stage measured on it, including the group stages that
    combine its seeds: its network is being replaced (--force), so each of them must be recomputed."""
    groups = [p for p in run.group.iterdir() if p.is_dir() and not _is_run_folder(p)] if run.group.is_dir() else []
    for folder in [run.root, *groups]:
        for marker in folder.rglob(DONE_FILE):
            marker.unlink(missing_ok=True)


def recorded_flags(args) -> dict:
    """A stage's parsed flags as its _done.json records them: all but --force, --device and --resume."""
    return {key: value for key, value in vars(args).items() if key not in ("force", "device", "resume")}


def mark_done(stage_dir: str | Path, flags: dict, **summary) -> Path:
    """Write `_done.json` last, after every other file of the stage is in place.

    It records the stage's flags and its command line (`argv`), which reproduce.py compares to skip work.
    """
    record = {"flags": jsonable(flags), "argv": sys.argv[1:], **summary}
    return save_json(Path(stage_dir) / DONE_FILE, record)


def jsonable(flags: dict) -> dict:
    """The flags as they read back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(flags, sort_keys=True, default=str))
