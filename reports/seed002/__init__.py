"""seed002 (rainbow networks): per-run extraction and the per-group report section.

rainbow.py is a group stage ("rainbow" in pipeline.contract): it writes <dataset>/<model>/rainbow/ once for all
seeds. A run "has outputs" when its group's rainbow stage is done and lists its seed; extract(run, out) writes the
extract stage's "seed002" file with that seed's share of the group summary: trained_accuracy, trained_top5 (this
seed's test accuracy), rainbow_accuracy (median of the full rainbow nets), rainbow_last_trained (median of the
column L-2: the last block and the classifier trained-then-aligned), seeds (the seeds combined). average()
reads the group's rainbow files through the contract (their records document them; per-layer keys are
0-based, layer l = the input of weight layer l, the paper's layer j = l + 1) and draws, per group (spec §2, §6):
  seed002_<dataset>_<model>.png             alignment r2 / error per layer, C_l spectra (x D, with net 1's
                                            initialisation), activation spectra, rainbow vs trained accuracy layer
                                            by layer, Marchenko-Pastur spectra before / after whitening
  seed002_<dataset>_<model>_clipping.png    test accuracy against d per clipped layer in the three bases
  seed002_<dataset>_<model>_gaussian.png    whitened weight marginals against N(0, 1) with their KS p-values
  seed002_<dataset>_<model>_covariance.png  covariance convergence: C_l from 1, 10, .., M nets (spectra, clipping,
                                            operator-norm distances; against width with the width sweep)
  seed002_<dataset>_<model>_cosines.png     the tutorial's cosine matrices |V_1 V_2^T|, |V_1 A V_2^T|,
                                            |E_1^T E_2|, |E_1^T A E_2| of net 1 vs net 2
  seed002_<dataset>_<model>_dynamics.png    a_r(t), c_r(t) of net 1 along C_l's eigenvectors (more than one epoch
                                            kept)
  seed002_<dataset>_<model>_width.png       with the rainbow-width stage: accuracy (trained, both rainbow readings,
                                            retrained) against width, operator-norm error of C_l and alignment
                                            error per layer against width, activation spectra per width
and writes seed002_accuracy.csv (rainbow vs trained, top-1 and top-5, one row per reading: column L-2, with the
last block and classifier trained-then-aligned, and the full rainbow net; as the resampling-width table),
seed002_clipping.csv (smallest d within 1% of the trained accuracy, as the §6 table; "layer l" 0-based, "paper j"
= l + 1), seed002_gaussianity.csv (Marchenko-Pastur fractions and KS p-values, §2), seed002_convergence.csv (the
same d from C_l of the first N nets, §2) and, with the width sweep,
seed002_width.csv. Every row carries its protocol (reports.references.PROTOCOLS) and the paper's numbers for it
(reports.references.REFERENCES; "-" where the paper has none).
Figures label layers 0-based ("layer l"), as the file keys.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import contract
from reports import Group, ReportOptions
from reports.figures import markdown_table, write_csv
from reports.references import PROTOCOLS
from reports.seed002 import figures as plots
from reports.seed002 import tables
from reports.seed002.tables import STAGE, WIDTH_STAGE
from utils.io import load_json
from utils.rundir import RunDir

TITLE = "A Rainbow in Deep Network Black Boxes (seed002)"


def _width(run: RunDir) -> float:
    """The width multiplier s the run was trained at."""
    return float(load_json(run.config)["model"]["width"])


def _summary(run: RunDir) -> dict | None:
    return contract.load(run, STAGE, "summary") if contract.done(run, STAGE) else None


FORMAT = 1


def has_outputs(run: RunDir) -> bool:
    summary = _summary(run)
    return summary is not None and run.seed in summary["seeds"]


def extract(run: RunDir, out: contract.StageOutput) -> dict:
    summary = _summary(run)
    seed = str(run.seed)
    result = {"trained_accuracy": summary["trained_accuracy"][seed], "trained_top5": summary["trained_top5"][seed],
              "rainbow_accuracy": float(np.median(summary["rainbow_accuracy"])),
              "rainbow_last_trained": float(np.median(summary["rainbow_last_trained"])), "seeds": summary["seeds"]}
    out.save("seed002", result)
    return result


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """The seed002 section; `options` (seed000's oracle choice) does not concern it."""
    accuracy_rows, clipping_rows, gaussian_rows, convergence_rows, width_rows, figures = [], [], [], [], [], []
    for group in groups:
        run = group.runs[0]
        summary = _summary(run)
        if summary is None:
            continue
        accuracy_rows += tables.accuracy_rows(group, summary, _width(run))
        clipping_rows += tables.clipping_rows(group, summary)
        gaussian_rows += tables.gaussian_rows(group, summary)
        convergence_rows += tables.convergence_rows(group, run)
        pngs = [draw(group, run, out) for draw in (plots.main_figure, plots.clipping_figure, plots.gaussian_figure,
                                                   plots.convergence_figure, plots.cosine_figure)]
        if len(contract.load(run, STAGE, "dynamics")["epochs"]) > 1:
            pngs.append(plots.dynamics_figure(group, run, out))
        if contract.done(run, WIDTH_STAGE):
            pngs.append(plots.width_figure(group, run, out))
            width_rows += tables.width_rows(group, run)
        figures += [f"![{group.label}]({png.name})" for png in pngs]
    if not accuracy_rows:
        return ""
    accuracy_header = ["group", "width", "reading", "protocol", "seeds M", "samples K", "trained top-1",
                       "paper trained", "trained top-5", "rainbow top-1", "paper rainbow", "rainbow min",
                       "rainbow max", "rainbow top-5", "rainbow / trained"]
    clipping_header = ["group", "layer l", "paper j", "protocol", "D_l", "C_l PCA d", "paper", "activation PCA d",
                       "paper", "random d", "paper"]
    gaussian_header = ["group", "layer l", "paper j", "protocol", "MP outside (colored)", "paper",
                       "MP outside (white)", "paper", "KS p (exact) per rank r (paper)"]
    write_csv(out / "seed002_accuracy.csv", accuracy_header, accuracy_rows)
    write_csv(out / "seed002_clipping.csv", clipping_header, clipping_rows)
    write_csv(out / "seed002_gaussianity.csv", gaussian_header, gaussian_rows)
    convergence_header = ["group", "nets N", "protocol", "C_l(N) PCA d within 1%, layers 1..L-1", "paper (j = 2)",
                          "operator-norm error to C_l(M), layers 0..L-1"]
    write_csv(out / "seed002_convergence.csv", convergence_header, convergence_rows)
    width_header = ["group", "width", "protocol", "seeds M", "trained", "paper trained", "rainbow (last block trained)",
                    "paper rainbow", "rainbow (full)", "rainbow retrained", "paper retrained",
                    "alignment error per layer 1..L-1", "operator-norm error of C_l per layer 0..L-1"]
    width_text = ""
    if width_rows:
        write_csv(out / "seed002_width.csv", width_header, width_rows)
        width_text = ("Width sweep (rainbow_width.py): nets of each width aligned to the widest width's net 1 "
                      "(the paper's reference); test accuracy medians of each width's own rainbow stage, whose C_l "
                      "comes from M seeds per width (the column \"seeds M\"; rainbow.py needs M >= 2) where the "
                      "paper trains M = 1 net per width; alignment error on test (median over nets); operator-norm "
                      "error of the width's C_l (scaled by its fan-in) against the widest's. The paper (CIFAR-10, "
                      "skip variant, widths 1/8..4, M = 1): trained 88.0 -> 91.9, rainbow 54.8 -> 84.7, retrained "
                      "67.15 -> 88.72; C_l error ~0.7 -> 0.14 (4-block nets, j = 2)."
                      f"\n\n{markdown_table(width_header, width_rows)}\n\n")
    return (f"## {TITLE}\n\nTest accuracy (top-1 and top-5, medians) of the M trained seeds and of K Gaussian "
            "rainbow networks (weights drawn from the aligned weight covariances, §5.4), in each reading: every "
            "block resampled but the last, which with the classifier is the trained one aligned to the rainbow net "
            "(column L-2), the full rainbow net, every block resampled (and, when run, the full rainbow net with "
            "its last block and classifier retrained). Each row says its protocol: "
            f"\"{PROTOCOLS['paper']}\" where the paper measured that reading on that net and data (the skip J8 "
            "nets on CIFAR-10 read at column L-2, 91.6 trained vs 81.4 rainbow at width 1, 85.52 retrained; the "
            "tutorial's MLP and CNN on grey CIFAR-10 with every hidden layer resampled, 42.4 vs 30.6 and 57.4 vs "
            f"40.3, §6), \"{PROTOCOLS['paper-other']}\" for the same reading of another net or other data, and "
            f"\"{PROTOCOLS['extra']}\" for readings the paper does not report there; the paper's numbers stand in "
            "the \"paper\" columns of the rows they belong to."
            f"\n\n{markdown_table(accuracy_header, accuracy_rows)}\n\nClipping one layer of net 1 "
            "to d directions (§5.5): the smallest d on the grid whose accuracy is within 1% of the trained one "
            "(-1: none); layer l is the input of weight layer l (0-based), the paper's layer j = l + 1."
            f"\n\n{markdown_table(clipping_header, clipping_rows)}\n\nGaussianity (§2): fractions of net 2's "
            "aligned weight spectrum outside the Marchenko-Pastur bulk before and after whitening by C_l, and exact "
            "KS p-values of the whitened weights of all M nets along C_l's direction r (0-based) against N(0, 1)."
            f"\n\n{markdown_table(gaussian_header, gaussian_rows)}\n\nCovariance convergence (§2): net 1 "
            "clipped in the basis of C_l estimated from the first N nets (the paper: 4-block nets on CIFAR-10, "
            "s = 1, j = 2, ref 80.94%), and the distance of C_l(N) to C_l of all M nets."
            f"\n\n{markdown_table(convergence_header, convergence_rows)}\n\n" + width_text + "\n\n".join(figures))
