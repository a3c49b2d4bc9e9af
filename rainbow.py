"""Rainbow networks (seed002, "A Rainbow in Deep Network Black Boxes"): align M trained seeds, estimate their
weight covariances, sample Gaussian rainbow networks, clip layers and test the Gaussianity of the weights.

    python rainbow.py --model-name rainbow_mlp --traindata digits --seeds 0 1 2 3 4 --num_samples 5
    python rainbow.py --model-name scattering --traindata cifar10 --seeds $(seq 0 49) --num_samples 10 --batchsize 64
    python rainbow.py --model-name rainbow_mlp --traindata digits --workdir runs/w0.5 \
        --sweep_workdirs runs/w0.125 runs/w0.25          # the width sweep (stage rainbow-width, below)

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
4. Rainbow nets (§5.4), --num_samples K of them, each starting from a copy of net 1, sampled in lockstep: for
   l = 0..L-1, one stream of the train set through the M trained nets (stopped at layer l; their mean
   representation is computed once per batch and shared by the K rainbow nets) and the K rainbow nets; each
   recomputes its standardisation feeding layer l (models with `standardizations()`, l >= 1) and A_new =
   procrustes(E[phi_mean phi_new^T]); it is evaluated (top-1 and top-5) with layers 0..l-1 resampled and layer l
   net 1's weight transported by A_new (for l = L-1 the mean aligned trained classifier, §5.4), then (l < L-1)
   draws W_l ~ N(0, C_l) row-wise and installs W_l A_new. Two readings are reported, each labelled: column L-2,
   every layer but the last block and the classifier resampled, those two trained-then-aligned (the paper's
   CIFAR reading at j = 7 of 8, §5.4: its 91.6 / 81.4 is that reading of the skip variant; the plain J8 net's
   trained reference is 88.36), and column L-1, the full rainbow net (every layer but the classifier resampled,
   the mean classifier aligned). Until issue 18 only the full reading was reported, beside the paper's numbers.
   --retrain_epochs E > 0: the first --retrain_samples full rainbow nets get their last block and classifier
   retrained for E epochs with the run's recipe, the other layers frozen (§4 "retrained classifier").
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

7. Covariance convergence (§2 "covariance_convergence"): C_l also from the first N nets for N in --cov_nets
   below M (spectra, relative operator-norm distance to C_l of all M, clipping net 1 in each one's basis).
8. Training dynamics (§5.6): net 1's weight at each kept epoch t (train_classifier.py --save-epochs 0 1 2 5 10
   20 50 100) along the eigenvectors e_r of the final C_l brought to net 1's input space: a_r(t) = ||W(t) e_r|| /
   ||W(0) e_r||, c_r(t) = cos(W(t) e_r, W(0) e_r) (measures.alignment.weight_dynamics; W(0): epoch 0). With M N
   close to D_flat, C_l's last directions are those the nets' final weights barely span, so a_r(t) falls there.
9. The tutorial's cosine matrices of net 1 vs net 2 (§7 steps 5, 7), the leading --cosine_rank vectors:
   |V_1 V_2^T| and |V_1 A V_2^T| of the weights' right singular vectors, |E_1^T E_2| and |E_1^T A E_2| of the
   activation covariances' eigenvectors, A = procrustes(E[phi_1 phi_2^T]) from train.
--flat_classifier aligns a conv net's classifier over its flattened C H W inputs (the tutorial CNN's 1600 x 1600
alignment, §7 step 9) instead of over channels with space as samples.

Files of the stage (pipeline.contract.STAGES["rainbow"]; L weight layers, M seeds, K samples, ll = two-digit
0-based layer index 00..L-1, D_l as above, D_flat the fan-in of layer l's rows):
  alignment    dims (L,) D_l; r2 (L, M-1) train r2 of net k vs net 1; error (L, M-1) test alignment error;
               unexplained_variance (L, num_iters + 1) of the mean representation after each pass (layer 0:
               r2 1, error 0, unexplained variance 0, the identity alignment)
  spectra      weight_ll C_l eigenvalues (descending, D_flat); weight_single_ll net 1's alone and
               weight_init_ll its initialisation's (min(N, D_flat) values of W^T W / N); for ll >= 01
               activation_ll (D_l,) eigenvalues of the mean net's activation covariance
  rainbow      trained_accuracy, trained_top5 (M,) test top-1 / top-5 of each seed; seeds (M,);
               rainbow_accuracy, rainbow_top5 (K, L): column r = test accuracy with layers 0..r-1 resampled
               (r = 0: net 1 itself, its layer 0 transported by the identity; r = L-2: the paper's reading;
               r = L-1: the full rainbow net); retrained_accuracy, retrained_top5 (K,) after retraining the
               last block and the classifier (NaN for the nets not retrained)
  clipping     bases (3,) "weight", "activation", "random"; reference_accuracy () net 1's; for ll = 01..L-1:
               d_ll (G,) kept dimensions, accuracy_ll (3, G) test accuracy per basis
  convergence  nets (P,) the numbers of nets N (the --cov_nets below M, then M); operator_error (P, L)
               ||C_l(N) - C_l(M)||_2 / ||C_l(M)||_2; spectrum_ll (P, D_flat) eigenvalues of C_l(N) (zero-padded);
               for ll = 01..L-1: d_ll (G,), accuracy_ll (P, G) net 1 clipped in C_l(N)'s basis
  dynamics     epochs (T,) net 1's kept epochs; amplification_ll, cosine_ll (T, R_l) a_r(t), c_r(t) for the R_l
               = rank(C_l) eigenvectors, largest eigenvalue first
  cosines      weight_ll, weight_aligned_ll (k, k) |V_1 V_2^T|, |V_1 A V_2^T|; for ll >= 01 activation_ll,
               activation_aligned_ll (k, k) |E_1^T E_2|, |E_1^T A E_2| (k = --cosine_rank or less)
  gaussianity  mp_colored (L-1,), mp_white (L-1,) fractions outside the MP bulk; ks_ranks (R,); ks_pvalue
               (L-1, R) (NaN where column r does not exist: r >= C_l's rank); for ll = 00..L-2: mp_eigs_colored_ll,
               mp_eigs_white_ll eigenvalues normalised to mean 1, mp_q_ll (2,) their aspect ratios q,
               whitened_ll (M N, R) the whitened weights along those directions (NaN-padded)
  summary      dataset, model, seeds, epochs, layers, dims, trained_accuracy, trained_top5 {seed};
               rainbow_accuracy, rainbow_top5 (K,) of the full rainbow nets; rainbow_last_trained,
               rainbow_last_trained_top5 (K,) the paper's reading (column L-2); retrained_accuracy,
               retrained_top5 (the retrained nets only); rainbow_by_layer (L,) medians over samples, r2 and
               alignment_error (L,) medians over pairs, unexplained_variance (L,), clip_within_1pct
               {basis: [smallest grid d with accuracy >= reference - 0.01, per layer 1..L-1]},
               mp_colored, mp_white, ks_pvalue {ll: {rank: p}}, seconds
  _done.json   flags, argv, seconds

Width sweep (--sweep_workdirs DIR..., stage "rainbow-width" in --workdir's group; §2 resampling_width,
alignment_convergence, covariance_convergence): the nets of --workdir and of each DIR (one width per workdir, at
least 2 seeds each, each workdir's rainbow stage done: the per-width accuracies come from there) are aligned to
the mean representation of the widest nets (its --num_iters + 1 passes), each net by A = procrustes(E[phi_ref
phi_k^T]) on train, a (D_ref, D_k) partial isometry; layer 0 (the image) by the identity. Files (S widths
ascending, M_max the most seeds of a width, NaN-padded):
  widths       widths (S,); dims (S, L) D_l; seeds (S, M_max) (-1-padded); alignment_error (S, L, M_max) each net
               against the widest's mean on test; operator_error (S, L) ||D_s C_l(s) - D_ref C_l(ref)||_2 /
               ||D_ref C_l(ref)||_2 with C_l(s) of width s in the widest's space and D its fan-in (NaN for the
               widest, the reference); weight_ll (S, D_ref_flat) eigenvalues x D_s of C_l(s) in the widest's
               space (zero-padded); for ll >= 01 activation_ll (S, D_max) eigenvalues / trace of net 1's activation
               covariance at each width; trained_accuracy (S, M_max), rainbow_last_trained, rainbow_full,
               rainbow_retrained (S, K_max) from each width's rainbow summary
  summary      dataset, model, widths, reference_width, workdirs, seeds, trained_accuracy, rainbow_last_trained,
               rainbow_full, rainbow_retrained (medians per width), alignment_error (S, L) medians,
               operator_error (S, L), seconds
"""
from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np
import torch
from scipy import stats
from torch import nn
from tqdm import tqdm

