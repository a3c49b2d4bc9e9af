"""seed004 (how deep CNNs lose spatial information): per-run extraction and the across-seed report section.

extract(run) reads the stages of STABILITY_MODES (trained, init, fresh, shuffled, shuffled2), laplacian and scale1d
(whichever are done; pipeline.contract) and writes extract/seed004.npz:
  <mode>_nodes (L,) str, <mode>_D, <mode>_G, <mode>_R (L,)   per node (§2.4), mode = a key of STABILITY_MODES
  test_error ()                      1 - test accuracy of the measured trained checkpoint (NaN if unknown)
  corruption_std ()                  the run's training Gaussian corruption sigma (§2.7, config.json)
  probe_corruption_std ()            the corruption added to the probes of the trained stage (--corrupt_test)
  laplacian_layers (C,) str; laplacian_trained_<ll>, laplacian_init_<ll>, laplacian_eigenvalues_<ll> (N^2,)
                                     filter spectra per conv layer (§2.9)
  scale1d_<key>                      every array of the scale1d stage (1-D CNN and constant-filter model, §2.11-
                                     §2.12) and its scalars seed, length, xi, channels, ptr, epochs, converged,
                                     test_error
and returns {"output": {mode: {"D", "G", "R"}}, "test_error", "corruption_std", "nodes"}.

average(groups, out) draws
- per (dataset, model folder): D_f, G_f and R_f by node, nodes labelled by name and each mode placed by node name
  (median over seeds, 25-75% band; every measured mode, fresh and shuffled2 marked as extras) and the Laplacian
  spectra (init against trained);
- Fig. 1/10 and 8: R_f, D_f and G_f at the output of the trained nets against test error, one row of panels per
  training set (twopoints, with its @ptr<n> runs, apart), one colour per architecture and one marker per training
  corruption sigma; the model folders of one dataset that share an architecture and differ by "@sigma<s>"
  (utils.rundir's run variants) form one sigma sweep, joined by a line; the NeurIPS'21 predecessor's law
  eps = 0.2 sqrt(R_f) (§1.5) on the R_f panel of the image-classification rows;
- Fig. 7: the 1-D scale-detection CNN's D_k, G_k, R_k by block, trained and init (median over the distinct seeds
  measured anywhere in the workdir; the channel mean as an extra), beside the constant-filter model s = F = 2 and
  its closed form (R_k ~ 4^-k, where the original notebook draws const), and the s = 1 model with its power laws
  k^-1, k^1/2, k^-3/2 (§2.11);
and the tables, each row with its protocol (reports.references.PROTOCOLS) and reference column (REFERENCES).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter

from pipeline.contract import STABILITY_MODES, StageOutput, done, layer_key, load, stage_path
from pipeline.loaded import load_config
from reports import Group, ReportOptions
from reports.figures import markdown_table, median_band, new_figure, save_figure
from reports.references import MISSING, PROTOCOLS, find, reference_cell
from utils.rundir import RunDir, split_variant

TITLE = "How deep CNNs lose spatial information: diffeomorphism and noise stability (seed004)"
MODES = tuple(STABILITY_MODES)  # trained, init, fresh, shuffled, shuffled2
# the paper measures trained, init (§2.6) and shuffled (§2.5); a fresh draw and the output-channel shuffle are extras
EXTRAS = ("fresh", "shuffled2")
LABELS = {mode: f"{mode} (extra)" if mode in EXTRAS else mode for mode in MODES}
PAPER_DATA = ("cifar10", "twopoints")   # the paper's training sets (§1); other data: PROTOCOLS["paper-other"]
STYLES = {"trained": {"color": "C0"}, "init": {"color": "C7", "linestyle": "--"},
          "fresh": {"color": "C2", "linestyle": "-."}, "shuffled": {"color": "C3", "linestyle": ":"},
          "shuffled2": {"color": "C1", "linestyle": ":"}}
QUANTITIES = (("R", "relative stability $R_f = D_f / G_f$"), ("D", "diffeo sensitivity $D_f$"),
              ("G", "noise sensitivity $G_f$"))
SCALE1D_SCALARS = ("seed", "length", "xi", "channels", "ptr", "epochs", "converged", "test_error")
SIGMA_MARK = "sigma"
MARKERS = "os^Dv<>pP*X"


FORMAT = 1


def has_outputs(run: RunDir) -> bool:
    return any(done(run, name) for name in (*STABILITY_MODES.values(), "laplacian", "scale1d"))


def extract(run: RunDir, out: StageOutput) -> dict:
    flags = load_config(run).get("flags", {})
    arrays: dict = {"test_error": np.nan, "corruption_std": float(flags.get("corruption") or 0.0),
                    "probe_corruption_std": 0.0}
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
            arrays["probe_corruption_std"] = stats["corruption_std"]
            summary["nodes"] = len(values["nodes"])
    if done(run, "laplacian"):
        spectra = load(run, "laplacian", "laplacian")
        arrays.update({f"laplacian_{key}": value for key, value in spectra.items() if key != "kernel_sizes"})
    if done(run, "scale1d"):
        arrays.update({f"scale1d_{key}": value for key, value in load(run, "scale1d", "scale1d").items()})
        stats = load(run, "scale1d", "summary")
        arrays.update({f"scale1d_{key}": np.array(stats[key]) for key in SCALE1D_SCALARS})
    out.save("seed004", arrays)
    summary.update(test_error=float(arrays["test_error"]), corruption_std=float(arrays["corruption_std"]))
    return summary


def _runs(group: Group) -> list[dict]:
    return [load(run, "extract", "seed004") for run in group.runs if stage_path(run, "extract", "seed004").is_file()]


def architecture(model_folder: str) -> tuple[str, float | None]:
    """A model folder -> (architecture, sigma of its "@sigma<s>" variant, None without one): "vgg11@sigma10" ->
    ("vgg11", 10.0); the folder is split by utils.rundir.split_variant, the variant's parts are joined by "-"."""
    model, variant = split_variant(model_folder)
    for part in variant.split("-") if variant else ():
        if part.startswith(SIGMA_MARK):
            try:
                return model, float(part[len(SIGMA_MARK):])
            except ValueError:
                break
    return model, None


