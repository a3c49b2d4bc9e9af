"""Tied class covariance of every layer and partial Mahalanobis distances of ID and OOD samples (seed000 §7).

    python features.py --model-name resnet18 --traindata cifar10 --num_classes 10 --start_epoch 1200 --resume

Layer l is the input of the l-th analysis weight layer (seed000 §5). Each sample is reduced to one vector per
layer: a conv input SUMMED over height and width (C numbers; a sum, not a mean), the classifier input as it is.
Pass 1, over the train split (no augmentation): measures.ood.ClassGaussians per layer, streamed in float64: class
means and the tied covariance Sigma = (1/N) sum_c sum_{i in c} (z_i - mu_c)(z_i - mu_c)^T with its eigenvalues,
descending (seed000 §6.6 and §7; seed000's extra 1/nc factor rescales every distance and is left out).
Pass 2, over the in-distribution test set and every OOD set: the partial Mahalanobis distance to the closest class
on the leading d eigen-directions, M_d(z) = min_c sum_{j<=d} (v_j^T (z - mu_c))^2 / lambda_j, and the arg-min
class, for d on two grids: dims_exp (0..9 then geometric steps of 10^0.05, as counts d) and dims_eps (the number of
normalised eigenvalues lambda / lambda_max above each of 21 thresholds 0.5 .. 1e-7). Directions with zero variance
(lambda / lambda_max <= 1e-7, e.g. channels a ReLU never opens) are never used: dims_exp stops at dims_eps[-1].
Beside the two grids, the distance at the full dimension, d = D = dims_eps[-1], the number of directions of non-zero
variance (lambda / lambda_max > 1e-7; the channel count C of a conv input or the classifier's fan-in when every
direction varies, which dims_exp never reaches: it ends at 125 for D = 128); it is the last column of the dims_eps
grid (threshold 1e-7), stored on its own for the readers. A layer without any direction of
non-zero variance (the input of a twopoints run, whose images all have the same pixel sum) has an empty dims_exp,
dims_eps all 0 and dims_full 0; a count d = 0 measures nothing: distance NaN, class -1.
The evaluated sets are those of analyzing.py (pipeline/evaluation.py), with the same --ood-sets, --near-ood and
--validation-ood (datasets.ood_choice). One forward pass per batch captures every layer.

Files in <run>/features/ (L layers, D_l dimensions of layer l, N samples of a set):
  eigenvalues.npz              eigenvalues (L, max D_l) tied-covariance eigenvalues, descending, zero-padded;
                               dims (L,) D_l; counts (classes,) train samples per class
  mahalanobis_<ll>_<ds>.npz    for layer ll = 00..L-1 and ds = the dataset (test split) or an OOD set:
                               distance_exp (N, len(dims_exp)) float64, inferred_exp (N, len(dims_exp)) int64,
                               distance_eps (N, 21), inferred_eps (N, 21), dims_exp, dims_eps (counts d);
                               distance_full (N,) float64, inferred_full (N,) int64 at d = dims_full () (= D,
                               the directions of non-zero variance = dims_eps[-1])
  _done.json                   flags (the OOD choice included), argv, datasets (tags), caps (max_samples,
                               batchsize, batchsize_used: the smallest batch a pass ran with, utils.memory),
                               ood_sets, near_ood, validation_ood (names), ood_note, ood_tags {tag: name}
                               (pipeline.evaluation.choice_summary), seconds
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from measures.ood import ClassGaussians, dims_eps, dims_exp, mahalanobis
from pipeline.contract import TRAIN_SET, StageOutput, layer_key, open_stage
from pipeline.evaluation import (
    check_positive,
    choice_flags,
    choice_summary,
    evaluation_sets,
    ood_choice,
    stage_parser,
)
from pipeline.loaded import LoadedRun
from utils.cli import run_main
from utils.device import measurement_device
from utils.memory import halving_batch
from utils.taps import LayerTaps


def parse_args(argv=None):
    parser = stage_parser(__doc__)
    args = parser.parse_args(argv)
    check_positive(parser, args, "--batchsize", "--max-samples")
    return args


def summed(index: int, x: torch.Tensor) -> torch.Tensor:
    """LayerTaps callback: (B, C, H, W) -> spatial sum (B, C) in float64; (B, D) unchanged (float64)."""
    return x.sum((2, 3), dtype=torch.float64) if x.dim() == 4 else x.to(torch.float64)


@torch.no_grad()
def layer_vectors(loaded: LoadedRun, data, args, batch: int, desc: str):
    """Per batch of `batch` inputs: (spatially summed features of every layer, labels), one forward pass each."""
    for _, x, labels in loaded.batches(data, batch, args.max_samples, desc):
        with LayerTaps(loaded.layers, reduce=summed) as taps:
            loaded.model(x)
        yield taps.values, labels


def fit_gaussians(loaded: LoadedRun, data, args, batch: int) -> list[ClassGaussians]:
    """Pass 1: class means and tied covariance of every layer on the train split."""
    gaussians = [ClassGaussians(loaded.num_classes) for _ in loaded.layers]
    for vectors, labels in layer_vectors(loaded, data, args, batch, "fit"):
        for gaussian, z in zip(gaussians, vectors):
            gaussian.update(z, labels)
    return [gaussian.finalize() for gaussian in gaussians]


@dataclass(frozen=True)
class DimsGrid:
    """A grid of component counts d and, found once per layer (not per batch), the columns where d >= 1."""

    dims: torch.Tensor
    usable: torch.Tensor    # column indices (long) with d >= 1

    @classmethod
    def of(cls, dims: torch.Tensor) -> DimsGrid:
        return cls(dims, torch.nonzero(dims >= 1).flatten())


def grids(gaussian: ClassGaussians) -> tuple[DimsGrid, DimsGrid]:
    """(dims_exp, dims_eps) as counts d, limited to directions with non-zero variance."""
    eps = dims_eps(gaussian.eigenvalues)
    exp = dims_exp(gaussian.eigenvalues.numel()).to(eps.device)
    return DimsGrid.of(exp[exp <= eps[-1]]), DimsGrid.of(eps)


def distances(z: torch.Tensor, gaussian: ClassGaussians, grid: DimsGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """measures.ood.mahalanobis on the counts d >= 1 of the grid; NaN distances and class -1 where d = 0."""
    dims, usable = grid.dims, grid.usable
    if len(usable) == len(dims) > 0:
        return mahalanobis(z, gaussian, dims)
    distance = torch.full((len(z), len(dims)), float("nan"), dtype=torch.float64, device=z.device)
    inferred = torch.full((len(z), len(dims)), -1, dtype=torch.long, device=z.device)
    if len(usable):
        distance[:, usable], inferred[:, usable] = mahalanobis(z, gaussian, dims[usable])
    return distance, inferred


def set_distances(loaded: LoadedRun, data, args, gaussians: list[ClassGaussians], layer_grids: list, ds: str,
                  batch: int) -> list[dict[str, torch.Tensor]]:
    """Pass 2 over one set: every layer's distances and inferred classes on both grids, (N, len(grid)) each."""
    parts = [{"distance_exp": [], "inferred_exp": [], "distance_eps": [], "inferred_eps": []} for _ in gaussians]
    for vectors, _ in layer_vectors(loaded, data, args, batch, ds):
        for store, z, gaussian, (exp, eps) in zip(parts, vectors, gaussians, layer_grids):
            for suffix, grid in (("exp", exp), ("eps", eps)):
                distance, inferred = distances(z, gaussian, grid)
                store[f"distance_{suffix}"].append(distance.cpu())
                store[f"inferred_{suffix}"].append(inferred.cpu())
    return [{key: torch.cat(values) for key, values in store.items()} for store in parts]