from measures import alignment as al
from measures.classification import evaluate as evaluate_outputs
from pipeline.contract import layer_key, load, open_stage, require
from pipeline.loaded import LoadedRun, check_run_flags
from training.loop import TrainData, Trainer
from training.recipes import Recipe, get_recipe
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, run_main
from utils.device import make_generator, measurement_device
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
    parser.add_argument("--cov_nets", type=int, nargs="+", default=[1, 10, 50],
                        help="covariance convergence (§2): C_l also estimated from the first N nets, for each N < M")
    parser.add_argument("--retrain_epochs", type=int, default=0,
                        help="retrain the last block and the classifier of rainbow nets for this many epochs with "
                             "the run's recipe (§4 'retrained classifier'; 0: not done)")
    parser.add_argument("--retrain_samples", type=int, default=1, help="how many rainbow nets to retrain")
    parser.add_argument("--sweep_workdirs", nargs="+", default=None, metavar="DIR",
                        help="width sweep (stage rainbow-width, in --workdir's group): the nets of these workdirs, "
                             "one width each, and of --workdir aligned to the widest nets; each workdir's rainbow "
                             "stage must be done")
    parser.add_argument("--flat_classifier", action="store_true",
                        help="align a conv net's classifier over its flattened C H W input features (the tutorial's "
                             "CNN: 1600 x 1600, §7 step 9) instead of over channels with space as samples")
    parser.add_argument("--cosine_rank", type=int, default=32,
                        help="leading eigenvectors in the cosine matrices of net 1 vs net 2 (§7 steps 5 and 7)")
    parser.add_argument("--batchsize", type=int, default=BATCH, help="images per forward pass of the M nets")
    parser.add_argument("--max-samples", type=int, default=None, help="use at most N images of each split")
    args = parser.parse_args(argv)
    for flag, value, least in (("--num_samples", args.num_samples, 1), ("--clip_points", args.clip_points, 2),
                               ("--batchsize", args.batchsize, 1), ("--max-samples", args.max_samples, 1),
                               ("--cov_nets", min(args.cov_nets), 1), ("--retrain_epochs", args.retrain_epochs, 0),
                               ("--retrain_samples", args.retrain_samples, 1), ("--cosine_rank", args.cosine_rank, 1)):
        if value is not None and value < least:
            parser.error(f"{flag} must be >= {least}, got {value}")
    if min(args.ks_ranks) < 0 or args.num_iters < 0:
        parser.error("--ks_ranks must be >= 0 and --num_iters >= 0")
    return args


