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
from scipy import stats

from measures.alignment import marchenko_pastur_density, marchenko_pastur_edges, positive_eigenpairs
from measures.rainbow_weights import within_one_percent
from pipeline import contract
from pipeline.contract import layer_key
from reports import Group, ReportOptions
from reports.figures import markdown_table, median_band, new_figure, save_figure, write_csv
from reports.references import PROTOCOLS, reference_cell
from utils.io import load_json
from utils.rundir import RunDir

TITLE = "A Rainbow in Deep Network Black Boxes (seed002)"
BASIS_LABELS = {"weight": "$C_l$ PCA", "activation": "activation PCA", "random": "random"}
STAGE = "rainbow"
WIDTH_STAGE = "rainbow-width"
SCATTERING = ("scattering", "scattering_skip", "scattering4", "scattering4_norm")   # the paper's CIFAR-10 nets (§3)
TUTORIAL = ("rainbow_mlp", "rainbow_cnn")                                          # its tutorial's (§7)
GAUSSIAN_LAYERS = (1, 3, 5)       # the paper's Gaussianity figure: j = 2, 4, 6 (layer l = j - 1)
ACCURACY = "top-1 accuracy"       # the metric of the accuracy references (reports.references)


def _on_data(group: Group, dataset: str) -> str:
    """The protocol of a measurement the paper made on `dataset`: "paper" there, "paper-other" elsewhere."""
    return "paper" if group.dataset == dataset else "paper-other"


def _reading_protocol(group: Group, reading: str) -> str:
    """The protocol (reports.references.PROTOCOLS) of one rainbow reading (READINGS key) of a group: the paper reads
    the skip J8 nets with the last block trained (§5.4, §2 resampling_width: 81.4) and retrained (85.52); the
    tutorial resamples every hidden layer and keeps the classifier (§7 step 8: the full reading); the same
    readings of the paper's other scattering nets, or on other data, are its protocol elsewhere; the rest is
    this toolkit's."""
    if group.model in TUTORIAL:
        return _on_data(group, "cifar10_grey") if reading == "rainbow_accuracy" else "extra"
    if group.model in SCATTERING and reading in ("rainbow_last_trained", "retrained_accuracy"):
        return _on_data(group, "cifar10") if group.model == "scattering_skip" else "paper-other"
    return "extra"


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


def _mp_layer(gauss: dict, count: int) -> int:
    """The resampled layer shown in the Marchenko-Pastur panels: the widest one not white by construction."""
    finite = [layer for layer in range(count) if np.isfinite(gauss["mp_white"][layer])] or list(range(count))
    return max(finite, key=lambda layer: gauss[layer_key(layer, "mp_eigs_colored")].size)


def _layer_colors(count: int):
    import matplotlib.pyplot as plt

    return plt.cm.viridis(np.linspace(0, 0.9, max(count, 1)))


