"""seed000's figures per (dataset, model): the detection overview, projection scores against the residual parameter
fraction, spectra, CKA heatmaps and noise sensitivity."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

from pipeline.contract import TRAIN_SET
from reports.figures import band, legend, new_figure, save_figure, summary, vertical_line
from reports.seed000.layout import CKA_FLOOR
from reports.seed000.seeds import Seeds


# ---- figures --------------------------------------------------------------------------------------------------------
class Draw:
    """Shared drawing state of one figure set: the statistic across seeds and per-seed curves."""

    def __init__(self, seeds: Seeds, stat: str):
        self.seeds, self.stat, self.per_seed = seeds, stat, seeds.options.per_seed
        self.transition, _ = seeds.transition() if seeds.layers else (None, "")

    def curve(self, ax, x, values, label=None, **kwargs):
        return band(ax, x, values, label=label, stat=self.stat, per_seed=self.per_seed, **kwargs)

    def centre(self, values, axis=0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return summary(values, self.stat, axis=axis)[0]

    def layer_axis(self, ax, label: str = "layer") -> None:
        vertical_line(ax, self.transition, "transition layer")
        ax.set_xlabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    @property
    def stat_label(self) -> str:
        return "median, 25-75% band" if self.stat == "median" else "mean ± std"


def seed_count(seeds: Seeds) -> str:
    return f"{len(seeds.runs)} seed{'s' if len(seeds.runs) != 1 else ''}"


def _fraction_axis(ax) -> None:
    """Log x axis of fractions labelled 0.01, 0.02, 0.05, 0.1, ... 1."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _stem(seeds: Seeds, topic: str, stat: str) -> str:
    base = f"seed000_{seeds.group.dataset}_{seeds.group.model}" + (f"_{topic}" if topic else "")
    return base + ("-mean" if stat == "mean" else "")


def _detection_figure(d: Draw, out: Path) -> Path:
    seeds = d.seeds
    fig, axes = new_figure(ncols=2, nrows=2, width=4.6, height=3.2)
    _mahalanobis_panels(d, axes[0, 0], axes[0, 1])
    _projection_layer_panel(d, axes[1, 0])
    _feature_norm_panel(d, axes[1, 1])
    fig.suptitle(f"{seeds.group.label}: OOD detection, {seed_count(seeds)} ({d.stat_label}); choices on the "
                 f"{seeds.select_label}")
    return save_figure(fig, out, _stem(seeds, "", d.stat))


def _mahalanobis_panels(d: Draw, ax_layer, ax_dims) -> None:
    seeds, values = d.seeds, d.seeds["mahalanobis"]
    if values is None:
        ax_layer.set_visible(False)
        ax_dims.set_visible(False)
        return
    L = values.shape[1]
    chosen = np.stack([seeds.mahalanobis_at(layer) for layer in range(L)], axis=1)  # (seeds, L, D, M)
    every = np.stack([seeds.mahalanobis_at(layer, chosen=False) for layer in range(L)], axis=1)
    full = seeds["mahalanobis_full"]
    for o, tag in enumerate(seeds.reported):
        line = d.curve(ax_layer, np.arange(L), chosen[:, :, o, 0], label=seeds.name(tag), marker=".")
        ax_layer.plot(np.arange(L), d.centre(every[:, :, o, 0]), linestyle="--", color=line.get_color())
        if full is not None:
            ax_layer.plot(np.arange(L), d.centre(full[:, :, o, 0]), linestyle=":", color=line.get_color())
    d.layer_axis(ax_layer)
    styles = [Line2D([], [], color="k", linestyle=s) for s in ("-", "--", ":")]
    ax_layer.set(ylabel="AUROC", title="Mahalanobis: AUROC per layer")
    handles, labels = ax_layer.get_legend_handles_labels()
    ax_layer.legend(handles + styles[:3 if full is not None else 2],
                    labels + ["d chosen per seed", "largest d of the grid", "full d = D"][:3 if full is not None
                                                                                           else 2], fontsize=7)
    dims = seeds.runs[0]["mahalanobis_dims"][-1]
    keep = np.isfinite(values[:, -1, 0, :, 0]).any(0) & (dims > 0)
    for o, tag in enumerate(seeds.reported):
        line = d.curve(ax_dims, dims[keep], values[:, -1, o, keep, 0], label=seeds.name(tag))
        if full is not None:
            ax_dims.plot(np.median(seeds["mahalanobis_full_dims"][:, -1]), d.centre(full[:, -1, o, 0]), marker="*",
                         markersize=9, color=line.get_color(), linestyle="none")
    ax_dims.set(xscale="log", xlabel="components d", ylabel="AUROC",
                title="Mahalanobis at the FC input" + (" (star: d = D)" if full is not None else ""))
    legend(ax_dims, fontsize=7)