class _Reached(Exception):
    """Raised by Net.layer_input's hook once the layer's input is captured: nothing after it runs."""


# ---- the M trained networks and their data ----------------------------------------------------------------------
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
        raise ToolkitError(f"rainbow.py combines at least 2 seeds; found {len(runs)} under "
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


def check_supported(net: Net, name: str) -> None:
    """Rainbow sampling replaces weights only: biases and affine normalisations would not be resampled."""
    if not hasattr(net.model, "weight_layers"):
        raise ToolkitError(f"rainbow.py needs a registry model listing its weight_layers(), not "
                           f"{type(net.model).__name__}; use rainbow_mlp, rainbow_cnn, scattering, scattering_skip "
                           "or scattering4")
    declared = {id(m) for m in net.standardizations if m is not None}
    biased = [layer for layer in net.layers if getattr(layer, "bias", None) is not None]
    norms = [m for m in net.model.modules() if isinstance(m, NORMALIZATIONS) and id(m) not in declared]
    if biased or norms or not all(isinstance(layer, (nn.Conv2d, nn.Linear)) for layer in net.layers):
        raise ToolkitError(f"rainbow.py needs bias-free conv/linear weight layers and no normalisation other "
                           f"than declared non-affine standardisations (seed002 §3, §7); {name} has "
                           f"{len(biased)} biased layer(s) and {len(norms)} other normalisation(s); use rainbow_mlp, "
                           "rainbow_cnn, scattering, scattering_skip or scattering4")


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


def own_covariances(nets: list[Net], data: Data) -> list[list[al.Moments]]:
    """Per net, per layer l >= 1, the net's own activation covariance on train (one pass)."""
    accumulators = [al.CovarianceAccumulator() for _ in nets]
    for x, _ in data.batches("train"):
        for net, accumulator in zip(nets, accumulators):
            accumulator.update(net.layer_inputs(x)[1:])
    return [accumulator.compute() for accumulator in accumulators]


def cosine_matrices(nets: list[Net], own: list[list[al.Moments]], train_pairs: list, rank: int) -> dict:
    """The tutorial's cosine matrices of net 1 vs net 2 (§7 steps 5 and 7), the leading `rank` vectors of each:
    weights |V_1 V_2^T| (right singular vectors, input space) and, with net 2's brought to net 1's input space by
    A = procrustes(E[phi_1 phi_2^T]), |V_1 A V_2^T| (weight rows transported as W A^T, conv kernels over input
    channels); activations |E_1^T E_2| and |E_1^T A E_2| (covariance eigenvectors, l >= 1). Near-diagonal top
    blocks after alignment; before, only where the input space is shared (layer 0)."""
    result = {}
    for j in range(len(nets[0].layers)):
        weights = [net.weight(j).to(torch.float64) for net in nets[:2]]
        vectors = [torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)[2] for w in weights]
        k = min(rank, vectors[0].shape[0], vectors[1].shape[0])
        first, second = vectors[0][:k], vectors[1][:k]
        A = None if j == 0 else al.procrustes(train_pairs[j - 1][0].cross)          # (D_1, D_2): net 2 -> net 1
        moved = second if A is None else al.weight_to_reference(second.reshape(k, *weights[1].shape[1:]), A)
        result[layer_key(j, "weight")] = (first @ second.T).abs().cpu().numpy() \
            if first.shape == second.shape else np.full((k, k), np.nan)
        result[layer_key(j, "weight_aligned")] = (first @ moved.reshape(k, -1).T).abs().cpu().numpy()
        if j > 0:
            E1, E2 = (al.principal_components(moments[j - 1].cross)[1] for moments in own)
            k = min(rank, E1.shape[1], E2.shape[1])
            result[layer_key(j, "activation")] = (E1[:, :k].T @ E2[:, :k]).abs().cpu().numpy() \
                if E1.shape == E2.shape else np.full((k, k), np.nan)
            result[layer_key(j, "activation_aligned")] = (E1[:, :k].T @ A @ E2[:, :k]).abs().cpu().numpy()
    return result


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


