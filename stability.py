"""Diffeomorphism, noise and relative stability of a run, layer by layer, the filters' Laplacian spectra and the 1-D
scale-detection model (seed004, "How deep CNNs lose spatial information").

    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --P 500              # trained
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --P 500 --init       # §2.6
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --init fresh         # §2.6
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --shuffle_channels   # §2.5
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --shuffle_channels 2            # §2.5
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --laplacian                     # §2.9
    python stability.py --model-name lenet --traindata twopoints --seed 0 --by_layer                    # §2.8
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --scale1d                       # §2.12

The network (§2.6): the best-test-accuracy checkpoint (best.pt, kept by the seed004 recipes), else the last
epoch trained, or --start_epoch. `--init` (= `--init checkpoint`) measures the epoch-0 checkpoint, `--init fresh`
a newly drawn net of the same architecture and recipe init (PyTorch's default for the seed004 recipes), seeded
with --seed + FRESH_SEED_OFFSET (the original drew it unseeded; train_classifier.py seeds epoch 0 with --seed, so
the two are different draws of the same law). At init BatchNorm normalises with the statistics of the current
batch (track_running_stats off, quirk §7.8), so x, tau x and x + eta each form their own batch of
min(--batchsize, --P) probes. `--shuffle_channels` (= 1) permutes the input channels of every conv of the trained
net, `--shuffle_channels 2` the output channels too (§2.5, `measures.stability.shuffle_conv_channels`, the
permutations drawn from --seed). Nets run in float64.

Probes (§2.3): --P test images drawn at random (among the first --max-samples; twopoints: its "probe" split,
§2.8). Perturbations act in pixel space, before normalisation (DESIGN.md): tau x is a max-entropy diffeomorphism
with T = temperature_for_displacement(--delta, n, --cut) (§2.1; 1.132e-3 for 32x32 images at the defaults),
interpolated by --interp (linear, nearest or the authors' gaussian), or, for twopoints unless --interp nearest
(§2.8), the one-pixel move of each active pixel; x + eta has ||eta_i|| = ||tau x_i - x_i|| (§2.2), or
||eta_i|| = --noise_magnitude when that is not -1. --corrupt_test first adds the run's training Gaussian
corruption (§2.7, in normalised units) to the probes, and tau and eta act on the corrupted images. Probes, tau and
eta come from one CPU generator seeded with --seed and are drawn for all P probes before the forward passes, so
every mode sees the same inputs and the numbers do not depend on --batchsize (except at init, through BN).
D_f, G_f, R_f (§2.3) are streamed over batches by `measures.stability.StabilityAccumulator` (den over all P^2
pairs, diagonal included); --mean_stability 0 takes the per-feature median over probes in the numerators instead
of the mean (the original's flag; it keeps the squared changes of every node until the end).

Nodes (§2.4, with --by_layer; else only "output"): the original's torch.fx graph nodes
(torchvision's create_feature_extractor on the eval-mode net, names such as "features.3", "layer1.0.add",
"layer1.0.relu_1", "relu_2"), so functional ReLUs and the residual adds of ResNets are nodes, in forward order.
Modules outside torch.nn whose class derives from a conv, linear or BatchNorm layer (the mean-field layers of the
FCNs) are single nodes. Dropped, as in the original: the input, and reshapes, sizes and dropout; also dropped:
modules and ops that only re-lay out the input (Identity, Flatten, the ZeroPad2d that brings 28x28 inputs to 32x32)
and pooling nodes that keep their input's shape (VGG's global average pool of a 1x1 map, absent from the spec).
In-place ops are evaluated out of place, so each node keeps its own value. The node that yields the logits is
named "output". Memory: three passes' worth of node activations of one batch (--batchsize) in float64.

Files of the stages "stability" (the trained net), "stability-init" (--init), "stability-fresh" (--init fresh),
"stability-shuffled" (--shuffle_channels) and "stability-shuffled2" (--shuffle_channels 2), in
<run>/stability/<mode>/ (pipeline.contract: STAGES, STABILITY_MODES):
  stability.npz   nodes (L,) str node names in forward order, the last "output"; dims (L,) flattened size M of
                  each node; D, G, R, den (L,) float64: D_f = Dnum / den, G_f = Gnum / den, R_f = Dnum / Gnum and
                  den = mean pair distance + 1e-10 (§2.3)
  summary.json    epoch, checkpoint ("best", "epoch", "init" or "fresh"), test_accuracy (train_log.csv at that
                  epoch; None for an epoch it does not list, and for a fresh net), probe_accuracy, P, deformation
                  ("diffeo" or "translation"), temperature, cut, delta, interp, noise_magnitude (None: matched),
                  statistic ("mean" or "median"), corruption_std (added to the probes), train_corruption_std (the
                  run's training corruption, §2.7), output {"D", "G", "R"}, seconds
  _done.json      the flags; a rerun with the same flags is skipped unless --force
Files of the stage "laplacian" (--laplacian), in <run>/stability/laplacian/, for every conv with a square kernel
of side N >= 2, in module order (ll = 00, 01, ...):
  laplacian.npz   layers (C,) str module names; kernel_sizes (C,); eigenvalues_<ll> (N^2,) grid-Laplacian
                  eigenvalues; trained_<ll>, init_<ll> (N^2,) a_k = mean over filter slices of <w, psi_k>^2 of the
                  trained (same checkpoint choice as above) and the epoch-0 weights (§2.9)
  summary.json    epoch, checkpoint, layers
  _done.json      the flags
Files of the stage "scale1d" (--scale1d), in <run>/stability/scale1d/: the 1-D scale-detection experiment of
§2.12 (paper Fig. 7), independent of the run's network (it takes only --seed): the "cnn1d" net (models/cnn1d.py,
H = --scale1d_channels, filter 2, stride 2, ceil(log2 L) blocks) trained on the "scale1d" data (datasets/scale1d.py,
L = --scale1d_length, block task of size --scale1d_xi, --scale1d_ptr class-balanced training signals of --seed) with the
original's recipe: SGD, lr 0.01 H, momentum 0, batches of 8, hinge loss, stopping at the first epoch whose mean
batch loss is exactly 0 (at most --scale1d_epochs); then D, G, R at every block output (post-activation) of the
trained net and of its initialisation, on the task's balanced probe signals, with tau = `move_sites` (each site
+-1 inside its block) and rectified noise of matched variance (`rectified_noise`); and the constant-filter model of
§2.11 beside it. Seconds on a CPU.
  scale1d.npz     layers (K,) block index k = 1..K; trained_D/G/R, init_D/G/R (K,) on the full block output;
                  trained_chmean_D/G/R, init_chmean_D/G/R (K,) on its channel mean (the original's Mean=True);
                  pooling_D/G/R (K,) the constant-filter model s = F = 2 on 2^(K+2) one-hots and prediction_D/G/R
                  (K,) its closed form (`measures.stability.pooling_model_prediction`); diffusive_k (32,) and
                  diffusive_D/G/R (32,) the s = 1, F = 3 model on 200 sites (D ~ k^-1, G ~ k^1/2, R ~ k^-3/2)
  summary.json    seed, length, xi, channels, depth, ptr, epochs, converged (zero training loss reached),
                  train_loss, test_error, probes, seconds
  _done.json      the flags
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from datasets import build_dataset
from datasets.perturbations import gaussian_corruption
from datasets.scale1d import render_sites
from datasets.twopoints import render_points
from measures.laplacian import laplacian_modes, laplacian_spectrum
from measures.stability import (
    INTERPOLATIONS,
    StabilityAccumulator,
    constant_filter_stabilities,
    diffeo,
    matched_noise,
    move_sites,
    pooling_model_prediction,
    rectified_noise,
    relative_stability,
    shuffle_conv_channels,
    temperature_for_displacement,
    translate_points,
)
from models import build_model
from models.layers import pytorch_default_init_
from pipeline.contract import STABILITY_MODES, StageOutput, layer_key, open_stage
from pipeline.loaded import LoadedRun, build_run_model, load_config
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, finite_float, run_main
from utils.device import measurement_device
from utils.errors import ToolkitError
from utils.rundir import RunDir, recorded_flags
from utils.taps import LayerTaps, NodeTaps

DEFAULT_P = 500          # §2.3
TRAINED_BATCH = 100      # probes per pass when BatchNorm uses running statistics (memory: --batchsize --help)
DEFAULT_DELTA = 1.0      # typical displacement in pixels, §2.1
DEFAULT_CUT = 3          # high-frequency cut-off c, §2.1
MATCHED = -1.0           # --noise_magnitude: match ||eta|| to ||tau x - x|| (§2.2)
FRESH_SEED_OFFSET = 1_000_003  # --init fresh draws its net from torch.manual_seed(--seed + this)


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    add_run_flags(parser)
    add_stage_flags(parser)
    parser.add_argument("--by_layer", action="store_true", help="measure every node of §2.4, not only the output")
    parser.add_argument("--init", nargs="?", const="checkpoint", default=None, choices=("checkpoint", "fresh"),
                        help="measure the initialisation (§2.6): the epoch-0 checkpoint (--init, --init checkpoint) "
                             "or a fresh net of the same architecture and recipe init (--init fresh)")
    parser.add_argument("--shuffle_channels", nargs="?", type=int, const=1, default=0, choices=(0, 1, 2),
                        help="permute the input channels of every conv of the trained net (1, as --shuffle_channels "
                             "alone), or the input and output channels (2) (§2.5); 0: no shuffle")
    parser.add_argument("--laplacian", action="store_true",
                        help="write the grid-Laplacian spectra of every conv's filters, trained and init (§2.9)")
    parser.add_argument("--scale1d", action="store_true",
                        help="train and measure the 1-D scale-detection CNN of §2.12 (seconds; the run gives --seed)")
    parser.add_argument("--P", type=int, default=DEFAULT_P, help="number of probe images (§2.3)")
    parser.add_argument("--corrupt_test", action="store_true",
                        help="add the run's training Gaussian corruption to the probes first (§2.7)")
    parser.add_argument("--delta", type=float, default=DEFAULT_DELTA,
                        help="typical displacement of the diffeomorphism in pixels (§2.1)")
    parser.add_argument("--cut", type=int, default=DEFAULT_CUT, help="high-frequency cut-off c (§2.1)")
    parser.add_argument("--interp", choices=INTERPOLATIONS, default="linear",
                        help="interpolation of the diffeomorphism (§2.1); for twopoints, nearest replaces the "
                             "one-pixel move by a diffeomorphism (§2.8)")
    parser.add_argument("--noise_magnitude", type=finite_float, default=MATCHED,
                        help="norm of every eta; -1 (the default) matches each ||tau x - x|| (§2.2)")
    parser.add_argument("--mean_stability", type=int, choices=(0, 1), default=1,
                        help="1: mean over probes in D_f and G_f; 0: per-feature median (§2.3)")
    parser.add_argument("--batchsize", type=int, default=None,
                        help="probes per forward pass (default: --P at init, where it is also the BatchNorm batch of "
                             "§2.6; else 100: a pass keeps three copies of every node's activations in float64, "
                             "6.6 GB at 500 probes for resnet18 at width 0.25, and the numbers do not depend on it)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="draw the probes among the first N test images (default: all)")
    parser.add_argument("--scale1d_channels", type=int, default=100,
                        help="--scale1d: channels H of the 1-D CNN (the paper's H is 1000)")
    parser.add_argument("--scale1d_length", type=int, default=128, help="--scale1d: signal length L (§2.12)")
    parser.add_argument("--scale1d_xi", type=int, default=32, help="--scale1d: block size xi of the task (§2.12)")
    parser.add_argument("--scale1d_ptr", type=int, default=1024,
                        help="--scale1d: class-balanced training signals (§2.12)")
    parser.add_argument("--scale1d_epochs", type=int, default=100,
                        help="--scale1d: at most this many epochs if the training loss does not reach 0")
    args = parser.parse_args(argv)
    if args.batchsize is None:
        args.batchsize = args.P if args.init else min(args.P, TRAINED_BATCH)
    for flag, value in (("--P", args.P), ("--batchsize", args.batchsize), ("--max-samples", args.max_samples),
                        ("--scale1d_channels", args.scale1d_channels), ("--scale1d_epochs", args.scale1d_epochs),
                        ("--scale1d_ptr", args.scale1d_ptr)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.scale1d_length < 2 or args.scale1d_xi < 1:
        parser.error("--scale1d_length must be >= 2 and --scale1d_xi >= 1")
    if args.cut < 2 or args.delta <= 0:
        parser.error(f"--cut must be >= 2 and --delta > 0, got --cut {args.cut} --delta {args.delta}")
    if args.noise_magnitude != MATCHED and args.noise_magnitude <= 0:
        parser.error(f"--noise_magnitude must be -1 (matched) or > 0, got {args.noise_magnitude}")
    if args.init and args.shuffle_channels:
        parser.error("--init and --shuffle_channels are separate measurements; run them one at a time")
    for flag, other in (("--laplacian", "--scale1d"), ("--laplacian", "--by_layer"), ("--scale1d", "--by_layer")):
        if getattr(args, flag[2:]) and getattr(args, other[2:]):
            parser.error(f"{flag} and {other} are separate measurements; drop {other}")
    if (args.laplacian or args.scale1d) and (args.init or args.shuffle_channels):
        parser.error("--laplacian (trained and init filters) and --scale1d (its own net) take no "
                     "--init/--shuffle_channels")
    if args.init and args.start_epoch is not None:
        parser.error("--init measures the initialisation; drop --start_epoch")
    return args


def mode_of(args) -> str:
    """The measured net's mode (pipeline.contract.STABILITY_MODES): trained, init, fresh, shuffled or shuffled2."""
    if args.init:
        return "fresh" if args.init == "fresh" else "init"
    return {0: "trained", 1: "shuffled", 2: "shuffled2"}[args.shuffle_channels]


