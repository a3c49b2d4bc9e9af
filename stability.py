"""Diffeomorphism, noise and relative stability of a run, layer by layer, and the filters' Laplacian spectra
(seed004, "How deep CNNs lose spatial information").

    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --P 500              # trained
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --P 500 --init       # §2.6
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --by_layer --shuffle_channels   # §2.5
    python stability.py --model-name vgg11 --traindata cifar10 --seed 0 --laplacian                     # §2.9
    python stability.py --model-name lenet --traindata twopoints --seed 0 --by_layer                    # §2.8

The network (§2.6): the best-test-accuracy checkpoint (best.pt, kept by the seed004 recipes), else the last
epoch trained, or --start_epoch; with --init the epoch-0 checkpoint (the initialisation), whose BatchNorm layers
normalise with the statistics of the current batch (track_running_stats off, quirk §7.8), so x, tau x and x + eta
each form their own batch of min(--batchsize, --P) probes; with --shuffle_channels the trained weights with the
input channels of every conv permuted (§2.5, `measures.stability.shuffle_conv_channels`). Nets run in float64.

Probes (§2.3): --P test images drawn at random (among the first --max-samples; twopoints: its "probe" split,
§2.8). Perturbations act in pixel space, before normalisation (DESIGN.md): tau x is a max-entropy diffeomorphism
with T = temperature_for_displacement(--delta, n, --cut) (§2.1; 1.132e-3 for 32x32 images at the defaults) or,
for twopoints, the one-pixel move of each active pixel (§2.8); x + eta has ||eta_i|| = ||tau x_i - x_i|| (§2.2).
--corrupt_test first adds the run's training Gaussian corruption (--gaussian_corruption_std, §2.7, in normalised
units) to the probes, and tau and eta act on the corrupted images. Probes, tau and eta come from one CPU
generator seeded with --seed and are drawn for all P probes before the forward passes, so trained, init and
shuffled nets see the same inputs and the numbers do not depend on --batchsize (except at init, through BN).
D_f, G_f, R_f (§2.3) are streamed over batches by `measures.stability.StabilityAccumulator` (den over all P^2
pairs, diagonal included).

Nodes (§2.4, with --by_layer; else only "output"): one forward pass per batch for each of x, tau x, x + eta, with
forward hooks recording, in call order, the output of every module that is not a container, Dropout or Identity
(conv, BN, activation and pooling modules, linear layers, downsample paths, and whole blocks, whose output is
the residual sum after its activation), the input of every weight layer (DESIGN.md "Layers") that is not the
tensor recorded just before it (so functional activations such as F.relu appear once), and the logits as
"output". A module called k > 1 times in a pass is named "<name>#k"; inputs are "<name>:in". Memory: three passes'
worth of node activations of one batch (--batchsize) in float64.

Files of the stages "stability" (the trained net), "stability-init" (--init) and "stability-shuffled"
(--shuffle_channels), in <run>/stability/<mode>/ (pipeline.contract: STAGES, STABILITY_MODES):
  stability.npz   nodes (L,) str node names in forward order, the last "output"; dims (L,) flattened size M of
                  each node; D, G, R, den (L,) float64: D_f = Dnum / den, G_f = Gnum / den, R_f = Dnum / Gnum and
                  den = mean pair distance + 1e-10 (§2.3)
  summary.json    epoch, checkpoint ("best", "epoch" or "init"), test_accuracy (train_log.csv at that epoch; None
                  for an epoch it does not list), probe_accuracy, P, deformation ("diffeo" or "translation"),
                  temperature, cut, delta, corruption_std, output {"D", "G", "R"}, seconds
  _done.json      the flags; a rerun with the same flags is skipped unless --force
Files of the stage "laplacian" (--laplacian), in <run>/stability/laplacian/, for every conv with a square kernel
of side N >= 2, in module order (ll = 00, 01, ...):
  laplacian.npz   layers (C,) str module names; kernel_sizes (C,); eigenvalues_<ll> (N^2,) grid-Laplacian
                  eigenvalues; trained_<ll>, init_<ll> (N^2,) a_k = mean over filter slices of <w, psi_k>^2 of the
                  trained (same checkpoint choice as above) and the epoch-0 weights (§2.9)
  summary.json    epoch, checkpoint, layers
  _done.json      the flags
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from datasets.perturbations import gaussian_corruption
from datasets.twopoints import render_points
from measures.laplacian import laplacian_modes, laplacian_spectrum
from measures.stability import (
    StabilityAccumulator,
    diffeo,
    matched_noise,
    shuffle_conv_channels,
    temperature_for_displacement,
    translate_points,
)
from pipeline.contract import STABILITY_MODES, StageOutput, open_stage
from pipeline.loaded import LoadedRun
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, run_main
from utils.device import resolve_device
from utils.errors import ToolkitError
from utils.rundir import RunDir, recorded_flags

DEFAULT_P = 500          # §2.3
DEFAULT_DELTA = 1.0      # typical displacement in pixels, §2.1
DEFAULT_CUT = 3          # high-frequency cut-off c, §2.1
SKIPPED_MODULES = (nn.Dropout, nn.Identity, nn.Sequential, nn.ModuleList, nn.ModuleDict)


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    add_run_flags(parser)
    add_stage_flags(parser)
    parser.add_argument("--by_layer", action="store_true", help="measure every node of §2.4, not only the output")
    parser.add_argument("--init", action="store_true", help="measure the initialisation (epoch 0, §2.6)")
    parser.add_argument("--shuffle_channels", action="store_true",
                        help="permute the input channels of every conv of the trained net (§2.5)")
    parser.add_argument("--laplacian", action="store_true",
                        help="write the grid-Laplacian spectra of every conv's filters, trained and init (§2.9)")
    parser.add_argument("--P", type=int, default=DEFAULT_P, help="number of probe images (§2.3)")
    parser.add_argument("--corrupt_test", action="store_true",
                        help="add the run's training Gaussian corruption to the probes first (§2.7)")
    parser.add_argument("--delta", type=float, default=DEFAULT_DELTA,
                        help="typical displacement of the diffeomorphism in pixels (§2.1)")
    parser.add_argument("--cut", type=int, default=DEFAULT_CUT, help="high-frequency cut-off c (§2.1)")
    parser.add_argument("--batchsize", type=int, default=DEFAULT_P,
                        help="probes per forward pass (at init also the BatchNorm batch)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="draw the probes among the first N test images (default: all)")
    args = parser.parse_args(argv)
    for flag, value in (("--P", args.P), ("--batchsize", args.batchsize), ("--max-samples", args.max_samples)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.cut < 2 or args.delta <= 0:
        parser.error(f"--cut must be >= 2 and --delta > 0, got --cut {args.cut} --delta {args.delta}")
    if args.init and args.shuffle_channels:
        parser.error("--init and --shuffle_channels are separate measurements; run them one at a time")
    if args.laplacian and (args.init or args.shuffle_channels):
        parser.error("--laplacian already covers the trained and init nets; drop --init/--shuffle_channels")
    if args.init and args.start_epoch is not None:
        parser.error("--init measures the epoch-0 checkpoint; drop --start_epoch")
    return args


def stage_of(args) -> str:
    """The contract stage this command writes: laplacian, or the stage of the measured net's mode."""
    if args.laplacian:
        return "laplacian"
    return STABILITY_MODES["init" if args.init else "shuffled" if args.shuffle_channels else "trained"]


