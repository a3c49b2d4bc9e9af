"""Rainbow networks (seed002, "A Rainbow in Deep Network Black Boxes"): align M trained seeds, estimate their
weight covariances, sample Gaussian rainbow networks, clip layers and test the Gaussianity of the weights.

    python rainbow.py --model-name rainbow_mlp --traindata digits --seeds 0 1 2 3 4 --num_samples 5
    python rainbow.py --model-name scattering --traindata cifar10 --seeds $(seq 0 49) --num_samples 10 --batchsize 64

The M runs <workdir>/<dataset>/<model>/rnd<seed> (--seeds, default every one found; at least 2, one architecture)
are combined into the group stage "rainbow" (pipeline.contract: its files and keys). Layer l (0-based) is the
input of weight layer l (the paper's j = l + 1; pipeline.rainbow_nets). Statistics stream over the train split
(test for accuracies and the alignment error) in float64; random draws come from generators seeded with --seed
(rainbow weights) and --seed + 1 (random clipping bases). In order: mean alignment and its quality (§5.2), weight
covariances and spectra (§5.3), rainbow nets read at every depth, column L-2 being the paper's CIFAR reading
(§5.4) and optionally retrained (§4), clipping in three bases (§5.5), covariance convergence over the first N nets
(§2), training dynamics of net 1 (§5.6), the tutorial's cosine matrices (§7) and Gaussianity (§2). The width sweep
is rainbow_width.py.
"""
from __future__ import annotations

import time
from dataclasses import fields, replace

import numpy as np
import torch
from tqdm import tqdm

from measures import alignment as al
from measures import rainbow_weights as rw
from pipeline.contract import layer_key, open_stage
from pipeline.loaded import LoadedRun
from pipeline.rainbow_nets import (
    Data,
    Net,
    align_nets,
    aligned_weights,
    alignment_of,
    check_group_flags,
    clipping_curves,
    evaluate,
    group_parser,
    load_data,
    open_runs,
    own_covariances,
    pair_moments,
    rainbow_networks,
)
from training.loop import TrainData, Trainer
from training.recipes import Recipe, get_recipe
from utils.cli import run_main
from utils.device import make_generator, measurement_device
from utils.rundir import RunDir, safe_name

BASES = ("weight", "activation", "random")


def parse_args(argv=None):
    parser = group_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the rainbow weights' generator (the random bases use seed + 1)")
    parser.add_argument("--num_samples", type=int, default=5, help="rainbow networks drawn (K)")
    parser.add_argument("--clip_points", type=int, default=51,
                        help="values of d from 0 to D_l, step D_l / (points - 1), truncated (§5.5: 51)")
    parser.add_argument("--ks_ranks", type=int, nargs="+", default=[1, 10, 100],
                        help="principal directions whose whitened marginals are KS-tested (§2), as the original's "
                             "0-based columns (r = 0: the top direction)")
    parser.add_argument("--cov_nets", type=int, nargs="+", default=[1, 10, 50],
                        help="covariance convergence (§2): C_l also estimated from the first N nets, for each N < M")
    parser.add_argument("--dynamics_nets", type=int, default=1,
                        help="training dynamics (§5.6): the eigenvectors e_r of C_l from the first N nets (default 1: "
                             "net 1 alone, as the paper's single 4-block net, num_exps=1; M or more: all M nets, a "
                             "toolkit extra)")
    parser.add_argument("--retrain_epochs", type=int, default=0,
                        help="retrain the last block and the classifier of rainbow nets for this many epochs with "
                             "the run's recipe (§4 'retrained classifier'; 0: not done)")
    parser.add_argument("--retrain_samples", type=int, default=1, help="how many rainbow nets to retrain")
    parser.add_argument("--cosine_rank", type=int, default=32,
                        help="leading eigenvectors in the cosine matrices of net 1 vs net 2 (§7 steps 5 and 7)")
    args = parser.parse_args(argv)
    check_group_flags(parser, args)
    for flag, value, least in (("--num_samples", args.num_samples, 1), ("--clip_points", args.clip_points, 2),
                               ("--cov_nets", min(args.cov_nets), 1), ("--dynamics_nets", args.dynamics_nets, 1),
                               ("--retrain_epochs", args.retrain_epochs, 0),
                               ("--retrain_samples", args.retrain_samples, 1), ("--cosine_rank", args.cosine_rank, 1),
                               ("--ks_ranks", min(args.ks_ranks), 0)):
        if value < least:
            parser.error(f"{flag} must be >= {least}, got {value}")
    return args


def cosine_matrices(nets: list[Net], own: list[list[al.Moments]], train_pairs: list, rank: int) -> dict:
    """The tutorial's cosine matrices of net 1 vs net 2 per layer (§7 steps 5 and 7; measures.rainbow_weights),
    A = procrustes(E[phi_1 phi_2^T]) from train. Near-diagonal top blocks after alignment; before, only where the
    input space is shared (layer 0)."""
    result = {}
    for j in range(len(nets[0].layers)):
        A = None if j == 0 else al.procrustes(train_pairs[j - 1][0].cross)          # (D_1, D_2): net 2 -> net 1
        result[layer_key(j, "weight")], result[layer_key(j, "weight_aligned")] = rw.weight_cosines(
            nets[0].weight(j), nets[1].weight(j), A, rank)
        if j > 0:
            result[layer_key(j, "activation")], result[layer_key(j, "activation_aligned")] = rw.activation_cosines(
                own[0][j - 1].cross, own[1][j - 1].cross, A, rank)
    return result


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