def stage_of(args) -> str:
    """The contract stage this command writes: laplacian, scale1d, or the stage of the measured net's mode."""
    if args.laplacian or args.scale1d:
        return "laplacian" if args.laplacian else "scale1d"
    return STABILITY_MODES[mode_of(args)]


# ---- the network -------------------------------------------------------------------------------------------------
def open_network(args, device: torch.device) -> LoadedRun:
    """The measured net in float64 (module docstring): best.pt when kept (and no --start_epoch), else the last
    epoch trained or --start_epoch; epoch 0 with --init; a fresh draw with --init fresh; shuffled channels with
    --shuffle_channels; batch-statistics BatchNorm at init."""
    run = RunDir.from_args(args)
    best = not args.init and args.start_epoch is None and run.best.is_file()
    loaded = LoadedRun.from_args(args, device=device, dtype=torch.float64, best=best, init=bool(args.init))
    if args.init == "fresh":
        loaded.model = fresh_network(loaded.config, args.seed).to(device, torch.float64).eval()
        loaded.checkpoint = "fresh"
    if args.shuffle_channels:
        generator = torch.Generator().manual_seed(args.seed)
        loaded.model.load_state_dict(shuffle_conv_channels(loaded.model.state_dict(), generator,
                                                           outputs=args.shuffle_channels == 2))
    if args.init:
        use_batch_statistics(loaded.model)
    return loaded


