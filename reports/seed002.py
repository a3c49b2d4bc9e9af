"""seed002 (rainbow networks): per-run extraction and the per-group report section.

rainbow.py is a group stage: it writes <workdir>/<dataset>/<model>/rainbow/ once for all seeds. A run "has
outputs" when its group's rainbow/_done.json lists its seed; extract(run) writes extract/seed002.json with that
seed's share of the group summary: trained_accuracy (this seed's test accuracy), rainbow_accuracy (median of
the full rainbow nets), seeds (the seeds combined). average() reads the group folder itself (rainbow.py's
docstring documents its files) and draws, per group (spec §2, §6):
  seed002_<dataset>_<model>.png             alignment r2 / error per layer, C_j spectra (x D, with net 1's
                                            initialisation), activation spectra, rainbow vs trained accuracy layer
                                            by layer, Marchenko-Pastur spectra before / after whitening
  seed002_<dataset>_<model>_clipping.png    test accuracy against d per clipped layer in the three bases
  seed002_<dataset>_<model>_gaussian.png    whitened weight marginals against N(0, 1) with their KS p-values
and writes seed002_accuracy.csv (rainbow vs trained, as the resampling-width table) and seed002_clipping.csv
(smallest d within 1% of the trained accuracy, as the §6 table).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from reports import Group, ReportOptions
from reports.figures import markdown_table, median_band, new_figure, save_figure, write_csv
from utils.io import load_json, load_npz, save_json
from utils.rundir import DONE_FILE, RunDir

TITLE = "A Rainbow in Deep Network Black Boxes (seed002)"
BASIS_LABELS = {"weight": "$C_j$ PCA", "activation": "activation PCA", "random": "random"}
STAGE = "rainbow"


def _folder(run: RunDir) -> Path:
    return run.group / STAGE


def _summary(folder: Path) -> dict | None:
    return load_json(folder / "summary.json") if (folder / DONE_FILE).is_file() else None


def has_outputs(run: RunDir) -> bool:
    summary = _summary(_folder(run))
    return summary is not None and int(run.root.name[3:]) in summary["seeds"]


def extract(run: RunDir) -> dict:
    summary = _summary(_folder(run))
    result = {"trained_accuracy": summary["trained_accuracy"][run.root.name[3:]],
              "rainbow_accuracy": float(np.median(summary["rainbow_accuracy"])), "seeds": summary["seeds"]}
    save_json(run.extract / "seed002.json", result)
    return result


def _mp_density(q: float, grid: np.ndarray) -> np.ndarray:
    """Marchenko-Pastur density of the mean-1 eigenvalues of W^T W / N, aspect ratio q <= 1."""
    low, high = (1 - np.sqrt(q)) ** 2, (1 + np.sqrt(q)) ** 2
    inside = (grid > low) & (grid < high)
    density = np.zeros_like(grid)
    density[inside] = np.sqrt((high - grid[inside]) * (grid[inside] - low)) / (2 * np.pi * q * grid[inside])
    return density


def _numerically_positive(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues above 1e-10 of the largest: the rest is the numerical zero of a rank-deficient matrix."""
    return eigenvalues[eigenvalues > 1e-10 * eigenvalues.max()]


def _mp_layer(gauss: dict, count: int) -> int:
    """The resampled layer shown in the Marchenko-Pastur panels: the widest one not white by construction."""
    finite = [index for index in range(count) if np.isfinite(gauss["mp_white"][index])] or list(range(count))
    return max(finite, key=lambda index: gauss[f"mp_eigs_colored_{index + 1:02d}"].size)


def _layer_colors(count: int):
    import matplotlib.pyplot as plt

    return plt.cm.viridis(np.linspace(0, 0.9, max(count, 1)))