def _projection_layer_panel(d: Draw, ax) -> None:
    seeds = d.seeds
    ratio, norm = seeds["projection_ratio"], seeds["projection_norm"]
    if ratio is None or ratio.shape[1] < 2:
        ax.set_visible(False)
        return
    layer, _ = seeds.norm_layer()
    v_ratio, v_norm = seeds.best_variant("projection_ratio", -1), seeds.best_variant("projection_norm", layer)
    layers = np.arange(ratio.shape[2])
    for o, tag in enumerate(seeds.reported):
        line = d.curve(ax, layers, ratio[:, v_ratio, :, o, 0], label=seeds.name(tag), marker=".")
        ax.plot(layers, d.centre(norm[:, v_norm, :, o, 0]), linestyle="--", color=line.get_color())
    ax.axvline(layer, color="0.6", linestyle=":", linewidth=1.0)
    d.layer_axis(ax)
    handles, labels = ax.get_legend_handles_labels()
    styles = [Line2D([], [], color="k", linestyle="-"), Line2D([], [], color="k", linestyle="--"),
              Line2D([], [], color="0.6", linestyle=":")]
    ax.legend(handles + styles, labels + [f"ratio ||V_k^T x||²/||x_all||², r = {seeds.ratio(v_ratio):.2g}",
                                          f"norm ||V_k^T x||², r = {seeds.ratio(v_norm):.2g}",
                                          f"norm layer {layer}"], fontsize=7)
    ax.set(ylabel="AUROC", title="projection scores at the chosen thresholds")


def _feature_norm_panel(d: Draw, ax) -> None:
    """AUROC per layer of the original network's feature norms as scores (norm00, norm0, k_bn)."""
    seeds = d.seeds
    scores = [(key, label, style) for key, label, style in
              (("feature_norm", "||x||² (norm00)", "-"), ("patch_norm", "patch energy (norm0)", "--"),
               ("bn_norm", "||BN output||² (k_bn)", ":")) if seeds[key] is not None]
    if not scores:
        ax.set_visible(False)
        return
    layers = np.arange(seeds[scores[0][0]].shape[2])
    for o in range(len(seeds.reported)):
        colour = f"C{o}"
        for key, _, style in scores:
            ax.plot(layers, d.centre(seeds[key][:, 0, :, o, 0]), linestyle=style, color=colour, marker=".",
                    markersize=3)
    d.layer_axis(ax)
    handles = [Line2D([], [], color=f"C{o}") for o in range(len(seeds.reported))]
    handles += [Line2D([], [], color="k", linestyle=style) for _, _, style in scores]
    labels = [seeds.name(t) for t in seeds.reported] + [label for _, label, _ in scores]
    if d.transition is not None:
        handles.append(Line2D([], [], color="0.4", linestyle="--"))
        labels.append("transition layer")
    ax.legend(handles, labels, fontsize=7, ncol=2)
    ax.axhline(0.5, color="0.7", linewidth=0.8)
    ax.set(ylabel="AUROC", title="feature norms of the original network as scores (toolkit extra)")


