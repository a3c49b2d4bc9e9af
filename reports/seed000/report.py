"""average(groups, out, options) writes per (dataset, model) five figures (the detection overview, projection against
residual parameters for every layer, spectra, CKA heatmaps, noise sensitivity) and the main table (seed000 §10):
statistics across seeds are the median with 25-75% bands (mean +- std too with options.mean_std). Variants are
pooled across seeds by their threshold position (ratio_index), never by their index in a run: the rank threshold
is the position with the best median AUROC over seeds on the selection set among the positions every seed has
(seeds lacking a position are named in the report). Every row of the table carries its protocol (PROTOCOLS): the
paper's rows choose the rank threshold and the Mahalanobis d on the reported near-OOD set as seed000 did (one d
for every seed, the best median AUROC among the first lenmin - 1 of the grid, lenmin the shortest seed's grid);
the toolkit's extras choose them on the validation OOD set, never on a reported one (d per seed). The figures use
the validation choice, or the near-OOD set with options.oracle. The projection norm is read at seed000's fixed
layer (NORM_LAYER, else the rule of `Seeds.norm_layer`), the layer chosen on the validation set being an extra row.
"""
from __future__ import annotations

from pathlib import Path

from reports import Group, ReportOptions
from reports.figures import markdown_table, write_csv
from reports.references import MISSING, PROTOCOLS, markdown
from reports.seed000.figures import draw_figures, seed_count
from reports.seed000.layout import ALL_METRICS, PAPER_LABELS, TABLE_METRICS, TITLE
from reports.seed000.seeds import Seeds
from reports.seed000.table import choice_notes, table_rows


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """Figures per (dataset, model), the main detection table (CSV + markdown); returns the report section."""
    rows, sklearn_rows, csv_rows, sections = [], [], [], []
    for group in groups:
        seeds = Seeds(group, options)
        if not seeds.sets:
            continue
        group_rows, group_sklearn, group_csv, notes = table_rows(seeds)
        rows += group_rows
        sklearn_rows += group_sklearn
        csv_rows += group_csv
        notes = choice_notes(seeds) + notes
        t, where = seeds.transition()
        notes.append(f"transition layer {t if t is not None else 'unknown'} ({where}; dashed on every per-layer "
                     "panel)")
        if seeds.incomplete:
            notes.append(f"left out (other stages, flags or OOD sets): {', '.join(seeds.incomplete)}")
        figures = "\n\n".join(f"![{group.label} {path.stem}]({path.name})" for path in draw_figures(seeds, out))
        sections.append(f"### {group.label} ({seed_count(seeds)}: {', '.join(seeds.names)})\n\nFigures: choices on the "
                        f"{seeds.select_label}.\n\n" + "\n".join(f"- {note}" for note in notes) + f"\n\n{figures}")
    if not sections:
        return ""
    header = ["group", "ood_set", "method", "protocol", "seeds"]
    header += [f"{m} {s}" for m in ALL_METRICS for s in ("median", "IQR/2", "mean", "std")]
    write_csv(out / "seed000_table.csv", header, csv_rows)
    columns = [f"{m} (paper: {PAPER_LABELS[m]})" if m in PAPER_LABELS else m for m in TABLE_METRICS]
    table = markdown_table(["group", "OOD set", "method", "protocol", *columns, "published"], rows)
    extras = markdown_table(["group", "OOD set", "method", "protocol", *TABLE_METRICS], sklearn_rows)
    cells = "median (IQR / 2)" + ("; mean ± std" if options.mean_std else "")
    return (f"## {TITLE}\n\nOOD detection with the in-distribution test set as positive class and every metric read "
            "higher = better: MSP -log(1 - max softmax + 1e-7), Mahalanobis M_d (lower = in-distribution, read as "
            "seed000 reads it), projection norm ||V_k^T x||^2 and projection ratio (the proposed score) ||V_k^T x||^2 "
            "of the rank-truncated network over ||x||^2 of the uncompressed one (seed000's extractor: the two come "
            "from different networks and the ratio can exceed 1). The paper's 7 columns (seed000 §10) are computed "
            "with the authors' own formulas (measures.ood.paper_metric_vector: per-sample trapezoid areas, operating "
            "points as the mean over the points exactly at a rate and '-' when there is none, e.g. TPR = 0.95 of 150 "
            "samples): AUROC, AUPR-In, AUPR-Out, TNR@TPR90 (the fraction of OOD rejected when 90% of ID is accepted; "
            "higher is better), TPR@FPR10 (ID accepted when 10% of OOD is), TNR@TPR95, TPR@FPR05. seed000 printed "
            "the TNR columns under the labels FPR@TPR90 / FPR@TPR95 (its score vector holds 1 - FPR there, §9). "
            f"Cells: {cells} over seeds. Protocol: \"{PROTOCOLS['paper']}\" rows choose the rank threshold and the "
            "Mahalanobis d on the reported near-OOD set, as seed000 §10 did (an oracle choice); \""
            f"{PROTOCOLS['paper-other']}\" is the same on data other than seed000's (its ID sets, models and OOD "
            f"sets); \"{PROTOCOLS['extra']}\" rows are this toolkit's, chosen on the validation OOD set, never on a "
            "reported one. The threshold is pooled across seeds by its position among the 53 (the argmax over "
            "positions of the median over seeds); the projection norm is read at seed000's fixed layer. "
            f"Published: {MISSING['000']}.\n\n{table}\n\n"
            "The same rows with scikit-learn's conventions (toolkit extra: ties count 1/2, step-sum areas, the "
            "conservative operating point, always defined; measures.ood.metric_vector). All 26 metrics per row are in "
            f"seed000_table.csv.\n\n{extras}\n\nReference values (reports/references.py):\n\n{markdown('000')}\n\n"
            + "\n\n".join(sections))