# ---- per group ---------------------------------------------------------------------------------------------------
def _per_node(runs: list[dict], mode: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(node names, (seeds, L) values) of one mode, the seeds whose node list matches the first one's."""
    found = [r for r in runs if f"{mode}_{key}" in r]
    if not found:
        return None
    nodes = found[0][f"{mode}_nodes"]
    return nodes, np.stack([r[f"{mode}_{key}"] for r in found if np.array_equal(r[f"{mode}_nodes"], nodes)])


def _output(runs: list[dict], mode: str, key: str = "R") -> np.ndarray:
    return np.array([r[f"{mode}_{key}"][-1] for r in runs if f"{mode}_{key}" in r])


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def _label_nodes(ax, nodes: np.ndarray, most: int = 40) -> None:
    """Node names as tick labels, every k-th when there are more than `most`, the output always."""
    step = max(1, math.ceil(len(nodes) / most))
    ticks = sorted(set(range(0, len(nodes), step)) | {len(nodes) - 1})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(nodes[i]) for i in ticks], rotation=90, fontsize=5)


def node_curves(runs: list[dict], key: str) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The nodes of the longest measured node list, and per mode (x positions among them, (seeds, L) values): each
    mode's nodes placed by name, so that a mode measured at the output only sits at the output's tick (§2.4)."""
    found = {mode: f for mode in MODES if (f := _per_node(runs, mode, key)) is not None}
    longest = max((nodes for nodes, _ in found.values()), key=len, default=np.array([]))
    position = {str(name): index for index, name in enumerate(longest)}
    curves = {}
    for mode, (nodes, values) in found.items():
        keep = [i for i, name in enumerate(nodes) if str(name) in position]
        curves[mode] = (np.array([position[str(nodes[i])] for i in keep]), values[:, keep])
    return longest, curves


def layer_figure(group: Group, runs: list[dict], out: Path) -> Path | None:
    """R_f, D_f, G_f by node, labelled by name: every measured mode (§2.4-§2.6), placed by node name."""
    if not any(f"{mode}_R" in r for r in runs for mode in MODES):
        return None
    fig, axes = new_figure(ncols=3, width=4.2, height=3.2)
    for ax, (key, label) in zip(axes[0], QUANTITIES):
        longest, curves = node_curves(runs, key)
        for mode, (x, values) in curves.items():
            median_band(ax, x, values, label=f"{LABELS[mode]} ({len(values)} seeds)", marker="o", markersize=2,
                        **STYLES[mode])
        _label_nodes(ax, longest)
        ax.set(yscale="log", ylabel=label)
    axes[0, 0].axhline(1.0, color="k", linewidth=0.6)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"{group.label}: stability by node (median over seeds, 25-75% band)", fontsize=10)
    return save_figure(fig, out, f"seed004_{group.dataset}_{group.model}_layers")


def _energy_shares(run: dict, kind: str, index: int) -> np.ndarray:
    """a_k / sum_k a_k of one conv layer (§2.9), kind = trained or init."""
    spectrum = run[layer_key(index, f"laplacian_{kind}")]
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
    sizes = {len(runs[0][layer_key(i, "laplacian_eigenvalues")]) for i in range(len(layers))}
    if len(sizes) == 1:
        ax.axhline(1.0 / sizes.pop(), color="k", linewidth=0.6, label="flat spectrum")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([str(name) for name in layers], rotation=90, fontsize=5)
    ax.set(ylabel="share on mode 0 (constant filter)", title="spatial pooling by conv layer")
    ax.legend()
    fig.suptitle(f"{group.label}: conv filters on grid-Laplacian modes (median over seeds)", fontsize=10)
    return save_figure(fig, out, f"seed004_{group.dataset}_{group.model}_laplacian")


# ---- across groups: Fig. 1/10 -------------------------------------------------------------------------------------
def output_points(groups_runs: list[tuple[Group, list[dict]]]) -> list[dict]:
    """One point per (dataset, model folder) with trained outputs: architecture, sigma and per-seed D, G, R, error."""
    points = []
    for group, runs in groups_runs:
        runs = [r for r in runs if "trained_R" in r]
        if not runs:
            continue
        model, sigma = architecture(group.model)
        recorded = {float(r["corruption_std"]) for r in runs}
        sigma = recorded.pop() if len(recorded) == 1 else (sigma or 0.0)
        points.append({"dataset": group.dataset, "model": model, "sigma": sigma, "label": group.label,
                       "error": np.array([float(r["test_error"]) for r in runs]),
                       **{key: _output(runs, "trained", key) for key in "DGR"}})
    return points


PREDECESSOR_LAW = r"$\epsilon = 0.2\sqrt{R_f}$ (NeurIPS'21 predecessor, CIFAR-10, §1.5)"


def error_figure(points: list[dict], out: Path) -> Path | None:
    """Fig. 1/10 and Fig. 8: R_f, D_f, G_f at the output against test error, one row of panels per training set
    (twopoints, Fig. 8, has its own); colour = architecture, marker = sigma, a line through each sigma sweep. The
    law eps = 0.2 sqrt(R_f) that the NeurIPS'21 predecessor found on CIFAR-10 (§1.5) is drawn on the R_f panel of
    the image-classification rows, not on twopoints'."""
    points = [p for p in points if np.isfinite(p["error"]).any()]
    if not points:
        return None
    datasets = sorted({p["dataset"] for p in points})
    sigmas = sorted({p["sigma"] for p in points})
    fig, axes = new_figure(ncols=3, nrows=len(datasets), width=3.8, height=3.2)
    for row, dataset in zip(axes, datasets):
        here = [p for p in points if p["dataset"] == dataset]
        models = sorted({p["model"] for p in here})
        for ax, (key, label) in zip(row, QUANTITIES):
            for index, model in enumerate(models):
                colour = f"C{index % 10}"
                sweep = sorted((p for p in here if p["model"] == model), key=lambda p: p["sigma"])
                for p in sweep:
                    marker = MARKERS[sigmas.index(p["sigma"]) % len(MARKERS)]
                    ax.scatter(p[key], p["error"], color=colour, marker=marker, alpha=0.3, s=10)
                    ax.scatter(_median(p[key]), _median(p["error"]), color=colour, marker=marker, s=40,
                               edgecolor="k", linewidth=0.5)
                ax.plot([_median(p[key]) for p in sweep], [_median(p["error"]) for p in sweep], color=colour,
                        linewidth=0.8, label=f"{dataset}/{model}" if key == "R" else None)
            ax.set(xscale="log", yscale="log", xlabel=f"{label.split(' $')[0]} at the output (trained)",
                   ylabel="test error $\\epsilon$", title=dataset)
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_minor_formatter(NullFormatter())
            _whole_decades(ax)
        everything = np.concatenate([p["R"] for p in here])
        everything = everything[np.isfinite(everything) & (everything > 0)]
        if len(everything) and dataset != "twopoints":
            grid = np.geomspace(min(everything.min(), 1e-3), max(everything.max(), 1.0), 100)
            row[0].plot(grid, 0.2 * np.sqrt(grid), color="k", linestyle="--", linewidth=1, label=PREDECESSOR_LAW)
        for sigma in sigmas:
            row[2].scatter([], [], color="grey", marker=MARKERS[sigmas.index(sigma) % len(MARKERS)],
                           label=f"$\\sigma$ = {sigma:g}")
        row[0].legend(fontsize=6)
        row[2].legend(fontsize=6)
    fig.suptitle("Stability at the output against test error across architectures and training noise $\\sigma$ "
                 "(large markers: median over seeds)", fontsize=10)
    return save_figure(fig, out, "seed004_rf_vs_error")