def _projection_figure(d: Draw, out: Path) -> Path | None:
    """AUROC on the near-OOD set against the residual parameter fraction, one line per layer (seed000 §10)."""
    seeds = d.seeds
    ratio, norm, params = seeds["projection_ratio"], seeds["projection_norm"], seeds["residual_params"]
    if ratio is None or ratio.shape[1] < 2:
        return None
    fig, axes = new_figure(ncols=3, nrows=1, width=4.4, height=3.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x = np.nanmedian(params[:, 1:], axis=0)
    order = np.argsort(x)
    near = seeds.sets.index(seeds.near) if seeds.near in seeds.sets else 0
    L = ratio.shape[2]
    cmap, scale = colormaps["viridis"], Normalize(0, L - 1)
    norm_layer, _ = seeds.norm_layer()
    for ax, values, title, mark in ((axes[0, 0], norm, "projection norm ||V_k^T x||²", norm_layer),
                                    (axes[0, 1], ratio, "projection ratio ||V_k^T x||²/||x_all||² (normr)", L - 1)):
        for layer in range(L):
            centre = d.centre(values[:, 1:, layer, near, 0])[order]
            ax.plot(x[order], centre, color=cmap(scale(layer)), linewidth=0.9, alpha=0.8)
        d.curve(ax, x[order], values[:, 1:, mark, near, 0][:, order], color="k", marker=".", linewidth=2,
                label=f"layer {mark}" + (" (FC input)" if mark == L - 1 else " (fixed)"))
        ax.axhline(0.5, color="0.7", linewidth=0.8)
        _fraction_axis(ax)
        ax.set(xlabel="residual parameter fraction", ylabel=f"AUROC ({seeds.name(seeds.near)})", title=title)
        legend(ax, fontsize=7, loc="lower left")
        fig.colorbar(ScalarMappable(norm=scale, cmap=cmap), ax=ax, label="layer",
                     ticks=MaxNLocator(integer=True))
    accuracy = seeds["accuracy"]
    d.curve(axes[0, 2], x[order], accuracy[:, 1:, 1][:, order], label="rank-truncated, test", marker=".")
    d.curve(axes[0, 2], x[order], accuracy[:, 1:, 0][:, order], label="rank-truncated, train", marker=".",
            linestyle="--")
    axes[0, 2].axhline(d.centre(accuracy[:, 0, 1]), color="grey", linestyle=":", label="original, test")
    _fraction_axis(axes[0, 2])
    axes[0, 2].set(xlabel="residual parameter fraction", ylabel="accuracy", title="low-rank networks")
    legend(axes[0, 2], fontsize=7)
    fig.suptitle(f"{seeds.group.label}: projection scores on the near-OOD set {seeds.name(seeds.near)} for every "
                 f"layer ({d.stat_label} over {seed_count(seeds)} for the black line)")
    return save_figure(fig, out, _stem(seeds, "projection", d.stat))


def _spectra_figure(d: Draw, out: Path) -> Path:
    seeds = d.seeds
    fig, axes = new_figure(ncols=3, nrows=1, width=4.2, height=3.2)
    ax = axes[0, 0]
    for key, label in (("weight_stable_rank", "weights"), ("covariance_stable_rank", "tied feature covariance")):
        values = seeds[key]
        if values is not None:
            d.curve(ax, np.arange(values.shape[1]), values, label=label, marker=".")
    d.layer_axis(ax)
    ax.set(yscale="log", ylabel="stable rank (||·||_F / ||·||_2)²", title="stable rank per layer")
    legend(ax, fontsize=7)
    _cka_last_panel(d, axes[0, 1])
    _prediction_panel(d, axes[0, 2])
    fig.suptitle(f"{seeds.group.label}: spectra, similarity to the last layer, predictions ({d.stat_label}, "
                 f"{seed_count(seeds)})")
    return save_figure(fig, out, _stem(seeds, "spectra", d.stat))


def _cka_last_panel(d: Draw, ax) -> None:
    values = d.seeds["cka"]
    if values is None:
        ax.set_visible(False)
        return
    layers = np.arange(values.shape[2])
    for s, tag in enumerate(str(t) for t in d.seeds.runs[0]["cka_sets"]):
        d.curve(ax, layers, values[:, s, :, -1], label=_set_label(d.seeds, tag))
    d.layer_axis(ax)
    ax.set(ylabel="linear CKA with the FC input", title="CKA of each layer with the last")
    legend(ax, fontsize=7)


def _set_label(seeds: Seeds, tag: str) -> str:
    role = {seeds.group.dataset: "ID test", TRAIN_SET: "ID train"}.get(tag)
    if seeds.sets:
        role = role or {seeds.near: "near-OOD", seeds.sets[-1]: "validation"}.get(tag)
    name = seeds.name(tag) if seeds.sets else tag
    return f"{name} ({role})" if role else name


def _prediction_panel(d: Draw, ax) -> None:
    seeds, fractions = d.seeds, d.seeds["predicted_fraction"]
    if fractions is None:
        ax.set_visible(False)
        return
    names = [seeds.group.dataset, *seeds.reported]
    classes = np.arange(fractions.shape[2])
    width = 0.8 / len(names)
    for s, tag in enumerate(names):
        centre = d.centre(fractions[:, s])
        cv = centre.std() / centre.mean()
        ax.bar(classes + (s - (len(names) - 1) / 2) * width, centre, width=width,
               label=f"{_set_label(seeds, tag)}: CV {cv:.2f}")
    ax.set(xlabel="predicted class", ylabel="fraction of the set", title="predictions of the original network",
           xticks=classes)
    legend(ax, fontsize=7)


def _cka_figure(d: Draw, out: Path) -> Path | None:
    """A linear-CKA heatmap between layers for every set (ID train and test, each OOD set)."""
    seeds, values = d.seeds, d.seeds["cka"]
    if values is None:
        return None
    sets = [str(s) for s in seeds.runs[0]["cka_sets"]]
    ncols = min(3, len(sets))
    nrows = -(-len(sets) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=3.6, height=3.3)
    image = None
    for ax, (s, tag) in zip(axes.flat, enumerate(sets)):
        image = ax.imshow(np.clip(d.centre(values[:, s]), CKA_FLOOR, 1), norm=LogNorm(CKA_FLOOR, 1),
                          origin="lower", cmap="viridis")
        ax.grid(False)
        if d.transition is not None:
            for line in (ax.axvline, ax.axhline):
                line(d.transition, color="w", linestyle="--", linewidth=0.8)
        ax.set(xlabel="layer", ylabel="layer", title=_set_label(seeds, tag))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=ax, label="linear CKA (log scale)")
    for ax in list(axes.flat)[len(sets):]:
        ax.set_visible(False)
    fig.suptitle(f"{seeds.group.label}: linear CKA between layers within each set ({d.stat} over "
                 f"{seed_count(seeds)}; dashed: transition layer)")
    return save_figure(fig, out, _stem(seeds, "cka", d.stat))