def save_eigenvalues(out: StageOutput, gaussians: list[ClassGaussians]) -> None:
    dims = [g.eigenvalues.numel() for g in gaussians]
    eigenvalues = torch.zeros(len(gaussians), max(dims), dtype=torch.float64)
    for row, gaussian in zip(eigenvalues, gaussians):
        row[:gaussian.eigenvalues.numel()] = gaussian.eigenvalues.cpu()
    out.save("eigenvalues", {"eigenvalues": eigenvalues, "dims": np.array(dims), "counts": gaussians[0].counts})


def main(argv=None) -> int:
    args = parse_args(argv)
    loaded = LoadedRun.from_args(args, device=measurement_device(args.device, args.allow_tf32))
    choice = ood_choice(loaded, args)
    flags = {"epoch": loaded.epoch, "max_samples": args.max_samples, "allow_tf32": args.allow_tf32,
             **choice_flags(choice)}
    out = open_stage(loaded.run, "features", flags, args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    sets = evaluation_sets(loaded, args.data_root, choice)
    train = sets.pop(TRAIN_SET)
    gaussians, batch = halving_batch(lambda batch: fit_gaussians(loaded, train, args, batch), args.batchsize,
                                     "features: fitting the class Gaussians")
    batches_used = {batch}
    save_eigenvalues(out, gaussians)
    layer_grids = [grids(gaussian) for gaussian in gaussians]
    for ds, data in sets.items():
        layers, batch = halving_batch(lambda batch, ds=ds, data=data: set_distances(
            loaded, data, args, gaussians, layer_grids, ds, batch), args.batchsize, f"features: distances on {ds}")
        batches_used.add(batch)
        for index, (arrays, (exp, eps)) in enumerate(zip(layers, layer_grids)):
            for kind in ("distance", "inferred"):  # dims_eps ends at D: its last column is the full dimension
                arrays[f"{kind}_full"] = arrays[f"{kind}_eps"][:, -1]
            out.save("mahalanobis", {"dims_exp": exp.dims, "dims_eps": eps.dims, "dims_full": eps.dims[-1],
                                     **arrays}, layer=layer_key(index), ds=ds)
    seconds = time.perf_counter() - started
    out.done(datasets=list(sets), caps={"max_samples": args.max_samples, "batchsize": args.batchsize,
                                        "batchsize_used": min(batches_used)}, **choice_summary(choice),
             seconds=seconds)
    print(f"{out.dir}: tied covariance of {len(gaussians)} layers, Mahalanobis distances on {len(sets)} sets "
          f"in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
