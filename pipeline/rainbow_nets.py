"""The engine of seed002's stages (rainbow.py, rainbow_width.py): M trained seeds seen as rainbow sampling needs
them (`Net`: each analysis layer's weight and input in channel form, the standardisation feeding it), their data
held on the device (`Data`), the mean alignment of their layer inputs (seed002 §5.2) and the rainbow networks
sampled from their aligned weight covariances (§5.4).

"Layer l" (0-based) is the input of weight layer l (DESIGN.md "Layers"; the paper's layer j is l + 1), with space
as samples (§5.1): a conv input (B, C, H, W) has D_l = C, a Linear input its width; a classifier on flattened
(C, H, W) features (models with `classifier_input_shape`) is aligned over C unless `flat_classifier`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from measures import alignment as al
from measures.classification import evaluate as evaluate_outputs
from pipeline.loaded import LoadedRun, check_run_flags
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags
from utils.errors import ToolkitError
from utils.rundir import RunDir, seed_dirs, variant_of
from utils.taps import LayerTaps

BATCH = 500
NORMALIZATIONS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def group_parser(description: str) -> ToolkitParser:
    """The flags of both seed002 stages: the runs (their identity flags, --seeds), the mean alignment, the data."""
    # "resolve": rainbow.py redeclares --seed (add_run_flags: the run's seed); the runs are chosen by --seeds
    parser = ToolkitParser(description=description, conflict_handler="resolve")
    add_run_flags(parser, default_model="rainbow_mlp")
    add_stage_flags(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="the runs rnd<seed> to combine (default: every one found; at least 2)")
    parser.add_argument("--num_iters", type=int, default=2, help="refinements of the mean alignment (§5.2)")
    parser.add_argument("--flat_classifier", action="store_true",
                        help="align a conv net's classifier over its flattened C H W input features (the tutorial's "
                             "CNN: 1600 x 1600, §7 step 9) instead of over channels with space as samples")
    parser.add_argument("--batchsize", type=int, default=BATCH, help="images per forward pass of the M nets")
    parser.add_argument("--max-samples", type=int, default=None, help="use at most N images of each split")
    return parser


def check_group_flags(parser: ToolkitParser, args) -> None:
    """Bounds of group_parser's flags (a parser error, exit 2)."""
    for flag, value, least in (("--batchsize", args.batchsize, 1), ("--max-samples", args.max_samples, 1),
                               ("--num_iters", args.num_iters, 0)):
        if value is not None and value < least:
            parser.error(f"{flag} must be >= {least}, got {value}")


class _Reached(Exception):
    """Raised by Net.layer_input's hook once the layer's input is captured: nothing after it runs."""