def fresh_network(config: dict, seed: int) -> nn.Module:
    """A newly drawn net of the run's architecture with its recipe's init (seed004: PyTorch's default of every layer,
    as train_classifier.py initialises), from torch.manual_seed(seed + FRESH_SEED_OFFSET); the global RNG state is
    restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + FRESH_SEED_OFFSET)
        model = build_run_model(config)
        if config["recipe"].get("init", "model") == "pytorch":
            pytorch_default_init_(model)
    return model


def use_batch_statistics(model: nn.Module) -> None:
    """BatchNorm normalises with the current batch's statistics, as at initialisation in seed004 (§2.6)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None


# ---- probes and their perturbations ------------------------------------------------------------------------------
@dataclass
class Probes:
    """P pixel-space images (float64), their labels and, for twopoints, the active pixels."""

    images: torch.Tensor           # (P, C, n, n)
    labels: torch.Tensor           # (P,)
    points: torch.Tensor | None    # (P, 2, 2) (row, col) for twopoints


def draw_probes(args, loaded: LoadedRun, generator: torch.Generator) -> Probes:
    """--P images drawn without replacement from the test split (twopoints: the probe split, §2.8)."""
    name = loaded.dataset_name
    data = loaded.dataset("probe" if name == "twopoints" else "test", args.data_root)
    pool = len(data) if args.max_samples is None else min(len(data), args.max_samples)
    if args.P > pool:
        raise ToolkitError(f"--P {args.P} is more than the {pool} test images of {name} available; lower --P")
    pick = torch.randperm(pool, generator=generator)[:args.P]
    points = data.extras.get("points")
    images, labels = data.take(pick)
    return Probes(images.double(), labels, None if points is None else points[pick])


