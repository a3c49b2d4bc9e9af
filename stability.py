"""Diffeomorphism, noise and relative stability of a run, layer by layer, and the filters' Laplacian spectra (seed004,
"How deep CNNs lose spatial information").

    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --P 500              # trained
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --P 500 --init       # §2.6
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --init fresh         # §2.6
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --shuffle_channels   # §2.5
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --shuffle_channels 2            # §2.5
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --laplacian                     # §2.9
    python stability.py --model-name lenet --traindata twopoints --seed 0 --by_layer                    # §2.8

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
FCNs) are single nodes. Dropped, as in the original: the input, and reshapes, sizes and dropout. The node that
yields the logits is named "output". `--nodes ours` (the default, a departure of this toolkit) also drops modules
and ops that only re-lay out the input (Identity, Flatten, the ZeroPad2d that brings 28x28 inputs to 32x32) and
pooling nodes that keep their input's shape (VGG's global average pool of a 1x1 map), and evaluates in-place ops
out of place, so that each node keeps its own value. `--nodes original` gives the original's values and indices
(utils.taps.NodeTaps): a conv or BN node that feeds an in-place ReLU (VGG, AlexNet) holds the post-ReLU tensor, and
the ZeroPad2d and the last pooling node (diffeo-sota's VGG ends its features with AvgPool2d(kernel_size=1)) count.

Memory: a pass keeps three copies (x, tau x, x + eta) of the node activations of one batch in float64. At init the
batch is the BatchNorm batch (all --P probes by default, §2.6), which cannot be split without changing the
numbers; instead the nodes are measured in consecutive groups whose three copies fit in --node_memory GB, each group
from its own forward passes over the same whole batch (the same numbers for any budget, at the cost of more
passes). Trained nets are measured in batches of --batchsize probes, cut into node groups the same way.

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
                  run's training corruption, §2.7), node_set (--nodes), output {"D", "G", "R"}, seconds
  _done.json      the flags; a rerun with the same flags is skipped unless --force
Files of the stage "laplacian" (--laplacian), in <run>/stability/laplacian/, for every conv with a square kernel
of side N >= 2, in module order (ll = 00, 01, ...):
  laplacian.npz   layers (C,) str module names; kernel_sizes (C,); eigenvalues_<ll> (N^2,) grid-Laplacian
                  eigenvalues; trained_<ll>, init_<ll> (N^2,) a_k = mean over filter slices of <w, psi_k>^2 of the
                  trained (same checkpoint choice as above) and the epoch-0 weights (§2.9)
  summary.json    epoch, checkpoint, layers
  _done.json      the flags
The 1-D scale-detection experiment of §2.12 is its own script, scale1d.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from datasets.perturbations import gaussian_corruption
from datasets.twopoints import render_points
from measures.classification import evaluate
from measures.laplacian import laplacian_modes, laplacian_spectrum
from measures.stability import (
    INTERPOLATIONS,
    StabilityAccumulator,
    diffeo,
    matched_noise,
    shuffle_conv_channels,
    temperature_for_displacement,
    translate_points,
)
from models.layers import pytorch_default_init_
from pipeline.capabilities import no_square_convs, square_conv_filters
from pipeline.contract import STABILITY_MODES, StageOutput, layer_key, open_stage
from pipeline.loaded import LoadedRun, build_run_model
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, finite_float, positive_float, run_main
from utils.device import make_generator, measurement_device
from utils.errors import ToolkitError
from utils.rundir import RunDir, recorded_flags
from utils.taps import NODE_SETS, NodeTaps

DEFAULT_P = 500          # §2.3
TRAINED_BATCH = 100      # probes per pass when BatchNorm uses running statistics (memory: --batchsize --help)
DEFAULT_DELTA = 1.0      # typical displacement in pixels, §2.1
DEFAULT_CUT = 3          # high-frequency cut-off c, §2.1
MATCHED = -1.0           # --noise_magnitude: match ||eta|| to ||tau x - x|| (§2.2)
DEFAULT_NODE_MEMORY = 4.0  # GB of node activations held at once (--node_memory)
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
                             "6.6 GB at 500 probes for resnet18 at width 0.25 unless --node_memory splits the nodes; "
                             "the numbers do not depend on it)")
    parser.add_argument("--nodes", choices=NODE_SETS, default="ours",
                        help="with --by_layer: ours (default: each node its own value, re-layout nodes dropped) or "
                             "original (the relativestability code's node values and indices, in-place ReLUs "
                             "included; module docstring)")
    parser.add_argument("--node_memory", type=positive_float, default=DEFAULT_NODE_MEMORY,
                        help="GB of node activations (three passes of one batch, float64) held at once; more nodes "
                             "are measured in groups, each with its own forward passes (the numbers do not change)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="draw the probes among the first N test images (default: all)")
    args = parser.parse_args(argv)
    if args.batchsize is None:
        args.batchsize = args.P if args.init else min(args.P, TRAINED_BATCH)
    for flag, value in (("--P", args.P), ("--batchsize", args.batchsize), ("--max-samples", args.max_samples)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.cut < 2 or args.delta <= 0:
        parser.error(f"--cut must be >= 2 and --delta > 0, got --cut {args.cut} --delta {args.delta}")
    if args.noise_magnitude != MATCHED and args.noise_magnitude <= 0:
        parser.error(f"--noise_magnitude must be -1 (matched) or > 0, got {args.noise_magnitude}")
    if args.init and args.shuffle_channels:
        parser.error("--init and --shuffle_channels are separate measurements; run them one at a time")
    if args.nodes != "ours" and not args.by_layer:
        parser.error("--nodes chooses the nodes of --by_layer; add --by_layer")
    if args.laplacian and args.by_layer:
        parser.error("--laplacian and --by_layer are separate measurements; drop --by_layer")
    if args.laplacian and (args.init or args.shuffle_channels):
        parser.error("--laplacian (trained and init filters) takes no --init/--shuffle_channels")
    if args.init and args.start_epoch is not None:
        parser.error("--init measures the initialisation; drop --start_epoch")
    return args


def mode_of(args) -> str:
    """The measured net's mode (pipeline.contract.STABILITY_MODES): trained, init, fresh, shuffled or shuffled2."""
    if args.init:
        return "fresh" if args.init == "fresh" else "init"
    return {0: "trained", 1: "shuffled", 2: "shuffled2"}[args.shuffle_channels]


