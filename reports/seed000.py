"""seed000 (dimensionality-induced information loss of outliers): per-run scores and the across-seed section.

extract(run) reads analysis/, features/ and kernels/ (whichever have finished) and writes extract/seed000.npz.
Detection metrics are `measures.ood.detection_metrics` with the in-distribution test set as the positive class and
every score oriented higher = more in-distribution (seed000 §9); each metric vector is [AUROC, AUPR-In, AUPR-Out,
FPR95] (METRICS). Keys (V network variants "all", q..., L layers, O OOD sets, P perturbed layers, S sets):
  from analysis/:  weight_stable_rank (L,) sum s^2 / s_max^2; variants (V,); ratios (V-1,); ood_sets (O,);
                   accuracy (V, 2) train and test; msp (V, O, 4) with score -log(1 - max softmax + 1e-7);
                   projection_ratio, projection_norm (V, L, O, 4) with scores norm1 / norm0 and norm1;
                   noise_layers (P,); noise_sets (S,); noise_median (V, P, L + 1, S) median chi over samples;
                   noise_metrics (V, P, L + 1, O, 4) with score -log(chi + 1e-7) (OOD is expected to be more
                   sensitive), NaN where m < the perturbed layer
  from features/:  covariance_stable_rank (L,) sum l^2 / l_max^2 of the tied covariance;
                   mahalanobis_dims (L, K) the dims_exp counts d, 0-padded; mahalanobis_auroc (L, O, K) with score
                   -M_d, NaN-padded; mahalanobis_best (L, O, 4) at the d with the best AUROC on the near-OOD set
                   (datasets.near_ood: an ORACLE choice per run, as in seed000 §10); mahalanobis_best_dims (L,);
                   mahalanobis_all (L, O, 4) at the largest d (every direction with non-zero variance)
  from kernels/:   cka_sets (S',); cka (S', L, L) linear CKA between layers within each set

average(groups, out) draws, per (dataset, model), the median over seeds with the 25-75% band: stable ranks vs layer,
1 - AUROC of Mahalanobis (best d) vs layer, projection-ratio AUROC vs layer at the best ratio, the CKA heatmap of
the test set, noise sensitivity vs layer and 1 - AUROC of the log-sensitivity at the logits; and the main table
(seed000 §10): MSP, Mahalanobis at the classifier input with the best d, projection norm and projection ratio at the
classifier input (the proposed method) at the ratio with the best median AUROC on the near-OOD set (an ORACLE choice
across seeds), plus the projection ratio of the uncompressed network; each metric as median (IQR / 2) over seeds.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from datasets import near_ood
from measures.ood import detection_metrics
from measures.spectra import stable_rank
from reports import Group
from reports.figures import markdown_table, median_band, new_figure, save_figure
from utils.errors import ToolkitError
from utils.io import atomic_write, load_json, load_npz, save_npz
from utils.loading import load_config
from utils.rundir import DONE_FILE, RunDir

TITLE = "Dimensionality-induced information loss of outliers (seed000)"
STAGES = ("analysis", "features", "kernels")
METRICS = ("AUROC", "AUPR_IN", "AUPR_OUT", "FPR95")
TRAIN_SET = "traindata"
RESAMPLE_SEED = 0
CKA_FLOOR = 0.04


def _done(run: RunDir, stage: str) -> bool:
    return (run.stage(stage) / DONE_FILE).is_file()


def has_outputs(run: RunDir) -> bool:
    return any(_done(run, stage) for stage in STAGES)


def _metrics(score_id, score_ood) -> np.ndarray:
    """[AUROC, AUPR-In, AUPR-Out, FPR95], ID positive, higher = more ID; OOD resampled to the ID size if needed."""
    generator = torch.Generator().manual_seed(RESAMPLE_SEED)
    result = detection_metrics(torch.as_tensor(score_id), torch.as_tensor(score_ood), resample_generator=generator)
    return np.array([result[name] for name in METRICS])


def _msp_score(logits: np.ndarray) -> np.ndarray:
    """-log(1 - max softmax + 1e-7): increasing in the maximum softmax probability, so higher = more ID."""
    msp = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).amax(1)
    return (-torch.log(1 - msp + 1e-7)).numpy()


def _analysis(run: RunDir, dataset: str) -> dict:
    stage = run.stage("analysis")
    done = load_json(stage / DONE_FILE, required=["variants", "datasets"])
    svals = load_npz(stage / "svals.npz", required=["svals", "lengths", "ratios"])
    tags, ood = done["variants"], [ds for ds in done["datasets"] if ds not in (TRAIN_SET, dataset)]
    proj = {(tag, ds): load_npz(stage / f"projections_{tag}_{ds}.npz", required=["norm0", "norm1", "logits"])
            for tag in tags for ds in done["datasets"]}
    out = {"weight_stable_rank": [float(stable_rank(torch.as_tensor(row[:n])))
                                  for row, n in zip(svals["svals"], svals["lengths"])],
           "variants": np.array(tags), "ratios": svals["ratios"], "ood_sets": np.array(ood)}
    out["accuracy"] = [[float((proj[tag, ds]["logits"].argmax(1) == proj[tag, ds]["labels"]).mean())
                        for ds in (TRAIN_SET, dataset)] for tag in tags]
    out["msp"] = [[_metrics(_msp_score(proj[tag, dataset]["logits"]), _msp_score(proj[tag, ds]["logits"]))
                   for ds in ood] for tag in tags]
    scores = {"projection_ratio": lambda p: p["norm1"] / p["norm0"], "projection_norm": lambda p: p["norm1"]}
    for key, score in scores.items():
        out[key] = [[[_metrics(score(proj[tag, dataset])[:, layer], score(proj[tag, ds])[:, layer]) for ds in ood]
                     for layer in range(len(svals["lengths"]))] for tag in tags]
    out.update(_noise(stage, tags, dataset, ood))
    return out


def _noise(stage: Path, tags: list[str], dataset: str, ood: list[str]) -> dict:
    sets = [dataset, *ood]
    files = {(tag, ds): stage / f"sensitivity_{tag}_{ds}.npz" for tag in tags for ds in sets}
    if not all(path.is_file() for path in files.values()):
        return {}
    chi = {key: load_npz(path, required=["chi", "noise_layers"]) for key, path in files.items()}
    _, P, M = chi[tags[0], dataset]["chi"].shape
    median = np.full((len(tags), P, M, len(sets)), np.nan)
    metrics = np.full((len(tags), P, M, len(ood), len(METRICS)), np.nan)
    for v, tag in enumerate(tags):
        score = {ds: -np.log(chi[tag, ds]["chi"] + 1e-7) for ds in sets}
        for s, ds in enumerate(sets):
            median[v, ..., s] = np.median(chi[tag, ds]["chi"], axis=0)
        for p in range(P):
            for m in range(M):
                if np.isfinite(score[dataset][:, p, m]).all():
                    metrics[v, p, m] = [_metrics(score[dataset][:, p, m], score[ds][:, p, m]) for ds in ood]
    return {"noise_layers": chi[tags[0], dataset]["noise_layers"], "noise_sets": np.array(sets),
            "noise_median": median, "noise_metrics": metrics}


def _features(run: RunDir, dataset: str, ood: list[str]) -> dict:
    stage = run.stage("features")
    eig = load_npz(stage / "eigenvalues.npz", required=["eigenvalues", "dims"])
    L = len(eig["dims"])
    out = {"covariance_stable_rank": [float(stable_rank(torch.as_tensor(row[:n]).clamp(min=0)))
                                      for row, n in zip(eig["eigenvalues"], eig["dims"])], "ood_sets": np.array(ood)}
    near = near_ood(dataset) if near_ood(dataset) in ood else ood[0]
    grids, aurocs, best, full, best_dims = [], [], [], [], []
    for layer in range(L):
        dist = {ds: load_npz(stage / f"mahalanobis_{layer:02d}_{ds}.npz", required=["distance_exp", "dims_exp"])
                for ds in [dataset, *ood]}
        per_d = np.array([[_metrics(-dist[dataset]["distance_exp"][:, k], -dist[ds]["distance_exp"][:, k])
                           for k in range(len(dist[dataset]["dims_exp"]))] for ds in ood])  # (O, K, 4)
        pick = int(per_d[ood.index(near), :, 0].argmax())
        grids.append(dist[dataset]["dims_exp"])
        aurocs.append(per_d[..., 0])
        best.append(per_d[:, pick])
        full.append(per_d[:, -1])
        best_dims.append(int(dist[dataset]["dims_exp"][pick]))
    width = max(len(g) for g in grids)
    out["mahalanobis_dims"] = np.array([np.pad(g, (0, width - len(g))) for g in grids])
    out["mahalanobis_auroc"] = np.array([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=np.nan)
                                         for a in aurocs])
    out.update(mahalanobis_best=best, mahalanobis_all=full, mahalanobis_best_dims=best_dims)
    return out


def _kernels(run: RunDir) -> dict:
    done = load_json(run.stage("kernels") / DONE_FILE, required=["datasets"])
    sets = done["datasets"]
    cka = [load_npz(run.stage("kernels") / f"kernels_{ds}.npz", required=["cka"])["cka"] for ds in sets]
    return {"cka_sets": np.array(sets), "cka": np.array(cka)}


def extract(run: RunDir) -> dict:
    """Write extract/seed000.npz (module docstring) from the stages that have finished; return a short summary."""
    dataset = load_config(run)["data"]["name"]
    arrays: dict = {}
    if _done(run, "analysis"):
        arrays.update(_analysis(run, dataset))
    if _done(run, "features"):
        sets = load_json(run.stage("features") / DONE_FILE, required=["datasets"])["datasets"]
        ood = [ds for ds in sets if ds != dataset]
        arrays.update(_features(run, dataset, ood))
    if _done(run, "kernels"):
        arrays.update(_kernels(run))
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    save_npz(run.extract / "seed000.npz", **arrays)
    summary = {"stages": [stage for stage in STAGES if _done(run, stage)]}
    if "accuracy" in arrays:
        ood = [str(name) for name in arrays["ood_sets"]]
        summary["test_accuracy"] = float(arrays["accuracy"][0, 1])
        summary["msp_auroc"] = dict(zip(ood, arrays["msp"][0, :, 0].tolist()))
        summary["projection_ratio_fc_auroc"] = dict(zip(ood, arrays["projection_ratio"][0, -1, :, 0].tolist()))
    return summary


# ---- across seeds -------------------------------------------------------------------------------------------------
def _load_runs(group: Group) -> list[dict]:
    paths = [run.extract / "seed000.npz" for run in group.runs]
    return [load_npz(path) for path in paths if path.is_file()]


def _stack(runs: list[dict], key: str) -> np.ndarray | None:
    """The key's arrays of every run, stacked on a first (seed) axis; None when a run lacks it or shapes differ."""
    values = [run[key] for run in runs if key in run]
    if len(values) != len(runs) or len({v.shape for v in values}) != 1:
        return None
    return np.stack(values)


