"""The width sweep of seed002 (stage "rainbow-width"; §2 resampling_width, alignment_convergence,
covariance_convergence): the nets of several widths, one workdir each, aligned to the widest.

    python rainbow_width.py --model-name rainbow_mlp --traindata digits --workdir runs/w0.5 \
        --sweep_workdirs runs/w0.125 runs/w0.25

The nets of --workdir and of each --sweep_workdirs DIR (one width per workdir, at least 2 seeds each, each
workdir's rainbow stage done: the per-width accuracies come from there) are aligned to the widest width's net 1
(--reference net, the paper's "aligned to the widest one", §5.2) or to the mean representation of the widest nets
(--reference mean, a toolkit extra: --num_iters + 1 passes), each net by A = procrustes(E[phi_ref phi_k^T]) on
train, a (D_ref, D_k) partial isometry; layer 0 (the image) by the identity. Files and keys: the "rainbow-width"
record of pipeline.contract.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from measures import alignment as al
from measures.rainbow_weights import padded
from pipeline.contract import layer_key, load, open_stage, require
from pipeline.rainbow_nets import Data, Net, align_nets, check_group_flags, group_parser, load_data, open_runs
from utils.cli import run_main
from utils.device import measurement_device
from utils.errors import ToolkitError
from utils.rundir import RunDir, safe_name, seed_dirs, variant_of


def parse_args(argv=None):
    parser = group_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--reference", choices=("net", "mean"), default="net",
                        help="what every net is aligned to: the widest width's net 1 (net, the paper's) or the mean "
                             "representation of the widest nets (mean, a toolkit extra; --num_iters refinements)")
    parser.add_argument("--sweep_workdirs", nargs="+", required=True, metavar="DIR",
                        help="the nets of these workdirs, one width each, and of --workdir are aligned to the widest "
                             "nets; each workdir's rainbow stage must be done")
    args = parser.parse_args(argv)
    check_group_flags(parser, args)
    return args


@dataclass
class WidthGroup:
    """The M nets of one width (one workdir)."""

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


def width_moments(reference: list[Net], aligners: list[al.MeanAlignment | None] | None, groups: list[WidthGroup],
                  data: Data, split: str) -> tuple[list[list[list[al.Moments]]], list[list[al.Moments]]]:
    """Per width, per net, per layer l >= 1: Moments of (the reference representation, the net), the reference
    being the widest nets' mean with `aligners`, the widest net 1 with None; and per width net 1's activation
    covariance per layer l >= 1. One pass over `split`; each net runs once per batch."""
    pairs = [[al.CovarianceAccumulator() for _ in group.nets] for group in groups]
    own = [al.CovarianceAccumulator() for _ in groups]
    for x, _ in data.batches(split, desc=f"width sweep ({split})"):
        inputs = {id(net): net.layer_inputs(x) for group in groups for net in group.nets}
        mean = inputs[id(reference[0])][1:] if aligners is None else \
            [aligner.mean_activation([inputs[id(net)][j] for net in reference]) for j, aligner in enumerate(aligners)
             if j > 0]
        for group, accumulators, auto in zip(groups, pairs, own):
            for net, accumulator in zip(group.nets, accumulators):
                accumulator.update(mean, inputs[id(net)][1:])
            auto.update(inputs[id(group.nets[0])][1:])
    return [[accumulator.compute() for accumulator in accumulators] for accumulators in pairs], \
        [auto.compute() for auto in own]


def width_sweep(args, device: torch.device) -> int:
    """The stage "rainbow-width": nets of several widths aligned to the widest net 1 (or the widest nets' mean)."""
    groups = open_widths(args, device)
    for group in groups:
        require(group.runs[0], "rainbow")       # each width's rainbow accuracies come from its own rainbow stage
    reference = groups[-1]
    flags = {"workdirs": [str(group.runs[0].root.parents[2]) for group in groups],
             "widths": [group.width for group in groups],
             "seeds": [[run.seed for run in group.runs] for group in groups],
             "epochs": [[net.loaded.epoch for net in group.nets] for group in groups],
             "reference": args.reference, "num_iters": args.num_iters, "max_samples": args.max_samples,
             "allow_tf32": args.allow_tf32}
    here = seed_dirs(args.workdir, args.traindata, args.model_name, variant_of(args))
    out = open_stage(here[0] if args.seeds is None else RunDir.from_args(args, seed=args.seeds[0]), "rainbow-width",
                     flags, args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    data = load_data(args, reference.nets[0].loaded)
    aligners = align_nets(reference.nets, data, args.num_iters) if args.reference == "mean" else None
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
    print(f"{out.dir}: widths {flags['widths']} aligned to the widest ({args.reference}); rainbow (paper's reading) "
          f"{summary['rainbow_last_trained']}, full {summary['rainbow_full']}; operator-norm error of C_l "
          f"{np.round(result['operator_error'], 3).tolist()} in {seconds:.1f} s")
    return 0


def net_dims(net: Net, j: int) -> int:
    """D_l of a net: the channels of layer l's input."""
    return int(net.weight(j).shape[1])


def main(argv=None) -> int:
    args = parse_args(argv)
    return width_sweep(args, measurement_device(args.device, args.allow_tf32))


if __name__ == "__main__":
    run_main(main)
