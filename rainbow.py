"""Rainbow networks (seed002, "A Rainbow in Deep Network Black Boxes"): align M trained seeds, estimate their
weight covariances, sample Gaussian rainbow networks, clip layers and test the Gaussianity of the weights.

    python rainbow.py --model-name rainbow_mlp --traindata digits --seeds 0 1 2 3 4 --num_samples 5
    python rainbow.py --model-name scattering --traindata cifar10 --seeds $(seq 0 49) --num_samples 10 --batchsize 64

The M runs <workdir>/<dataset>/<model>/rnd<seed> (--seeds, default every one found; at least 2, one
architecture), each opened as a pipeline.loaded.LoadedRun (its inputs() is the normalisation, its predictions()
the accuracy, hinge heads included), are combined into the group stage "rainbow" of pipeline.contract
(<dataset>/<model>/rainbow/). "Layer l" (0-based, l = 0..L-1) is the input of weight layer l (DESIGN.md
"Layers"; the paper's layer j is l + 1), with space as samples (§5.1): a conv input (B, C, H, W) has D_l = C, a
Linear input its width; a classifier on flattened (C, H, W) features (models with `classifier_input_shape`) is
aligned over C. Every statistic streams over the train split (test split for accuracies and the alignment
error), in float64, with the data on the device; every random draw comes from a torch.Generator seeded with
--seed (the rainbow weights) or --seed + 1 (the random clipping bases).

1. Mean alignment (§5.2): --num_iters + 1 passes align every net to the mean representation, A_k (D_l, D_l),
   for l >= 1 (measures.alignment.align_to_mean, every layer from the same forward passes). Layer 0 sees the
   image (or its fixed scattering), the same in every net: A = I, as the spec's pairwise alignment forces (§5.2).
2. Alignment quality (§5.2), l >= 1: net k = 2..M against net 1, A fitted on train; r2 on train, error on test.
3. Weight covariance (§5.3): the M nets' weights brought to mean space (conv kernels contract A over input
   channels, then rows are flattened over (C, k, k)), C_l = W^T W / (M N). Spectra: C_l, net 1's alone, net
   1's initialisation (epoch 0, unaligned), and the activation covariance of the mean net ("KPCA").
4. Rainbow nets (§5.4), --num_samples of them, starting from a copy of net 1: for l = 0..L-1, stream the train
   set through the M trained nets and the new one, recompute the new net's standardisation feeding layer l
   (models with `standardizations()`, l >= 1), A_new = procrustes(E[phi_mean phi_new^T]); evaluate the net whose
   layers 0..l-1 are rainbow layers and whose layer l is net 1's weight transported by A_new (for l = L-1 the
   mean aligned trained classifier, §5.4), then (l < L-1) draw W_l ~ N(0, C_l) row-wise and install W_l A_new.
5. Clipping (§5.5): net 1's layer l (l >= 1; layer 0 sees the image, identical across nets) replaced by
   W A^T P_d A for the first d vectors of a channel basis of mean space: "weight" (C_l's eigenvectors; for
   k x k kernels the channel covariance of the kernel taps), "activation" (the mean net's activation
   covariance) or "random" (Haar); d on the original's grid of --clip_points values, np.arange(0, D_l + 1,
   D_l / (clip_points - 1)) truncated (measures.alignment.clipping_grid; until issue 18 a rounded linspace, so
   the d values of clipping.npz and clip_within_1pct moved); test accuracy, other layers intact.
6. Gaussianity (§2), layers 0..L-2: Marchenko-Pastur outlier fraction of net 1's aligned weight before and
   after whitening by C_l (NaN when M N <= D_flat: then exactly white), and KS p-values (scipy.stats.kstest
   against N(0, 1)) of the M nets' weights whitened by C_l along the principal directions --ks_ranks, read as
   the original's 0-based columns r (r = 0: the top direction; the spec's r = 1, 10, 100 are the 2nd, 11th and
   101st). Until issue 18 the ranks were 1-based (column r - 1): the KS p-values and whitened samples moved.

Files of the stage (pipeline.contract.STAGES["rainbow"]; L weight layers, M seeds, K samples, ll = two-digit
0-based layer index 00..L-1, D_l as above):
  alignment    dims (L,) D_l; r2 (L, M-1) train r2 of net k vs net 1; error (L, M-1) test alignment error;
               unexplained_variance (L, num_iters + 1) of the mean representation after each pass (layer 0:
               r2 1, error 0, unexplained variance 0, the identity alignment)
  spectra      weight_ll C_l eigenvalues (descending, D_flat = fan-in); weight_single_ll net 1's alone and
               weight_init_ll its initialisation's (min(N, D_flat) values of W^T W / N); for ll >= 01
               activation_ll (D_l,) eigenvalues of the mean net's activation covariance
  rainbow      trained_accuracy (M,) test accuracy of each seed; seeds (M,); rainbow_accuracy (K, L): column
               r = test accuracy with layers 0..r-1 resampled (r = 0: net 1 through its transported layer 0;
               r = L-1: the full rainbow net, every layer but the classifier resampled)
  clipping     bases (3,) "weight", "activation", "random"; reference_accuracy () net 1's; for ll = 01..L-1:
               d_ll (G,) kept dimensions, accuracy_ll (3, G) test accuracy per basis
  gaussianity  mp_colored (L-1,), mp_white (L-1,) fractions outside the MP bulk; ks_ranks (R,); ks_pvalue
               (L-1, R) (NaN where column r does not exist: r >= C_l's rank); for ll = 00..L-2: mp_eigs_colored_ll,
               mp_eigs_white_ll eigenvalues normalised to mean 1, mp_q_ll (2,) their aspect ratios q,
               whitened_ll (M N, R) the whitened weights along those directions (NaN-padded)
  summary      dataset, model, seeds, epochs, layers, dims, trained_accuracy {seed}, rainbow_accuracy (K,)
               of the full rainbow nets, rainbow_by_layer (L,) medians over samples, r2 and
               alignment_error (L,) medians over pairs, unexplained_variance (L,), clip_within_1pct
               {basis: [smallest grid d with accuracy >= reference - 0.01, per layer 1..L-1]},
               mp_colored, mp_white, ks_pvalue {ll: {rank: p}}, seconds
  _done.json   flags, argv, seconds
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch
from scipy import stats
from torch import nn
from tqdm import tqdm

from measures import alignment as al
from pipeline.contract import open_stage
from pipeline.loaded import LoadedRun, check_run_flags
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, run_main
from utils.device import make_generator, resolve_device
from utils.errors import ToolkitError
from utils.rundir import RunDir, safe_name, seed_dirs, variant_of
from utils.taps import LayerTaps

BATCH = 500
BASES = ("weight", "activation", "random")
NORMALIZATIONS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def parse_args(argv=None):
    # "resolve": --seed (add_run_flags: the run's seed) is redeclared below; the runs are chosen by --seeds
    parser = ToolkitParser(description=__doc__.split("\n\n")[0], conflict_handler="resolve")
    add_run_flags(parser, default_model="rainbow_mlp")
    add_stage_flags(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="the runs rnd<seed> to combine (default: every one found; at least 2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the rainbow weights' generator (the random bases use seed + 1)")
    parser.add_argument("--num_samples", type=int, default=5, help="rainbow networks drawn (K)")
    parser.add_argument("--num_iters", type=int, default=2, help="refinements of the mean alignment (§5.2)")
    parser.add_argument("--clip_points", type=int, default=51,
                        help="values of d from 0 to D_l, step D_l / (points - 1), truncated (§5.5: 51)")
    parser.add_argument("--ks_ranks", type=int, nargs="+", default=[1, 10, 100],
                        help="principal directions whose whitened marginals are KS-tested (§2), as the original's "
                             "0-based columns (r = 0: the top direction)")
    parser.add_argument("--batchsize", type=int, default=BATCH, help="images per forward pass of the M nets")
    parser.add_argument("--max-samples", type=int, default=None, help="use at most N images of each split")
    args = parser.parse_args(argv)
    for flag, value, least in (("--num_samples", args.num_samples, 1), ("--clip_points", args.clip_points, 2),
                               ("--batchsize", args.batchsize, 1), ("--max-samples", args.max_samples, 1)):
        if value is not None and value < least:
            parser.error(f"{flag} must be >= {least}, got {value}")
    if min(args.ks_ranks) < 0 or args.num_iters < 0:
        parser.error("--ks_ranks must be >= 0 and --num_iters >= 0")
    return args


# ---- the M trained networks and their data ----------------------------------------------------------------------
@dataclass
class Net:
    """A LoadedRun (a trained seed, its initialisation or a rainbow copy) seen as rainbow sampling needs it: the
    weight and the input of each analysis layer in channel form, and the standardisation feeding each layer."""

    loaded: LoadedRun

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
        return Net(replace(self.loaded, model=copy.deepcopy(self.model), extras={}))

    def channel_view(self, j: int, tensor: torch.Tensor) -> torch.Tensor:
        """A layer input (B, D) or weight (N, D) of a classifier on flattened (C, H, W) as (., C, H, W)."""
        shape = getattr(self.model, "classifier_input_shape", None)
        if j == len(self.layers) - 1 and shape is not None and tensor.dim() == 2:
            return tensor.reshape(tensor.shape[0], *shape)
        return tensor

    def weight(self, j: int) -> torch.Tensor:
        return self.channel_view(j, self.layers[j].weight.detach())

    @torch.no_grad()
    def set_weight(self, j: int, weight: torch.Tensor) -> None:
        self.layers[j].weight.copy_(weight.reshape(self.layers[j].weight.shape))

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
    runs = found if args.seeds is None else [RunDir.from_args(args, seed=s)
                                             for s in args.seeds]
    if len(runs) < 2:
        raise ToolkitError(f"rainbow.py combines at least 2 seeds; found {len(runs)} under "
                           f"{RunDir.from_args(args, seed=0).group}; train more with "
                           "`python train_classifier.py --seed N` or pass --seeds")
    nets = []
    for run in runs:
        nets.append(Net(LoadedRun.open(run, args.start_epoch, device=device)))
        check_run_flags(args, nets[-1].loaded.config, run)
    first = nets[0].loaded.config
    for run, net in zip(runs[1:], nets[1:]):
        config = net.loaded.config
        if config["model"] != first["model"] or config["data"]["mean"] != first["data"]["mean"]:
            raise ToolkitError(f"{run.root} has another architecture or normalisation than {runs[0].root} "
                               f"({config['model']} vs {first['model']}); combine runs of one architecture")
    check_supported(nets[0], args.model_name)
    return runs, nets, Net(LoadedRun.open(runs[0], init=True, device=device))


def check_supported(net: Net, name: str) -> None:
    """Rainbow sampling replaces weights only: biases and affine normalisations would not be resampled."""
    if not hasattr(net.model, "weight_layers"):
        raise ToolkitError(f"rainbow.py needs a registry model listing its weight_layers(), not "
                           f"{type(net.model).__name__}; use rainbow_mlp, rainbow_cnn, scattering or scattering4")
    declared = {id(m) for m in net.standardizations if m is not None}
    biased = [layer for layer in net.layers if getattr(layer, "bias", None) is not None]
    norms = [m for m in net.model.modules() if isinstance(m, NORMALIZATIONS) and id(m) not in declared]
    if biased or norms or not all(isinstance(layer, (nn.Conv2d, nn.Linear)) for layer in net.layers):
        raise ToolkitError(f"rainbow.py needs bias-free conv/linear weight layers and no normalisation other "
                           f"than declared non-affine standardisations (seed002 §3, §7); {name} has "
                           f"{len(biased)} biased layer(s) and {len(norms)} other normalisation(s); use rainbow_mlp, "
                           "rainbow_cnn, scattering or scattering4")


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


@torch.no_grad()
def accuracy(net: Net, data: Data) -> float:
    """Test accuracy, through the run's own predictions (argmax, or the sign of a one-output hinge head)."""
    correct = sum(int((net.loaded.predictions(net.model(x)) == y).sum()) for x, y in data.batches("test"))
    return correct / data.size("test")


