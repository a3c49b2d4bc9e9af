"""seed000 (dimensionality-induced information loss of outliers): per-run scores and the across-seed section.

extract(run) reads analysis/, features/ and kernels/ (whichever have finished) and writes extract/seed000.npz.
Detection metrics are `measures.ood.detection_metrics` with the in-distribution test set as the positive class and
every score oriented higher = more in-distribution (seed000 §9): a metric vector is METRICS = [AUROC, AUPR-In,
AUPR-Out, FPR95 (fraction of OOD accepted at 95% ID recall), TPR05 (ID recall at 5% of OOD accepted)]. OOD scores
are resampled with replacement to the ID size by a generator seeded with RESAMPLE_SEED when the sizes differ.
The detection sets are the reported OOD sets (datasets.ood_sets) followed by the validation OOD set
(datasets.validation_ood), which chooses hyper-parameters at averaging time. Keys (V network variants "all", q...;
L layers; D detection sets; M metrics; P perturbed layers; K Mahalanobis grid; C classes):
  from analysis/:  variants (V,); ratios (V - 1,); detection_sets (D,); validation_set (); near_set () the
                   reported near-OOD set (datasets.near_ood); weight_stable_rank (L,) sum s^2 / s_max^2;
                   residual_params (V,) seed000 §10's residual parameter fraction of each variant (1 for "all");
                   accuracy (V, 2) train and test (measures.classification: a hinge head too); msp (V, D, M) with
                   score measures.ood.msp_score = -log(1 - max softmax + 1e-7);
                   projection_ratio, projection_norm (V, L, D, M) with scores norm1 / norm0 and norm1;
                   predicted_fraction (1 + D, C) fraction of the ID test set, then of each detection set, predicted
                   as each class by "all"; noise_layers (P,); noise_median (V, P, L + 1, 1 + D) median chi over the
                   samples of the ID test set, then of each detection set; noise_metrics (V, P, L + 1, D, M) with
                   score measures.ood.log_sensitivity_score = -log(chi + 1e-7) (OOD is expected to be more
                   sensitive), NaN where m < the perturbed layer
  from features/:  covariance_stable_rank (L,) sum l^2 / l_max^2 of the tied covariance; mahalanobis_dims (L, K)
                   the counts d of dims_exp(D_l), 0-padded; mahalanobis (L, D, K, M) with score -M_d, NaN where d
                   exceeds the layer's grid or its directions of non-zero variance
  from kernels/:   cka_sets (S,); cka (S, L, L) linear CKA between layers within each set

average(groups, out, options) draws one figure per (dataset, model), medians over seeds with 25-75% bands, and
writes the main table (seed000 §10). The Mahalanobis d (per seed and layer) and the rank threshold (the ratio with
the best median AUROC over seeds) are chosen on the validation OOD set, never on a reported one; with
options.oracle they are chosen on the reported near-OOD set, as seed000 did.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from datasets import near_ood
from measures.classification import accuracy, predictions
from measures.ood import detection_metrics, dims_exp, log_sensitivity_score, msp_score
from measures.spectra import residual_params, stable_rank
from pipeline import contract
from pipeline.contract import TRAIN_SET, StageOutput, done, done_record, load, stage_path
from pipeline.evaluation import detection_sets, test_set_tag
from pipeline.loaded import load_config
from reports import Group, ReportOptions
from reports.figures import markdown_table, median_band, new_figure, save_figure, write_csv
from utils.errors import ToolkitError
from utils.rundir import RunDir

TITLE = "Dimensionality-induced information loss of outliers (seed000)"
STAGES = [name for name, record in contract.STAGES.items() if record.scope == "run" and record.paper == "000"]
METRICS = ("AUROC", "AUPR_IN", "AUPR_OUT", "FPR95", "TPR05")
RESAMPLE_SEED = 0
CKA_FLOOR = 0.04


def has_outputs(run: RunDir) -> bool:
    return any(done(run, stage) for stage in STAGES)


def _metrics(score_id, score_ood) -> np.ndarray:
    """METRICS of one score, ID positive, higher = more ID; OOD resampled to the ID size if the sizes differ."""
    generator = torch.Generator().manual_seed(RESAMPLE_SEED)
    result = detection_metrics(torch.as_tensor(score_id), torch.as_tensor(score_ood), resample_generator=generator)
    return np.array([result[name] for name in METRICS])


def _done_record(run: RunDir, stage: str, *keys: str) -> dict:
    """The stage's _done.json, which must hold `keys` (a one-line error otherwise)."""
    record = done_record(run, stage)
    missing = [key for key in keys if key not in record]
    if missing:
        raise ToolkitError(f"{contract.stage_dir(run, stage)}: the done record lacks {missing}; rerun "
                           f"{contract.stage(stage).script} with --force")
    return record