def _cell(values: np.ndarray) -> str:
    low, median, high = np.nanquantile(values, [0.25, 0.5, 0.75])
    return f"{median:.3f} ({(high - low) / 2:.3f})"


def _best_ratio(runs: list[dict], key: str, near: int) -> int:
    """Variant index (> 0) whose median AUROC at the classifier input on the near-OOD set is the largest."""
    values = _stack(runs, key)[:, 1:, -1, near, 0]  # (seeds, ratio variants)
    return 1 + int(np.nanargmax(np.nanmedian(values, axis=0)))


def _table_rows(group: Group, runs: list[dict], ood: list[str], near: int) -> tuple[list, str]:
    """Rows of the main table (one per OOD set and method) and a note on the chosen ratios."""
    methods = [("MSP", _stack(runs, "msp"), lambda a: a[:, 0])] if _stack(runs, "msp") is not None else []
    if _stack(runs, "mahalanobis_best") is not None:
        methods.append(("Mahalanobis, FC input, best d (oracle)", _stack(runs, "mahalanobis_best"),
                        lambda a: a[:, -1]))
    notes = []
    if _stack(runs, "projection_ratio") is not None and len(runs[0]["variants"]) > 1:
        ratios = runs[0]["ratios"]
        for key, label in (("projection_norm", "projection norm"), ("projection_ratio", "projection ratio")):
            best = _best_ratio(runs, key, near)
            notes.append(f"{label}: ratio {ratios[best - 1]:.3g}")
            if key == "projection_ratio":
                methods.append(("projection ratio, FC input, full rank", _stack(runs, key),
                                lambda a: a[:, 0, -1]))
            methods.append((f"{label}, FC input, best ratio (oracle)" + (" = proposed" if key == "projection_ratio"
                                                                            else ""), _stack(runs, key),
                            lambda a, b=best: a[:, b, -1]))
    rows = []
    for o, name in enumerate(ood):
        for method, values, select in methods:
            picked = select(values)[:, o]  # (seeds, 4)
            rows.append([group.label, name, method, *[_cell(picked[:, i]) for i in range(len(METRICS))]])
    return rows, "; ".join(notes)