# ---- 1-2. alignment --------------------------------------------------------------------------------------------
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


def pairwise_quality(train: list, test: list) -> tuple[np.ndarray, np.ndarray]:
    """(r2 on train, alignment error on test), each (layers, M-1), A fitted on train (§5.2)."""
    r2 = [[float(al.alignment_r2(m.cross, m.sq_norm_a, m.sq_norm_b)) for m in pairs] for pairs in train]
    error = [[float(al.alignment_error(al.procrustes(fit.cross), m.cross, m.sq_norm_a, m.sq_norm_b))
              for fit, m in zip(fits, pairs)] for fits, pairs in zip(train, test)]
    return np.array(r2), np.array(error)


# ---- 3. weight covariances ------------------------------------------------------------------------------------
def aligned_weights(nets: list[Net], aligners: list[al.MeanAlignment | None], j: int) -> list[torch.Tensor]:
    """Each net's weight j in mean space, (N, D_j) or (N, C, k, k)."""
    return [net.weight(j) if aligners[j] is None else al.weight_to_reference(net.weight(j), aligners[j].alignments[k])
            for k, net in enumerate(nets)]


def rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1).to(torch.float64)


def channel_covariance(weights: list[torch.Tensor]) -> torch.Tensor:
    """(C, C) covariance over input channels with every kernel tap as a row ((N k k, C)); C_j for 2-D weights."""
    return al.weight_covariance([w.movedim(1, -1).reshape(-1, w.shape[1]) for w in weights])


