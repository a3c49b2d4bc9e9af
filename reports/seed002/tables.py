"""seed002's report tables: one row per reading, layer, net count or width, each with its protocol
(reports.references.PROTOCOLS) and the paper's number for that net, data, width and row (reports.references)."""
from __future__ import annotations

import numpy as np

from measures.rainbow_weights import within_one_percent
from pipeline import contract
from pipeline.contract import layer_key
from reports import Group
from reports.references import PROTOCOLS, reference_cell
from utils.rundir import RunDir

STAGE = "rainbow"
WIDTH_STAGE = "rainbow-width"
BASIS_LABELS = {"weight": "$C_l$ PCA", "activation": "activation PCA", "random": "random"}
SCATTERING = ("scattering", "scattering_skip", "scattering4", "scattering4_norm")   # the paper's CIFAR-10 nets (§3)
TUTORIAL = ("rainbow_mlp", "rainbow_cnn")                                          # its tutorial's (§7)
ACCURACY = "top-1 accuracy"       # the metric of the accuracy references (reports.references)


def on_data(group: Group, dataset: str) -> str:
    """The protocol of a measurement the paper made on `dataset`: "paper" there, "paper-other" elsewhere."""
    return "paper" if group.dataset == dataset else "paper-other"


def reading_protocol(group: Group, reading: str) -> str:
    """The protocol (reports.references.PROTOCOLS) of one rainbow reading (READINGS key) of a group: the paper reads
    the skip J8 nets with the last block trained (§5.4, §2 resampling_width: 81.4) and retrained (85.52); the
    tutorial resamples every hidden layer and keeps the classifier (§7 step 8: the full reading); the same
    readings of the paper's other scattering nets, or on other data, are its protocol elsewhere; the rest is
    this toolkit's."""
    if group.model in TUTORIAL:
        return on_data(group, "cifar10_grey") if reading == "rainbow_accuracy" else "extra"
    if group.model in SCATTERING and reading in ("rainbow_last_trained", "retrained_accuracy"):
        return on_data(group, "cifar10") if group.model == "scattering_skip" else "paper-other"
    return "extra"


def _reference(group: Group, row: str, metric: str = ACCURACY, fmt: str = ".3f") -> str:
    return reference_cell("002", group.dataset, group.model, row, "", metric, fmt)


def width_rows(group: Group, run: RunDir) -> list[list]:
    """One row per width of the sweep: protocol, seeds M, the accuracies of each width's rainbow stage beside the
    paper's (skip J8 nets, 1 per width: M = 1), alignment and operator-norm errors against the widest."""
    sweep = contract.load(run, WIDTH_STAGE, "widths")
    protocol = PROTOCOLS[on_data(group, "cifar10") if group.model in SCATTERING else "paper-other"]
    rows = []

    def median(key, s):
        values = sweep[key][s]
        return float(np.nanmedian(values)) if np.isfinite(values).any() else ""

    for s, width in enumerate(sweep["widths"]):
        errors = np.nanmedian(sweep["alignment_error"][s, 1:], axis=1)
        operator = sweep["operator_error"][s]
        rows.append([group.label, float(width), protocol, int((sweep["seeds"][s] >= 0).sum()),
                     median("trained_accuracy", s), _reference(group, f"trained@{width:g}"),
                     median("rainbow_last_trained", s), _reference(group, f"rainbow_last_trained@{width:g}"),
                     median("rainbow_full", s), median("rainbow_retrained", s),
                     _reference(group, f"retrained_accuracy@{width:g}"), " ".join(f"{e:.3f}" for e in errors),
                     "reference" if np.isnan(operator).all() else " ".join(f"{e:.3f}" for e in operator)])
    return rows


READINGS = (("rainbow_last_trained", "rainbow_last_trained_top5",
             "layers 0..L-3 resampled; last block + classifier trained-then-aligned (column L-2)"),
            ("rainbow_accuracy", "rainbow_top5", "full rainbow: every layer resampled, mean classifier aligned"),
            ("retrained_accuracy", "retrained_top5", "full rainbow, last block + classifier retrained"))