def _figure(group: Group, runs: list[dict], ood: list[str], near: int, out: Path) -> Path:
    fig, axes = new_figure(ncols=3, nrows=2, width=3.6, height=2.8)
    ax = axes[0, 0]
    for key, label in (("weight_stable_rank", "weights"), ("covariance_stable_rank", "tied feature covariance")):
        values = _stack(runs, key)
        if values is not None:
            median_band(ax, np.arange(values.shape[1]), values, label=label)
    ax.set(yscale="log", xlabel="layer", ylabel="stable rank", title="stable rank")
    ax.legend()
    ax = axes[0, 1]
    values = _stack(runs, "mahalanobis_best")
    if values is not None:
        for o, name in enumerate(ood):
            median_band(ax, np.arange(values.shape[1]), 1 - values[:, :, o, 0], label=name)
        ax.legend()
    ax.set(xlabel="layer", ylabel="1 - AUROC", title="Mahalanobis, best d (oracle)")
    ax = axes[0, 2]
    values = _stack(runs, "projection_ratio")
    if values is not None and values.shape[1] > 1:
        best = _best_ratio(runs, "projection_ratio", near)
        for o, name in enumerate(ood):
            median_band(ax, np.arange(values.shape[2]), values[:, best, :, o, 0], label=name)
        ax.set(title=f"projection ratio, ratio {runs[0]['ratios'][best - 1]:.3g}")
        ax.legend()
    ax.set(xlabel="layer", ylabel="AUROC")
    _cka_panel(axes[1, 0], runs, fig, group.dataset)
    _noise_panels(axes[1, 1], axes[1, 2], runs, ood)
    fig.suptitle(group.label)
    return save_figure(fig, out, f"seed000_{group.dataset}_{group.model}")