def run_recipe(config: dict) -> Recipe:
    """The recipe a run was trained with (config.json "flags", with its overrides; else the named recipe)."""
    stored = config.get("flags", {}).get("recipe")
    if isinstance(stored, dict):
        names = {f.name for f in fields(Recipe)}
        return Recipe(**{key: tuple(value) if isinstance(value, list) else value for key, value in stored.items()
                         if key in names})
    return get_recipe(config["recipe"]["name"])


def retrain_last_block(news: list[Net], data: Data, epochs: int, seed: int) -> np.ndarray:
    """(top-1, top-5) per net, (R, 2), after retraining the last block and the classifier of rainbow nets (§4).

    As the original's "retrained classifier" runs: every weight layer but the last two frozen (P_1..P_{J-1} of
    the scattering net; the MLP's first layer), the last two trained from the rainbow net's weights with the run's
    own recipe (optimiser, learning rate and schedule restarted at epoch 0, over `epochs` epochs, augmentation),
    BN running statistics updating in train mode; test accuracy in eval mode afterwards."""
    results = []
    for index, new in enumerate(news):
        loaded = new.loaded
        recipe = replace(run_recipe(loaded.config), epochs=epochs)
        train, test = data.splits["train"], data.splits["test"]
        train_data = TrainData(train.images, train.labels, test.images, test.labels, inputs=loaded.inputs)
        for parameter in new.model.parameters():
            parameter.requires_grad_(False)
        for layer in new.layers[-2:]:
            layer.weight.requires_grad_(True)
        trainer = Trainer(new.model, train_data, recipe, None, make_generator(seed + index),
                          progress=False)
        for _ in tqdm(range(epochs), desc=f"retrain rainbow net {index}", unit="epoch", disable=None, leave=False):
            trainer.train_epoch()
        new.model.eval()
        results.append(evaluate(new, data))
    return np.array(results).reshape(len(news), 2)


# ---- 5. clipping -----------------------------------------------------------------------------------------------
def weight_basis(aligned: list[torch.Tensor], eigenvectors: torch.Tensor) -> torch.Tensor:
    """A complete basis of layer l's input channels by decreasing weight variance: C_l's eigenvectors (for k x k
    kernels the channel covariance of the kernel taps), completed when C_l is rank-deficient."""
    if aligned[0].dim() > 2:
        return al.principal_components(channel_covariance(aligned))[1]
    dim, rank = eigenvectors.shape
    return eigenvectors if rank == dim else al.principal_components(al.weight_covariance(aligned))[1]


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


# ---- covariance convergence (§2 "covariance_convergence") and training dynamics (§5.6) -----------------------
def convergence_counts(requested: list[int], nets: int) -> list[int]:
    """The numbers of nets C_l is estimated from: the requested ones below M, then M."""
    return sorted({count for count in requested if count < nets} | {nets})


