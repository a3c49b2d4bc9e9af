"""seed000's main table (§10): its rows, each with its protocol and published number, and the notes on the choices."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np

from reports.figures import summary
from reports.references import PROTOCOLS, reference_cell
from reports.seed000.layout import ALL_METRICS, PAPER_DATASETS, PAPER_MODELS, TABLE_METRICS, M
from reports.seed000.seeds import Seeds


# ---- the table ------------------------------------------------------------------------------------------------------
def _cell(values: np.ndarray, mean_std: bool) -> str:
    values = np.asarray(values, dtype=float)
    if not np.isfinite(values).any():
        return "-"
    median, low, high = summary(values[:, None], "median")
    text = f"{median[0]:.3f} ({(high[0] - low[0]) / 2:.3f})"
    if mean_std:
        mean, low, _ = summary(values[:, None], "mean")
        text += f"; {mean[0]:.3f} ± {mean[0] - low[0]:.3f}"
    return text


@dataclass(frozen=True)
class Row:
    """One row of the main table: its label, protocol (a PROTOCOLS key), the values (seeds, D, M) and the key of its
    published numbers in reports.references (None: none can exist)."""

    label: str
    protocol: str
    values: np.ndarray
    reference: str | None = None


def _paper_protocol(seeds: Seeds) -> str:
    """"paper" on seed000's data (its ID datasets, models and OOD sets), else "paper-other"."""
    ours = (seeds.group.dataset in PAPER_DATASETS and seeds.paper_key()[0][0] in PAPER_MODELS
            and not str(seeds.runs[0].get("ood_note", "")))
    return "paper" if ours else "paper-other"


def _methods(seeds: Seeds) -> tuple[list[Row], list[str]]:
    """The rows of the main table (module docstring: the paper's choices on the near-OOD set, the toolkit's on the
    validation set) and notes on the choices."""
    rows, notes = [], []
    paper, near, val = _paper_protocol(seeds), seeds.paper_select, seeds.validation
    if seeds["msp"] is not None:
        rows.append(Row("MSP", paper, seeds["msp"][:, 0], "msp"))
    if seeds["mahalanobis"] is not None:
        if near is not None:
            values, d = seeds.mahalanobis_paper(-1, near)
            rows.append(Row(f"Mahalanobis, FC input, d = {d} chosen on the near-OOD set (one d for all seeds)", paper,
                            values, "mahalanobis"))
        rows.append(Row("Mahalanobis, FC input, d chosen per seed on the validation set", "extra",
                        seeds.mahalanobis_at(-1, select=val)))
    if seeds["mahalanobis_full"] is not None:
        dims = int(np.median(seeds["mahalanobis_full_dims"][:, -1]))
        rows.append(Row(f"Mahalanobis, FC input, full d = D ({dims})", "extra", seeds["mahalanobis_full"][:, -1],
                        "mahalanobis"))
    else:
        notes.append("Mahalanobis at the full d = D: not written by this features stage (distance_full)")
    ratio, norm, own = seeds["projection_ratio"], seeds["projection_norm"], seeds["projection_ratio_own"]
    if ratio is None or ratio.shape[1] < 2:
        return rows, notes
    accuracy, params = seeds["accuracy"], seeds["residual_params"]
    layer, why = seeds.norm_layer()
    choices = [(near, paper, "near-OOD set"), (val, "extra", "validation set")] if near is not None else \
        [(val, "extra", "validation set")]
    for select, protocol, where in choices:
        v = seeds.best_variant("projection_norm", layer, select)
        rows.append(Row(f"projection norm, layer {layer} (fixed), ratio chosen on the {where}", protocol,
                        norm[:, v, layer], "projection_norm" if protocol != "extra" else None))
        notes.append(f"projection norm at layer {layer} ({why}), chosen on the {where}: ratio {seeds.ratio(v):.3g} "
                     f"(position {seeds.positions[v - 1]})")
    v_any, layer_any = seeds.best_variant_and_layer("projection_norm", val)
    rows.append(Row(f"projection norm, layer {layer_any} and ratio chosen on the validation set", "extra",
                    norm[:, v_any, layer_any]))
    notes.append(f"projection norm, layer chosen too: layer {layer_any}, ratio {seeds.ratio(v_any):.3g}")
    if 0 in seeds.positions:   # seed000's full-FC row: threshold 1e-6, the first of the 53 (practically full rank)
        rows.append(Row("projection ratio, FC input, threshold 1e-6 (full-FC)", paper,
                        ratio[:, 1 + seeds.positions.index(0), -1], "full_fc"))
    else:
        rows.append(Row("projection ratio, FC input, uncompressed network (full-FC; threshold 1e-6 not evaluated)",
                        "extra", ratio[:, 0, -1]))
    for select, protocol, where in choices:
        v = seeds.best_variant("projection_ratio", -1, select)
        rows.append(Row(f"projection ratio, FC input, ratio chosen on the {where} (proposed)", protocol,
                        ratio[:, v, -1], "projection_ratio" if protocol != "extra" else None))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            chosen = np.nanmedian(accuracy[:, v, 1])
            chance = 1 / int(seeds.runs[0].get("num_classes", 10))
            notes.append(f"projection ratio (proposed), chosen on the {where}: ratio {seeds.ratio(v):.3g} (position "
                         f"{seeds.positions[v - 1]}), residual parameters {np.nanmedian(params[:, v]):.3f}, test "
                         f"accuracy {chosen:.4f} at that threshold (uncompressed "
                         f"{np.nanmedian(accuracy[:, 0, 1]):.4f}; seed000 printed the accuracy of the threshold one "
                         "position off, indexing its 54 networks with the 53-threshold index)"
                         + ("; **that compressed network is near chance accuracy**: its features are scored, its "
                            "predictions are useless" if chosen < 1.5 * chance else ""))
    if own is not None:
        v = seeds.best_variant("projection_ratio_own", -1, val)
        rows.append(Row("projection ratio with the compressed network's own norm0, FC input, ratio chosen on the "
                        "validation set", "extra", own[:, v, -1]))
    return rows, notes