def corrupt(images: torch.Tensor, std: float, loaded: LoadedRun, generator: torch.Generator) -> torch.Tensor:
    """The training corruption of §2.7 (std xi / sqrt(CHW) in normalised units), expressed in pixel space; drawn
    on the CPU, where the probes and the generator live."""
    return loaded.pixels(gaussian_corruption(loaded.inputs(images).cpu(), std, generator))


def translates(probes: Probes, args) -> bool:
    """twopoints probes move their active pixels by one (§2.8) unless --interp nearest asks for a diffeomorphism."""
    return probes.points is not None and args.interp != "nearest"


def deform(probes: Probes, args, generator: torch.Generator) -> torch.Tensor:
    """tau x: a max-entropy diffeomorphism (§2.1, interpolated by --interp), or the one-pixel move of the active
    pixels of twopoints (§2.8), which keeps whatever else the image holds (the corruption of --corrupt_test)."""
    images = probes.images
    n = images.shape[-1]
    if translates(probes, args):
        moved = render_points(translate_points(probes.points, n, generator), n, dtype=images.dtype)
        return images + moved - render_points(probes.points, n, dtype=images.dtype)
    return diffeo(images, temperature_for_displacement(args.delta, n, args.cut), args.cut, generator=generator,
                  interp=args.interp)