def _analysis(run: RunDir, dataset: str, loss: str, classes: int) -> dict:
    record = _done_record(run, "analysis", "variants", "datasets")
    svals = load(run, "analysis", "svals")
    tags, sets = record["variants"], detection_sets(dataset, record["datasets"])
    proj = {(tag, ds): load(run, "analysis", "projections", tag=tag, ds=ds)
            for tag in tags for ds in record["datasets"]}
    shapes = list(zip(svals["fan_out"].tolist(), svals["fan_in"].tolist()))
    out = {"variants": np.array(tags), "ratios": svals["ratios"],
           "weight_stable_rank": [float(stable_rank(torch.as_tensor(row[:n])))
                                  for row, n in zip(svals["svals"], svals["lengths"])],
           "residual_params": [float(residual_params(proj[tag, dataset]["ranks"], shapes)) for tag in tags]}
    out["accuracy"] = [[accuracy(proj[tag, ds]["logits"], proj[tag, ds]["labels"], loss)
                        for ds in (TRAIN_SET, dataset)] for tag in tags]
    if not sets:
        return out
    out.update(detection_sets=np.array(sets), validation_set=np.array(sets[-1]),
               near_set=np.array(near_ood(dataset)))
    out["msp"] = [[_metrics(msp_score(proj[tag, dataset]["logits"]), msp_score(proj[tag, ds]["logits"]))
                   for ds in sets] for tag in tags]
    scores = {"projection_ratio": lambda p: p["norm1"] / p["norm0"], "projection_norm": lambda p: p["norm1"]}
    for key, score in scores.items():
        out[key] = [[[_metrics(score(proj[tag, dataset])[:, layer], score(proj[tag, ds])[:, layer]) for ds in sets]
                     for layer in range(len(svals["lengths"]))] for tag in tags]
    out["predicted_fraction"] = [np.bincount(predictions(torch.as_tensor(proj["all", ds]["logits"]), loss).numpy(),
                                             minlength=classes) / len(proj["all", ds]["logits"])
                                 for ds in (dataset, *sets)]
    out.update(_noise(run, tags, dataset, sets))
    return out


def _noise(run: RunDir, tags: list[str], dataset: str, sets: list[str]) -> dict:
    """Median chi and the detection metrics of the log-sensitivity, for the variants that were perturbed."""
    perturbed = [tag for tag in tags if all(stage_path(run, "analysis", "sensitivity", tag=tag, ds=ds).is_file()
                                            for ds in (dataset, *sets))]
    if not perturbed:
        return {}
    loaded = {(tag, ds): load(run, "analysis", "sensitivity", tag=tag, ds=ds)
              for tag in perturbed for ds in (dataset, *sets)}
    chi = {key: arrays["chi"] for key, arrays in loaded.items()}
    _, P, M = chi[perturbed[0], dataset].shape
    median = np.full((len(tags), P, M, 1 + len(sets)), np.nan)
    metrics = np.full((len(tags), P, M, len(sets), len(METRICS)), np.nan)
    for v, tag in enumerate(tags):
        if tag not in perturbed:
            continue
        score = {ds: log_sensitivity_score(chi[tag, ds]).numpy() for ds in (dataset, *sets)}
        for s, ds in enumerate((dataset, *sets)):
            median[v, ..., s] = np.median(chi[tag, ds], axis=0)
        for p in range(P):
            for m in range(M):
                if np.isfinite(score[dataset][:, p, m]).all():
                    metrics[v, p, m] = [_metrics(score[dataset][:, p, m], score[ds][:, p, m]) for ds in sets]
    return {"noise_layers": loaded[perturbed[0], dataset]["noise_layers"], "noise_median": median,
            "noise_metrics": metrics}