def dynamics(run: RunDir, aligners: list[al.MeanAlignment | None], vectors: list[torch.Tensor], last_epoch: int,
             device: torch.device, flat_classifier: bool = False) -> dict:
    """a_r(t), c_r(t) of net 1 at every kept epoch t <= the loaded one (§5.6), along C_l's eigenvectors e_r brought
    to net 1's input space (A_1^T e_r; conv kernels: over input channels)."""
    epochs = [epoch for epoch in run.saved_epochs() if epoch <= last_epoch]
    weights = []
    for epoch in epochs:
        net = Net(LoadedRun.open(run, epoch, device=device), flat_classifier)
        weights.append([net.weight(j).to(torch.float64) for j in range(len(net.layers))])
    result = {"epochs": np.array(epochs)}
    for j, basis in enumerate(vectors):
        shape = weights[0][j].shape
        directions = basis.T.reshape(basis.shape[1], *shape[1:])
        if aligners[j] is not None:
            directions = al.weight_from_reference(directions, aligners[j].alignments[0])
        directions = directions.reshape(basis.shape[1], -1).T
        curves = [al.weight_dynamics(per_layer[j], weights[0][j], directions) for per_layer in weights]
        result[layer_key(j, "amplification")] = torch.stack([a for a, _ in curves]).cpu().numpy()
        result[layer_key(j, "cosine")] = torch.stack([c for _, c in curves]).cpu().numpy()
    return result


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


# ---- the width sweep (§2 "resampling_width", "alignment_convergence", "covariance_convergence") --------------
@dataclass
class WidthGroup:
    """The M nets of one width (one workdir), and what aligning them to the widest nets' mean gives."""

    width: float
    runs: list[RunDir]
    nets: list[Net]


def open_widths(args, device: torch.device) -> list[WidthGroup]:
    """The nets of --workdir and of every --sweep_workdirs, one width each, sorted by width (the widest last)."""
    groups = []
    for workdir in [args.workdir, *args.sweep_workdirs]:
        runs, nets, _ = open_runs(argparse.Namespace(**{**vars(args), "workdir": workdir}), device)
        groups.append(WidthGroup(float(nets[0].loaded.config["model"]["width"]), runs, nets))
    groups.sort(key=lambda group: group.width)
    widths = [group.width for group in groups]
    if len(set(widths)) != len(widths):
        raise ToolkitError(f"two of --workdir and --sweep_workdirs hold nets of the same width ({widths}); give one "
                           "workdir per width")
    first = groups[0].nets[0].loaded.config["data"]
    for group in groups[1:]:
        data = group.nets[0].loaded.config["data"]
        if (data["name"], data["mean"]) != (first["name"], first["mean"]):
            raise ToolkitError(f"{group.runs[0].root} was trained on other data or another normalisation than "
                               f"{groups[0].runs[0].root}; a width sweep compares nets of one dataset")
    return groups


def width_moments(reference: list[Net], aligners: list[al.MeanAlignment | None], groups: list[WidthGroup],
                  data: Data, split: str) -> tuple[list[list[list[al.Moments]]], list[list[al.Moments]]]:
    """Per width, per net, per layer l >= 1: Moments of (the widest nets' mean representation, the net); and per
    width net 1's activation covariance per layer l >= 1. One pass over `split`; each net runs once per batch."""
    pairs = [[al.CovarianceAccumulator() for _ in group.nets] for group in groups]
    own = [al.CovarianceAccumulator() for _ in groups]
    for x, _ in data.batches(split, desc=f"width sweep ({split})"):
        inputs = {id(net): net.layer_inputs(x) for group in groups for net in group.nets}
        mean = [aligner.mean_activation([inputs[id(net)][j] for net in reference])
                for j, aligner in enumerate(aligners) if j > 0]
        for group, accumulators, auto in zip(groups, pairs, own):
            for net, accumulator in zip(group.nets, accumulators):
                accumulator.update(mean, inputs[id(net)][1:])
            auto.update(inputs[id(group.nets[0])][1:])
    return [[accumulator.compute() for accumulator in accumulators] for accumulators in pairs], \
        [auto.compute() for auto in own]


def padded(rows: list, width: int | None = None, fill: float = np.nan) -> np.ndarray:
    """Ragged 1-D rows -> (len(rows), width) float array, padded with `fill`."""
    width = max((len(row) for row in rows), default=0) if width is None else width
    out = np.full((len(rows), width), fill)
    for i, row in enumerate(rows):
        out[i, :len(row)] = np.asarray(row, dtype=float)
    return out


