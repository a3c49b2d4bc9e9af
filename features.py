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
One forward pass per batch captures every layer.

Files in <run>/features/ (L layers, D_l dimensions of layer l, N samples of a set):
  eigenvalues.npz              eigenvalues (L, max D_l) tied-covariance eigenvalues, descending, zero-padded;
                               dims (L,) D_l; counts (classes,) train samples per class
  mahalanobis_<ll>_<ds>.npz    for layer ll = 00..L-1 and ds = the dataset (test split) or an OOD set:
                               distance_exp (N, len(dims_exp)) float64, inferred_exp (N, len(dims_exp)) int64,
                               distance_eps (N, 21), inferred_eps (N, 21), dims_exp, dims_eps (counts d)
  _done.json                   flags, argv, datasets, seconds
"""
from __future__ import annotations

import time

import numpy as np
import torch

from analyzing import (
    TRAIN_SET,
    Network,
    batches,
    check_positive,
    evaluation_sets,
    open_network,
    stage_parser,
)
from measures.ood import ClassGaussians, dims_eps, dims_exp, mahalanobis
from utils.cli import run_main
from utils.io import save_npz
from utils.rundir import mark_done, skip_if_done
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
def layer_vectors(network: Network, data, args, desc: str):
    """Per batch: (spatially summed features of every layer, labels), one forward pass each."""
    for _, x, labels in batches(data, network, args.batchsize, args.max_samples, desc):
        with LayerTaps(network.layers, reduce=summed) as taps:
            network.model(x)
        yield taps.values, labels.to(network.device)


def fit_gaussians(network: Network, data, args) -> list[ClassGaussians]:
    """Pass 1: class means and tied covariance of every layer on the train split."""
    classes = network.config["model"]["num_classes"]
    gaussians = [ClassGaussians(classes) for _ in network.layers]
    for vectors, labels in layer_vectors(network, data, args, "fit"):
        for gaussian, z in zip(gaussians, vectors):
            gaussian.update(z, labels)
    return [gaussian.finalize() for gaussian in gaussians]


def grids(gaussian: ClassGaussians) -> tuple[torch.Tensor, torch.Tensor]:
    """(dims_exp, dims_eps) as counts d, limited to directions with non-zero variance."""
    eps = dims_eps(gaussian.eigenvalues)
    exp = dims_exp(gaussian.eigenvalues.numel()).to(eps.device)
    return exp[exp <= eps[-1]], eps


def save_eigenvalues(out, gaussians: list[ClassGaussians]) -> None:
    dims = [g.eigenvalues.numel() for g in gaussians]
    eigenvalues = torch.zeros(len(gaussians), max(dims), dtype=torch.float64)
    for row, gaussian in zip(eigenvalues, gaussians):
        row[:gaussian.eigenvalues.numel()] = gaussian.eigenvalues.cpu()
    save_npz(out / "eigenvalues.npz", eigenvalues=eigenvalues, dims=np.array(dims), counts=gaussians[0].counts)


def main(argv=None) -> int:
    args = parse_args(argv)
    network = open_network(args)
    out = network.run.stage("features")
    flags = {"epoch": network.epoch, "max_samples": args.max_samples}
    if skip_if_done(out, flags, args.force):
        return 0
    started = time.perf_counter()
    sets = evaluation_sets(args, network)
    gaussians = fit_gaussians(network, sets.pop(TRAIN_SET), args)
    save_eigenvalues(out, gaussians)
    layer_grids = [grids(gaussian) for gaussian in gaussians]
    for ds, data in sets.items():
        parts = [{"distance_exp": [], "inferred_exp": [], "distance_eps": [], "inferred_eps": []}
                 for _ in gaussians]
        for vectors, _ in layer_vectors(network, data, args, ds):
            for store, z, gaussian, (exp, eps) in zip(parts, vectors, gaussians, layer_grids):
                for suffix, dims in (("exp", exp), ("eps", eps)):
                    distance, inferred = mahalanobis(z, gaussian, dims)
                    store[f"distance_{suffix}"].append(distance.cpu())
                    store[f"inferred_{suffix}"].append(inferred.cpu())
        for index, (store, (exp, eps)) in enumerate(zip(parts, layer_grids)):
            save_npz(out / f"mahalanobis_{index:02d}_{ds}.npz", dims_exp=exp, dims_eps=eps,
                     **{key: torch.cat(values) for key, values in store.items()})
    seconds = time.perf_counter() - started
    mark_done(out, flags, datasets=list(sets), seconds=seconds)
    print(f"{out}: tied covariance of {len(gaussians)} layers, Mahalanobis distances on {len(sets)} sets "
          f"in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
