"""seed002's figures, one set per group (reports.seed002 lists them), read from the rainbow and rainbow-width
stage files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from measures.alignment import marchenko_pastur_density, marchenko_pastur_edges, positive_eigenpairs
from pipeline import contract
from pipeline.contract import layer_key
from reports import Group
from reports.figures import median_band, new_figure, save_figure
from reports.seed002.tables import BASIS_LABELS, STAGE, WIDTH_STAGE
from utils.rundir import RunDir

GAUSSIAN_LAYERS = (1, 3, 5)       # the paper's Gaussianity figure: j = 2, 4, 6 (layer l = j - 1)


def _mp_layer(gauss: dict, count: int) -> int:
    """The resampled layer shown in the Marchenko-Pastur panels: the widest one not white by construction."""
    finite = [layer for layer in range(count) if np.isfinite(gauss["mp_white"][layer])] or list(range(count))
    return max(finite, key=lambda layer: gauss[layer_key(layer, "mp_eigs_colored")].size)


def _layer_colors(count: int):
    import matplotlib.pyplot as plt

    return plt.cm.viridis(np.linspace(0, 0.9, max(count, 1)))


def main_figure(group: Group, run: RunDir, out: Path) -> Path:
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


def clipping_figure(group: Group, run: RunDir, out: Path) -> Path:
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


def gaussian_figure(group: Group, run: RunDir, out: Path) -> Path:
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


def width_figure(group: Group, run: RunDir, out: Path) -> Path:
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


def convergence_figure(group: Group, run: RunDir, out: Path) -> Path:
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


def dynamics_figure(group: Group, run: RunDir, out: Path) -> Path:
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
    flags = contract.done_record(run, STAGE)["flags"]
    nets = min(flags.get("dynamics_nets", 1), len(flags["seeds"]))
    source = "net 1's own $C_l$" if nets == 1 else f"$C_l$ of {nets} nets (an extra)"
    paper = "" if (group.model, group.dataset) == ("scattering4", "cifar10") else \
        "; the paper: one 4-block nowd net without N, j = 4"
    fig.suptitle(f"{group.label}: training dynamics of net 1 along the eigenvectors of {source} (§5.6{paper})",
                 y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_dynamics")


def cosine_figure(group: Group, run: RunDir, out: Path) -> Path:
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