def width_sweep(args, device: torch.device) -> int:
    """The stage "rainbow-width": nets of several widths aligned to the widest nets' mean representation."""
    groups = open_widths(args, device)
    for group in groups:
        require(group.runs[0], "rainbow")       # each width's rainbow accuracies come from its own rainbow stage
    reference = groups[-1]
    flags = {"workdirs": [str(group.runs[0].root.parents[2]) for group in groups],
             "widths": [group.width for group in groups],
             "seeds": [[run.seed for run in group.runs] for group in groups],
             "epochs": [[net.loaded.epoch for net in group.nets] for group in groups],
             "num_iters": args.num_iters, "max_samples": args.max_samples, "allow_tf32": args.allow_tf32}
    here = seed_dirs(args.workdir, args.traindata, args.model_name, variant_of(args))
    out = open_stage(here[0] if args.seeds is None else RunDir.from_args(args, seed=args.seeds[0]), "rainbow-width",
                     flags, args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    data = load_data(args, reference.nets[0].loaded)
    aligners = align_nets(reference.nets, data, args.num_iters)
    fits, activations = width_moments(reference.nets, aligners, groups, data, "train")
    tests, _ = width_moments(reference.nets, aligners, groups, data, "test")
    L, S = len(reference.nets[0].layers), len(groups)
    widest = max(len(group.nets) for group in groups)
    error = np.full((S, L, widest), np.nan)
    error[:, 0, :] = 0.0                                       # layer 0: the image, aligned by the identity
    in_reference = []                                          # per width, per layer: the nets' weights, widest space
    for g, group in enumerate(groups):
        per_layer = [[net.weight(0) for net in group.nets]]
        for j in range(1, L):
            weights = []
            for k, net in enumerate(group.nets):
                fit, test = fits[g][k][j - 1], tests[g][k][j - 1]
                A = al.procrustes(fit.cross)
                error[g, j, k] = float(al.alignment_error(A, test.cross, test.sq_norm_a, test.sq_norm_b))
                weights.append(al.weight_to_reference(net.weight(j), A))
            per_layer.append(weights)
        in_reference.append(per_layer)
    result = {"widths": np.array([group.width for group in groups]), "alignment_error": error,
              "dims": np.array([[net_dims(group.nets[0], j) for j in range(L)] for group in groups]),
              "operator_error": np.full((S, L), np.nan)}
    for j in range(L):
        fan_in = [in_reference[g][j][0][0].numel() for g in range(S)]        # D_flat at each width, before aligning
        native = [group.nets[0].weight(j)[0].numel() for group in groups]
        spectra = []
        for g in range(S):
            values = al.weight_spectrum(in_reference[g][j])[0] * native[g]
            spectra.append(values.cpu().numpy())
            if g < S - 1:
                result["operator_error"][g, j] = float(al.relative_operator_error(
                    in_reference[g][j], in_reference[-1][j], native[g], native[-1]))
        result[layer_key(j, "weight")] = padded(spectra, fan_in[-1], 0.0)
        if j > 0:
            values = [al.principal_components(activations[g][j - 1].cross)[0] for g in range(S)]
            result[layer_key(j, "activation")] = padded([(v / v.sum()).cpu().numpy() for v in values])
    summaries = [load(group.runs[0], "rainbow", "summary") for group in groups]
    result.update({
        "seeds": padded(flags["seeds"], fill=-1).astype(np.int64),
        "trained_accuracy": padded([list(summary["trained_accuracy"].values()) for summary in summaries]),
        "rainbow_last_trained": padded([summary["rainbow_last_trained"] for summary in summaries]),
        "rainbow_full": padded([summary["rainbow_accuracy"] for summary in summaries]),
        "rainbow_retrained": padded([summary["retrained_accuracy"] for summary in summaries])})
    out.save("widths", result)
    seconds = time.perf_counter() - started

    def medians(key):
        return [float(np.nanmedian(row)) if np.isfinite(row).any() else None for row in result[key]]

    summary = {"dataset": reference.nets[0].loaded.dataset_name, "model": safe_name(args.model_name),
               "widths": flags["widths"], "reference_width": reference.width, "workdirs": flags["workdirs"],
               "seeds": flags["seeds"], "trained_accuracy": medians("trained_accuracy"),
               "rainbow_last_trained": medians("rainbow_last_trained"), "rainbow_full": medians("rainbow_full"),
               "rainbow_retrained": medians("rainbow_retrained"),
               "alignment_error": np.nanmedian(error, axis=2).tolist(),
               "operator_error": [[None if np.isnan(v) else float(v) for v in row]
                                  for row in result["operator_error"]], "seconds": seconds}
    out.save("summary", summary)
    out.done(seconds=seconds)
    print(f"{out.dir}: widths {flags['widths']} aligned to the widest; rainbow (paper's reading) "
          f"{summary['rainbow_last_trained']}, full {summary['rainbow_full']}; operator-norm error of C_l "
          f"{np.round(result['operator_error'], 3).tolist()} in {seconds:.1f} s")
    return 0


def net_dims(net: Net, j: int) -> int:
    """D_l of a net: the channels of layer l's input."""
    return int(net.weight(j).shape[1])


# ---- the stage --------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    device = measurement_device(args.device, args.allow_tf32)
    if args.sweep_workdirs:
        return width_sweep(args, device)
    runs, nets, init = open_runs(args, device)
    seeds = [run.seed for run in runs]
    epochs = [net.loaded.epoch for net in nets]
    flags = {"seeds": seeds, "epochs": epochs, "num_samples": args.num_samples, "num_iters": args.num_iters,
             "clip_points": args.clip_points, "ks_ranks": args.ks_ranks, "seed": args.seed,
             "max_samples": args.max_samples, "cov_nets": args.cov_nets, "retrain_epochs": args.retrain_epochs,
             "retrain_samples": args.retrain_samples, "flat_classifier": args.flat_classifier,
             "cosine_rank": args.cosine_rank, "allow_tf32": args.allow_tf32}
    out = open_stage(runs[0], "rainbow", flags, args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    data = load_data(args, nets[0].loaded)
    L, M = len(nets[0].layers), len(nets)

    aligners = align_nets(nets, data, args.num_iters)
    train_pairs, mean_cov = pair_moments(nets, data, "train", aligners)
    test_pairs, _ = pair_moments(nets, data, "test")
    r2, error = pairwise_quality(train_pairs, test_pairs)
    dims = np.array([nets[0].layer_inputs(nets[0].loaded.example_input(), only=0)[0].shape[1]]
                    + [m.cross.shape[0] for m in mean_cov])
    out.save("alignment", {"dims": dims, "r2": np.vstack([np.ones((1, M - 1)), r2]),
                           "error": np.vstack([np.zeros((1, M - 1)), error]),
                           "unexplained_variance": np.array([[0.0] * (args.num_iters + 1)]
                                                            + [[float(v) for v in a.unexplained_variance]
                                                               for a in aligners[1:]])})

    counts = convergence_counts(args.cov_nets, M)
    spectra, weight_spectra, gauss, bases = {}, [], [], {}
    convergence = {"nets": np.array(counts), "operator_error": np.zeros((len(counts), L))}
    random_generator = make_generator(args.seed + 1)
    for j in range(L):
        aligned = aligned_weights(nets, aligners, j)
        # thin: r = min(M N, D) directions of C_j, through an SVD of the M N stacked rows when M N < D (an MLP's
        # first layer: D = 3072), with no D x D matrix; C_j is zero on the rest, so its spectrum is padded with
        # zeros to length D
        # C_l's spectrum from the first `count` nets, each computed once (the SVDs are most of this stage's time)
        by_count = {count: al.weight_spectrum(aligned[:count]) for count in {*counts, 1}}
        eigenvalues, eigenvectors = by_count[M]
        dim, rank = eigenvectors.shape
        spectra[layer_key(j, "weight")] = torch.cat([eigenvalues, eigenvalues.new_zeros(dim - rank)])
        spectra[layer_key(j, "weight_single")] = by_count[1][0]
        spectra[layer_key(j, "weight_init")] = al.weight_spectrum(rows(init.weight(j)))[0]
        weight_spectra.append((eigenvalues, eigenvectors))
        spectrum = np.zeros((len(counts), dim))
        for c, count in enumerate(counts):
            values = by_count[count][0]
            spectrum[c, :values.numel()] = values.cpu().numpy()
            if count < M:  # C_l from all M nets against itself is 0
                convergence["operator_error"][c, j] = float(al.relative_operator_error(aligned[:count], aligned))
        convergence[layer_key(j, "spectrum")] = spectrum
        if j < L - 1:
            gauss.append(gaussianity(aligned, eigenvalues, eigenvectors, args.ks_ranks))
        if j > 0:
            activation_values, activation_vectors = al.principal_components(mean_cov[j - 1].cross)
            spectra[layer_key(j, "activation")] = activation_values
            bases[j] = {"weight": weight_basis(aligned, eigenvectors), "activation": activation_vectors,
                        "random": al.random_basis(int(dims[j]), random_generator, device),
                        "convergence": [weight_basis(aligned[:count], by_count[count][1]) for count in counts[:-1]]}
    out.save("spectra", spectra)

    trained = np.array([evaluate(net, data) for net in nets])             # (M, 2): top-1, top-5
    mean_classifier = sum(aligned_weights(nets, aligners, L - 1)) / M
    sample_generator = make_generator(args.seed)
    draws = [al.sample_from_spectrum(*weight_spectra[j], args.num_samples * nets[0].layers[j].weight.shape[0],
                                     sample_generator).chunk(args.num_samples) for j in range(L - 1)]
    top1, top5, rainbows = rainbow_networks(nets, aligners, [[d[k] for d in draws] for k in range(args.num_samples)],
                                            mean_classifier, data)
    retrained = np.full((args.num_samples, 2), np.nan)
    if args.retrain_epochs:
        count = min(args.retrain_samples, args.num_samples)
        retrained[:count] = retrain_last_block(rainbows[:count], data, args.retrain_epochs, args.seed + 2)
    del rainbows
    out.save("rainbow", {"trained_accuracy": trained[:, 0], "trained_top5": trained[:, 1], "seeds": np.array(seeds),
                         "rainbow_accuracy": top1, "rainbow_top5": top5, "retrained_accuracy": retrained[:, 0],
                         "retrained_top5": retrained[:, 1]})

    clipping = {"bases": np.array(BASES), "reference_accuracy": np.array(trained[0, 0])}
    for j in range(1, L):
        A = alignment_of(aligners, j, 0)
        clipping[layer_key(j, "d")], clipping[layer_key(j, "accuracy")] = clipping_curves(
            nets[0], A, [bases[j][name] for name in BASES], j, args.clip_points, data)
        convergence[layer_key(j, "d")] = clipping[layer_key(j, "d")]
        own = clipping_curves(nets[0], A, bases[j]["convergence"], j, args.clip_points, data)[1] \
            if bases[j]["convergence"] else np.zeros((0, len(convergence[layer_key(j, "d")])))
        convergence[layer_key(j, "accuracy")] = np.vstack([own, clipping[layer_key(j, "accuracy")][:1]])
    out.save("clipping", clipping)
    out.save("convergence", convergence)
    out.save("dynamics", dynamics(runs[0], aligners, [vectors for _, vectors in weight_spectra], epochs[0], device,
                                  args.flat_classifier))
    out.save("cosines", cosine_matrices(nets, own_covariances(nets[:2], data), train_pairs, args.cosine_rank))

    gaussian_arrays = {"mp_colored": np.array([g["mp_colored"] for g in gauss]),
                       "mp_white": np.array([g["mp_white"] for g in gauss]), "ks_ranks": np.array(args.ks_ranks),
                       "ks_pvalue": np.array([g["ks_pvalue"] for g in gauss]).reshape(L - 1, len(args.ks_ranks))}
    for j, g in enumerate(gauss):
        key = layer_key(j)
        gaussian_arrays.update({f"mp_eigs_colored_{key}": g["eigs_colored"], f"mp_eigs_white_{key}": g["eigs_white"],
                                f"mp_q_{key}": g["q"], f"whitened_{key}": g["whitened"]})
    out.save("gaussianity", gaussian_arrays)

    seconds = time.perf_counter() - started
    last_trained = L - 2 if L > 1 else 0   # the paper's reading: all but the last block and the classifier resampled
    summary = {
        "dataset": nets[0].loaded.dataset_name, "model": safe_name(args.model_name), "seeds": seeds,
        "epochs": epochs, "layers": [type(layer).__name__ for layer in nets[0].layers], "dims": dims.tolist(),
        "trained_accuracy": {str(s): float(a) for s, a in zip(seeds, trained[:, 0])},
        "trained_top5": {str(s): float(a) for s, a in zip(seeds, trained[:, 1])},
        "rainbow_accuracy": top1[:, -1].tolist(), "rainbow_top5": top5[:, -1].tolist(),
        "rainbow_last_trained": top1[:, last_trained].tolist(),
        "rainbow_last_trained_top5": top5[:, last_trained].tolist(),
        "retrained_accuracy": [float(a) for a in retrained[:, 0] if np.isfinite(a)],
        "retrained_top5": [float(a) for a in retrained[:, 1] if np.isfinite(a)],
        "rainbow_by_layer": np.median(top1, 0).tolist(),
        "r2": [1.0, *np.median(r2, 1).tolist()], "alignment_error": [0.0, *np.median(error, 1).tolist()],
        "unexplained_variance": [0.0, *[float(a.unexplained_variance[-1]) for a in aligners[1:]]],
        "clip_within_1pct": {name: [within_one_percent(clipping[layer_key(j, "d")],
                                                       clipping[layer_key(j, "accuracy")][b], trained[0, 0])
                                    for j in range(1, L)] for b, name in enumerate(BASES)},
        "mp_colored": gaussian_arrays["mp_colored"].tolist(), "mp_white": gaussian_arrays["mp_white"].tolist(),
        "ks_pvalue": {layer_key(j): {str(r): float(p) for r, p in zip(args.ks_ranks, g["ks_pvalue"])}
                      for j, g in enumerate(gauss)},
        "seconds": seconds,
    }
    out.save("summary", summary)
    out.done(seconds=seconds)
    print(f"{out.dir}: trained {np.median(trained[:, 0]):.4f} (top-5 {np.median(trained[:, 1]):.4f}); rainbow, "
          f"median of {args.num_samples}: layers 0..{last_trained - 1} resampled, layer {last_trained} and the "
          f"classifier trained-then-aligned (the paper's reading) {np.median(top1[:, last_trained]):.4f} (top-5 "
          f"{np.median(top5[:, last_trained]):.4f}); every layer resampled {np.median(top1[:, -1]):.4f} (top-5 "
          f"{np.median(top5[:, -1]):.4f}); r2 {np.round(summary['r2'], 3).tolist()} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