def _features(run: RunDir, dataset: str) -> dict:
    sets = detection_sets(dataset, _done_record(run, "features", "datasets")["datasets"])
    eig = load(run, "features", "eigenvalues")
    stable_ranks = [float(stable_rank(torch.as_tensor(row[:n]).clamp(min=0)))
                    for row, n in zip(eig["eigenvalues"], eig["dims"])]
    if not sets:
        return {"covariance_stable_rank": stable_ranks}
    grids = [dims_exp(int(D)).numpy() for D in eig["dims"]]
    width = max(len(grid) for grid in grids)
    metrics = np.full((len(grids), len(sets), width, len(METRICS)), np.nan)
    for layer, grid in enumerate(grids):
        dist = {ds: load(run, "features", "mahalanobis", layer=f"{layer:02d}", ds=ds) for ds in (dataset, *sets)}
        columns = np.searchsorted(grid, dist[dataset]["dims_exp"])  # the saved d are a prefix of the full grid
        for o, ds in enumerate(sets):
            for k, column in enumerate(columns):
                metrics[layer, o, column] = _metrics(-dist[dataset]["distance_exp"][:, k],
                                                     -dist[ds]["distance_exp"][:, k])
    return {"covariance_stable_rank": stable_ranks,
            "mahalanobis_dims": np.array([np.pad(grid, (0, width - len(grid))) for grid in grids]),
            "mahalanobis": metrics}


def _kernels(run: RunDir) -> dict:
    sets = _done_record(run, "kernels", "datasets")["datasets"]
    cka = [load(run, "kernels", "kernels", ds=ds)["cka"] for ds in sets]
    return {"cka_sets": np.array(sets), "cka": np.array(cka)}


def extract(run: RunDir, out: StageOutput) -> dict:
    """Write extract/seed000.npz (module docstring) from the stages that have finished; return a short summary."""
    config = load_config(run)
    dataset = test_set_tag(config["data"]["name"])  # the stages' file-name tag of the test split
    arrays: dict = {}
    if done(run, "analysis"):
        arrays.update(_analysis(run, dataset, config["recipe"]["loss"], int(config["model"]["num_classes"])))
    if done(run, "features"):
        arrays.update(_features(run, dataset))
    if done(run, "kernels"):
        arrays.update(_kernels(run))
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    out.save("seed000", arrays)
    summary = {"stages": [stage for stage in STAGES if done(run, stage)]}
    if "accuracy" in arrays:
        summary["test_accuracy"] = float(arrays["accuracy"][0, 1])
    if "detection_sets" in arrays:
        sets = [str(name) for name in arrays["detection_sets"]]
        summary["msp_auroc"] = dict(zip(sets, arrays["msp"][0, :, 0].tolist()))
        summary["projection_ratio_fc_auroc"] = dict(zip(sets, arrays["projection_ratio"][0, -1, :, 0].tolist()))
    return summary


# ---- across seeds -------------------------------------------------------------------------------------------------
class Seeds:
    """The extracted seed000 arrays of one group's seeds, stacked on a first (seed) axis, and the selection set."""

    def __init__(self, group: Group, options: ReportOptions):
        loaded = [(run, load(run, "extract", "seed000")) for run in group.runs
                  if stage_path(run, "extract", "seed000").is_file()]
        common = Counter(frozenset(arrays) for _, arrays in loaded).most_common(1)[0][0] if loaded else frozenset()
        self.runs = [arrays for _, arrays in loaded if frozenset(arrays) == common]
        self.incomplete = [run.root.name for run, arrays in loaded if frozenset(arrays) != common]
        self.group = group
        self._stacked: dict[str, np.ndarray | None] = {}
        if not self.runs or "detection_sets" not in self.runs[0]:
            self.sets = []
            return
        sets = [str(name) for name in self.runs[0]["detection_sets"]]
        self.sets, self.reported = sets, sets[:-1]
        near = str(self.runs[0]["near_set"])
        self.select = sets.index(near) if options.oracle and near in sets else len(sets) - 1
        self.select_label = f"{'oracle: reported near-OOD set' if options.oracle else 'validation set'} " \
                            f"{sets[self.select]}"

    def __getitem__(self, key: str) -> np.ndarray | None:
        """The key's arrays of every seed, stacked (once per key); None when missing or of different shapes."""
        if key not in self._stacked:
            values = [run[key] for run in self.runs if key in run]
            same = values and len(values) == len(self.runs) and len({v.shape for v in values}) == 1
            self._stacked[key] = np.stack(values) if same else None
        return self._stacked[key]

    def best_variant(self, key: str, layer: int | None) -> tuple[int, int]:
        """(variant > 0, layer) with the best median AUROC over seeds on the selection set; at `layer`, or over
        every layer when None."""
        values = np.nanmedian(self[key][:, 1:, :, self.select, 0], axis=0)  # (ratio variants, L)
        if layer is not None:
            return 1 + int(np.nanargmax(values[:, layer])), layer % values.shape[1]
        v, best_layer = np.unravel_index(np.nanargmax(values), values.shape)
        return 1 + int(v), int(best_layer)

    def mahalanobis_at(self, layer: int, chosen: bool = True) -> np.ndarray:
        """(seeds, D, M) at the d chosen per seed on the selection set (else at the largest valid d)."""
        values = self["mahalanobis"][:, layer]  # (seeds, D, K, M)
        valid = np.isfinite(values[:, self.select, :, 0])
        if chosen:
            picks = [int(np.nanargmax(row)) for row in values[:, self.select, :, 0]]
        else:
            picks = [int(np.flatnonzero(row)[-1]) for row in valid]
        return np.stack([seed[:, k] for seed, k in zip(values, picks)])


