"""One loaded run for every measurement stage: config.json -> registry model -> checkpoint weights, with its
analysis layers, its input normalisation, predictions (hinge head included) and batches of a split.

    loaded = LoadedRun.from_args(args, device=device)       # --workdir/--traindata/--model-name/--seed, checked
    for start, x, labels in loaded.batches(loaded.dataset("test", args.data_root), 500):
        logits = loaded.model(x)                             # x: normalised, on the device, in the model's dtype
    loaded.accuracy(logits, labels)

"Layer l" is the input of the l-th analysis weight layer (DESIGN.md "Layers"; `loaded.layers`, 0-based), found by
`models.layers.analysis_layers` from the model's own input shape.

A weights file of a registry architecture that was not trained here (akamaster's ResNet-20, torchvision's weights)
is loaded the same way with `LoadedRun.from_weights` (decompose.py --weights, import_weights.py): its config holds
the normalisation the file was trained with (`checkpoint_normalization`), unless --normalization asks for another,
which is then stated on stderr (`choose_normalization`).
"""
from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from datasets import build_dataset
from datasets.base import denormalize, normalize
from datasets.normalization import normalization_for
from datasets.registry import GREY_SETS, is_folder_dataset
from measures.classification import accuracy, predictions
from models import build_model
from models.layers import analysis_layers
from models.weights import load_weights
from utils.errors import ToolkitError
from utils.io import load_json, load_torch
from utils.rundir import CHECKPOINT_FORMAT, RunDir

CONFIG_SECTIONS = {  # the keys the stages read from each section of config.json (utils.rundir.write_config)
    "model": ("name", "outputs", "num_classes", "in_channels", "image_size", "width"),
    "data": ("name", "mean", "std"),
    "recipe": ("name", "loss"),
}
IMPORTED_RECIPE = {"name": "imported", "loss": "cross_entropy"}   # the recipe section of a weights file's config
NORMALIZATIONS = ("dataset", "imagenet")   # --normalization: the dataset's default statistics, or ImageNet's
WEIGHTS_EPOCH = -1                         # LoadedRun.epoch of a weights file: no epoch of a run of ours


def load_config(run: RunDir) -> dict:
    """The run's config.json; a one-line error tells how to train the run when it is missing."""
    if not run.config.is_file():
        raise ToolkitError(f"no trained run at {run.root}; train it first with "
                           f"`python train_classifier.py {' '.join(run.identity())}`")
    config = load_json(run.config, required=CONFIG_SECTIONS)
    for section, keys in CONFIG_SECTIONS.items():
        found = config[section]
        missing = [key for key in keys if key not in found] if isinstance(found, dict) else list(keys)
        if missing:
            raise ToolkitError(f"{run.config}: section {section!r} lacks {missing}; it was not written by this "
                               "toolkit (train the run again, or recreate it with import_weights.py)")
    return config


def checkpoint_path(run: RunDir, epoch: int | None = None, best: bool = False):
    """The checkpoint of `epoch`, of the best test accuracy, or of the last epoch trained."""
    if best:
        path = run.best
    elif epoch is not None:
        path = run.epoch_checkpoint(epoch)
    else:
        epochs = [e for e in run.saved_epochs() if e > 0]
        if not epochs:
            raise ToolkitError(f"{run.root} has no trained checkpoint yet; finish train_classifier.py first")
        path = run.epoch_checkpoint(epochs[-1])
    if not path.is_file():
        kept = ", ".join(str(e) for e in run.saved_epochs()) or "none"
        raise ToolkitError(f"missing checkpoint {path} (epochs kept: {kept}); pick --start_epoch among them")
    return path


def build_run_model(config: dict) -> nn.Module:
    """A freshly initialised model of the run's architecture (its output size included)."""
    spec = config["model"]
    return build_model(spec["name"], num_classes=spec["outputs"], in_channels=spec["in_channels"],
                       width=spec["width"], image_size=spec["image_size"])