def accuracy_rows(group: Group, summary: dict, width: float) -> list[list]:
    """One row per reading of the rainbow accuracy (READINGS), each with its protocol and beside the trained
    nets' top-1 and top-5, and the paper's numbers for that net, data and width."""
    trained = np.array(list(summary["trained_accuracy"].values()))
    trained5 = np.array(list(summary["trained_top5"].values()))
    rows = []
    for top1_key, top5_key, label in READINGS:
        top1, top5 = np.array(summary[top1_key]), np.array(summary[top5_key])
        if top1.size == 0:
            continue
        rows.append([group.label, width, label, PROTOCOLS[reading_protocol(group, top1_key)], len(trained),
                     top1.size, float(np.median(trained)), _reference(group, f"trained@{width:g}"),
                     float(np.median(trained5)), float(np.median(top1)), _reference(group, f"{top1_key}@{width:g}"),
                     float(top1.min()), float(top1.max()), float(np.median(top5)),
                     float(np.median(top1) / np.median(trained))])
    return rows


def clipping_rows(group: Group, summary: dict) -> list[list]:
    """Per layer l >= 1: the smallest d within 1% in each basis (§5.5), beside the paper's (§6: the J8 nets; the
    4-block nets at j = 2 for C_l's basis from M = 1, 10, 50 nets)."""
    seeds = len(summary["seeds"])
    rows = []
    for layer, dim in enumerate(summary["dims"][1:], start=1):
        paper = group.dataset == "cifar10" and (group.model == "scattering" or
                                                (group.model == "scattering4" and layer == 1))
        metrics = [f"d within 1% ({name})" for name in BASIS_LABELS]
        if group.model == "scattering4":
            metrics[0] = f"d within 1% (weight, M = {seeds})"
        references = [_reference(group, f"clip j={layer + 1}", metric, ".0f") for metric in metrics]
        rows.append([group.label, layer, layer + 1, PROTOCOLS["paper" if paper else "paper-other"], dim,
                     *[value for name, ref in zip(BASIS_LABELS, references)
                       for value in (summary["clip_within_1pct"][name][layer - 1], ref)]])
    return rows


def gaussian_rows(group: Group, summary: dict) -> list[list]:
    """Per resampled layer l: the fractions of net 2's spectrum outside the Marchenko-Pastur bulk before and
    after whitening, and the exact KS p-values at each rank r, beside the paper's (§2: 50 J8 nets, j = 2, 4, 6)."""
    protocol = PROTOCOLS[on_data(group, "cifar10") if group.model == "scattering" else "paper-other"]
    rows = []
    for layer, (colored, white) in enumerate(zip(summary["mp_colored"], summary["mp_white"])):
        row = f"j={layer + 1}"
        pvalues = summary["ks_pvalue"][layer_key(layer)]
        rows.append([group.label, layer, layer + 1, protocol, colored,
                     _reference(group, row, "MP outside, colored"), "" if white is None else white,
                     _reference(group, row, "MP outside, white"),
                     " ".join(f"r={r}: {p:.3g} ({_reference(group, row, f'KS p r={r}', '.3g')})"
                              for r, p in pvalues.items())])
    return rows


def convergence_rows(group: Group, run: RunDir) -> list[list]:
    """Per number of nets N (§2 covariance_convergence): the smallest d within 1% when net 1 is clipped in C_l(N)'s
    basis, layers l >= 1, beside the paper's at j = 2 (4-block nets, s = 1: 35 / 44 / 42 for N = 1 / 10 / 50),
    and the operator-norm distance of C_l(N) to C_l(M)."""
    convergence = contract.load(run, STAGE, "convergence")
    reference = float(contract.load(run, STAGE, "clipping")["reference_accuracy"])
    layers = convergence["operator_error"].shape[1]
    protocol = PROTOCOLS[on_data(group, "cifar10") if group.model == "scattering4" else "paper-other"]
    rows = []
    for c, count in enumerate(convergence["nets"]):
        within = [within_one_percent(convergence[layer_key(layer, "d")], convergence[layer_key(layer, "accuracy")][c],
                                     reference) for layer in range(1, layers)]
        rows.append([group.label, int(count), protocol, " ".join(str(d) for d in within),
                     _reference(group, "clip j=2", f"d within 1% (weight, M = {count})", ".0f"),
                     " ".join(f"{e:.3f}" for e in convergence["operator_error"][c])])
    return rows