def stage_of(args) -> str:
    """The contract stage this command writes: laplacian, or the stage of the measured net's mode."""
    if args.laplacian:
        return "laplacian"
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
        generator = make_generator(args.seed)
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
    generator = make_generator(args.seed)
    probes = draw_probes(args, loaded, generator)
    trained_std = float(loaded.config["flags"].get("corruption") or 0.0)
    corruption = trained_std if args.corrupt_test else 0.0
    if corruption > 0:
        probes.images = corrupt(probes.images, corruption, loaded, generator)
    x = probes.images                                                  # (P, C, n, n) pixel space, float64
    x_tau = deform(probes, args, generator)
    magnitude = None if args.noise_magnitude == MATCHED else args.noise_magnitude
    x_eta = matched_noise(x, x_tau, generator=generator, magnitude=magnitude)
    accumulator = StabilityAccumulator(median=args.mean_stability == 0)
    taps = NodeTaps(loaded.model, args.by_layer, args.nodes)
    if args.by_layer:
        taps.settle(loaded.inputs(x[:2]))   # which nodes, and their sizes, from two probes
    groups = taps.groups(args.batchsize, args.node_memory * 2**30) if args.by_layer else [None]
    dims: dict[str, int] = {}   # node -> flattened size M

    def measured(batch: slice) -> torch.Tensor:
        """Every node group's three passes over one batch into the accumulator; the clean logits."""
        for names in groups:
            f_x = taps(loaded.inputs(x[batch]), names)
            dims.update({name: value[0].numel() for name, value in f_x.items()})
            accumulator.update(f_x, taps(loaded.inputs(x_tau[batch]), names),
                               taps(loaded.inputs(x_eta[batch]), names))
        return f_x["output"]

    batches = ((slice(start, start + args.batchsize), probes.labels[start:start + args.batchsize])
               for start in range(0, args.P, args.batchsize))
    probe_accuracy, _ = evaluate(measured, batches, loaded.loss, k=1)
    result = accumulator.result()
    nodes = list(result)
    out.save("stability", {"nodes": np.array(nodes), "dims": np.array([dims[node] for node in nodes]),
                           **{key: np.array([result[node][key] for node in nodes]) for key in ("D", "G", "R", "den")}})
    translation = translates(probes, args)
    fresh = loaded.checkpoint == "fresh"
    return {"epoch": loaded.epoch, "checkpoint": loaded.checkpoint,
            "test_accuracy": None if fresh else loaded.logged_test_accuracy(), "probe_accuracy": probe_accuracy,
            "P": args.P, "deformation": "translation" if translation else "diffeo",
            "temperature": None if translation else temperature_for_displacement(args.delta, x.shape[-1], args.cut),
            "cut": args.cut, "delta": args.delta, "interp": args.interp, "noise_magnitude": magnitude,
            "statistic": "median" if args.mean_stability == 0 else "mean", "corruption_std": corruption,
            "train_corruption_std": trained_std, "node_set": args.nodes,
            "output": {key: result["output"][key] for key in ("D", "G", "R")}}


def measure_laplacian(args, loaded: LoadedRun, out: StageOutput) -> dict:
    """Grid-Laplacian spectra of the trained and epoch-0 filters of every conv (§2.9); writes the file "laplacian",
    returns the summary."""
    reason = no_square_convs(loaded.model, args.model_name)
    if reason:
        raise ToolkitError(reason)
    trained = square_conv_filters(loaded.model)
    init = LoadedRun.open(loaded.run, init=True, device=loaded.device, dtype=torch.float64)
    initial = square_conv_filters(init.model)
    arrays = {"layers": np.array(list(trained)), "kernel_sizes": np.array([w.shape[-1] for w in trained.values()])}
    for index, (name, weight) in enumerate(trained.items()):
        arrays[layer_key(index, "eigenvalues")] = laplacian_modes(weight.shape[-1])[0]
        arrays[layer_key(index, "trained")] = laplacian_spectrum(weight).cpu()
        arrays[layer_key(index, "init")] = laplacian_spectrum(initial[name]).cpu()
    out.save("laplacian", arrays)
    return {"epoch": loaded.epoch, "checkpoint": loaded.checkpoint, "layers": list(trained)}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = measurement_device(args.device, args.allow_tf32)
    run = RunDir.from_args(args)
    out = open_stage(run, stage_of(args), recorded_flags(args), args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    loaded = open_network(args, device)
    summary = (measure_laplacian if args.laplacian else measure_stability)(args, loaded, out)
    summary["seconds"] = time.perf_counter() - started
    out.save("summary", summary)
    out.done(seconds=summary["seconds"])
    described = f"R_f at the output {summary['output']['R']:.4g}" if "output" in summary else \
        f"{len(summary['layers'])} conv layers"
    print(f"{out.dir}: {described} ({summary['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
