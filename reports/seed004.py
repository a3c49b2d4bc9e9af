"""seed004 (how deep CNNs lose spatial information): per-run extraction and the across-seed report section.

extract(run) reads the stages stability, stability-init, stability-shuffled and laplacian (whichever are done;
stability/{trained,init,shuffled,laplacian}/, pipeline.contract.STABILITY_MODES) and writes extract/seed004.npz:
  <mode>_nodes (L,) str, <mode>_D, <mode>_G, <mode>_R (L,)   per node (§2.4), mode = trained, init, shuffled
  test_error ()                      1 - test accuracy of the measured trained checkpoint (NaN if unknown)
  corruption_std ()                  the run's training corruption (§2.7)
  laplacian_layers (C,) str; laplacian_trained_<ll>, laplacian_init_<ll>, laplacian_eigenvalues_<ll> (N^2,)
                                     filter spectra per conv layer (§2.9)
and returns {"output": {mode: {"D", "G", "R"}}, "test_error", "corruption_std", "nodes"}.
average(groups, out) draws, per (dataset, model), D_f, G_f and R_f by node (median over seeds, 25-75% band;
trained, init, shuffled) and the Laplacian spectra (init against trained); across groups, R_f at the output
against test error with the reference eps = 0.2 sqrt(R_f) of §1.5.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.contract import STABILITY_MODES, StageOutput, done, load, stage_path
from reports import Group, ReportOptions
from reports.figures import markdown_table, median_band, new_figure, save_figure
from utils.rundir import RunDir

TITLE = "How deep CNNs lose spatial information: diffeomorphism and noise stability (seed004)"
MODES = tuple(STABILITY_MODES)  # trained, init, shuffled
STYLES = {"trained": {"color": "C0"}, "init": {"color": "C7", "linestyle": "--"},
          "shuffled": {"color": "C3", "linestyle": ":"}}
QUANTITIES = (("R", "relative stability $R_f = D_f / G_f$"), ("D", "diffeo sensitivity $D_f$"),
              ("G", "noise sensitivity $G_f$"))


def has_outputs(run: RunDir) -> bool:
    return any(done(run, name) for name in (*STABILITY_MODES.values(), "laplacian"))


def extract(run: RunDir, out: StageOutput) -> dict:
    arrays: dict = {"test_error": np.nan, "corruption_std": 0.0}
    summary: dict = {"output": {}}
    for mode, name in STABILITY_MODES.items():
        if not done(run, name):
            continue
        values, stats = load(run, name, "stability"), load(run, name, "summary")
        for key in ("nodes", "D", "G", "R"):
            arrays[f"{mode}_{key}"] = values[key]
        summary["output"][mode] = stats["output"]
        if mode == "trained":
            accuracy = stats.get("test_accuracy")
            arrays["test_error"] = np.nan if accuracy is None else 1.0 - accuracy
            arrays["corruption_std"] = stats["corruption_std"]
            summary["nodes"] = len(values["nodes"])
    if done(run, "laplacian"):
        spectra = load(run, "laplacian", "laplacian")
        arrays.update({f"laplacian_{key}": value for key, value in spectra.items() if key != "kernel_sizes"})
    out.save("seed004", arrays)
    summary.update(test_error=float(arrays["test_error"]), corruption_std=float(arrays["corruption_std"]))
    return summary


def _runs(group: Group) -> list[dict]:
    return [load(run, "extract", "seed004") for run in group.runs if stage_path(run, "extract", "seed004").is_file()]


def _per_node(runs: list[dict], mode: str, key: str) -> np.ndarray | None:
    """(seeds, L) values of one mode, the seeds whose node list matches the first one's."""
    found = [r for r in runs if f"{mode}_{key}" in r]
    if not found:
        return None
    nodes = found[0][f"{mode}_nodes"]
    return np.stack([r[f"{mode}_{key}"] for r in found if np.array_equal(r[f"{mode}_nodes"], nodes)])


def _output(runs: list[dict], mode: str, key: str = "R") -> np.ndarray:
    return np.array([r[f"{mode}_{key}"][-1] for r in runs if f"{mode}_{key}" in r])


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else math.nan


def layer_figure(group: Group, runs: list[dict], out: Path) -> Path | None:
    """R_f, D_f, G_f by node: trained, init and shuffled nets (§2.4-§2.6)."""
    if not any(f"{mode}_R" in r for r in runs for mode in MODES):
        return None
    fig, axes = new_figure(ncols=3, width=3.6, height=2.8)
    for ax, (key, label) in zip(axes[0], QUANTITIES):
        for mode in MODES:
            values = _per_node(runs, mode, key)
            if values is not None:
                median_band(ax, np.arange(values.shape[1]), values, label=f"{mode} ({len(values)} seeds)",
                            **STYLES[mode])
        ax.set(yscale="log", xlabel="node (forward order, last = output)", ylabel=label)
    axes[0, 0].axhline(1.0, color="k", linewidth=0.6)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"{group.label}: stability by layer (median over seeds, 25-75% band)", fontsize=10)
    return save_figure(fig, out, f"seed004_{group.dataset}_{group.model}_layers")


def _energy_shares(run: dict, kind: str, index: int) -> np.ndarray:
    """a_k / sum_k a_k of one conv layer (§2.9), kind = trained or init."""
    spectrum = run[f"laplacian_{kind}_{index:02d}"]
    return spectrum / spectrum.sum()