# ---- the measurements --------------------------------------------------------------------------------------------
def measure_stability(args, loaded: LoadedRun, out: StageOutput) -> dict:
    """D_f, G_f, R_f of every node over the probes (§2.3); writes the file "stability", returns the summary."""
    generator = torch.Generator().manual_seed(args.seed)
    probes = draw_probes(args, loaded, generator)
    trained_std = float(loaded.config["flags"].get("corruption") or 0.0)
    corruption = trained_std if args.corrupt_test else 0.0
    if corruption > 0:
        probes.images = corrupt(probes.images, corruption, loaded, generator)
    x = probes.images                                                  # (P, C, n, n) pixel space, float64
    x_tau = deform(probes, args, generator)
    magnitude = None if args.noise_magnitude == MATCHED else args.noise_magnitude
    x_eta = matched_noise(x, x_tau, generator=generator, magnitude=magnitude)
    accumulator, correct = StabilityAccumulator(median=args.mean_stability == 0), 0
    taps = NodeTaps(loaded.model, args.by_layer)
    for start in range(0, args.P, args.batchsize):
        batch = slice(start, start + args.batchsize)
        f_x = taps(loaded.inputs(x[batch]))
        accumulator.update(f_x, taps(loaded.inputs(x_tau[batch])), taps(loaded.inputs(x_eta[batch])))
        labels = probes.labels[batch].to(loaded.device)
        correct += int((loaded.predictions(f_x["output"]) == labels).sum())
    dims = [f.flatten(1).shape[1] for f in f_x.values()]
    result = accumulator.result()
    nodes = list(result)
    out.save("stability", {"nodes": np.array(nodes), "dims": np.array(dims),
                           **{key: np.array([result[node][key] for node in nodes]) for key in ("D", "G", "R", "den")}})
    translation = translates(probes, args)
    fresh = loaded.checkpoint == "fresh"
    return {"epoch": loaded.epoch, "checkpoint": loaded.checkpoint,
            "test_accuracy": None if fresh else loaded.logged_test_accuracy(), "probe_accuracy": correct / args.P,
            "P": args.P, "deformation": "translation" if translation else "diffeo",
            "temperature": None if translation else temperature_for_displacement(args.delta, x.shape[-1], args.cut),
            "cut": args.cut, "delta": args.delta, "interp": args.interp, "noise_magnitude": magnitude,
            "statistic": "median" if args.mean_stability == 0 else "mean", "corruption_std": corruption,
            "train_corruption_std": trained_std, "output": {key: result["output"][key] for key in ("D", "G", "R")}}