# ---- 4. rainbow networks --------------------------------------------------------------------------------------
def new_alignment(nets: list[Net], aligner: al.MeanAlignment, new: Net, data: Data, j: int) -> torch.Tensor:
    """A_new (D_mean, D_new) at layer j >= 1 from one train pass, re-standardising the new net first (§5.4 c)."""
    acc = al.CovarianceAccumulator()
    for x, _ in data.batches("train"):
        mean = aligner.mean_activation([net.layer_inputs(x)[j] for net in nets])
        acc.update(mean, al.as_samples(new.layer_inputs(x)[j]))
    moments = acc.compute()
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


def rainbow_accuracies(nets: list[Net], aligners: list[al.MeanAlignment | None], draws: list[torch.Tensor],
                       mean_classifier: torch.Tensor, data: Data) -> list[float]:
    """Test accuracy after resampling layers 0..r-1, r = 0..L-1, for one rainbow net (§5.4)."""
    new, last = nets[0].copy(), len(nets[0].layers) - 1
    accuracies = []
    for j in range(last + 1):
        if j == 0:
            transport = lambda weight: weight  # noqa: E731 - layer 0: A_new = I
        else:
            A_new = new_alignment(nets, aligners[j], new, data, j)
            transport = lambda weight: al.weight_from_reference(weight, A_new)  # noqa: E731,B023
        reference = mean_classifier if j == last else aligned_weights(nets[:1], aligners, j)[0]
        new.set_weight(j, transport(reference))
        accuracies.append(accuracy(new, data))
        if j < last:
            new.set_weight(j, transport(draws[j].reshape(nets[0].weight(j).shape)))
    return accuracies


