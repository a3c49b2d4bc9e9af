"""seed002 (rainbow networks): per-run extraction and the per-group report section.

rainbow.py is a group stage ("rainbow" in pipeline.contract): it writes <dataset>/<model>/rainbow/ once for all
seeds. A run "has outputs" when its group's rainbow stage is done and lists its seed; extract(run, out) writes the
extract stage's "seed002" file with that seed's share of the group summary: trained_accuracy (this seed's test
accuracy), rainbow_accuracy (median of the full rainbow nets), seeds (the seeds combined). average() reads the
group's rainbow files through the contract (rainbow.py's docstring documents them; per-layer keys are 0-based,
layer l = the input of weight layer l, the paper's layer j = l + 1) and draws, per group (spec §2, §6):
  seed002_<dataset>_<model>.png             alignment r2 / error per layer, C_l spectra (x D, with net 1's
                                            initialisation), activation spectra, rainbow vs trained accuracy layer
                                            by layer, Marchenko-Pastur spectra before / after whitening
  seed002_<dataset>_<model>_clipping.png    test accuracy against d per clipped layer in the three bases
  seed002_<dataset>_<model>_gaussian.png    whitened weight marginals against N(0, 1) with their KS p-values
and writes seed002_accuracy.csv (rainbow vs trained, as the resampling-width table) and seed002_clipping.csv
(smallest d within 1% of the trained accuracy, as the §6 table; "layer l" 0-based, "paper j" = l + 1).
Figures label layers 0-based ("layer l"), as the file keys.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from measures.alignment import marchenko_pastur_density, marchenko_pastur_edges, positive_eigenpairs
from pipeline import contract
from reports import Group, ReportOptions
from reports.figures import markdown_table, median_band, new_figure, save_figure, write_csv
from utils.rundir import RunDir

TITLE = "A Rainbow in Deep Network Black Boxes (seed002)"
BASIS_LABELS = {"weight": "$C_l$ PCA", "activation": "activation PCA", "random": "random"}
STAGE = "rainbow"


def _key(prefix: str, layer: int) -> str:
    """A per-layer key of the rainbow files: prefix and the two-digit 0-based layer index."""
    return f"{prefix}_{layer:02d}"


def _summary(run: RunDir) -> dict | None:
    return contract.load(run, STAGE, "summary") if contract.done(run, STAGE) else None


def has_outputs(run: RunDir) -> bool:
    summary = _summary(run)
    return summary is not None and int(run.root.name[3:]) in summary["seeds"]


def extract(run: RunDir, out: contract.StageOutput) -> dict:
    summary = _summary(run)
    result = {"trained_accuracy": summary["trained_accuracy"][run.root.name[3:]],
              "rainbow_accuracy": float(np.median(summary["rainbow_accuracy"])), "seeds": summary["seeds"]}
    out.save("seed002", result)
    return result


def _mp_layer(gauss: dict, count: int) -> int:
    """The resampled layer shown in the Marchenko-Pastur panels: the widest one not white by construction."""
    finite = [layer for layer in range(count) if np.isfinite(gauss["mp_white"][layer])] or list(range(count))
    return max(finite, key=lambda layer: gauss[_key("mp_eigs_colored", layer)].size)


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
        dim = spectra[_key("weight", layer)].size
        for name, style in (("weight", "-"), ("weight_init", ":")):
            values = positive_eigenpairs(spectra[_key(name, layer)])
            ax.loglog(np.arange(1, values.size + 1), values * dim, color=colors[layer], linestyle=style,
                      linewidth=1.5 if style == "-" else 1, label=f"$C_{{{layer}}}$" if style == "-" else None)
    ax.set(xlabel="rank", ylabel="eigenvalue $\\times D$", title="weight covariance spectra (dotted: init)")
    ax.legend(ncol=2)
    ax = axes[0, 2]
    for layer in range(1, layers):
        values = positive_eigenpairs(spectra[_key("activation", layer)])
        ax.loglog(np.arange(1, values.size + 1), values / values.sum(), color=colors[layer], label=f"layer {layer}")
    ax.set(xlabel="rank", ylabel="eigenvalue / trace", title="activation spectra (mean net)")
    if layers > 1:
        ax.legend(ncol=2)
    ax = axes[1, 0]
    accuracy = rainbow["rainbow_accuracy"]
    resampled = np.arange(accuracy.shape[1])
    median_band(ax, resampled, accuracy, label=f"rainbow ({accuracy.shape[0]} samples)", marker="o")
    ax.axhline(np.median(rainbow["trained_accuracy"]), color="k", linestyle="--",
               label=f"trained ({len(rainbow['trained_accuracy'])} seeds)")
    ax.set(xlabel="r: layers 0..r-1 resampled", ylabel="test accuracy",
           title=f"rainbow networks (§5.4; r = {accuracy.shape[1] - 1}: all)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower left")
    for column, stage in ((1, "colored"), (2, "white")):
        ax = axes[1, column]
        shown = _mp_layer(gauss, layers - 1)
        eigenvalues = gauss[_key(f"mp_eigs_{stage}", shown)]
        q = gauss[_key("mp_q", shown)][0 if stage == "colored" else 1]
        q = min(q, 1 / q)
        fraction = gauss[f"mp_{stage}"][shown]
        ax.hist(eigenvalues, bins=int(np.clip(eigenvalues.size // 4, 10, 60)), density=True,
                color="C0" if stage == "colored" else "C1", alpha=0.7,
                label=f"layer {shown}, {100 * fraction:.1f}% outside" if np.isfinite(fraction)
                else f"layer {shown} (white by construction)")
        grid = np.linspace(1e-3, max(eigenvalues.max(), marchenko_pastur_edges(q)[1]) * 1.02, 400)
        ax.plot(grid, marchenko_pastur_density(grid, q), color="k", label=f"Marchenko-Pastur, q={q:.2f}")
        ax.set(xlabel="eigenvalue (mean 1)", ylabel="density",
               title="net 1's weight spectrum" + (" whitened by $C_l$" if stage == "white" else ""))
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
        grid, curves = clipping[_key("d", layer)], clipping[_key("accuracy", layer)]
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


def _gaussian_figure(group: Group, run: RunDir, out: Path) -> Path:
    gauss = contract.load(run, STAGE, "gaussianity")
    ranks, pvalues = gauss["ks_ranks"], gauss["ks_pvalue"]
    count = pvalues.shape[0]
    shown = sorted(set(np.linspace(0, count - 1, min(3, count)).round().astype(int)))
    fig, axes = new_figure(ncols=len(ranks), nrows=len(shown), width=2.4, height=2.0, sharex=True)
    grid = np.linspace(-4, 4, 200)
    for row, layer in enumerate(shown):
        samples = gauss[_key("whitened", layer)]
        for column, rank in enumerate(ranks):
            ax = axes[row, column]
            values = samples[:, column]
            if np.isfinite(values).any():
                ax.hist(values[np.isfinite(values)], bins=40, range=(-4, 4), density=True, alpha=0.7)
                ax.plot(grid, stats.norm.pdf(grid), color="k", linewidth=1)
            ax.set_title(f"layer {layer}, r={rank}: KS p={pvalues[layer, column]:.2g}")
            ax.set(yticks=[])
    fig.suptitle(f"{group.label}: whitened aligned weights against N(0, 1) (§2)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_gaussian")


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """The seed002 section; `options` (seed000's oracle choice) does not concern it."""
    accuracy_rows, clipping_rows, figures = [], [], []
    for group in groups:
        run = group.runs[0]
        summary = _summary(run)
        if summary is None:
            continue
        trained = np.array(list(summary["trained_accuracy"].values()))
        rainbow = np.array(summary["rainbow_accuracy"])
        accuracy_rows.append([group.label, len(trained), len(rainbow), float(np.median(trained)),
                              float(trained.min()), float(trained.max()), float(np.median(rainbow)),
                              float(rainbow.min()), float(rainbow.max()),
                              float(np.median(rainbow) / np.median(trained))])
        for layer, dim in enumerate(summary["dims"][1:], start=1):
            clipping_rows.append([group.label, layer, layer + 1, dim,
                                  *[summary["clip_within_1pct"][name][layer - 1] for name in BASIS_LABELS]])
        pngs = [_main_figure(group, run, out), _clipping_figure(group, run, out), _gaussian_figure(group, run, out)]
        figures += [f"![{group.label}]({png.name})" for png in pngs]
    if not accuracy_rows:
        return ""
    accuracy_header = ["group", "seeds M", "samples K", "trained", "trained min", "trained max", "rainbow",
                       "rainbow min", "rainbow max", "rainbow / trained"]
    clipping_header = ["group", "layer l", "paper j", "D_l", "C_l PCA d", "activation PCA d", "random d"]
    write_csv(out / "seed002_accuracy.csv", accuracy_header, accuracy_rows)
    write_csv(out / "seed002_clipping.csv", clipping_header, clipping_rows)
    return (f"## {TITLE}\n\nTest accuracy of the M trained seeds and of K Gaussian rainbow networks (every layer "
            "but the classifier resampled from the aligned weight covariances, §5.4); the paper's CIFAR-10 J8 "
            "scattering nets at width 1: 91.6 trained vs 81.4 rainbow; its tutorial MLP 42.4 vs 30.6 and CNN "
            f"57.4 vs 40.3 (§6).\n\n{markdown_table(accuracy_header, accuracy_rows)}\n\nClipping one layer of net 1 "
            "to d directions (§5.5): the smallest d on the grid whose accuracy is within 1% of the trained one "
            "(-1: none); layer l is the input of weight layer l (0-based), the paper's layer j = l + 1."
            f"\n\n{markdown_table(clipping_header, clipping_rows)}\n\n" + "\n\n".join(figures))