def dynamics(run: RunDir, aligners: list[al.MeanAlignment | None], vectors: list[torch.Tensor], last_epoch: int,
             device: torch.device, flat_classifier: bool = False) -> dict:
    """a_r(t), c_r(t) of net 1 at every kept epoch t <= the loaded one (§5.6), along the eigenvectors e_r of the
    final C_l (`vectors`, from the first --dynamics_nets nets, in mean space) brought to net 1's input space
    (A_1^T e_r; conv kernels: over input channels). From net 1 alone (the paper's num_exps=1), e_r are the
    eigenvectors of net 1's own C_l, ranks up to its N rows."""
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


def main(argv=None) -> int:
    args = parse_args(argv)
    device = measurement_device(args.device, args.allow_tf32)
    runs, nets, init = open_runs(args, device)
    seeds = [run.seed for run in runs]
    epochs = [net.loaded.epoch for net in nets]
    flags = {"seeds": seeds, "epochs": epochs, "num_samples": args.num_samples, "num_iters": args.num_iters,
             "clip_points": args.clip_points, "ks_ranks": args.ks_ranks, "seed": args.seed,
             "max_samples": args.max_samples, "cov_nets": args.cov_nets, "dynamics_nets": args.dynamics_nets,
             "retrain_epochs": args.retrain_epochs, "retrain_samples": args.retrain_samples,
             "flat_classifier": args.flat_classifier, "cosine_rank": args.cosine_rank, "allow_tf32": args.allow_tf32}
    out = open_stage(runs[0], "rainbow", flags, args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    data = load_data(args, nets[0].loaded)
    L, M = len(nets[0].layers), len(nets)

    aligners = align_nets(nets, data, args.num_iters)
    train_pairs, mean_cov = pair_moments(nets, data, "train", aligners)
    test_pairs, _ = pair_moments(nets, data, "test")
    r2, error = rw.pairwise_quality(train_pairs, test_pairs)
    dims = np.array([nets[0].layer_inputs(nets[0].loaded.example_input(), only=0)[0].shape[1]]
                    + [m.cross.shape[0] for m in mean_cov])
    out.save("alignment", {"dims": dims, "r2": np.vstack([np.ones((1, M - 1)), r2]),
                           "error": np.vstack([np.zeros((1, M - 1)), error]),
                           "unexplained_variance": np.array([[0.0] * (args.num_iters + 1)]
                                                            + [[float(v) for v in a.unexplained_variance]
                                                               for a in aligners[1:]])})

    counts = rw.convergence_counts(args.cov_nets, M)
    dynamics_count, dynamics_bases = min(args.dynamics_nets, M), []
    spectra, weight_spectra, gauss, bases = {}, [], [], {}
    convergence = {"nets": np.array(counts), "operator_error": np.zeros((len(counts), L))}
    random_generator = make_generator(args.seed + 1)
    for j in range(L):
        aligned = aligned_weights(nets, aligners, j)
        # thin: r = min(M N, D) directions of C_j, through an SVD of the M N stacked rows when M N < D (an MLP's
        # first layer: D = 3072), with no D x D matrix; C_j is zero on the rest, so its spectrum is padded with
        # zeros to length D
        # C_l's spectrum from the first `count` nets, each computed once (the SVDs are most of this stage's time)
        by_count = {count: al.weight_spectrum(aligned[:count]) for count in {*counts, 1, dynamics_count}}
        eigenvalues, eigenvectors = by_count[M]
        dim, rank = eigenvectors.shape
        spectra[layer_key(j, "weight")] = torch.cat([eigenvalues, eigenvalues.new_zeros(dim - rank)])
        spectra[layer_key(j, "weight_single")] = by_count[1][0]
        spectra[layer_key(j, "weight_init")] = al.weight_spectrum(rw.rows(init.weight(j)))[0]
        weight_spectra.append((eigenvalues, eigenvectors))
        dynamics_bases.append(by_count[dynamics_count][1])
        spectrum = np.zeros((len(counts), dim))
        for c, count in enumerate(counts):
            values = by_count[count][0]
            spectrum[c, :values.numel()] = values.cpu().numpy()
            if count < M:  # C_l from all M nets against itself is 0
                convergence["operator_error"][c, j] = float(al.relative_operator_error(aligned[:count], aligned))
        convergence[layer_key(j, "spectrum")] = spectrum
        if j < L - 1:
            gauss.append(rw.gaussianity(aligned, eigenvalues, eigenvectors, args.ks_ranks))
        if j > 0:
            activation_values, activation_vectors = al.principal_components(mean_cov[j - 1].cross)
            spectra[layer_key(j, "activation")] = activation_values
            bases[j] = {"weight": rw.weight_basis(aligned, eigenvectors), "activation": activation_vectors,
                        "random": al.random_basis(int(dims[j]), random_generator, device),
                        "convergence": [rw.weight_basis(aligned[:count], by_count[count][1]) for count in counts[:-1]]}
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
    out.save("dynamics", dynamics(runs[0], aligners, dynamics_bases, epochs[0], device,
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
        "clip_within_1pct": {name: [rw.within_one_percent(clipping[layer_key(j, "d")],
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