def _cell(values: np.ndarray) -> str:
    low, median, high = np.nanquantile(values, [0.25, 0.5, 0.75])
    return f"{median:.3f} ({(high - low) / 2:.3f})"


def _table(seeds: Seeds) -> tuple[list[list], str]:
    """Rows of the main table (seed000 §10) per reported OOD set and method, and a note on the choices."""
    label = seeds.group.label
    methods, notes = [], []
    if seeds["msp"] is not None:
        methods.append(("MSP", seeds["msp"][:, 0]))
    if seeds["mahalanobis"] is not None:
        methods.append(("Mahalanobis, FC input, d chosen", seeds.mahalanobis_at(-1)))
    if seeds["projection_ratio"] is not None:
        ratios, accuracy, params = seeds.runs[0]["ratios"], seeds["accuracy"], seeds["residual_params"]
        v, layer = seeds.best_variant("projection_norm", None)
        methods.append((f"projection norm, layer {layer}, ratio chosen", seeds["projection_norm"][:, v, layer]))
        notes.append(f"projection norm: layer {layer}, ratio {ratios[v - 1]:.3g}")
        methods.append(("projection ratio, FC input, full rank", seeds["projection_ratio"][:, 0, -1]))
        v, _ = seeds.best_variant("projection_ratio", -1)
        methods.append(("projection ratio, FC input, ratio chosen (proposed)", seeds["projection_ratio"][:, v, -1]))
        notes.append(f"projection ratio: ratio {ratios[v - 1]:.3g}, residual parameters "
                     f"{np.median(params[:, v]):.3f}, test accuracy {np.median(accuracy[:, v, 1]):.4f} "
                     f"(uncompressed {np.median(accuracy[:, 0, 1]):.4f})")
    rows = [[label, name, method, *[_cell(values[:, o, i]) for i in range(len(METRICS))]]
            for o, name in enumerate(seeds.reported) for method, values in methods]
    return rows, "; ".join(notes)


def _figure(seeds: Seeds, out: Path) -> Path:
    fig, axes = new_figure(ncols=4, nrows=3, width=3.3, height=2.6)
    _stable_rank_panel(axes[0, 0], seeds)
    _mahalanobis_panels(axes[0, 1], axes[0, 2], seeds)
    _accuracy_panel(axes[0, 3], seeds)
    _projection_panels(axes[1, 0], axes[1, 1], axes[1, 2], seeds)
    _cka_panels(axes[1, 3], axes[2, 0], fig, seeds)
    _noise_panels(axes[2, 1], axes[2, 2], seeds)
    _prediction_panel(axes[2, 3], seeds)
    fig.suptitle(f"{seeds.group.label}: {len(seeds.runs)} seeds, median and 25-75% band; choices on "
                 f"{seeds.select_label}")
    return save_figure(fig, out, f"seed000_{seeds.group.dataset}_{seeds.group.model}")


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _stable_rank_panel(ax, seeds: Seeds) -> None:
    for key, label in (("weight_stable_rank", "weights"), ("covariance_stable_rank", "tied feature covariance")):
        values = seeds[key]
        if values is not None:
            median_band(ax, np.arange(values.shape[1]), values, label=label, marker=".")
    ax.set(yscale="log", xlabel="layer", ylabel="stable rank", title="stable rank")
    _legend(ax)