def _whole_decades(ax) -> None:
    """Widen a log-log panel's limits to whole decades, so that each axis has labelled ticks even when a sweep's
    points lie within one decade (the minor ticks are unlabelled)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    ax.set_xlim(10 ** np.floor(np.log10(x0)), 10 ** np.ceil(np.log10(x1)))
    ax.set_ylim(10 ** np.floor(np.log10(y0)), 10 ** np.ceil(np.log10(y1)))


# ---- Fig. 7: the 1-D model ----------------------------------------------------------------------------------------
def scale1d_runs(groups_runs: list[tuple[Group, list[dict]]]) -> list[dict]:
    """Every distinct 1-D experiment extracted anywhere (the stage depends only on its seed and flags, so runs of
    several groups may hold the same one), the most common settings only."""
    distinct: dict[tuple, dict] = {}
    for _, runs in groups_runs:
        for r in runs:
            if "scale1d_trained_R" in r:
                key = tuple(float(r[f"scale1d_{k}"]) for k in ("seed", "length", "xi", "channels", "ptr"))
                distinct.setdefault(key, r)
    if not distinct:
        return []
    settings = [key[1:] for key in distinct]
    common = max(set(settings), key=settings.count)
    return [r for key, r in sorted(distinct.items()) if key[1:] == common]


# the s = F = 2 closed form (measures.stability.pooling_model_prediction); on the R_k panel the original notebook draws
# "const" instead (§2.11, §8)
CLOSED_FORM = {"D": r"closed form $\sim 2^{-k}$", "G": r"closed form $\sim 2^{k}$",
               "R": r"closed form $\sim 4^{-k}$ (the original notebook draws const, §2.11)"}


def scale1d_figure(runs: list[dict], out: Path) -> Path | None:
    """Fig. 7: D_k, G_k, R_k of the 1-D CNN by block next to the constant-filter models of §2.11."""
    if not runs:
        return None
    first = runs[0]
    fig, axes = new_figure(ncols=3, nrows=2, width=3.4, height=2.7)
    k = first["scale1d_layers"]
    for ax, (key, label) in zip(axes[0], QUANTITIES):
        for mode, style in (("trained", STYLES["trained"]), ("init", STYLES["init"]),
                            ("trained_chmean", {"color": "C0", "linestyle": ":"})):
            values = np.stack([r[f"scale1d_{mode}_{key}"] for r in runs])
            median_band(ax, k, values, label=f"1-D CNN {mode.replace('_chmean', ', channel mean (extra)')}",
                        marker="o", markersize=3, **style)
        ax.plot(k, first[f"scale1d_pooling_{key}"], color="C4", marker="s", markersize=3, linestyle="none",
                label="constant filters s=F=2")
        ax.plot(k, first[f"scale1d_prediction_{key}"], color="C4", linewidth=1, label=CLOSED_FORM[key])
        ax.set(yscale="log", xlabel="block k", ylabel=label)
    axes[0, 0].legend(fontsize=6)
    depth = first["scale1d_diffusive_k"]
    laws = {"D": -1.0, "G": 0.5, "R": -1.5}
    for ax, (key, label) in zip(axes[1], QUANTITIES):
        values = first[f"scale1d_diffusive_{key}"]
        ax.plot(depth, values, color="C4", marker="o", markersize=2, label="constant filters s=1, F=3")
        anchor = len(depth) // 2
        ax.plot(depth, values[anchor] * (depth / depth[anchor]) ** laws[key], color="k", linestyle="--",
                linewidth=0.8, label=f"$k^{{{laws[key]:g}}}$")
        ax.set(xscale="log", yscale="log", xlabel="layer k", ylabel=label)
        ax.legend(fontsize=6)
    errors = [float(r["scale1d_test_error"]) for r in runs]
    fig.suptitle(f"1-D scale detection (L={int(first['scale1d_length'])}, xi={int(first['scale1d_xi'])}, "
                 f"H={int(first['scale1d_channels'])}, {len(runs)} seeds, test error {np.median(errors):.3f}) and "
                 "the constant-filter model", fontsize=10)
    return save_figure(fig, out, "seed004_scale1d")


# ---- the section -------------------------------------------------------------------------------------------------
def protocol(dataset: str) -> str:
    """The PROTOCOLS key of a row measured on `dataset`: the paper's training sets, or the paper's protocol on other
    data (digits, MNIST, ...)."""
    return "paper" if dataset in PAPER_DATA else "paper-other"


def references(dataset: str, model: str) -> str:
    """The reference column of a stability row: every seed004 reference for (dataset, architecture), "-" if none."""
    cells = [f"{metric}: {reference_cell('004', dataset, model, row, '', metric, fmt='.2g')}"
             for row, metric in REFERENCE_ROWS if find("004", dataset, model, row, "", metric)]
    return "; ".join(cells) or "-"


REFERENCE_ROWS = (("init", "R_f at the output, init (order)"), ("trained", "R_f at the output, trained (order)"))


def scale1d_protocol(run: dict) -> str:
    """"paper" at the paper's sizes (§2.12: H = 1000, L = 2^7 or 2^8, xi = 32 or 64, 1024 training signals), else
    "paper-other" (the demo's H = 100)."""
    paper = (int(run["scale1d_channels"]) == 1000 and int(run["scale1d_length"]) in (128, 256)
             and int(run["scale1d_xi"]) in (32, 64) and int(run["scale1d_ptr"]) == 1024)
    return "paper" if paper else "paper-other"


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """The report section; `options` (seed000's detection choices) do not apply to seed004."""
    groups_runs = [(group, runs) for group in groups if (runs := _runs(group))]
    rows, figures = [], []
    for group, runs in groups_runs:
        for figure in (layer_figure(group, runs, out), laplacian_figure(group, runs, out)):
            if figure is not None:
                figures.append(f"![{group.label}]({figure.name})")
        if not any(f"{mode}_R" in r for r in runs for mode in MODES):
            continue
        errors = np.array([float(r["test_error"]) for r in runs if "trained_R" in r])
        sigma = _median(np.array([float(r["corruption_std"]) for r in runs]))
        rows.append([group.label, PROTOCOLS[protocol(group.dataset)], sigma, len(runs), _median(errors),
                     _median(_output(runs, "trained")), *[_median(_output(runs, mode)) for mode in MODES[1:]],
                     _median(_output(runs, "trained", "D")), _median(_output(runs, "trained", "G")),
                     _median(_output(runs, "init", "D")), _median(_output(runs, "init", "G")),
                     references(group.dataset, architecture(group.model)[0])])
    one_d = scale1d_runs(groups_runs)
    if not rows and not one_d:
        return ""
    text = [f"## {TITLE}"]
    if rows:
        figure = error_figure(output_points(groups_runs), out)
        if figure is not None:
            figures.insert(0, f"![stability at the output against test error]({figure.name})")
        table = markdown_table(["group", "protocol", "sigma", "seeds", "test error", "R_f trained",
                                *[f"R_f {LABELS[mode]}" for mode in MODES[1:]], "D_f trained", "G_f trained",
                                "D_f init", "G_f init", "reference"], rows)
        text.append("Medians over seeds, at the output (logits). D_f and G_f: change of the representation under a "
                    "max-entropy diffeomorphism (twopoints: a one-pixel move of the active pixels) and under white "
                    "noise of the same norm, relative to the distance between probes (§2.3); R_f = D_f / G_f. "
                    "sigma: the Gaussian corruption the run was trained with (§2.7). Init = the epoch-0 weights "
                    "with batch-statistics BN (§2.6); shuffled = trained weights with every conv's input channels "
                    "permuted (§2.5). Extras of this toolkit: fresh = a newly drawn net, shuffled2 = input and output "
                    "channels permuted. Protocol: \"" + PROTOCOLS["paper"] + "\" on the paper's training sets "
                    "(CIFAR-10, twopoints), \"" + PROTOCOLS["paper-other"] + "\" elsewhere. Reference: "
                    + MISSING["004"] + ". The law eps = 0.2 sqrt(R_f) is the NeurIPS'21 predecessor's, on "
                    "CIFAR-10 (§1.5); the figure draws it beside the image-classification rows, not beside "
                    "twopoints'.\n\n"
                    + table)
    if one_d:
        figure = scale1d_figure(one_d, out)
        figures.append(f"![1-D scale detection and the constant-filter model]({figure.name})")
        rows_1d = [[int(r["scale1d_seed"]), PROTOCOLS[scale1d_protocol(r)], int(r["scale1d_channels"]),
                    int(r["scale1d_epochs"]), bool(r["scale1d_converged"]), float(r["scale1d_test_error"]),
                    float(r["scale1d_trained_R"][-1]), float(r["scale1d_init_R"][-1]), "-"] for r in one_d]
        text.append("1-D scale detection (§2.12, Fig. 7): the simple CNN (filter 2, stride 2) trained to zero "
                    "hinge loss on the block task; its stabilities by block, trained and at init (the channel mean, "
                    "the original's Mean=True option, is drawn as an extra), beside the constant-filter model of "
                    "§2.11 (s = F = 2: D_k ~ 2^-k, G_k ~ 2^k, R_k ~ 4^-k, the closed form drawn as a line; the "
                    "original notebook draws R_k as const there, §2.11 and §8; s = 1: D ~ k^-1, G ~ k^1/2, "
                    "R ~ k^-3/2). The paper's test errors could not be retrieved (spec §6): no reference.\n\n"
                    + markdown_table(["seed", "protocol", "H", "epochs", "zero loss", "test error",
                                      "R last block trained", "R last block init", "reference"], rows_1d))
    return "\n\n".join([*text, *figures])