def conv_filters(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> weight of every Conv2d with a square kernel of side >= 2, in module order."""
    return {name: module.weight for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and module.kernel_size[0] == module.kernel_size[1] >= 2}


def measure_laplacian(args, loaded: LoadedRun, out: StageOutput) -> dict:
    """Grid-Laplacian spectra of the trained and epoch-0 filters of every conv (§2.9); writes the file "laplacian",
    returns the summary."""
    trained = conv_filters(loaded.model)
    if not trained:
        raise ToolkitError(f"{args.model_name} has no conv layer with a square kernel of side >= 2; "
                           "--laplacian has nothing to measure")
    initial = conv_filters(LoadedRun.open(loaded.run, init=True, device=loaded.device, dtype=torch.float64).model)
    arrays = {"layers": np.array(list(trained)), "kernel_sizes": np.array([w.shape[-1] for w in trained.values()])}
    for index, (name, weight) in enumerate(trained.items()):
        arrays[layer_key(index, "eigenvalues")] = laplacian_modes(weight.shape[-1])[0]
        arrays[layer_key(index, "trained")] = laplacian_spectrum(weight).cpu()
        arrays[layer_key(index, "init")] = laplacian_spectrum(initial[name]).cpu()
    out.save("laplacian", arrays)
    return {"epoch": loaded.epoch, "checkpoint": loaded.checkpoint, "layers": list(trained)}


# ---- the 1-D scale-detection model (§2.12) -------------------------------------------------------------------------
SCALE1D_LR = 0.01         # lr = SCALE1D_LR * H (§2.12)
SCALE1D_BATCH = 8
DIFFUSIVE = {"depth": 32, "kernel_size": 3, "stride": 1, "size": 200}   # the s = 1 constant-filter model (§2.11)


def train_scale1d(model: nn.Module, data, max_epochs: int, generator: torch.Generator) -> tuple[int, float]:
    """SGD (lr 0.01 H, momentum 0, batches of 8) on the hinge loss (1/alpha) ReLU(1 - y f(x)) with y = +-1, until
    an epoch's mean batch loss is exactly 0 or max_epochs (§2.12). Returns (epochs run, last epoch's mean loss)."""
    channels, alpha = model.readout.in_features, model.readout.alpha
    optimizer = torch.optim.SGD(model.parameters(), lr=SCALE1D_LR * channels, momentum=0.0)
    x, y = data.images, 2.0 * data.labels.float() - 1
    mean_loss = math.inf
    for epoch in range(1, max_epochs + 1):
        order, total = torch.randperm(len(y), generator=generator), 0.0
        for start in range(0, len(y), SCALE1D_BATCH):
            index = order[start:start + SCALE1D_BATCH]
            loss = torch.relu(1 - y[index] * model(x[index]).squeeze(-1)).mean() / alpha
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        mean_loss = total / math.ceil(len(y) / SCALE1D_BATCH)
        if mean_loss == 0:
            return epoch, mean_loss
    return max_epochs, mean_loss


def block_stabilities(model: nn.Module, x: torch.Tensor, x_tau: torch.Tensor, x_eta: torch.Tensor) -> dict:
    """D, G, R (arrays over blocks) at every block output of the 1-D net, full and channel-averaged."""
    outputs = []
    for inputs in (x, x_tau, x_eta):
        with LayerTaps(list(model.blocks), capture="output") as taps, torch.no_grad():
            model(inputs)
        outputs.append(taps.values)
    arrays = {}
    for prefix, reduce in (("", lambda f: f), ("chmean_", lambda f: f.mean(1))):
        values = [relative_stability(*(reduce(f) for f in layer)) for layer in zip(*outputs)]
        arrays.update({f"{prefix}{key}": np.array([v[key] for v in values]) for key in ("D", "G", "R")})
    return arrays


def measure_scale1d(args, out: StageOutput) -> dict:
    """The 1-D experiment of §2.12 beside the constant-filter model of §2.11 (module docstring); writes the file
    "scale1d", returns the summary."""
    length, xi = args.scale1d_length, args.scale1d_xi
    options = {"length": length, "xi": xi, "ptr": args.scale1d_ptr, "seed": args.seed}
    train, test = (build_dataset("scale1d", split, **options) for split in ("train", "test"))
    probes = build_dataset("scale1d", "probe", length=length, xi=xi)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model("cnn1d", num_classes=1, in_channels=1, width=args.scale1d_channels / 1000,
                            image_size=length)
    initial = copy.deepcopy(model).double().eval()
    epochs, loss = train_scale1d(model, train, args.scale1d_epochs, torch.Generator().manual_seed(args.seed))
    model = model.double().eval()
    with torch.no_grad():
        test_error = float(((model(test.images.double()).squeeze(-1) > 0).long() != test.labels).double().mean())
    generator = torch.Generator().manual_seed(args.seed)
    x = probes.images.double()
    x_tau = render_sites(move_sites(probes.extras["sites"], length, xi, generator), length, dtype=torch.float64)
    x_eta = rectified_noise(x, x_tau, generator=generator)
    depth = len(model.blocks)
    arrays = {"layers": np.arange(1, depth + 1)}
    for mode, net in (("trained", model), ("init", initial)):
        arrays.update({f"{mode}_{key}": value for key, value in block_stabilities(net, x, x_tau, x_eta).items()})
    size = 4 * 2**depth   # one-hot inputs of the constant-filter model: four blocks left at the last layer
    theory = {"pooling": constant_filter_stabilities(depth, 2, 2, size=size, generator=generator),
              "prediction": pooling_model_prediction(depth, size),
              "diffusive": constant_filter_stabilities(generator=generator, **DIFFUSIVE)}
    for name, values in theory.items():
        arrays.update({f"{name}_{key}": np.array([v[key] for v in values]) for key in ("D", "G", "R")})
    arrays["diffusive_k"] = np.arange(1, DIFFUSIVE["depth"] + 1)
    out.save("scale1d", arrays)
    return {"seed": args.seed, "length": length, "xi": xi, "channels": args.scale1d_channels, "depth": depth,
            "ptr": args.scale1d_ptr, "epochs": epochs, "converged": loss == 0, "train_loss": loss,
            "test_error": test_error, "probes": len(x)}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = measurement_device(args.device, args.allow_tf32)
    run = RunDir.from_args(args)
    out = open_stage(run, stage_of(args), recorded_flags(args), args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    if args.scale1d:
        load_config(run)  # the run must exist: its folder holds the result
        summary = measure_scale1d(args, out)
    else:
        loaded = open_network(args, device)
        summary = (measure_laplacian if args.laplacian else measure_stability)(args, loaded, out)
    summary["seconds"] = time.perf_counter() - started
    out.save("summary", summary)
    out.done(seconds=summary["seconds"])
    described = f"R_f at the output {summary['output']['R']:.4g}" if "output" in summary else \
        f"{len(summary['layers'])} conv layers" if "layers" in summary else \
        f"1-D CNN test error {summary['test_error']:.3f} after {summary['epochs']} epochs"
    print(f"{out.dir}: {described} ({summary['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