def _mahalanobis_panels(ax_layer, ax_dims, seeds: Seeds) -> None:
    values = seeds["mahalanobis"]
    if values is None:
        return
    L = values.shape[1]
    chosen = np.stack([seeds.mahalanobis_at(layer) for layer in range(L)], axis=1)  # (seeds, L, D, M)
    every = np.stack([seeds.mahalanobis_at(layer, chosen=False) for layer in range(L)], axis=1)
    for o, name in enumerate(seeds.reported):
        line = median_band(ax_layer, np.arange(L), chosen[:, :, o, 0], label=name, marker=".")
        ax_layer.plot(np.arange(L), np.nanmedian(every[:, :, o, 0], axis=0), linestyle="--", color=line.get_color())
    ax_layer.set(xlabel="layer", ylabel="AUROC", title="Mahalanobis (solid: d chosen, dashed: all d)")
    _legend(ax_layer)
    dims = seeds.runs[0]["mahalanobis_dims"][-1]
    keep = np.isfinite(values[:, -1, 0, :, 0]).any(0) & (dims > 0)
    for o, name in enumerate(seeds.reported):
        median_band(ax_dims, dims[keep], values[:, -1, o, keep, 0], label=name)
    ax_dims.set(xscale="log", xlabel="components d", ylabel="AUROC", title="Mahalanobis at the FC input")
    _legend(ax_dims)


def _fraction_axis(ax) -> None:
    """Log x axis of fractions labelled 0.01, 0.02, 0.05, 0.1, ... 1."""
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _accuracy_panel(ax, seeds: Seeds) -> None:
    accuracy, params = seeds["accuracy"], seeds["residual_params"]
    if accuracy is None:
        return
    order = np.argsort(np.median(params[:, 1:], axis=0))
    x = np.median(params[:, 1:], axis=0)[order]
    median_band(ax, x, accuracy[:, 1:, 1][:, order], label="rank-truncated", marker=".")
    ax.axhline(np.median(accuracy[:, 0, 1]), color="grey", linestyle=":", label="original")
    ax.set(xscale="log", xlabel="residual parameter fraction", ylabel="test accuracy", title="low-rank networks")
    _fraction_axis(ax)
    _legend(ax)


def _projection_panels(ax_ratio, ax_norm, ax_layer, seeds: Seeds) -> None:
    ratio, norm = seeds["projection_ratio"], seeds["projection_norm"]
    if ratio is None or ratio.shape[1] < 2:
        return
    params = np.median(seeds["residual_params"][:, 1:], axis=0)
    order = np.argsort(params)
    _, norm_layer = seeds.best_variant("projection_norm", None)
    for ax, values, layer, title in ((ax_ratio, ratio, -1, "projection ratio, FC input"),
                                     (ax_norm, norm, norm_layer, f"projection norm, layer {norm_layer}")):
        for o, name in enumerate(seeds.reported):
            median_band(ax, params[order], values[:, 1:, layer, o, 0][:, order], label=name, marker=".")
        ax.set(xscale="log", xlabel="residual parameter fraction", ylabel="AUROC", title=title)
        _fraction_axis(ax)
        _legend(ax)
    v_ratio, _ = seeds.best_variant("projection_ratio", -1)
    v_norm, _ = seeds.best_variant("projection_norm", None)
    layers = np.arange(ratio.shape[2])
    for o, name in enumerate(seeds.reported):
        line = median_band(ax_layer, layers, ratio[:, v_ratio, :, o, 0], label=name, marker=".")
        ax_layer.plot(layers, np.median(norm[:, v_norm, :, o, 0], axis=0), linestyle="--", color=line.get_color())
    ratios = seeds.runs[0]["ratios"]
    ax_layer.set(xlabel="layer", ylabel="AUROC", title=f"solid: ratio (r={ratios[v_ratio - 1]:.2g}), dashed: norm "
                                                        f"(r={ratios[v_norm - 1]:.2g})")
    _legend(ax_layer)


def _cka_panels(ax_map, ax_last, fig, seeds: Seeds) -> None:
    from matplotlib.colors import LogNorm

    values = seeds["cka"]
    if values is None:
        return
    sets = [str(s) for s in seeds.runs[0]["cka_sets"]]
    test = sets.index(seeds.group.dataset) if seeds.group.dataset in sets else 0
    image = ax_map.imshow(np.clip(np.median(values[:, test], axis=0), CKA_FLOOR, 1), norm=LogNorm(CKA_FLOOR, 1),
                          origin="lower", cmap="viridis")
    fig.colorbar(image, ax=ax_map)
    ax_map.grid(False)
    ax_map.set(xlabel="layer", ylabel="layer", title=f"linear CKA ({sets[test]})")
    layers = np.arange(values.shape[2])
    for s, name in enumerate(sets):
        median_band(ax_last, layers, values[:, s, :, -1], label=name)
    ax_last.set(xlabel="layer", ylabel="CKA with the FC input", title="CKA of each layer with the last")
    _legend(ax_last)