def table_rows(seeds: Seeds) -> tuple[list[list], list[list], list[list], list[str]]:
    """Markdown rows of the paper's reading and of scikit-learn's (the paper's 7 columns), CSV rows (all 26
    metrics) and notes."""
    methods, notes = _methods(seeds)
    label, mean_std = seeds.group.label, seeds.options.mean_std
    key, _ = seeds.paper_key()
    rows, sklearn_rows, csv_rows = [], [], []
    for o, tag in enumerate(seeds.reported):
        for row in methods:
            reference = reference_cell("000", key[1], key[0], row.reference, tag)
            head = [label, seeds.name(tag), row.label, PROTOCOLS[row.protocol]]
            rows.append([*head, *[_cell(row.values[:, o, M[name]], mean_std) for name in TABLE_METRICS], reference])
            sklearn_rows.append([*head, *[_cell(row.values[:, o, M[f"{name} (sklearn)"]], mean_std)
                                          for name in TABLE_METRICS]])
            stats = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # a metric no seed has: NaN
                for i in range(len(ALL_METRICS)):
                    column = row.values[:, o, i][:, None]
                    median, low, high = summary(column, "median")
                    mean, low_m, _ = summary(column, "mean")
                    stats += [median[0], (high[0] - low[0]) / 2, mean[0], mean[0] - low_m[0]]
            csv_rows.append([*head, len(row.values), *stats])
    return rows, sklearn_rows, csv_rows, notes


def choice_notes(seeds: Seeds) -> list[str]:
    """Which OOD sets, which near-OOD and validation set, the seeds pooled and the analysis caps."""
    default = " (default)" if seeds.source == "default" else ""
    notes = [f"OOD sets: {', '.join(seeds.name(t) for t in seeds.reported)}{default}; near-OOD: "
             f"{seeds.name(seeds.near)}{default}; validation: {seeds.name(seeds.sets[-1])}{default}"]
    ood_note = str(seeds.runs[0].get("ood_note", ""))
    if ood_note:
        notes.append(f"not the paper's sets: {ood_note}")
    if seeds.missing:
        notes.append("thresholds missing from some seeds (pooled over the seeds that have them, never chosen): " +
                     "; ".join(f"{name} lacks positions {', '.join(map(str, qs))}"
                               for name, qs in seeds.missing.items()))
    if "caps" in seeds.runs[0]:
        caps = json.loads(str(seeds.runs[0]["caps"]))
        mine, paper = caps["caps"], caps["paper_caps"]
        shown = {None: "all"}.get
        differ = [f"{key} {shown(mine.get(key), mine.get(key))} (paper {shown(paper[key], paper[key])})"
                  for key in paper if mine.get(key) != paper[key]]
        source = "" if caps.get("recorded") else " (read from the stage's flags; paper values from seed000 §6)"
        if mine.get("batchsize_used", mine.get("batchsize")) != mine.get("batchsize"):
            differ.append(f"batches of {mine['batchsize_used']} after running out of device memory at "
                          f"{mine['batchsize']} (noise sensitivity's draws follow the batches)")
        notes.append(("analysis caps below the paper's: " + ", ".join(differ) if differ
                      else "analysis at the paper's sizes") + source
                     + ("; measured with TF32 allowed (--allow-tf32: float32 products at about 1e-3 relative error)"
                        if caps.get("allow_tf32") else "; TF32 off"))
    if seeds["bn_norm"] is None:
        notes.append("k_bn (BN output norms): not written by this analysis stage (norm00_bn)")
    return notes