def laplacian_figure(group: Group, runs: list[dict], out: Path) -> Path | None:
    """Share of filter energy on each grid-Laplacian mode, init against trained, for the first, middle and
    last conv layers, and the share on the constant mode (spatial pooling) by layer (§2.9)."""
    layers = runs[0].get("laplacian_layers") if runs else None
    runs = [r for r in runs if "laplacian_layers" in r and np.array_equal(r["laplacian_layers"], layers)]
    if not runs:
        return None
    fig, axes = new_figure(ncols=2, width=3.6, height=2.8)
    for colour, index in enumerate(sorted({0, len(layers) // 2, len(layers) - 1})):
        for kind in ("trained", "init"):
            shares = np.stack([_energy_shares(r, kind, index) for r in runs])
            median_band(axes[0, 0], np.arange(shares.shape[1]), shares, color=f"C{colour}",
                        linestyle="-" if kind == "trained" else "--", label=f"{layers[index]} ({kind})")
    axes[0, 0].set(xlabel="Laplacian mode k (ascending eigenvalue)", ylabel="share of filter energy",
                   title="filter spectra (first, middle, last conv)")
    axes[0, 0].legend(fontsize=6)
    ax = axes[0, 1]
    for kind in ("trained", "init"):
        constant = np.array([[_energy_shares(r, kind, i)[0] for i in range(len(layers))] for r in runs])
        median_band(ax, np.arange(len(layers)), constant, label=kind, **STYLES[kind])
    sizes = {len(runs[0][f"laplacian_eigenvalues_{i:02d}"]) for i in range(len(layers))}
    if len(sizes) == 1:
        ax.axhline(1.0 / sizes.pop(), color="k", linewidth=0.6, label="flat spectrum")
    ax.set(xlabel="conv layer (forward order)", ylabel="share on mode 0 (constant filter)",
           title="spatial pooling by layer")
    ax.legend()
    fig.suptitle(f"{group.label}: conv filters on grid-Laplacian modes (median over seeds)", fontsize=10)
    return save_figure(fig, out, f"seed004_{group.dataset}_{group.model}_laplacian")


def error_figure(points: list[tuple[str, np.ndarray, np.ndarray]], out: Path) -> Path | None:
    """R_f at the output against test error, one marker per (dataset, model), the reference of §1.5."""
    points = [(label, r, e) for label, r, e in points if len(r) and np.isfinite(e).any()]
    if not points:
        return None
    fig, axes = new_figure(width=4.2, height=3.2)
    ax = axes[0, 0]
    for index, (label, rf, error) in enumerate(points):
        ax.scatter(rf, error, color=f"C{index % 10}", alpha=0.35, s=12)
        ax.scatter(np.median(rf), np.nanmedian(error), color=f"C{index % 10}", s=40, edgecolor="k", label=label)
    everything = np.concatenate([r for _, r, _ in points])
    grid = np.geomspace(min(everything.min(), 1e-3), max(everything.max(), 1.0), 100)
    ax.plot(grid, 0.2 * np.sqrt(grid), color="k", linestyle="--", linewidth=1, label=r"$\epsilon = 0.2\sqrt{R_f}$")
    ax.set(xscale="log", yscale="log", xlabel="$R_f$ at the output (trained)", ylabel="test error $\\epsilon$",
           title="relative stability against error")
    ax.legend(fontsize=7)
    return save_figure(fig, out, "seed004_rf_vs_error")


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """The report section; `options` (seed000's detection choices) do not apply to seed004."""
    rows, figures, points = [], [], []
    for group in groups:
        runs = _runs(group)
        if not runs:
            continue
        for figure in (layer_figure(group, runs, out), laplacian_figure(group, runs, out)):
            if figure is not None:
                figures.append(f"![{group.label}]({figure.name})")
        trained = _output(runs, "trained")
        errors = np.array([float(r["test_error"]) for r in runs if "trained_R" in r])
        points.append((group.label, trained, errors))
        rows.append([group.label, len(runs), _median(errors[np.isfinite(errors)]), _median(trained),
                     _median(_output(runs, "init")), _median(_output(runs, "shuffled")),
                     _median(_output(runs, "trained", "D")), _median(_output(runs, "trained", "G")),
                     _median(_output(runs, "init", "D")), _median(_output(runs, "init", "G"))])
    if not rows:
        return ""
    figure = error_figure(points, out)
    if figure is not None:
        figures.insert(0, f"![R_f against test error]({figure.name})")
    table = markdown_table(["group", "seeds", "test error", "R_f trained", "R_f init", "R_f shuffled",
                            "D_f trained", "G_f trained", "D_f init", "G_f init"], rows)
    return (f"## {TITLE}\n\nMedians over seeds, at the output (logits). D_f and G_f: change of the representation "
            f"under a max-entropy diffeomorphism (twopoints: a one-pixel move of the active pixels) and under "
            f"white noise of the same norm, relative to the distance between probes (§2.3); R_f = D_f / G_f. "
            f"Init = the epoch-0 weights with batch-statistics BN (§2.6); shuffled = trained weights with every "
            f"conv's input channels permuted (§2.5). The paper's trained CNNs on CIFAR-10 follow "
            f"eps = 0.2 sqrt(R_f) (§1.5).\n\n{table}\n\n" + "\n\n".join(figures))
