"""The 1-D scale-detection experiment of seed004 §2.12 (paper Fig. 7), beside the constant-filter model of §2.11.

    python scale1d.py --model-name vgg11 --traindata cifar10 --seed 0                          # demo sizes, H = 100
    python scale1d.py --model-name vgg11 --traindata cifar10 --seed 0 --scale1d_channels 1000 --scale1d_epochs 600000
    python scale1d.py ... --scale1d_ridge 0.01 --scale1d_p 2     # the original's weight penalty, validation stop

The experiment does not read the run's network: it takes only --seed, and its result lives in the run's folder
(<run>/stability/scale1d/, pipeline.contract). It trains the "cnn1d" net (models/cnn1d.py, H = --scale1d_channels,
filter 2, stride 2, ceil(log2 L) blocks) on the "scale1d" data (datasets/scale1d.py, L = --scale1d_length, block
task of size --scale1d_xi, --scale1d_ptr class-balanced training signals and 128 validation signals of --seed) with
the original's recipe (§2.12): SGD, lr 0.01 H, momentum 0, batches of 8, hinge loss (1/alpha) ReLU(1 - y f(x)), plus
with --scale1d_ridge r > 0 the penalty r sum_blocks sum |w|^p / (H^(p/2) K) on the conv weights (p = --scale1d_p).
Like the original, the stopping rule is checked every CHECK_EVERY = 10 epochs (after epochs 1, 11, 21, ...) on the
epoch's mean unpenalised hinge loss: without a ridge training stops at the first check where it is exactly 0; with a
ridge, once it was first 0 after epoch e0 (0-based, as the original counts), training goes on until a check at a
0-based epoch >= 500 e0 where the training loss and the validation error are both 0. At most --scale1d_epochs epochs
(the original's cap is 6 x 10^5, which the published grid uses; the default 100 keeps a demo short).
Then D, G, R at every block output (post-activation) of the trained net and of its initialisation, on the task's
balanced probe signals, with tau = `move_sites` (each site +-1 inside its block) and rectified noise of matched
variance (`rectified_noise`), on the full output and on its channel mean (`layer_stabilities`); and the
constant-filter models of §2.11. Seconds on a CPU at H = 100 (trained on one thread: ONE_THREAD_CHANNELS).

Files of the stage "scale1d", in <run>/stability/scale1d/:
  scale1d.npz     layers (K,) block index k = 1..K; trained_D/G/R, init_D/G/R (K,) on the full block output;
                  trained_chmean_D/G/R, init_chmean_D/G/R (K,) on its channel mean (the original's Mean=True);
                  pooling_D/G/R (K,) the constant-filter model s = F = 2 on 2^(K+2) one-hots and prediction_D/G/R
                  (K,) its closed form (`measures.stability.pooling_model_prediction`); diffusive_k (32,) and
                  diffusive_D/G/R (32,) the s = 1, F = 3 model on 200 sites (D ~ k^-1, G ~ k^1/2, R ~ k^-3/2)
  summary.json    seed, length, xi, channels, depth, ptr, ridge, epochs (trained), zero_loss_epoch (the 1-based
                  epoch of the first zero-loss check, None if never), converged (the stopping rule was met),
                  train_loss (unpenalised, last check), val_error, test_error, probes, seconds
  _done.json      the flags
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from datasets import build_dataset
from datasets.scale1d import render_sites
from measures.classification import evaluate
from measures.stability import (
    constant_filter_stabilities,
    layer_stabilities,
    move_sites,
    pooling_model_prediction,
    rectified_noise,
)
from models import build_model
from pipeline.contract import open_stage
from pipeline.loaded import load_config
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, non_negative_float, run_main
from utils.device import make_generator, measurement_device
from utils.rundir import RunDir, recorded_flags
from utils.taps import LayerTaps

LR = 0.01                 # lr = LR * H (§2.12)
BATCH = 8
EVAL_BATCH = 256          # test signals per forward pass (memory only)
CHECK_EVERY = 10          # the original checks its stopping rule at 0-based epochs 0, 10, 20, ...
RIDGE_PATIENCE = 500      # with a ridge: go on until epoch >= 500 x the first zero-loss epoch (§2.12)
# batches of 8 signals of a narrow net are too small for intra-op threads: on the CPU, nets of at most this many
# channels train on one thread (the demo's H = 100: 5 ms a step instead of 40-60 ms on 2 busy cores)
ONE_THREAD_CHANNELS = 128
DIFFUSIVE = {"depth": 32, "kernel_size": 3, "stride": 1, "size": 200}   # the s = 1 constant-filter model (§2.11)


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    add_run_flags(parser)
    add_stage_flags(parser)
    parser.add_argument("--scale1d_channels", type=int, default=100, help="channels H of the 1-D CNN (paper: 1000)")
    parser.add_argument("--scale1d_length", type=int, default=128, help="signal length L (§2.12)")
    parser.add_argument("--scale1d_xi", type=int, default=32, help="block size xi of the task (§2.12)")
    parser.add_argument("--scale1d_ptr", type=int, default=1024, help="class-balanced training signals (§2.12)")
    parser.add_argument("--scale1d_epochs", type=int, default=100,
                        help="at most this many epochs (the original's cap, used by the published grid: 600000)")
    parser.add_argument("--scale1d_ridge", type=non_negative_float, default=0.0,
                        help="weight penalty r (§2.12; the original's option, 0.01 when used): adds r sum |w|^p / "
                             "(H^(p/2) K) and stops on the validation criterion (module docstring)")
    parser.add_argument("--scale1d_p", type=int, default=2, help="exponent p of the ridge penalty (§2.12)")
    args = parser.parse_args(argv)
    for flag, value in (("--scale1d_channels", args.scale1d_channels), ("--scale1d_epochs", args.scale1d_epochs),
                        ("--scale1d_ptr", args.scale1d_ptr), ("--scale1d_p", args.scale1d_p)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.scale1d_length < 2 or args.scale1d_xi < 1:
        parser.error("--scale1d_length must be >= 2 and --scale1d_xi >= 1")
    return args


def ridge_penalty(model: nn.Module, p: int) -> torch.Tensor:
    """sum over blocks of sum |w|^p of the conv weight, / (H^(p/2) K) (§2.12; biases and readout not penalised)."""
    weights = [block.conv.weight for block in model.blocks]
    channels = model.readout.in_features
    return sum(w.abs().pow(p).sum() for w in weights) / (channels ** (p / 2) * len(weights))


def hinge_sign(labels: torch.Tensor) -> torch.Tensor:
    """0/1 labels -> y = +-1 (§2.12)."""
    return 2.0 * labels.to(torch.get_default_dtype()) - 1


def error(model: nn.Module, data, device: torch.device) -> torch.Tensor:
    """0-1 error of the hinge head over a split, as a 0-d tensor (no host sync)."""
    with torch.no_grad():
        wrong = ((model(data.images.to(device)).reshape(-1) > 0).long() != data.labels.to(device)).double()
    return wrong.mean()


def stops(epoch: int, loss: float, zero_at: int | None, ridge: float, val_error: float) -> bool:
    """The original's stopping rule at a check (§2.12), epochs 0-based: without a ridge, the epoch's mean hinge loss
    is exactly 0; with one, also epoch >= 500 x the first zero-loss epoch `zero_at` and a validation error of 0."""
    if not ridge:
        return loss == 0
    return zero_at is not None and epoch >= RIDGE_PATIENCE * zero_at and loss == 0 and val_error == 0


def train(model: nn.Module, train_set, val_set, args, generator: torch.Generator, device: torch.device) -> dict:
    """The original's SGD on the hinge loss (+ ridge) with its stopping rule (module docstring). Loss sums stay on the
    device; one host sync per check (every CHECK_EVERY epochs)."""
    channels, alpha = model.readout.in_features, model.readout.alpha
    optimizer = torch.optim.SGD(model.parameters(), lr=LR * channels, momentum=0.0)
    x, y = train_set.images.to(device), hinge_sign(train_set.labels).to(device)
    batches = -(-len(y) // BATCH)
    zero_at, loss, val_error, converged, epoch = None, float("nan"), float("nan"), False, -1
    for epoch in range(args.scale1d_epochs):                        # 0-based, as the original counts
        order, total = torch.randperm(len(y), generator=generator).to(device), torch.zeros((), device=device)
        for start in range(0, len(y), BATCH):
            index = order[start:start + BATCH]
            hinge = torch.relu(1 - y[index] * model(x[index]).squeeze(-1)).mean() / alpha
            objective = hinge + args.scale1d_ridge * ridge_penalty(model, args.scale1d_p) if args.scale1d_ridge \
                else hinge
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            total += hinge.detach()
        if epoch % CHECK_EVERY and epoch < args.scale1d_epochs - 1:   # the last epoch reports its loss too
            continue
        loss = float(total / batches)
        zero_at = epoch if loss == 0 and zero_at is None else zero_at
        if args.scale1d_ridge and zero_at is not None and epoch >= RIDGE_PATIENCE * zero_at and loss == 0:
            val_error = float(error(model, val_set, device))
        converged = stops(epoch, loss, zero_at, args.scale1d_ridge, val_error)
        if converged:
            break
    return {"epochs": epoch + 1, "zero_loss_epoch": None if zero_at is None else zero_at + 1, "converged": converged,
            "train_loss": loss, "val_error": float(error(model, val_set, device)) if np.isnan(val_error) else val_error}


def block_outputs(model: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """The post-activation output of every block (§2.12), in one forward pass."""
    with LayerTaps(list(model.blocks), capture="output") as taps, torch.no_grad():
        model(inputs)
    return taps.values


def measure(args, device: torch.device) -> tuple[dict, dict]:
    """(arrays of scale1d.npz, summary) of the experiment (module docstring)."""
    length, xi = args.scale1d_length, args.scale1d_xi
    options = {"length": length, "xi": xi, "ptr": args.scale1d_ptr, "seed": args.seed}
    train_set, val_set, test_set = (build_dataset("scale1d", split, **options) for split in ("train", "val", "test"))
    probes = build_dataset("scale1d", "probe", length=length, xi=xi)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model("cnn1d", num_classes=1, in_channels=1, width=args.scale1d_channels / 1000,
                            image_size=length)
    initial = copy.deepcopy(model).to(device, torch.float64).eval()
    model.to(device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and args.scale1d_channels <= ONE_THREAD_CHANNELS:
        torch.set_num_threads(1)
    try:
        trained = train(model, train_set, val_set, args, make_generator(args.seed), device)
    finally:
        torch.set_num_threads(threads)
    model = model.double().eval()
    chunks = ((test_set.images[i:i + EVAL_BATCH].to(device, torch.float64), test_set.labels[i:i + EVAL_BATCH])
              for i in range(0, len(test_set), EVAL_BATCH))
    test_accuracy, _ = evaluate(model, chunks, "hinge", k=1)
    generator = make_generator(args.seed)
    x = probes.images.double()
    x_tau = render_sites(move_sites(probes.extras["sites"], length, xi, generator), length, dtype=torch.float64)
    x_eta = rectified_noise(x, x_tau, generator=generator)
    depth = len(model.blocks)
    arrays = {"layers": np.arange(1, depth + 1)}
    for mode, net in (("trained", model), ("init", initial)):
        found = layer_stabilities(*(block_outputs(net, inputs.to(device)) for inputs in (x, x_tau, x_eta)))
        arrays.update({f"{mode}_{key}": np.array(values) for key, values in found.items()})
    size = 4 * 2**depth   # one-hot inputs of the constant-filter model: four blocks left at the last layer
    theory = {"pooling": constant_filter_stabilities(depth, 2, 2, size=size, generator=generator),
              "prediction": pooling_model_prediction(depth, size),
              "diffusive": constant_filter_stabilities(generator=generator, **DIFFUSIVE)}
    for name, values in theory.items():
        arrays.update({f"{name}_{key}": np.array([v[key] for v in values]) for key in ("D", "G", "R")})
    arrays["diffusive_k"] = np.arange(1, DIFFUSIVE["depth"] + 1)
    summary = {"seed": args.seed, "length": length, "xi": xi, "channels": args.scale1d_channels, "depth": depth,
               "ptr": args.scale1d_ptr, "ridge": args.scale1d_ridge, **trained, "test_error": 1.0 - test_accuracy,
               "probes": len(x)}
    return arrays, summary


def main(argv=None) -> int:
    args = parse_args(argv)
    device = measurement_device(args.device, args.allow_tf32)
    run = RunDir.from_args(args)
    load_config(run)  # the run must exist: its folder holds the result
    out = open_stage(run, "scale1d", recorded_flags(args), args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    arrays, summary = measure(args, device)
    summary["seconds"] = time.perf_counter() - started
    out.save("scale1d", arrays)
    out.save("summary", summary)
    out.done(seconds=summary["seconds"])
    print(f"{out.dir}: 1-D CNN test error {summary['test_error']:.3f} after {summary['epochs']} epochs "
          f"({summary['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
