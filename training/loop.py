"""The training loop: data on the device, batched augmentation, exact resume, SIGTERM-safe checkpoints.

Resume is exact on CPU: `last.pt` holds the model, the optimiser, the data generator (epoch order and
augmentation draws), the global torch RNG (dropout) and, when saved mid-epoch on SIGTERM, the epoch's
permutation and the batch to continue from. The learning rate is a closed-form function of the step
(training/schedule.py), so there is no scheduler state to restore.

Speed options (`Speed`): bf16 autocast of the forward pass and the loss (weights, gradients and optimiser state
stay float32) and channels_last memory layout for convolutions, both part of a run's flags, so a run never
resumes with another setting; `compile`, torch.compile of the forward passes, which like the device is an
execution choice outside the flags (checkpoints hold the plain module's state dict either way); and
`deterministic` (train_classifier.py --deterministic, also an execution choice): global average pooling as a plain
mean, beside utils.device.deterministic_algorithms. All off by default.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from datasets.augment import random_crop_flip, random_erasing
from datasets.base import normalize
from datasets.perturbations import gaussian_corruption
from measures.classification import evaluate as evaluate_outputs
from measures.classification import predictions
from models.layers import deterministic_pooling
from training.recipes import Recipe
from training.schedule import learning_rate
from training.selectivity import SelectivityRegularizer
from utils.cli import EXIT_INTERRUPTED
from utils.device import draw_device
from utils.errors import ToolkitError
from utils.io import atomic_write, save_torch
from utils.rundir import CHECKPOINT_FORMAT, RunDir

EVAL_BATCH = 1000
LOG_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds")


@dataclass(frozen=True)
class Speed:
    """How the forward passes run: `bf16` autocast, the `channels_last` layout, `compile` (module docstring)."""

    bf16: bool = False
    channels_last: bool = False
    compile: str = ""  # a torch.compile backend ("inductor", "aot_eager", ...); "" runs the module as it is
    deterministic: bool = False   # global average pooling as a plain mean (its CUDA backward has no atomics)

    def prepare(self, model: nn.Module) -> nn.Module:
        if self.deterministic:
            deterministic_pooling(model)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def forward(self, model: nn.Module) -> nn.Module:
        """The callable that runs `model`: itself, or its torch.compile wrapper sharing the same parameters."""
        return torch.compile(model, backend=self.compile) if self.compile else model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)


@dataclass
class TrainData:
    """Train and test tensors on the training device, in pixel space, with their normalisation: per-channel
    `mean` and `std`, or `inputs`, a function from pixel space to network inputs (e.g. a stage's
    `pipeline.loaded.LoadedRun.inputs`, when a trained network is trained further)."""

    train_x: torch.Tensor  # (N, C, H, W)
    train_y: torch.Tensor  # (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor | None = None     # (1, C, 1, 1)
    std: torch.Tensor | None = None
    inputs: Callable[[torch.Tensor], torch.Tensor] | None = None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.inputs(x) if self.inputs is not None else normalize(x, self.mean, self.std)


@dataclass
class TrainState:
    """Everything `last.pt` needs beyond the model and optimiser."""

    epoch: int = 0                 # completed epochs
    batch: int = 0                 # next batch of the epoch in progress (mid-epoch SIGTERM save)
    perm: torch.Tensor | None = None
    partial: dict = field(default_factory=dict)  # running sums of the epoch in progress
    best_acc: float = -1.0
    log: list = field(default_factory=list)


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD or Adam; seed004 recipes exempt biases and BN parameters (dim == 1) from weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.wdecay_on_all:
        groups = [{"params": params, "weight_decay": recipe.wdecay}]
    else:
        groups = [{"params": [p for p in params if p.dim() != 1], "weight_decay": recipe.wdecay},
                  {"params": [p for p in params if p.dim() == 1], "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr)
    raise ToolkitError(f"unknown optimizer {recipe.optimizer!r}")


def classification_loss(output: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Cross-entropy, or the hinge loss mean(relu(1 - y out)) with y = 2 label - 1 (seed004 §3)."""
    if kind == "hinge":
        signs = labels.to(output.dtype) * 2 - 1
        return F.relu(1 - output.reshape(-1) * signs).mean()
    return F.cross_entropy(output, labels)