# ---- 5. clipping -----------------------------------------------------------------------------------------------
def clipping_curves(net: Net, alignment: torch.Tensor, bases: dict[str, torch.Tensor], j: int,
                    points: int, data: Data) -> tuple[np.ndarray, np.ndarray]:
    """(d grid, accuracy (bases, grid)) for net 1 with layer j clipped in each basis (§5.5)."""
    dim = bases[BASES[0]].shape[0]
    grid = al.clipping_grid(dim, points)
    work, original = net.copy(), net.weight(j)
    curves = np.zeros((len(BASES), len(grid)))
    for b, name in enumerate(BASES):
        for g, d in enumerate(grid):
            work.set_weight(j, al.clip_weight(original, alignment, bases[name], int(d)))
            curves[b, g] = accuracy(work, data)
    return grid, curves


# ---- 6. Gaussianity --------------------------------------------------------------------------------------------
def normalised(eigenvalues: torch.Tensor) -> np.ndarray:
    return (eigenvalues / eigenvalues.mean()).cpu().numpy()


def gaussianity(aligned: list[torch.Tensor], eigenvalues: torch.Tensor, eigenvectors: torch.Tensor,
                ks_ranks: list[int]) -> dict:
    """MP fractions of net 1's weight before/after whitening, KS p-values and whitened samples (§2).

    As in the spec, net 1 is whitened by the C_j of all M nets, its own rows included; this biases it towards
    white for small M and makes it exactly white when M N <= D (its rows are then part of an orthogonal
    matrix), so mp_white is NaN there. ks_ranks are 0-based columns of the whitened weights, as the original's r.
    """
    values, vectors = al.positive_eigenpairs(eigenvalues, eigenvectors)
    single = rows(aligned[0])
    colored = al.weight_spectrum(single)[0]
    white = al.weight_spectrum(al.whiten_weights(single, values, vectors))[0]
    q_colored, q_white = single.shape[1] / single.shape[0], values.numel() / single.shape[0]
    degenerate = len(aligned) * single.shape[0] <= single.shape[1]
    whitened = al.whiten_weights(torch.cat([rows(w) for w in aligned]), values, vectors)
    samples = np.full((whitened.shape[0], len(ks_ranks)), np.nan)
    pvalues = np.full(len(ks_ranks), np.nan)
    for i, rank in enumerate(ks_ranks):
        if rank < whitened.shape[1]:  # the original's 0-based column r
            samples[:, i] = whitened[:, rank].cpu().numpy()
            pvalues[i] = stats.kstest(samples[:, i], "norm").pvalue
    return {"mp_colored": float(al.marchenko_pastur_fraction(colored, q_colored)),
            "mp_white": float("nan") if degenerate else float(al.marchenko_pastur_fraction(white, q_white)),
            "eigs_colored": normalised(colored), "eigs_white": normalised(white),
            "q": np.array([q_colored, q_white]), "whitened": samples, "ks_pvalue": pvalues}