def _main_figure(group: Group, folder: Path, out: Path) -> Path:
    alignment, spectra = load_npz(folder / "alignment.npz"), load_npz(folder / "spectra.npz")
    rainbow, gauss = load_npz(folder / "rainbow.npz"), load_npz(folder / "gaussianity.npz")
    layers = len(alignment["dims"])
    colors = _layer_colors(layers)
    fig, axes = new_figure(ncols=3, nrows=2, width=3.3, height=2.6)
    ax = axes[0, 0]
    j = np.arange(2, layers + 1)
    if layers > 1:
        median_band(ax, j, alignment["r2"][1:].T, label="$r^2$ (train)", marker="o")
        median_band(ax, j, alignment["error"][1:].T, label="alignment error (test)", marker="s")
    ax.set(xlabel="layer $j$", ylabel="vs net 1 (median, IQR)", title="alignment quality (§5.2)", ylim=(0, None))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    ax = axes[0, 1]
    for index in range(layers - 1):
        key = f"{index + 1:02d}"
        dim = spectra[f"weight_{key}"].size
        for name, style in (("weight", "-"), ("weight_init", ":")):
            values = _numerically_positive(spectra[f"{name}_{key}"])
            ax.loglog(np.arange(1, values.size + 1), values * dim, color=colors[index], linestyle=style,
                      linewidth=1.5 if style == "-" else 1, label=f"$C_{{{index + 1}}}$" if style == "-" else None)
    ax.set(xlabel="rank", ylabel="eigenvalue $\\times D$", title="weight covariance spectra (dotted: init)")
    ax.legend(ncol=2)
    ax = axes[0, 2]
    for index in range(1, layers):
        values = _numerically_positive(spectra[f"activation_{index + 1:02d}"])
        ax.loglog(np.arange(1, values.size + 1), values / values.sum(), color=colors[index],
                  label=f"layer {index + 1}")
    ax.set(xlabel="rank", ylabel="eigenvalue / trace", title="activation spectra (mean net)")
    if layers > 1:
        ax.legend(ncol=2)
    ax = axes[1, 0]
    accuracy = rainbow["rainbow_accuracy"]
    resampled = np.arange(accuracy.shape[1])
    median_band(ax, resampled, accuracy, label=f"rainbow ({accuracy.shape[0]} samples)", marker="o")
    ax.axhline(np.median(rainbow["trained_accuracy"]), color="k", linestyle="--",
               label=f"trained ({len(rainbow['trained_accuracy'])} seeds)")
    ax.set(xlabel="layers resampled (1..r)", ylabel="test accuracy",
           title=f"rainbow networks (§5.4; r = {accuracy.shape[1] - 1}: all)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower left")
    for column, stage in ((1, "colored"), (2, "white")):
        ax = axes[1, column]
        shown = _mp_layer(gauss, layers - 1)
        key = f"{shown + 1:02d}"
        eigenvalues = gauss[f"mp_eigs_{stage}_{key}"]
        q = gauss[f"mp_q_{key}"][0 if stage == "colored" else 1]
        q = min(q, 1 / q)
        fraction = gauss[f"mp_{stage}"][shown]
        ax.hist(eigenvalues, bins=int(np.clip(eigenvalues.size // 4, 10, 60)), density=True,
                color="C0" if stage == "colored" else "C1", alpha=0.7,
                label=f"layer {shown + 1}, {100 * fraction:.1f}% outside" if np.isfinite(fraction)
                else f"layer {shown + 1} (white by construction)")
        grid = np.linspace(1e-3, max(eigenvalues.max(), (1 + np.sqrt(q)) ** 2) * 1.02, 400)
        ax.plot(grid, _mp_density(q, grid), color="k", label=f"Marchenko-Pastur, q={q:.2f}")
        ax.set(xlabel="eigenvalue (mean 1)", ylabel="density",
               title="net 1's weight spectrum" + (" whitened by $C_j$" if stage == "white" else ""))
        ax.legend()
    fig.suptitle(f"{group.label}: rainbow networks (seed002)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}")


def _clipping_figure(group: Group, folder: Path, out: Path) -> Path:
    clipping = load_npz(folder / "clipping.npz")
    keys = sorted(k[2:] for k in clipping if k.startswith("d_"))
    ncols = min(4, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=2.8, height=2.3)
    reference = float(clipping["reference_accuracy"])
    for ax, key in zip(axes.flat, keys):
        grid, curves = clipping[f"d_{key}"], clipping[f"accuracy_{key}"]
        for name, curve in zip(clipping["bases"], curves):
            ax.plot(grid, curve, marker=".", markersize=3, label=BASIS_LABELS[str(name)])
        ax.axhline(reference, color="k", linestyle="--", linewidth=1)
        ax.axhspan(reference - 0.01, reference, color="k", alpha=0.08, linewidth=0)
        ax.set(xlabel=f"kept dimensions $d$ (D = {grid[-1]})", ylabel="test accuracy", title=f"layer {int(key)}")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(loc="lower right")
    fig.suptitle(f"{group.label}: clipping one layer of net 1 (§5.5; band: within 1%)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_clipping")


def _gaussian_figure(group: Group, folder: Path, out: Path) -> Path:
    gauss = load_npz(folder / "gaussianity.npz")
    ranks, pvalues = gauss["ks_ranks"], gauss["ks_pvalue"]
    count = pvalues.shape[0]
    shown = sorted(set(np.linspace(0, count - 1, min(3, count)).round().astype(int)))
    fig, axes = new_figure(ncols=len(ranks), nrows=len(shown), width=2.4, height=2.0, sharex=True)
    grid = np.linspace(-4, 4, 200)
    for row, index in enumerate(shown):
        samples = gauss[f"whitened_{index + 1:02d}"]
        for column, rank in enumerate(ranks):
            ax = axes[row, column]
            values = samples[:, column]
            if np.isfinite(values).any():
                ax.hist(values[np.isfinite(values)], bins=40, range=(-4, 4), density=True, alpha=0.7)
                ax.plot(grid, np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi), color="k", linewidth=1)
            ax.set_title(f"layer {index + 1}, r={rank}: KS p={pvalues[index, column]:.2g}")
            ax.set(yticks=[])
    fig.suptitle(f"{group.label}: whitened aligned weights against N(0, 1) (§2)", y=1.01)
    return save_figure(fig, out, f"seed002_{group.dataset}_{group.model}_gaussian")


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """The seed002 section; `options` (seed000's oracle choice) does not concern it."""
    accuracy_rows, clipping_rows, figures = [], [], []
    for group in groups:
        folder = group.runs[0].root.parent / STAGE
        summary = _summary(folder)
        if summary is None:
            continue
        trained = np.array(list(summary["trained_accuracy"].values()))
        rainbow = np.array(summary["rainbow_accuracy"])
        accuracy_rows.append([group.label, len(trained), len(rainbow), float(np.median(trained)),
                              float(trained.min()), float(trained.max()), float(np.median(rainbow)),
                              float(rainbow.min()), float(rainbow.max()),
                              float(np.median(rainbow) / np.median(trained))])
        for index, dim in enumerate(summary["dims"][1:]):
            clipping_rows.append([group.label, index + 2, dim,
                                  *[summary["clip_within_1pct"][name][index] for name in BASIS_LABELS]])
        pngs = [_main_figure(group, folder, out), _clipping_figure(group, folder, out),
                _gaussian_figure(group, folder, out)]
        figures += [f"![{group.label}]({png.name})" for png in pngs]
    if not accuracy_rows:
        return ""
    accuracy_header = ["group", "seeds M", "samples K", "trained", "trained min", "trained max", "rainbow",
                       "rainbow min", "rainbow max", "rainbow / trained"]
    clipping_header = ["group", "layer j", "D_j", "C_j PCA d", "activation PCA d", "random d"]
    write_csv(out / "seed002_accuracy.csv", accuracy_header, accuracy_rows)
    write_csv(out / "seed002_clipping.csv", clipping_header, clipping_rows)
    return (f"## {TITLE}\n\nTest accuracy of the M trained seeds and of K Gaussian rainbow networks (every layer "
            "but the classifier resampled from the aligned weight covariances, §5.4); the paper's CIFAR-10 J8 "
            "scattering nets at width 1: 91.6 trained vs 81.4 rainbow; its tutorial MLP 42.4 vs 30.6 and CNN "
            f"57.4 vs 40.3 (§6).\n\n{markdown_table(accuracy_header, accuracy_rows)}\n\nClipping one layer of net 1 "
            "to d directions (§5.5): the smallest d on the grid whose accuracy is within 1% of the trained one "
            f"(-1: none).\n\n{markdown_table(clipping_header, clipping_rows)}\n\n" + "\n\n".join(figures))