def _noise_figure(d: Draw, out: Path) -> Path | None:
    """Top: median chi per layer for each perturbed layer (ID test, near-OOD, ID train); bottom: chi at the logits
    with its +-1 sigma sample quantiles for every set, the log-sensitivity AUROC, and the perturbed layers' key."""
    seeds = d.seeds
    quantiles = seeds["noise_quantiles"]
    if quantiles is None:
        return None
    layers = seeds.runs[0]["noise_layers"]
    noise_sets = [str(s) for s in seeds.runs[0]["noise_sets"]]
    shown = [tag for tag in (seeds.group.dataset, seeds.near if seeds.sets else None, TRAIN_SET)
             if tag in noise_sets]
    fig, axes = new_figure(ncols=3, nrows=2, width=4.2, height=3.3)
    Lp1 = quantiles.shape[3]
    cmap, scale = colormaps["viridis"], Normalize(0, max(len(layers) - 1, 1))
    for ax, tag in zip(axes[0], shown):
        s = noise_sets.index(tag)
        for p, start in enumerate(layers):
            ax.plot(np.arange(start, Lp1), d.centre(quantiles[:, 0, p, start:, s, 0]), color=cmap(scale(p)),
                    marker=".", markersize=3, label=str(start))
        d.layer_axis(ax, f"layer m ({Lp1 - 1} = logits)")
        ax.set(yscale="log", ylim=(1e-5, 1), ylabel="median χ over samples",
               title=f"noise sensitivity, {_set_label(seeds, tag)}")
    for ax in axes[0, len(shown):]:
        ax.set_visible(False)
    ax = axes[1, 0]
    for s, tag in enumerate(noise_sets):
        centre = [d.centre(quantiles[:, 0, :, -1, s, q]) for q in range(3)]
        line = ax.plot(layers, centre[0], marker=".", label=_set_label(seeds, tag))[0]
        ax.fill_between(layers, centre[1], centre[2], color=line.get_color(), alpha=0.15, linewidth=0)
    d.layer_axis(ax, "perturbed layer")
    ax.set(yscale="log", ylabel="χ at the logits", title="χ at the logits: median and ±1σ sample quantiles")
    legend(ax, fontsize=7)
    ax = axes[1, 1]
    metrics = seeds["noise_metrics"]
    if metrics is not None:
        for o, tag in enumerate(seeds.reported):
            d.curve(ax, layers, metrics[:, 0, :, -1, o, 0], label=seeds.name(tag), marker=".")
        ax.axhline(0.5, color="0.7", linewidth=0.8)
        d.layer_axis(ax, "perturbed layer")
        ax.set(ylabel="AUROC of -log χ", title="detection by sensitivity at the logits")
        legend(ax, fontsize=7)
    else:
        ax.set_visible(False)
    key = axes[1, 2]
    handles, labels = axes[0, 0].get_legend_handles_labels()
    key.axis("off")
    key.legend(handles[:len(layers)], labels[:len(layers)], title="perturbed layer (top panels)", loc="center",
               ncol=2, fontsize=8)
    eta = f"η = {float(seeds.runs[0]['noise_eta']):g}" if "noise_eta" in seeds.runs[0] else "relative noise η"
    fig.suptitle(f"{seeds.group.label}: noise sensitivity χ = ||f(x~) - f(x)||² / ||f(x)||² of the original network "
                 f"({eta}; {d.stat} over {seed_count(seeds)})")
    return save_figure(fig, out, _stem(seeds, "noise", d.stat))


def draw_figures(seeds: Seeds, out: Path) -> list[Path]:
    paths = []
    for stat in ("median", "mean") if seeds.options.mean_std else ("median",):
        d = Draw(seeds, stat)
        for draw in (_detection_figure, _projection_figure, _spectra_figure, _cka_figure, _noise_figure):
            path = draw(d, out)
            if path is not None:
                paths.append(path)
    return paths