def _cka_panel(ax, runs: list[dict], fig, dataset: str) -> None:
    from matplotlib.colors import LogNorm

    values = _stack(runs, "cka")
    if values is None:
        return
    sets = [str(s) for s in runs[0]["cka_sets"]]
    test = sets.index(dataset) if dataset in sets else 0
    image = ax.imshow(np.clip(np.median(values[:, test], axis=0), CKA_FLOOR, 1), norm=LogNorm(CKA_FLOOR, 1),
                      origin="lower", cmap="viridis")
    fig.colorbar(image, ax=ax)
    ax.grid(False)
    ax.set(xlabel="layer", ylabel="layer", title=f"linear CKA ({sets[test]})")


def _noise_panels(ax_median, ax_auroc, runs: list[dict], ood: list[str]) -> None:
    median, metrics = _stack(runs, "noise_median"), _stack(runs, "noise_metrics")
    if median is None or metrics is None:
        return
    layers = runs[0]["noise_layers"]
    M = median.shape[3]
    for p, start in enumerate(layers):
        line = ax_median.plot(np.arange(start, M), np.nanmedian(median[:, 0, p, start:, 0], axis=0))[0]
        ax_median.plot(np.arange(start, M), np.nanmedian(median[:, 0, p, start:, 1], axis=0), linestyle="--",
                       color=line.get_color())
    ax_median.set(yscale="log", xlabel=f"layer ({M - 1} = logits)", ylabel="median chi",
                  title="noise sensitivity (solid ID, dashed OOD)")
    for o, name in enumerate(ood):
        median_band(ax_auroc, layers, 1 - metrics[:, 0, :, -1, o, 0], label=name)
    ax_auroc.set(xlabel="perturbed layer", ylabel="1 - AUROC", title="log-sensitivity at the logits")
    ax_auroc.legend()


def _write_csv(out: Path, rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["group", "ood_set", "method", *[f"{m} median (IQR/2)" for m in METRICS]])
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    atomic_write(out / "seed000_table.csv", lambda handle: handle.write(data))


def average(groups: list[Group], out: Path) -> str:
    """Figures per (dataset, model), the main detection table (CSV + markdown); returns the report section."""
    rows, sections = [], []
    for group in groups:
        runs = _load_runs(group)
        if not runs or "ood_sets" not in runs[0]:
            continue
        if any(set(run) != set(runs[0]) for run in runs) or _stack(runs, "ood_sets") is None:
            raise ToolkitError(f"the seeds of {group.label} were measured with different stages or flags; rerun "
                               "analyzing.py, features.py and kernels.py with the same flags for every seed")
        ood = [str(name) for name in runs[0]["ood_sets"]]
        near = ood.index(near_ood(group.dataset)) if near_ood(group.dataset) in ood else 0
        group_rows, note = _table_rows(group, runs, ood, near)
        rows += group_rows
        accuracy = _stack(runs, "accuracy")
        accuracy = f" Test accuracy {np.median(accuracy[:, 0, 1]):.4f}." if accuracy is not None else ""
        png = _figure(group, runs, ood, near, out)
        sections.append(f"### {group.label} ({len(runs)} seeds)\n\nNear-OOD set {ood[near]}; best ratios (oracle on "
                        f"{ood[near]}): {note or 'none evaluated'}.{accuracy}\n\n![{group.label}]({png.name})")
    if not sections:
        return ""
    _write_csv(out, rows)
    table = markdown_table(["group", "OOD set", "method", *METRICS], rows)
    return (f"## {TITLE}\n\nOOD detection with the in-distribution test set as positive class and every score "
            "oriented higher = more in-distribution: MSP -log(1 - max softmax + 1e-7), Mahalanobis -M_d, projection "
            "norm ||V_k^T x||^2 and projection ratio ||V_k^T x||^2 / ||x||^2 at the classifier input, features of the "
            "rank-truncated network. FPR95 = fraction of OOD accepted at 95% ID recall (lower is better). Cells: "
            "median (IQR / 2) over seeds. 'best' choices are oracles on the near-OOD set (seed000 §10); CSV: "
            f"seed000_table.csv.\n\n{table}\n\n" + "\n\n".join(sections))