# ---- the network -------------------------------------------------------------------------------------------------
def open_network(args, run: RunDir, device: torch.device) -> LoadedRun:
    """The measured net in float64: best.pt when kept (and no --start_epoch), else the last epoch trained or
    --start_epoch; epoch 0 with --init."""
    best = not args.init and args.start_epoch is None and run.best.is_file()
    return LoadedRun.from_args(args, device=device, dtype=torch.float64, best=best, init=args.init)


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


def deform(images: torch.Tensor, points: torch.Tensor | None, args, generator: torch.Generator) -> torch.Tensor:
    """tau x: a max-entropy diffeomorphism (§2.1), or the one-pixel move of the active pixels of twopoints (§2.8),
    which keeps whatever else the image holds (the corruption of --corrupt_test)."""
    n = images.shape[-1]
    if points is not None:
        moved = render_points(translate_points(points, n, generator), n, dtype=images.dtype)
        return images + moved - render_points(points, n, dtype=images.dtype)
    return diffeo(images, temperature_for_displacement(args.delta, n, args.cut), args.cut, generator=generator)


# ---- nodes (§2.4) ------------------------------------------------------------------------------------------------
class NodeRecorder:
    """Forward hooks that record every node of §2.4 (module docstring) during one forward pass.

        with NodeRecorder(model, weight_layers) as recorder:
            nodes = recorder(x)          # {name: (B, ...) clone}, in call order, the last "output"
    """

    def __init__(self, model: nn.Module, weight_layers: list[nn.Module] | None):
        self.model = model
        self.weight_layers = weight_layers  # None: the output only
        self._handles: list = []
        self._nodes: dict[str, torch.Tensor] = {}
        self._calls: Counter = Counter()
        self._last: tuple[torch.Tensor, int] | None = None  # the tensor recorded last and its version

    def __enter__(self) -> NodeRecorder:
        if self.weight_layers is not None:
            names = {module: name for name, module in self.model.named_modules()}
            for module, name in names.items():
                if name and not isinstance(module, SKIPPED_MODULES):
                    self._handles.append(module.register_forward_hook(self._output_hook(name)))
            for module in self.weight_layers:
                self._handles.append(module.register_forward_pre_hook(self._input_hook(names[module])))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._nodes, self._calls = {}, Counter()
        self._last = (x, x._version)  # the input itself is not a node (§2.4 drops 'x')
        output = self.model(x)
        if self._repeats_last(output):  # the last layer's output is the network output: record it once
            self._nodes.popitem()
        self._nodes["output"] = output.detach().clone()
        return self._nodes

    def _repeats_last(self, tensor: torch.Tensor) -> bool:
        """Same storage, size and version (no in-place change since) as the tensor recorded last."""
        last, version = self._last
        return (tensor.data_ptr() == last.data_ptr() and tensor.numel() == last.numel()
                and tensor._version == version)

    def _record(self, name: str, tensor: torch.Tensor) -> None:
        self._calls[name] += 1
        key = name if self._calls[name] == 1 else f"{name}#{self._calls[name]}"
        self._nodes[key] = tensor.detach().clone()
        self._last = (tensor, tensor._version)

    def _output_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            if isinstance(output, torch.Tensor):
                self._record(name, output)
        return hook

    def _input_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            if not self._repeats_last(inputs[0]):
                self._record(f"{name}:in", inputs[0])
        return hook