def _noise_panels(ax_median, ax_auroc, seeds: Seeds) -> None:
    median, metrics = seeds["noise_median"], seeds["noise_metrics"]
    if median is None or metrics is None:
        return
    layers = seeds.runs[0]["noise_layers"]
    M = median.shape[3]
    near = 1 + (seeds.reported.index(str(seeds.runs[0]["near_set"])) if str(seeds.runs[0]["near_set"])
                in seeds.reported else 0)
    for p, start in enumerate(layers):
        line = ax_median.plot(np.arange(start, M), np.nanmedian(median[:, 0, p, start:, 0], axis=0))[0]
        ax_median.plot(np.arange(start, M), np.nanmedian(median[:, 0, p, start:, near], axis=0), linestyle="--",
                       color=line.get_color())
    ax_median.set(yscale="log", ylim=(1e-5, 1), xlabel=f"layer ({M - 1} = logits)", ylabel="median chi",
                  title=f"noise sensitivity (solid ID, dashed {seeds.sets[near - 1]})")
    for o, name in enumerate(seeds.reported):
        median_band(ax_auroc, layers, metrics[:, 0, :, -1, o, 0], label=name, marker=".")
    ax_auroc.set(xlabel="perturbed layer", ylabel="AUROC", title="log-sensitivity at the logits")
    _legend(ax_auroc)


def _prediction_panel(ax, seeds: Seeds) -> None:
    fractions = seeds["predicted_fraction"]
    if fractions is None:
        return
    names = [seeds.group.dataset, *seeds.reported]
    classes = np.arange(fractions.shape[2])
    width = 0.8 / len(names)
    for s, name in enumerate(names):
        median = np.median(fractions[:, s], axis=0)
        cv = median.std() / median.mean()
        ax.bar(classes + (s - (len(names) - 1) / 2) * width, median, width=width, label=f"{name} (CV {cv:.2f})")
    ax.set(xlabel="predicted class", ylabel="fraction of the set", title="predictions of the original network")
    _legend(ax)


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """Figures per (dataset, model), the main detection table (CSV + markdown); returns the report section."""
    rows, sections = [], []
    for group in groups:
        seeds = Seeds(group, options)
        if not seeds.sets:
            continue
        group_rows, note = _table(seeds)
        rows += group_rows
        skipped = f" Left out (other stages or flags): {', '.join(seeds.incomplete)}." if seeds.incomplete else ""
        png = _figure(seeds, out)
        sections.append(f"### {group.label} ({len(seeds.runs)} seeds)\n\nChoices on the {seeds.select_label}: "
                        f"{note or 'no projection scores'}.{skipped}\n\n![{group.label}]({png.name})")
    if not sections:
        return ""
    write_csv(out / "seed000_table.csv", ["group", "ood_set", "method", *[f"{m} median (IQR/2)" for m in METRICS]],
              rows)
    table = markdown_table(["group", "OOD set", "method", *METRICS], rows)
    return (f"## {TITLE}\n\nOOD detection with the in-distribution test set as positive class and every score "
            "oriented higher = more in-distribution: MSP -log(1 - max softmax + 1e-7), Mahalanobis -M_d, projection "
            "norm ||V_k^T x||^2 and projection ratio ||V_k^T x||^2 / ||x||^2 (the proposed score) on the features "
            "of the rank-truncated network. FPR95: fraction of OOD accepted at 95% ID recall (lower is better); "
            "TPR05: ID recall when 5% of OOD is accepted. Cells: median (IQR / 2) over seeds. The Mahalanobis d "
            "and the rank threshold are chosen on the "
            + ("reported near-OOD set (--oracle, as seed000 §10 did)" if options.oracle else
               "validation OOD set (the test images upside down), never on a reported set; --oracle chooses them "
               "on the reported near-OOD set as seed000 §10 did")
            + f". CSV: seed000_table.csv.\n\n{table}\n\n" + "\n\n".join(sections))
