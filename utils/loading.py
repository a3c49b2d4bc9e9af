"""Rebuild a trained run for the measurement stages: config.json -> registry model -> checkpoint weights."""
from __future__ import annotations

import torch
from torch import nn

from utils.errors import ToolkitError
from utils.io import load_json, load_torch
from utils.rundir import CHECKPOINT_FORMAT, RunDir

CONFIG_SECTIONS = {  # the keys the stages read from each section of config.json (utils.rundir.write_config)
    "model": ("name", "outputs", "num_classes", "in_channels", "image_size", "width"),
    "data": ("name", "mean", "std"),
    "recipe": ("name", "loss"),
}


def load_config(run: RunDir) -> dict:
    """The run's config.json; a one-line error tells how to train the run when it is missing."""
    if not run.config.is_file():
        raise ToolkitError(f"no trained run at {run.root}; train it first with "
                           f"`python train_classifier.py --model-name {run.root.parent.name} "
                           f"--traindata {run.root.parent.parent.name} --seed {run.root.name[3:]}`")
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
    from models import build_model

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