# ---- the measurements --------------------------------------------------------------------------------------------
def measure_stability(args, loaded: LoadedRun, out: StageOutput) -> dict:
    """D_f, G_f, R_f of every node over the probes (§2.3); writes the file "stability", returns the summary."""
    generator = torch.Generator().manual_seed(args.seed)
    probes = draw_probes(args, loaded, generator)
    corruption = float(loaded.config["flags"]["corruption"]) if args.corrupt_test else 0.0
    if corruption > 0:
        probes.images = corrupt(probes.images, corruption, loaded, generator)
    weight_layers = loaded.layers if args.by_layer else None
    if args.shuffle_channels:
        shuffled = shuffle_conv_channels(loaded.model.state_dict(), torch.Generator().manual_seed(args.seed))
        loaded.model.load_state_dict(shuffled)
    if args.init:
        use_batch_statistics(loaded.model)
    x = probes.images                                                  # (P, C, n, n) pixel space, float64
    x_tau = deform(x, probes.points, args, generator)
    x_eta = matched_noise(x, x_tau, generator=generator)
    accumulator, correct = StabilityAccumulator(), 0
    with NodeRecorder(loaded.model, weight_layers) as recorder:
        for start in range(0, args.P, args.batchsize):
            batch = slice(start, start + args.batchsize)
            f_x = recorder(loaded.inputs(x[batch]))
            accumulator.update(f_x, recorder(loaded.inputs(x_tau[batch])), recorder(loaded.inputs(x_eta[batch])))
            labels = probes.labels[batch].to(loaded.device)
            correct += int((loaded.predictions(f_x["output"]) == labels).sum())
    dims = [f.flatten(1).shape[1] for f in f_x.values()]
    result = accumulator.result()
    nodes = list(result)
    out.save("stability", {"nodes": np.array(nodes), "dims": np.array(dims),
                           **{key: np.array([result[node][key] for node in nodes]) for key in ("D", "G", "R", "den")}})
    twopoints = probes.points is not None
    summary = {"epoch": loaded.epoch, "checkpoint": loaded.checkpoint,
               "test_accuracy": loaded.logged_test_accuracy(), "probe_accuracy": correct / args.P,
               "P": args.P, "deformation": "translation" if twopoints else "diffeo",
               "temperature": None if twopoints else temperature_for_displacement(
                   args.delta, probes.images.shape[-1], args.cut),
               "cut": args.cut, "delta": args.delta, "corruption_std": corruption,
               "output": {key: result["output"][key] for key in ("D", "G", "R")}}
    return summary


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
        arrays[f"eigenvalues_{index:02d}"] = laplacian_modes(weight.shape[-1])[0]
        arrays[f"trained_{index:02d}"] = laplacian_spectrum(weight).cpu()
        arrays[f"init_{index:02d}"] = laplacian_spectrum(initial[name]).cpu()
    out.save("laplacian", arrays)
    return {"epoch": loaded.epoch, "checkpoint": loaded.checkpoint, "layers": list(trained)}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    run = RunDir.from_args(args)
    out = open_stage(run, stage_of(args), recorded_flags(args), args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    loaded = open_network(args, run, device)
    measure = measure_laplacian if args.laplacian else measure_stability
    summary = measure(args, loaded, out)
    summary["seconds"] = time.perf_counter() - started
    out.save("summary", summary)
    out.done(seconds=summary["seconds"])
    described = f"R_f at the output {summary['output']['R']:.4g}" if "output" in summary else \
        f"{len(summary['layers'])} conv layers"
    print(f"{out.dir}: {described} ({summary['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