def load_run_model(run: RunDir, epoch: int | None = None, best: bool = False,
                   device: torch.device | str = "cpu") -> tuple[nn.Module, dict, int]:
    """(model in eval mode on `device`, config, epoch) for a trained run; weights loaded with weights_only."""
    config = load_config(run)
    path = checkpoint_path(run, epoch, best)
    ckpt = load_torch(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ToolkitError(f"{path} was not written by train_classifier.py")
    model = build_run_model(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ToolkitError(f"{path} does not match the architecture in {run.config}: "
                           f"{str(err).splitlines()[0]}") from err
    return model.to(device).eval(), config, int(ckpt["epoch"])


def checkpoint_normalization(checkpoint: object) -> str:
    """The normalisation (a NORMALIZATIONS name) a checkpoint file's content says its weights were trained with.

    akamaster's ResNet files, {"best_prec1", "state_dict"}, were trained on CIFAR-10 normalised with ImageNet
    statistics (seed003 §3): "imagenet". Any other layout says nothing: "dataset", the dataset's default
    (datasets.normalization).
    """
    if isinstance(checkpoint, dict) and "best_prec1" in checkpoint and isinstance(checkpoint.get("state_dict"), dict):
        return "imagenet"
    return "dataset"


def normalization_stats(name: str, data) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a NORMALIZATIONS name for a split `data` of a dataset: the dataset's own statistics
    (`data.mean/std`) for "dataset", ImageNet's for "imagenet" (twopoints is never normalised)."""
    if name not in NORMALIZATIONS:
        raise ToolkitError(f"unknown normalisation {name!r}; use one of {', '.join(NORMALIZATIONS)}")
    return (tuple(data.mean), tuple(data.std)) if name == "dataset" else normalization_for(name, data.name)


def choose_normalization(asked: str | None, recorded: tuple, data, where: str) -> tuple[list, list]:
    """(mean, std) to feed a network with: `recorded`, the statistics its weights were trained with (as `where`
    records them), unless --normalization `asked` names other statistics (of the split `data`); those are then
    used and one line on stderr says so, so that a mismatch is never applied silently."""
    recorded = ([float(v) for v in recorded[0]], [float(v) for v in recorded[1]])
    if asked is None:
        return recorded
    mean, std = ([float(v) for v in stats] for stats in normalization_stats(asked, data))
    same = len(mean) == len(recorded[0]) and all(
        math.isclose(a, b, rel_tol=1e-6) for a, b in zip([*mean, *std], [*recorded[0], *recorded[1]]))
    if not same:
        print(f"note: --normalization {asked} (mean {_stats(mean)}, std {_stats(std)}) differs from what {where} "
              f"records (mean {_stats(recorded[0])}, std {_stats(recorded[1])}); using {asked} as asked",
              file=sys.stderr)
    return mean, std


def _stats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def weights_config(model_name: str, test, num_classes: int | None = None, width: float | None = None,
                   mean=None, std=None) -> dict:
    """The config.json sections (model, data, recipe) of a weights file of a registry architecture for the
    dataset whose test split is `test`: num_classes from the dataset unless given, the channels and image size of
    its images, width 1 unless given, the cross-entropy IMPORTED_RECIPE, and data mean/std as given (default: the
    dataset's own)."""
    num_classes = test.num_classes if num_classes is None else int(num_classes)
    images, _ = test.take([0])
    _, channels, height, _ = images.shape
    return {"model": {"name": model_name, "outputs": num_classes, "num_classes": num_classes,
                      "in_channels": channels, "image_size": height, "width": 1.0 if width is None else width},
            "data": {"name": test.name, "mean": list(test.mean if mean is None else mean),
                     "std": list(test.std if std is None else std)},
            "recipe": dict(IMPORTED_RECIPE)}


def check_run_flags(args, config: dict, where: RunDir) -> None:
    """--num_classes and --width, when given, must agree with the run's config: a one-line error otherwise
    (a stage measures the trained network as it is; these flags only locate and check it)."""
    spec = config["model"]
    for flag, given, trained in (("--num_classes", getattr(args, "num_classes", None), spec["num_classes"]),
                                 ("--width", getattr(args, "width", None), spec["width"])):
        if given is not None and float(given) != float(trained):
            raise ToolkitError(f"{flag} {given:g} does not match the run at {where.root}, trained with "
                               f"{flag[2:]} {trained:g}; drop {flag} or point to another run")


@dataclass
class LoadedRun:
    """A run's network in eval mode on its device, with everything a stage needs to feed and read it."""

    run: RunDir
    model: nn.Module
    config: dict
    epoch: int
    checkpoint: str                 # "epoch" (a kept epoch), "best" (best.pt), "init" (epoch 0) or "weights"
                                    # (a weights file, `from_weights`; epoch WEIGHTS_EPOCH)
    device: torch.device
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, run: RunDir, epoch: int | None = None, best: bool = False, init: bool = False,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedRun:
        """The checkpoint of `epoch` (default the last trained), best.pt with `best`, epoch 0 with `init`."""
        model, config, loaded_epoch = load_run_model(run, 0 if init else epoch, best=best and not init,
                                                     device=device)
        checkpoint = "init" if init else "best" if best else "epoch"
        return cls(run, model.to(dtype), config, loaded_epoch, checkpoint, torch.device(device))

    @classmethod
    def from_args(cls, args, device: torch.device | str = "cpu", **options) -> LoadedRun:
        """The run named by --workdir/--traindata/--model-name/--seed at --start_epoch, its flags checked."""
        run = RunDir.from_args(args)
        check_run_flags(args, load_config(run), run)
        options.setdefault("epoch", getattr(args, "start_epoch", None))
        return cls.open(run, device=device, **options)

    @classmethod
    def from_weights(cls, run: RunDir, path, model_name: str, dataset: str, data_root: str = "data",
                     num_classes: int | None = None, width: float | None = None, normalization: str | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedRun:
        """A weights file (any layout models.weights.load_weights reads) in the registry architecture
        `model_name`, as a LoadedRun whose outputs go to `run`: its config is `weights_config` with the
        normalisation the file was trained with (`checkpoint_normalization`) or, with `normalization`, the one
        asked for (`choose_normalization` states a mismatch); epoch WEIGHTS_EPOCH, checkpoint "weights".
        extras["normalization"] names the statistics used ("dataset" or "imagenet")."""
        test = build_dataset(dataset, "test", data_root)
        trained = checkpoint_normalization(load_torch(path))
        mean, std = choose_normalization(normalization, normalization_stats(trained, test), test,
                                         f"the layout of {path} ({trained} statistics)")
        config = weights_config(model_name, test, num_classes, width, mean, std)
        model = load_weights(build_run_model(config), path)
        return cls(run, model.to(device, dtype).eval(), config, WEIGHTS_EPOCH, "weights", torch.device(device),
                   extras={"normalization": normalization or trained})

    # ---- what the run is ---------------------------------------------------------------------------------------
    @property
    def dataset_name(self) -> str:
        return self.config["data"]["name"]

    @property
    def num_classes(self) -> int:
        return int(self.config["model"]["num_classes"])

    @property
    def loss(self) -> str:
        return self.config["recipe"]["loss"]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def example_input(self) -> torch.Tensor:
        """One zero image of the run's input shape, on the device, in the model's dtype."""
        spec = self.config["model"]
        return torch.zeros(1, spec["in_channels"], spec["image_size"], spec["image_size"], dtype=self.dtype,
                           device=self.device)

    @cached_property
    def _analysis(self) -> tuple[list[str], list[nn.Module]]:
        return analysis_layers(self.model, self.example_input())

    @property
    def layer_names(self) -> list[str]:
        """Qualified names of the analysis weight layers, in forward order (layer l = the input of the l-th)."""
        return self._analysis[0]

    @property
    def layers(self) -> list[nn.Module]:
        return self._analysis[1]

    def layers_of(self, model: nn.Module) -> list[nn.Module]:
        """The analysis layers of a copy of the model (the same qualified names)."""
        modules = dict(model.named_modules())
        return [modules[name] for name in self.layer_names]

    # ---- data in, predictions out ------------------------------------------------------------------------------
    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel-space images -> normalised network inputs on the device in the model's dtype (the run's own
        per-channel mean and std, config.json "data")."""
        data = self.config["data"]
        return normalize(images.to(self.device, self.dtype), data["mean"], data["std"])

    def pixels(self, inputs: torch.Tensor) -> torch.Tensor:
        """The inverse of `inputs`: normalised inputs -> pixel space."""
        data = self.config["data"]
        return denormalize(inputs, data["mean"], data["std"])

    def predictions(self, output: torch.Tensor) -> torch.Tensor:
        return predictions(output, self.loss)

    def accuracy(self, output: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy(output, labels, self.loss)

    def dataset(self, split: str, data_root: str = "data", name: str | None = None, squash: bool = False):
        """A split of the run's dataset (or of `name`, e.g. an OOD set) as the network sees it: grey sets with the
        run's channel count, folder datasets with the validation transform (no augmentation; `squash`: seed003's
        Resize((224, 224)) instead of Resize(256) + CenterCrop(224), seed003 §11), and twopoints as the run was
        trained on it (its --ptr sets the test size, its seed the train subset; config.json "flags")."""
        name = name or self.dataset_name
        options = {"channels": 1} if self.config["model"]["in_channels"] == 1 and name in GREY_SETS else {}
        if squash:
            if not is_folder_dataset(name):
                raise ToolkitError(f"the squash resize is a transform of streamed image folders (imagenet, "
                                   f"imagefolder:PATH); {name} is held in memory at its own size")
            options["squash"] = True
        if name == "twopoints" == self.dataset_name:
            flags = self.config.get("flags", {})
            options.update({key: flags[key] for key in ("ptr", "seed") if flags.get(key) is not None})
        return build_dataset(name, split, data_root, augment=False, **options)

    def batches(self, data, batch_size: int, max_samples: int | None = None, desc: str | None = None):
        """(first index, normalised inputs, labels on the device) per batch, in order, with a progress bar; `data`
        moves each batch to the device (datasets.base.batch_to: a streamed folder's batches pinned and copied
        without blocking on a CUDA device)."""
        count = len(data) if max_samples is None else min(len(data), max_samples)
        start = 0
        for images, labels in tqdm(data.batches(batch_size, max_samples, device=self.device), desc=desc,
                                   total=-(-count // batch_size), unit="batch", disable=None, leave=False):
            yield start, self.inputs(images), labels
            start += len(labels)

    def logged_test_accuracy(self, epoch: int | None = None) -> float | None:
        """The test accuracy train_log.csv records for `epoch` (default the loaded one; None when not listed)."""
        epoch = self.epoch if epoch is None else epoch
        if not self.run.train_log.is_file():
            return None
        with self.run.train_log.open() as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) == epoch]
        return float(rows[0]["test_acc"]) if rows else None