def _main_figure(group: Group, run: RunDir, out: Path) -> Path:
    alignment, spectra = contract.load(run, STAGE, "alignment"), contract.load(run, STAGE, "spectra")
    rainbow, gauss = contract.load(run, STAGE, "rainbow"), contract.load(run, STAGE, "gaussianity")
    layers = len(alignment["dims"])
    colors = _layer_colors(layers)
    fig, axes = new_figure(ncols=3, nrows=2, width=3.3, height=2.6)
    ax = axes[0, 0]
    aligned = np.arange(1, layers)       # layer 0 (the image) is aligned by the identity
    if layers > 1:
        median_band(ax, aligned, alignment["r2"][1:].T, label="$r^2$ (train)", marker="o")
        median_band(ax, aligned, alignment["error"][1:].T, label="alignment error (test)", marker="s")
    ax.set(xlabel="layer $l$ (input of weight layer $l$)", ylabel="vs net 1 (median, IQR)",
           title="alignment quality (§5.2)", ylim=(0, None))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    ax = axes[0, 1]
    for layer in range(layers - 1):
        dim = spectra[layer_key(layer, "weight")].size
        for name, style in (("weight", "-"), ("weight_init", ":")):
            values = positive_eigenpairs(spectra[layer_key(layer, name)])
            ax.loglog(np.arange(1, values.size + 1), values * dim, color=colors[layer], linestyle=style,
                      linewidth=1.5 if style == "-" else 1, label=f"$C_{{{layer}}}$" if style == "-" else None)
    ax.set(xlabel="rank", ylabel="eigenvalue $\\times D$", title="weight covariance spectra (dotted: init)")
    ax.legend(ncol=2)
    ax = axes[0, 2]
    for layer in range(1, layers):
        values = positive_eigenpairs(spectra[layer_key(layer, "activation")])
        ax.loglog(np.arange(1, values.size + 1), values / values.sum(), color=colors[layer], label=f"layer {layer}")
    ax.set(xlabel="rank", ylabel="eigenvalue / trace", title="activation spectra (mean net)")
    if layers > 1:
        ax.legend(ncol=2)
    ax = axes[1, 0]
    accuracy = rainbow["rainbow_accuracy"]
    resampled = np.arange(accuracy.shape[1])
    median_band(ax, resampled, accuracy, label=f"rainbow top-1 ({accuracy.shape[0]} samples)", marker="o")
    median_band(ax, resampled, rainbow["rainbow_top5"], label="rainbow top-5", marker="^")
    ax.axhline(np.median(rainbow["trained_accuracy"]), color="k", linestyle="--",
               label=f"trained ({len(rainbow['trained_accuracy'])} seeds)")
    if accuracy.shape[1] > 1:
        ax.axvline(accuracy.shape[1] - 2, color="0.6", linestyle=":", label="r = L-2: last block trained")
    ax.set(xlabel="r: layers 0..r-1 resampled", ylabel="test accuracy",
           title=f"rainbow networks (§5.4; r = {accuracy.shape[1] - 1}: all)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower left")
    for column, stage in ((1, "colored"), (2, "white")):
        ax = axes[1, column]
        shown = _mp_layer(gauss, layers - 1)
        eigenvalues = gauss[layer_key(shown, f"mp_eigs_{stage}")]
        q = gauss[layer_key(shown, "mp_q")][0 if stage == "colored" else 1]
        q = min(q, 1 / q)
        fraction = gauss[f"mp_{stage}"][shown]
        low, high = float(eigenvalues.min()), float(eigenvalues.max())
        span = (low, high) if high - low > 1e-6 * max(high, 1.0) else (low - 0.5, high + 0.5)   # all equal: white
        ax.hist(eigenvalues, bins=int(np.clip(eigenvalues.size // 4, 10, 60)), range=span, density=True,
                color="C0" if stage == "colored" else "C1", alpha=0.7,
                label=f"layer {shown}, {100 * fraction:.1f}% outside" if np.isfinite(fraction)
                else f"layer {shown} (white by construction)")
        grid = np.linspace(1e-3, max(eigenvalues.max(), marchenko_pastur_edges(q)[1]) * 1.02, 400)
        ax.plot(grid, marchenko_pastur_density(grid, q), color="k", label=f"Marchenko-Pastur, q={q:.2f}")
        ax.set(xlabel="eigenvalue (mean 1)", ylabel="density",
               title="net 2's weight spectrum" + (" whitened by $C_l$" if stage == "white" else ""))
        ax.legend()
    fig.suptitle(f"{group.label}: rainbow networks (seed002)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}")


def _clipping_figure(group: Group, run: RunDir, out: Path) -> Path:
    clipping = contract.load(run, STAGE, "clipping")
    layers = sorted(int(k[2:]) for k in clipping if k.startswith("d_"))
    ncols = min(4, len(layers))
    nrows = -(-len(layers) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=2.8, height=2.3)
    reference = float(clipping["reference_accuracy"])
    for ax, layer in zip(axes.flat, layers):
        grid, curves = clipping[layer_key(layer, "d")], clipping[layer_key(layer, "accuracy")]
        for name, curve in zip(clipping["bases"], curves):
            ax.plot(grid, curve, marker=".", markersize=3, label=BASIS_LABELS[str(name)])
        ax.axhline(reference, color="k", linestyle="--", linewidth=1)
        ax.axhspan(reference - 0.01, reference, color="k", alpha=0.08, linewidth=0)
        ax.set(xlabel=f"kept dimensions $d$ (D = {grid[-1]})", ylabel="test accuracy", title=f"layer {layer}")
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    axes.flat[0].legend(loc="lower right")
    fig.suptitle(f"{group.label}: clipping one layer of net 1 (§5.5; band: within 1%)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_clipping")


def gaussian_layers(count: int) -> list[int]:
    """The layers of the Gaussianity figure among the `count` resampled ones: the paper's j = 2, 4, 6 (l = 1, 3,
    5) that exist, else layer 0."""
    return [layer for layer in GAUSSIAN_LAYERS if layer < count] or [0]


def _gaussian_figure(group: Group, run: RunDir, out: Path) -> Path:
    gauss = contract.load(run, STAGE, "gaussianity")
    ranks, pvalues = gauss["ks_ranks"], gauss["ks_pvalue"]
    shown = gaussian_layers(pvalues.shape[0])
    fig, axes = new_figure(ncols=len(ranks), nrows=len(shown), width=2.4, height=2.0, sharex=True)
    grid = np.linspace(-4, 4, 200)
    for row, layer in enumerate(shown):
        samples = gauss[layer_key(layer, "whitened")]
        for column, rank in enumerate(ranks):
            ax = axes[row, column]
            values = samples[:, column]
            if np.isfinite(values).any():
                ax.hist(values[np.isfinite(values)], bins=40, range=(-4, 4), density=True, alpha=0.7)
                ax.plot(grid, stats.norm.pdf(grid), color="k", linewidth=1)
            ax.set_title(f"layer {layer} (j={layer + 1}), r={rank}: KS p={pvalues[layer, column]:.2g}")
            ax.set(yticks=[])
    fig.suptitle(f"{group.label}: whitened aligned weights against N(0, 1) (§2)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_gaussian")


def _shown_layers(layers: list[int], most: int = 4) -> list[int]:
    """At most `most` of `layers`, evenly spread, first and last included."""
    if len(layers) <= most:
        return list(layers)
    return [layers[i] for i in sorted(set(np.linspace(0, len(layers) - 1, most).round().astype(int)))]


def _width_axis(ax, widths: np.ndarray) -> None:
    """A log2 width axis ticked at the widths of the sweep only."""
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set_xticks(widths, [f"{w:g}" for w in widths])


def _width_figure(group: Group, run: RunDir, out: Path) -> Path:
    """Resampling against width, alignment convergence (all layers) and the activation spectra of each width."""
    sweep = contract.load(run, WIDTH_STAGE, "widths")
    widths, layers = sweep["widths"], sweep["alignment_error"].shape[1]
    colors = _layer_colors(layers)
    shown = _shown_layers(list(range(1, layers)), 3)
    fig, axes = new_figure(ncols=3, nrows=2, width=3.3, height=2.6)
    ax = axes[0, 0]
    for key, label, marker in (("trained_accuracy", "trained", "o"),
                               ("rainbow_last_trained", "rainbow, last block trained", "s"),
                               ("rainbow_full", "rainbow (full)", "^"),
                               ("rainbow_retrained", "rainbow retrained", "D")):
        values = sweep[key]
        measured = np.isfinite(values).any(axis=1)                     # widths where this reading was computed
        if measured.any():
            median_band(ax, widths[measured], values[measured].T, label=label, marker=marker)
    ax.set(xlabel="width $s$", ylabel="test accuracy", title="resampling against width (§2)")
    _width_axis(ax, widths)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.4 * (high - low))                        # room for the legend above the curves
    ax.legend(fontsize=6, ncol=2, loc="upper center")
    ax = axes[0, 1]
    for layer in range(layers):
        finite = np.isfinite(sweep["operator_error"][:, layer])
        ax.plot(widths[finite], sweep["operator_error"][finite, layer], marker="o", color=colors[layer],
                label=f"layer {layer}")
    ax.set(xlabel="width $s$", ylabel="$\\|C_l(s) - C_l(ref)\\|_2 / \\|C_l(ref)\\|_2$",
           title=f"weight covariance vs the widest (s = {widths[-1]:g})", ylim=(0, None))
    _width_axis(ax, widths)
    ax.legend(ncol=2)
    ax = axes[0, 2]
    for layer in range(1, layers):
        ax.plot(widths, np.nanmedian(sweep["alignment_error"][:, layer], axis=1), marker="o", color=colors[layer],
                label=f"layer {layer}")
    ax.set(xlabel="width $s$", ylabel="alignment error (test, median over nets)",
           title="alignment convergence, all layers", ylim=(0, None))
    _width_axis(ax, widths)
    if layers > 1:
        ax.legend(ncol=2)
    width_colors = _layer_colors(len(widths))
    for ax, layer in zip(axes[1], shown):
        for w, (width, values) in enumerate(zip(widths, sweep[layer_key(layer, "activation")])):
            values = positive_eigenpairs(values[np.isfinite(values)])
            ax.loglog(np.arange(1, values.size + 1), values, color=width_colors[w], label=f"s = {width:g}")
        ax.set(xlabel="rank", ylabel="eigenvalue / trace", title=f"activation spectra, layer {layer} (net 1)")
        ax.legend()
    for ax in list(axes[1])[len(shown):]:
        ax.axis("off")
    fig.suptitle(f"{group.label}: nets of widths {', '.join(f'{w:g}' for w in widths)} aligned to the widest",
                 y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_width")


def _convergence_figure(group: Group, run: RunDir, out: Path) -> Path:
    """Covariance convergence (§2): C_l from N = 1, 10, ..., M nets (spectra x D_flat, beside net 1's
    initialisation), clipping net 1 in each one's basis, and the operator-norm distances (to C_l of all M nets;
    against width when the width sweep is done)."""
    convergence, spectra = contract.load(run, STAGE, "convergence"), contract.load(run, STAGE, "spectra")
    nets, errors = convergence["nets"], convergence["operator_error"]
    layers = errors.shape[1]
    shown = _shown_layers(list(range(1, layers)), 3) or [0]
    colors = _layer_colors(len(nets))
    fig, axes = new_figure(ncols=len(shown) + 1, nrows=2, width=3.0, height=2.5)
    ax = axes[0, 0]
    layer_colors = _layer_colors(layers)
    for layer in range(layers):
        ax.plot(nets[:-1], errors[:-1, layer], marker="o", color=layer_colors[layer], label=f"layer {layer}")
    ax.set(xscale="log", xlabel="nets N", ylabel=f"$\\|C_l(N) - C_l({nets[-1]})\\|_2$ / norm",
           title="$C_l$ from N nets vs all", ylim=(0, None))
    ax.legend(ncol=2)
    ax = axes[1, 0]
    if contract.done(run, WIDTH_STAGE):
        sweep = contract.load(run, WIDTH_STAGE, "widths")
        for layer in range(layers):
            finite = np.isfinite(sweep["operator_error"][:, layer])
            ax.plot(sweep["widths"][finite], sweep["operator_error"][finite, layer], marker="o",
                    color=layer_colors[layer], label=f"layer {layer}")
        ax.set(xlabel="width $s$", ylabel="operator-norm error vs the widest", ylim=(0, None),
               title="$C_l$ against width")
        _width_axis(ax, sweep["widths"])
    else:
        ax.axis("off")
    for column, layer in enumerate(shown, start=1):
        ax = axes[0, column]
        dim = convergence[layer_key(layer, "spectrum")].shape[1]
        for c, count in enumerate(nets):
            values = positive_eigenpairs(convergence[layer_key(layer, "spectrum")][c])
            ax.semilogy(np.arange(1, values.size + 1), values * dim, color=colors[c], label=f"N = {count}")
        init = positive_eigenpairs(spectra[layer_key(layer, "weight_init")])
        ax.semilogy(np.arange(1, init.size + 1), init * dim, color="k", linestyle=":", label="init (net 1)")
        ax.set(xlabel="rank", ylabel="eigenvalue $\\times D$", title=f"$C_{{{layer}}}$ from N nets")
        ax.legend()
        ax = axes[1, column]
        if layer > 0:
            clipping = contract.load(run, STAGE, "clipping")
            reference = float(clipping["reference_accuracy"])
            for c, count in enumerate(nets):
                ax.plot(convergence[layer_key(layer, "d")], convergence[layer_key(layer, "accuracy")][c], marker=".",
                        color=colors[c], label=f"$C_l$ from {count}")
            ax.axhline(reference, color="k", linestyle="--", linewidth=1)
            ax.axhspan(reference - 0.01, reference, color="k", alpha=0.08, linewidth=0)
            ax.set(xlabel="kept dimensions $d$", ylabel="test accuracy", title=f"clipping layer {layer}")
            ax.legend()
        else:
            ax.axis("off")
    paper = group.model == "scattering4" and group.dataset == "cifar10"
    fig.suptitle(f"{group.label}: covariance convergence (§2; "
                 + ("the paper's 4-block nets" if paper else "the paper uses 4-block nets on CIFAR-10, s = 1, j = 2")
                 + ")", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_covariance")


def _dynamics_figure(group: Group, run: RunDir, out: Path) -> Path:
    """Training dynamics (§5.6): a_r(t) and c_r(t) of net 1 along the eigenvectors of the final C_l."""
    dynamics = contract.load(run, STAGE, "dynamics")
    epochs = dynamics["epochs"]
    layers = sorted(int(key.rsplit("_", 1)[1]) for key in dynamics if key.startswith("amplification_"))
    shown = _shown_layers(layers, 4)
    colors = _layer_colors(len(epochs))
    fig, axes = new_figure(ncols=len(shown), nrows=2, width=2.9, height=2.4)
    for column, layer in enumerate(shown):
        for row, (name, label) in enumerate((("amplification", "$a_r(t)$"), ("cosine", "$c_r(t)$"))):
            ax = axes[row, column]
            curves = dynamics[layer_key(layer, name)]
            for t, epoch in enumerate(epochs):
                if t > 0:
                    ax.plot(np.arange(1, curves.shape[1] + 1), curves[t], color=colors[t], label=f"t = {epoch}")
            ax.set(xscale="log", xlabel="rank r of $C_l$'s eigenvector", ylabel=label, title=f"layer {layer}")
            if row == 1:
                ax.set_ylim(min(0.0, float(np.nanmin(curves))), 1.02)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{group.label}: training dynamics of net 1 along $C_l$'s eigenvectors (§5.6)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_dynamics")


def _cosine_figure(group: Group, run: RunDir, out: Path) -> Path:
    """The tutorial's cosine matrices of net 1 vs net 2 (§7 steps 5, 7), before and after alignment."""
    cosines = contract.load(run, STAGE, "cosines")
    layers = sorted(int(key.rsplit("_", 1)[1]) for key in cosines if key.startswith("weight_aligned_"))
    shown = _shown_layers(layers, 4)
    rows = (("weight", "$|V_1 V_2^T|$"), ("weight_aligned", "$|V_1 A V_2^T|$"), ("activation", "$|E_1^T E_2|$"),
            ("activation_aligned", "$|E_1^T A E_2|$"))
    fig, axes = new_figure(ncols=len(shown), nrows=len(rows), width=2.3, height=2.2)
    for column, layer in enumerate(shown):
        for row, (prefix, label) in enumerate(rows):
            ax = axes[row, column]
            key = layer_key(layer, prefix)
            if key not in cosines:
                ax.axis("off")
                continue
            ax.imshow(cosines[key], vmin=0, vmax=1, cmap="magma")
            ax.set(title=f"{label}, layer {layer}", xticks=[], yticks=[])
            ax.grid(False)
    fig.suptitle(f"{group.label}: |cosines| of net 1's vs net 2's leading eigenvectors, before and after alignment "
                 "(§7; black 0, white 1)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_cosines")


def _reference(group: Group, row: str, metric: str = ACCURACY, fmt: str = ".3f") -> str:
    return reference_cell("002", group.dataset, group.model, row, "", metric, fmt)


def _width_rows(group: Group, run: RunDir) -> list[list]:
    """One row per width of the sweep: protocol, seeds M, the accuracies of each width's rainbow stage beside the
    paper's (skip J8 nets, 1 per width: M = 1), alignment and operator-norm errors against the widest."""
    sweep = contract.load(run, WIDTH_STAGE, "widths")
    protocol = PROTOCOLS[_on_data(group, "cifar10") if group.model in SCATTERING else "paper-other"]
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


def _accuracy_rows(group: Group, summary: dict, width: float) -> list[list]:
    """One row per reading of the rainbow accuracy (READINGS), each with its protocol and beside the trained
    nets' top-1 and top-5, and the paper's numbers for that net, data and width."""
    trained = np.array(list(summary["trained_accuracy"].values()))
    trained5 = np.array(list(summary["trained_top5"].values()))
    rows = []
    for top1_key, top5_key, label in READINGS:
        top1, top5 = np.array(summary[top1_key]), np.array(summary[top5_key])
        if top1.size == 0:
            continue
        rows.append([group.label, width, label, PROTOCOLS[_reading_protocol(group, top1_key)], len(trained),
                     top1.size, float(np.median(trained)), _reference(group, f"trained@{width:g}"),
                     float(np.median(trained5)), float(np.median(top1)), _reference(group, f"{top1_key}@{width:g}"),
                     float(top1.min()), float(top1.max()), float(np.median(top5)),
                     float(np.median(top1) / np.median(trained))])
    return rows


def _clipping_rows(group: Group, summary: dict) -> list[list]:
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


def _gaussian_rows(group: Group, summary: dict) -> list[list]:
    """Per resampled layer l: the fractions of net 2's spectrum outside the Marchenko-Pastur bulk before and
    after whitening, and the exact KS p-values at each rank r, beside the paper's (§2: 50 J8 nets, j = 2, 4, 6)."""
    protocol = PROTOCOLS[_on_data(group, "cifar10") if group.model == "scattering" else "paper-other"]
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


def _convergence_rows(group: Group, run: RunDir) -> list[list]:
    """Per number of nets N (§2 covariance_convergence): the smallest d within 1% when net 1 is clipped in C_l(N)'s
    basis, layers l >= 1, beside the paper's at j = 2 (4-block nets, s = 1: 35 / 44 / 42 for N = 1 / 10 / 50),
    and the operator-norm distance of C_l(N) to C_l(M)."""
    convergence = contract.load(run, STAGE, "convergence")
    reference = float(contract.load(run, STAGE, "clipping")["reference_accuracy"])
    layers = convergence["operator_error"].shape[1]
    protocol = PROTOCOLS[_on_data(group, "cifar10") if group.model == "scattering4" else "paper-other"]
    rows = []
    for c, count in enumerate(convergence["nets"]):
        within = [within_one_percent(convergence[layer_key(layer, "d")], convergence[layer_key(layer, "accuracy")][c],
                                     reference) for layer in range(1, layers)]
        rows.append([group.label, int(count), protocol, " ".join(str(d) for d in within),
                     _reference(group, "clip j=2", f"d within 1% (weight, M = {count})", ".0f"),
                     " ".join(f"{e:.3f}" for e in convergence["operator_error"][c])])
    return rows


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """The seed002 section; `options` (seed000's oracle choice) does not concern it."""
    accuracy_rows, clipping_rows, gaussian_rows, convergence_rows, width_rows, figures = [], [], [], [], [], []
    for group in groups:
        run = group.runs[0]
        summary = _summary(run)
        if summary is None:
            continue
        accuracy_rows += _accuracy_rows(group, summary, _width(run))
        clipping_rows += _clipping_rows(group, summary)
        gaussian_rows += _gaussian_rows(group, summary)
        convergence_rows += _convergence_rows(group, run)
        pngs = [_main_figure(group, run, out), _clipping_figure(group, run, out), _gaussian_figure(group, run, out),
                _convergence_figure(group, run, out), _cosine_figure(group, run, out)]
        if len(contract.load(run, STAGE, "dynamics")["epochs"]) > 1:
            pngs.append(_dynamics_figure(group, run, out))
        if contract.done(run, WIDTH_STAGE):
            pngs.append(_width_figure(group, run, out))
            width_rows += _width_rows(group, run)
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