def within_one_percent(grid: np.ndarray, curve: np.ndarray, reference: float) -> int:
    """The smallest grid d whose accuracy is >= reference - 0.01 (-1 if none)."""
    good = curve >= reference - 0.01
    return int(grid[np.argmax(good)]) if good.any() else -1


def layer_key(j: int) -> str:
    """0-based layer index -> the two-digit file key 00..L-1."""
    return f"{j:02d}"


# ---- the stage --------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    runs, nets, init = open_runs(args, device)
    seeds = [int(run.root.name[3:]) for run in runs]
    epochs = [net.loaded.epoch for net in nets]
    flags = {"seeds": seeds, "epochs": epochs, "num_samples": args.num_samples, "num_iters": args.num_iters,
             "clip_points": args.clip_points, "ks_ranks": args.ks_ranks, "seed": args.seed,
             "max_samples": args.max_samples}
    out = open_stage(runs[0], "rainbow", flags, args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    data = load_data(args, nets[0].loaded)
    L = len(nets[0].layers)

    aligners = align_nets(nets, data, args.num_iters)
    train_pairs, mean_cov = pair_moments(nets, data, "train", aligners)
    test_pairs, _ = pair_moments(nets, data, "test")
    r2, error = pairwise_quality(train_pairs, test_pairs)
    dims = np.array([nets[0].layer_inputs(nets[0].loaded.example_input(), only=0)[0].shape[1]]
                    + [m.cross.shape[0] for m in mean_cov])
    out.save("alignment", {"dims": dims, "r2": np.vstack([np.ones((1, len(nets) - 1)), r2]),
                           "error": np.vstack([np.zeros((1, len(nets) - 1)), error]),
                           "unexplained_variance": np.array([[0.0] * (args.num_iters + 1)]
                                                            + [[float(v) for v in a.unexplained_variance]
                                                               for a in aligners[1:]])})

    spectra, weight_spectra, gauss, bases = {}, [], [], {}
    random_generator = make_generator(device, args.seed + 1)
    for j in range(L):
        aligned = aligned_weights(nets, aligners, j)
        # thin: r = min(M N, D) directions of C_j, through an SVD of the M N stacked rows when M N < D (an MLP's
        # first layer: D = 3072), with no D x D matrix; C_j is zero on the rest, so its spectrum is padded with
        # zeros to length D
        eigenvalues, eigenvectors = al.weight_spectrum(aligned)
        dim, rank = eigenvectors.shape
        spectra[f"weight_{layer_key(j)}"] = torch.cat([eigenvalues, eigenvalues.new_zeros(dim - rank)])
        spectra[f"weight_single_{layer_key(j)}"] = al.weight_spectrum(rows(aligned[0]))[0]
        spectra[f"weight_init_{layer_key(j)}"] = al.weight_spectrum(rows(init.weight(j)))[0]
        weight_spectra.append((eigenvalues, eigenvectors))
        if j < L - 1:
            gauss.append(gaussianity(aligned, eigenvalues, eigenvectors, args.ks_ranks))
        if j > 0:
            activation_values, activation_vectors = al.principal_components(mean_cov[j - 1].cross)
            spectra[f"activation_{layer_key(j)}"] = activation_values
            if aligned[0].dim() > 2:
                weight_basis = al.principal_components(channel_covariance(aligned))[1]
            else:  # clipping needs a complete basis of the D inputs
                weight_basis = eigenvectors if rank == dim else \
                    al.principal_components(al.weight_covariance(aligned))[1]
            bases[j] = {"weight": weight_basis, "activation": activation_vectors,
                        "random": al.random_basis(int(dims[j]), random_generator, device)}
    out.save("spectra", spectra)

    trained = [accuracy(net, data) for net in nets]
    mean_classifier = sum(aligned_weights(nets, aligners, L - 1)) / len(nets)
    sample_generator = make_generator(device, args.seed)
    draws = [al.sample_from_spectrum(*weight_spectra[j], args.num_samples * nets[0].layers[j].weight.shape[0],
                                     sample_generator).chunk(args.num_samples) for j in range(L - 1)]
    samples = np.array([rainbow_accuracies(nets, aligners, [d[k] for d in draws], mean_classifier, data)
                        for k in tqdm(range(args.num_samples), desc="rainbow nets", unit="net", disable=None,
                                      leave=False)])
    out.save("rainbow", {"trained_accuracy": np.array(trained), "seeds": np.array(seeds),
                         "rainbow_accuracy": samples})

    clipping = {"bases": np.array(BASES), "reference_accuracy": np.array(trained[0])}
    for j in range(1, L):
        clipping[f"d_{layer_key(j)}"], clipping[f"accuracy_{layer_key(j)}"] = clipping_curves(
            nets[0], alignment_of(aligners, j, 0), bases[j], j, args.clip_points, data)
    out.save("clipping", clipping)

    gaussian_arrays = {"mp_colored": np.array([g["mp_colored"] for g in gauss]),
                       "mp_white": np.array([g["mp_white"] for g in gauss]), "ks_ranks": np.array(args.ks_ranks),
                       "ks_pvalue": np.array([g["ks_pvalue"] for g in gauss]).reshape(L - 1, len(args.ks_ranks))}
    for j, g in enumerate(gauss):
        key = layer_key(j)
        gaussian_arrays.update({f"mp_eigs_colored_{key}": g["eigs_colored"], f"mp_eigs_white_{key}": g["eigs_white"],
                                f"mp_q_{key}": g["q"], f"whitened_{key}": g["whitened"]})
    out.save("gaussianity", gaussian_arrays)

    seconds = time.perf_counter() - started
    summary = {
        "dataset": nets[0].loaded.dataset_name, "model": safe_name(args.model_name), "seeds": seeds,
        "epochs": epochs, "layers": [type(layer).__name__ for layer in nets[0].layers], "dims": dims.tolist(),
        "trained_accuracy": {str(s): a for s, a in zip(seeds, trained)},
        "rainbow_accuracy": samples[:, -1].tolist(), "rainbow_by_layer": np.median(samples, 0).tolist(),
        "r2": [1.0, *np.median(r2, 1).tolist()], "alignment_error": [0.0, *np.median(error, 1).tolist()],
        "unexplained_variance": [0.0, *[float(a.unexplained_variance[-1]) for a in aligners[1:]]],
        "clip_within_1pct": {name: [within_one_percent(clipping[f"d_{layer_key(j)}"],
                                                       clipping[f"accuracy_{layer_key(j)}"][b], trained[0])
                                    for j in range(1, L)] for b, name in enumerate(BASES)},
        "mp_colored": gaussian_arrays["mp_colored"].tolist(), "mp_white": gaussian_arrays["mp_white"].tolist(),
        "ks_pvalue": {layer_key(j): {str(r): float(p) for r, p in zip(args.ks_ranks, g["ks_pvalue"])}
                      for j, g in enumerate(gauss)},
        "seconds": seconds,
    }
    out.save("summary", summary)
    out.done(seconds=seconds)
    print(f"{out.dir}: trained {np.median(trained):.4f}, rainbow {np.median(samples[:, -1]):.4f} (median of "
          f"{args.num_samples}), r2 {np.round(summary['r2'], 3).tolist()} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