def evaluate(model: nn.Module, data: TrainData, recipe: Recipe, corruption_std: float = 0.0,
             generator: torch.Generator | None = None, speed: Speed = Speed()) -> float:
    """Test accuracy in eval mode (corrupted by fresh Gaussian noise when corruption_std > 0, seed004 §2.7), by
    measures.classification.evaluate."""
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = data.normalize(x)
        if corruption_std > 0:
            x = gaussian_corruption(x, corruption_std, generator)
        with speed.autocast(x.device):
            return model(speed.inputs(x))

    batches = ((data.test_x[start:start + EVAL_BATCH], data.test_y[start:start + EVAL_BATCH])
               for start in range(0, len(data.test_x), EVAL_BATCH))
    return evaluate_outputs(forward, batches, recipe.loss, k=1)[0]


class Trainer:
    """Trains one run into its RunDir; `run()` resumes from `state` and returns the final test accuracy.

    With `run=None` the trainer writes nothing (no checkpoints, no log): `train_epoch()` trains and evaluates in
    memory, for stages that train a copy of a trained network further (decompose.py finetune).
    """

    def __init__(self, model: nn.Module, data: TrainData, recipe: Recipe, run: RunDir | None,
                 generator: torch.Generator,
                 save_every: int = 0, corruption_std: float = 0.0, progress: bool = True, speed: Speed = Speed(),
                 save_epochs: tuple[int, ...] = (), regularizer: SelectivityRegularizer | None = None):
        self.speed = speed
        self.regularizer = regularizer   # adds its penalty to every step's loss (training.selectivity)
        self.model = speed.prepare(model)
        self.forward = speed.forward(self.model)
        self.data = data
        self.recipe = recipe
        self.run_dir = run
        self.generator = generator
        self.save_every = save_every
        self.save_epochs = set(save_epochs)     # kept besides every save_every-th, the first and the last
        self.corruption_std = corruption_std
        self.progress = progress
        self.optimizer = build_optimizer(model, recipe)
        self.state = TrainState()
        self.iters_per_epoch = math.ceil(len(data.train_x) / recipe.batchsize)
        self._stop_requested = False

    # ---- checkpoints -------------------------------------------------------------------------------
    def checkpoint_dict(self) -> dict:
        state = self.state
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": state.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "batch": state.batch,
            "perm": state.perm,
            "partial": state.partial,
            "best_acc": state.best_acc,
            "log": state.log,
        }

    def load_checkpoint_dict(self, ckpt: dict) -> None:
        """Restore a `last.pt` written by `checkpoint_dict` (after `utils.io.load_torch`)."""
        if ckpt.get("format") != CHECKPOINT_FORMAT or "optimizer" not in ckpt:
            raise ToolkitError("the checkpoint to resume from was not written by train_classifier.py; use --force")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        try:
            self.generator.set_state(ckpt["generator"])
        except RuntimeError as err:   # a generator state of another kind (a device generator of an older toolkit)
            raise ToolkitError("the checkpoint to resume from holds a random-generator state of another kind (it was "
                               "written by a toolkit that drew on the GPU); resume is not possible: retrain with "
                               "--force") from err
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.state = TrainState(epoch=ckpt["epoch"], batch=ckpt["batch"], perm=ckpt["perm"],
                                partial=dict(ckpt["partial"]), best_acc=ckpt["best_acc"], log=list(ckpt["log"]))
        if self.state.perm is not None:
            self.state.perm = self.state.perm.to(self.data.train_x.device)

    def save_weights(self, path) -> None:
        save_torch(path, {"format": CHECKPOINT_FORMAT, "epoch": self.state.epoch, "model": self.model.state_dict()})

    def save_last(self) -> None:
        save_torch(self.run_dir.last, self.checkpoint_dict())

    def write_log(self) -> None:
        lines = [",".join(LOG_COLUMNS)]
        lines += [",".join(_fmt(row[c]) for c in LOG_COLUMNS) for row in self.state.log]
        text = ("\n".join(lines) + "\n").encode()
        atomic_write(self.run_dir.train_log, lambda handle: handle.write(text))

    # ---- the loop ----------------------------------------------------------------------------------
    def _on_sigterm(self, signum, frame) -> None:
        self._stop_requested = True

    def run(self) -> float:
        """Train until recipe.epochs (or zero loss); returns the last test accuracy."""
        if (self.run_dir is not None and self.state.epoch == 0 and self.state.batch == 0
                and not self.run_dir.epoch_checkpoint(0).exists()):
            self.save_weights(self.run_dir.epoch_checkpoint(0))  # the initialisation, for init baselines
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        test_acc = self.state.log[-1]["test_acc"] if self.state.log else float("nan")
        where = self.run_dir.root if self.run_dir is not None else "in memory"
        bar = tqdm(total=self.recipe.epochs, initial=self.state.epoch, desc=f"train {where}",
                   disable=not self.progress, unit="epoch", dynamic_ncols=True)
        try:
            while self.state.epoch < self.recipe.epochs:
                row = self.train_epoch()
                if row is None:  # SIGTERM: last.pt saved mid-epoch; --resume continues from there
                    raise SystemExit(EXIT_INTERRUPTED)
                test_acc = row["test_acc"]
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", train=f"{row['train_acc']:.3f}",
                                test=f"{test_acc:.3f}")
                if self.recipe.stop_at_zero_loss and row["train_loss"] == 0.0:
                    break
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, previous)
        return test_acc

    def train_epoch(self) -> dict | None:
        """One epoch from `state.batch`; writes checkpoints and the log; None if stopped by SIGTERM."""
        state, recipe, data = self.state, self.recipe, self.data
        device = data.train_x.device
        started = time.perf_counter()
        if state.batch == 0:
            state.perm = torch.randperm(len(data.train_x), generator=self.generator,
                                        device=draw_device(self.generator, device)).to(device)
            state.partial = {"loss": 0.0, "correct": 0, "seen": 0}
        loss_sum = torch.tensor(state.partial["loss"], dtype=torch.float64, device=device)
        correct = torch.tensor(state.partial["correct"], dtype=torch.long, device=device)
        seen = state.partial["seen"]
        self.model.train()
        for batch in range(state.batch, self.iters_per_epoch):
            lr = learning_rate(recipe, state.epoch * self.iters_per_epoch + batch, self.iters_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            index = state.perm[batch * recipe.batchsize:(batch + 1) * recipe.batchsize]
            x, y = self.augment(data.train_x[index]), data.train_y[index]
            output, loss = self.step(x, y)
            loss_sum += loss.detach().double() * len(y)
            correct += (predictions(output.detach(), recipe.loss) == y).sum()
            seen += len(y)
            if self._stop_requested and self.run_dir is not None:
                state.batch = batch + 1
                state.partial = {"loss": loss_sum.item(), "correct": int(correct.item()), "seen": seen}
                self.save_last()
                return None
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            if self.run_dir is None:
                raise ToolkitError(f"training loss became {train_loss} in epoch {state.epoch + 1}; lower --lr")
            kept = self.run_dir.last if self.run_dir.last.is_file() else self.run_dir.epoch_checkpoint(state.epoch)
            raise ToolkitError(f"training loss became {train_loss} in epoch {state.epoch + 1}; the last good "
                               f"checkpoint {kept} (epoch {state.epoch}) is kept; lower --lr")
        state.epoch += 1
        state.batch, state.perm, state.partial = 0, None, {}
        test_acc = evaluate(self.forward, data, recipe, self.corruption_std, self.generator, self.speed)
        # the rate of the epoch's last step: a resume from a save after that step (SIGTERM at the epoch's last batch)
        # runs no step here
        lr = learning_rate(recipe, state.epoch * self.iters_per_epoch - 1, self.iters_per_epoch)
        row = {"epoch": state.epoch, "lr": lr, "train_loss": train_loss, "train_acc": correct.item() / seen,
               "test_acc": test_acc, "seconds": time.perf_counter() - started}
        state.log.append(row)
        if self.run_dir is None:
            return row
        if recipe.keep_best and test_acc > state.best_acc:
            state.best_acc = test_acc
            self.save_weights(self.run_dir.best)
        if ((self.save_every and state.epoch % self.save_every == 0) or state.epoch == recipe.epochs
                or state.epoch in self.save_epochs):
            self.save_weights(self.run_dir.epoch_checkpoint(state.epoch))
        self.save_last()
        self.write_log()
        return row

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch at the current learning rate; returns the output and the loss."""
        watch = self.regularizer.watch() if self.regularizer is not None else contextlib.nullcontext()
        with self.speed.autocast(x.device), watch:
            output = self.forward(self.speed.inputs(x))
            loss = classification_loss(output, y, self.recipe.loss)
            if self.regularizer is not None:
                loss = loss + self.regularizer.penalty(y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return output, loss

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel-space crop + flip, normalisation, then erasing and corruption (seed000 §4 order)."""
        recipe = self.recipe
        if recipe.crop_padding or recipe.flip:
            x = random_crop_flip(x, self.generator, padding=recipe.crop_padding, flip=recipe.flip)
        x = self.data.normalize(x)
        if recipe.erasing:
            x = random_erasing(x, self.generator)
        if self.corruption_std > 0:
            x = gaussian_corruption(x, self.corruption_std, self.generator)
        return x


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