@dataclass
class Net:
    """A LoadedRun (a trained seed, its initialisation or a rainbow copy) seen as rainbow sampling needs it: the
    weight and the input of each analysis layer in channel form, and the standardisation feeding each layer."""

    loaded: LoadedRun
    flat_classifier: bool = False     # --flat_classifier: the classifier aligned over its flattened C H W features

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def layers(self) -> list[nn.Module]:
        return self.loaded.layers

    @cached_property
    def standardizations(self) -> list[nn.Module | None]:
        """The non-affine BatchNorm whose output is each layer's input (models with `standardizations()`)."""
        model = self.model
        return list(model.standardizations()) if hasattr(model, "standardizations") else [None] * len(self.layers)

    def copy(self) -> Net:
        """A new net with a deep copy of the model (same run, config and normalisation)."""
        return Net(replace(self.loaded, model=copy.deepcopy(self.model), extras={}), self.flat_classifier)

    def channel_view(self, j: int, tensor: torch.Tensor) -> torch.Tensor:
        """A layer input (B, D) or weight (N, D) of a classifier on flattened (C, H, W) as (., C, H, W) (left flat
        with --flat_classifier)."""
        shape = None if self.flat_classifier else getattr(self.model, "classifier_input_shape", None)
        if j == len(self.layers) - 1 and shape is not None and tensor.dim() == 2:
            return tensor.reshape(tensor.shape[0], *shape)
        return tensor

    def weight(self, j: int) -> torch.Tensor:
        return self.channel_view(j, self.layers[j].weight.detach())

    @torch.no_grad()
    def set_weight(self, j: int, weight: torch.Tensor) -> None:
        self.layers[j].weight.copy_(weight.reshape(self.layers[j].weight.shape))

    @torch.no_grad()
    def layer_input(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """The input of layer j alone, in channel form: the forward pass of normalised x stops at layer j."""
        found = []

        def stop(module, inputs):
            found.append(inputs[0].detach())
            raise _Reached

        handle = self.layers[j].register_forward_pre_hook(stop)
        try:
            self.model(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        return self.channel_view(j, found[0])

    def layer_inputs(self, x: torch.Tensor, only: int | None = None) -> list[torch.Tensor]:
        """Inputs of every weight layer (or of layer `only`) in channel form, one forward pass of normalised x."""
        layers = self.layers if only is None else [self.layers[only]]
        with torch.no_grad(), LayerTaps(layers) as taps:
            self.model(x)
        indices = range(len(self.layers)) if only is None else [only]
        return [self.channel_view(j, value) for j, value in zip(indices, taps.values)]


@dataclass
class Data:
    """The train and test splits held on the device, fed to every net through net 1's LoadedRun.batches (its
    inputs() is the normalisation; open_runs checks that the M runs share it)."""

    loaded: LoadedRun
    splits: dict
    batchsize: int

    def batches(self, split: str, desc: str | None = None):
        """(normalised inputs, labels) of `split`, in order."""
        for _, x, labels in self.loaded.batches(self.splits[split], self.batchsize, desc=desc):
            yield x, labels

    def size(self, split: str) -> int:
        return len(self.splits[split])


def open_runs(args, device: torch.device) -> tuple[list[RunDir], list[Net], Net]:
    """(runs, trained nets, net 1's initialisation), after every check of the input."""
    found = seed_dirs(args.workdir, args.traindata, args.model_name, variant_of(args))
    runs = found if args.seeds is None else [RunDir.from_args(args, seed=s) for s in args.seeds]
    if len(runs) < 2:
        raise ToolkitError(f"seed002's stages combine at least 2 seeds; found {len(runs)} under "
                           f"{RunDir.from_args(args, seed=0).group}; train more with "
                           "`python train_classifier.py --seed N` or pass --seeds")
    nets = []
    for run in runs:
        nets.append(Net(LoadedRun.open(run, args.start_epoch, device=device), args.flat_classifier))
        check_run_flags(args, nets[-1].loaded.config, run)
    first = nets[0].loaded.config
    for run, net in zip(runs[1:], nets[1:]):
        config = net.loaded.config
        if config["model"] != first["model"] or config["data"]["mean"] != first["data"]["mean"]:
            raise ToolkitError(f"{run.root} has another architecture or normalisation than {runs[0].root} "
                               f"({config['model']} vs {first['model']}); combine runs of one architecture")
    check_supported(nets[0], args.model_name)
    return runs, nets, Net(LoadedRun.open(runs[0], init=True, device=device), args.flat_classifier)


RAINBOW_MODELS = "rainbow_mlp, rainbow_cnn, scattering, scattering_skip, scattering4 or scattering4_norm"


def unsupported(model: nn.Module, name: str) -> str | None:
    """Why rainbow sampling cannot resample `model` (None when it can): it replaces weights only, so biases and
    affine normalisations would not be resampled (seed002 §3, §7). Also the grid's check before anything runs."""
    if not hasattr(model, "weight_layers"):
        return (f"rainbow.py needs a registry model listing its weight_layers(), not {type(model).__name__}; use "
                f"{RAINBOW_MODELS}")
    layers = list(model.weight_layers())
    declared = {id(m) for m in getattr(model, "standardizations", list)() if m is not None}
    biased = [layer for layer in layers if getattr(layer, "bias", None) is not None]
    norms = [m for m in model.modules() if isinstance(m, NORMALIZATIONS) and id(m) not in declared]
    if biased or norms or not all(isinstance(layer, (nn.Conv2d, nn.Linear)) for layer in layers):
        return (f"rainbow.py needs bias-free conv/linear weight layers and no normalisation other than declared "
                f"non-affine standardisations (seed002 §3, §7); {name} has {len(biased)} biased layer(s) and "
                f"{len(norms)} other normalisation(s); use {RAINBOW_MODELS}")
    return None


def check_supported(net: Net, name: str) -> None:
    """A one-line error when rainbow sampling cannot resample the runs' architecture (`unsupported`)."""
    reason = unsupported(net.model, name)
    if reason:
        raise ToolkitError(reason)


def load_data(args, loaded: LoadedRun) -> Data:
    """The run's train and test splits (the first --max-samples of each), moved to the device once."""
    splits = {}
    for split in ("train", "test"):
        data = loaded.dataset(split, args.data_root)
        if not hasattr(data, "images"):
            raise ToolkitError(f"{loaded.dataset_name} is streamed; rainbow.py needs an in-memory dataset")
        n = len(data.labels) if args.max_samples is None else min(args.max_samples, len(data.labels))
        splits[split] = replace(data, images=data.images[:n].to(loaded.device),
                                labels=data.labels[:n].to(loaded.device))
    return Data(loaded, splits, args.batchsize)


def evaluate(net: Net, data: Data) -> tuple[float, float]:
    """(top-1, top-5) test accuracy (measures.classification.evaluate: the run's own predictions, argmax or the
    sign of a one-output hinge head)."""
    return evaluate_outputs(net.model, data.batches("test"), net.loaded.loss, k=5)


def accuracy(net: Net, data: Data) -> float:
    """Top-1 test accuracy."""
    return evaluate(net, data)[0]


def align_nets(nets: list[Net], data: Data, num_iters: int) -> list[al.MeanAlignment | None]:
    """One MeanAlignment per layer l >= 1 (None for layer 0: the identity), all fed by the same forward passes."""
    count = len(nets[0].layers)

    def batches():
        for x, _ in data.batches("train", desc="mean alignment"):
            inputs = [net.layer_inputs(x) for net in nets]
            yield [[acts[layer] for acts in inputs] for layer in range(1, count)]

    return [None, *al.align_to_mean(batches, num_iters)] if count > 1 else [None]


def alignment_of(aligners: list[al.MeanAlignment | None], j: int, k: int) -> torch.Tensor | None:
    """A_k at layer j (None: the identity of layer 0)."""
    return None if aligners[j] is None else aligners[j].alignments[k]


def aligned_weights(nets: list[Net], aligners: list[al.MeanAlignment | None], j: int) -> list[torch.Tensor]:
    """Each net's weight j in mean space, (N, D_j) or (N, C, k, k)."""
    return [net.weight(j) if aligners[j] is None else al.weight_to_reference(net.weight(j), aligners[j].alignments[k])
            for k, net in enumerate(nets)]


def pair_moments(nets: list[Net], data: Data, split: str, aligners: list[al.MeanAlignment | None] | None = None):
    """Per layer l >= 1, the Moments of (net 1, net k) for k >= 2; with aligners also the mean net's covariance."""
    pairs = [al.CovarianceAccumulator() for _ in nets[1:]]
    mean_cov = al.CovarianceAccumulator()
    for x, _ in data.batches(split):
        inputs = [net.layer_inputs(x)[1:] for net in nets]
        for acc, acts in zip(pairs, inputs[1:]):
            acc.update(inputs[0], acts)
        if aligners is not None:
            mean_cov.update([aligner.mean_activation([acts[j - 1] for acts in inputs])
                             for j, aligner in enumerate(aligners[1:], start=1)])
    per_layer = [list(layer) for layer in zip(*[acc.compute() for acc in pairs])]
    return per_layer, mean_cov.compute() if aligners is not None else None


def own_covariances(nets: list[Net], data: Data) -> list[list[al.Moments]]:
    """Per net, per layer l >= 1, the net's own activation covariance on train (one pass)."""
    accumulators = [al.CovarianceAccumulator() for _ in nets]
    for x, _ in data.batches("train"):
        for net, accumulator in zip(nets, accumulators):
            accumulator.update(net.layer_inputs(x)[1:])
    return [accumulator.compute() for accumulator in accumulators]


def restandardise(new: Net, j: int, moments: al.Moments) -> torch.Tensor:
    """A_new (D_mean, D_new) = procrustes(E[phi_mean phi_new^T]), after resetting the running statistics of the BN
    feeding layer j to the new net's own moments and rescaling the cross-covariance accordingly (§5.4 c)."""
    std = new.standardizations[j]
    if std is None:
        return al.procrustes(moments.cross)
    new_mean, new_var = al.recompute_standardization(std.running_mean, std.running_var, moments.mean_b,
                                                     moments.power_b, std.eps)
    cross = al.rescale_cross_covariance(moments.cross, std.running_var, new_var, std.eps, moments.mean_a,
                                        moments.mean_b)
    std.running_mean.copy_(new_mean)
    std.running_var.copy_(new_var)
    return al.procrustes(cross)


def new_alignments(nets: list[Net], aligner: al.MeanAlignment, news: list[Net], data: Data, j: int) \
        -> list[torch.Tensor]:
    """A_new at layer j >= 1 for every rainbow net of `news`, from ONE train pass (§5.4 c).

    The mean representation of the M trained nets at layer j does not depend on the rainbow net, so each batch's
    is computed once and shared by the K rainbow nets (the nets are sampled in lockstep, layer by layer), and
    every forward pass stops at layer j: M + K truncated passes per layer instead of K (M + 1) full ones. Nothing
    is stored beyond one batch; each rainbow net's statistics are its own accumulator (issue 18 item 7;
    benchmarks/bench_rainbow.py checks the outputs against the per-net passes)."""
    accumulators = [al.CovarianceAccumulator() for _ in news]
    for x, _ in data.batches("train"):
        mean = aligner.mean_activation([net.layer_input(x, j) for net in nets])
        for accumulator, new in zip(accumulators, news):
            accumulator.update(mean, al.as_samples(new.layer_input(x, j)))
    return [restandardise(new, j, accumulator.compute()) for new, accumulator in zip(news, accumulators)]


def rainbow_networks(nets: list[Net], aligners: list[al.MeanAlignment | None], draws: list[list[torch.Tensor]],
                     mean_classifier: torch.Tensor, data: Data) -> tuple[np.ndarray, np.ndarray, list[Net]]:
    """(top-1 (K, L), top-5 (K, L), the K rainbow nets) for K = len(draws) rainbow nets sampled in lockstep (§5.4).

    Column r: test accuracy with layers 0..r-1 resampled, layer r net 1's trained weight (for r = L-1 the mean
    aligned classifier) transported to the rainbow net by A_new, layers after r net 1's own. draws[k][j] is
    rainbow net k's (N_j, D_j flat) weight of layer j in mean space. The returned nets are full rainbow nets.
    """
    last, shape = len(nets[0].layers) - 1, [nets[0].weight(j).shape for j in range(len(nets[0].layers))]
    news = [nets[0].copy() for _ in draws]
    top1, top5 = np.zeros((len(news), last + 1)), np.zeros((len(news), last + 1))
    for j in tqdm(range(last + 1), desc="rainbow layers", unit="layer", disable=None, leave=False):
        alignments = [None] * len(news) if j == 0 else new_alignments(nets, aligners[j], news, data, j)
        reference = mean_classifier if j == last else aligned_weights(nets[:1], aligners, j)[0]
        for k, (new, A_new) in enumerate(zip(news, alignments)):
            def transport(weight, A_new=A_new):  # layer 0: A_new = I
                return weight if A_new is None else al.weight_from_reference(weight, A_new)

            new.set_weight(j, transport(reference))
            top1[k, j], top5[k, j] = evaluate(new, data)
            if j < last:
                new.set_weight(j, transport(draws[k][j].reshape(shape[j])))
    return top1, top5, news


def clipping_curves(net: Net, alignment: torch.Tensor, bases: list[torch.Tensor], j: int,
                    points: int, data: Data) -> tuple[np.ndarray, np.ndarray]:
    """(d grid, accuracy (bases, grid)) for net 1 with layer j clipped in each basis (§5.5)."""
    grid = al.clipping_grid(bases[0].shape[0], points)
    work, original = net.copy(), net.weight(j)
    curves = np.zeros((len(bases), len(grid)))
    for b, basis in enumerate(bases):
        for g, d in enumerate(grid):
            work.set_weight(j, al.clip_weight(original, alignment, basis, int(d)))
            curves[b, g] = accuracy(work, data)
    return grid, curves
