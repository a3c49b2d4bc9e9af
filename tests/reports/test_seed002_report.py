"""The seed002 report's tables (reports/seed002/tables.py): every row carries its protocol
(reports.references.PROTOCOLS) and the paper's number where the paper has one for that net, data, width and row
(spec seed002 §2, §6), from synthetic summaries of the rainbow stage (the files: tests/stages/test_rainbow_stage.py)."""
import pytest

from reports import Group
from reports.references import PROTOCOLS
from reports.seed002.figures import gaussian_layers
from reports.seed002.tables import accuracy_rows, clipping_rows, gaussian_rows

PAPER, OTHER, EXTRA = PROTOCOLS["paper"], PROTOCOLS["paper-other"], PROTOCOLS["extra"]


def summary(seeds=2, layers=3):
    return {"seeds": list(range(seeds)), "trained_accuracy": {str(s): 0.9 for s in range(seeds)},
            "trained_top5": {str(s): 0.99 for s in range(seeds)}, "rainbow_last_trained": [0.8, 0.82],
            "rainbow_last_trained_top5": [0.97, 0.98], "rainbow_accuracy": [0.7, 0.72], "rainbow_top5": [0.9, 0.9],
            "retrained_accuracy": [0.85], "retrained_top5": [0.98], "dims": [15, 320, 640][:layers],
            "clip_within_1pct": {"weight": [20, 60][:layers - 1], "activation": [30, 90][:layers - 1],
                                 "random": [200, 400][:layers - 1]},
            "mp_colored": [0.3, 0.2], "mp_white": [float("nan"), 0.05],
            "ks_pvalue": {"00": {"1": 0.5, "10": 0.2}, "01": {"1": 0.01, "10": 0.3}}}


def by_reading(rows):
    """reading -> (protocol, paper trained, paper rainbow) of the accuracy rows."""
    return {row[2].split(":")[0].split(";")[0]: (row[3], row[7], row[10]) for row in rows}


def test_the_skip_nets_carry_the_papers_reading_and_numbers_at_their_width():
    rows = by_reading(accuracy_rows(Group("cifar10", "scattering_skip", ()), summary(), 1.0))
    assert rows["layers 0..L-3 resampled"] == (PAPER, "0.916 (paper)", "0.814 (paper)")
    assert rows["full rainbow"] == (EXTRA, "0.916 (paper)", "-")
    assert rows["full rainbow, last block + classifier retrained"] == (PAPER, "0.916 (paper)", "0.855 (paper)")
    rows = by_reading(accuracy_rows(Group("cifar10", "scattering_skip", ()), summary(), 0.5))
    assert rows["layers 0..L-3 resampled"] == (PAPER, "0.911 (paper)", "0.763 (paper)")


@pytest.mark.parametrize("dataset, model, full, last, trained", [
    ("cifar10_grey", "rainbow_mlp", (PAPER, "0.306 (paper)"), EXTRA, "0.424 (paper)"),   # the tutorial (§6, §7)
    ("cifar10_grey", "rainbow_cnn", (PAPER, "0.403 (paper)"), EXTRA, "0.574 (paper)"),
    ("digits", "rainbow_mlp", (OTHER, "-"), EXTRA, "-"),                                  # other data: no number
    ("cifar10", "scattering", (EXTRA, "-"), OTHER, "0.884 (paper)"),       # J8: 88.36 trained, its rainbow unread
    ("digits", "scattering_skip", (EXTRA, "-"), OTHER, "-"),
])
def test_paper_labels_only_where_the_paper_measured_that_reading(dataset, model, full, last, trained):
    rows = by_reading(accuracy_rows(Group(dataset, model, ()), summary(), 1.0))
    assert rows["full rainbow"][0] == full[0] and rows["full rainbow"][2] == full[1]
    assert rows["layers 0..L-3 resampled"][0] == last and rows["layers 0..L-3 resampled"][2] == "-"
    assert rows["full rainbow"][1] == trained


def test_clipping_rows_set_the_papers_smallest_d_beside_ours():
    rows = clipping_rows(Group("cifar10", "scattering", ()), summary())
    assert rows[0][:5] == ["cifar10/scattering", 1, 2, PAPER, 320]
    assert rows[0][5:] == [20, "19 (paper)", 30, "25 (paper)", 200, "217 (paper)"]
    assert rows[1][5:] == [60, "64 (paper)", 90, "89 (paper)", 400, "448 (paper)"]
    four = clipping_rows(Group("cifar10", "scattering4", ()), summary(seeds=50))
    assert four[0][3] == PAPER and four[0][5:7] == [20, "42 (paper)"] and four[0][8] == "-"   # j = 2, M = 50
    assert four[1][3] == OTHER and four[1][6] == "-"
    assert clipping_rows(Group("cifar10", "scattering4", ()), summary(seeds=10))[0][6] == "44 (paper)"
    assert clipping_rows(Group("digits", "rainbow_mlp", ()), summary())[0][3:7] == [OTHER, 320, 20, "-"]


def test_gaussianity_rows_set_the_papers_mp_fractions_and_ks_pvalues_at_j_2():
    rows = gaussian_rows(Group("cifar10", "scattering", ()), summary())
    assert rows[1][:8] == ["cifar10/scattering", 1, 2, PAPER, 0.2, "0.211 (paper)", 0.05, "0.016 (paper)"]
    assert rows[1][8] == "r=1: 0.01 (0.004 (paper)) r=10: 0.3 (0.46 (paper))"
    assert rows[0][5] == "-" and rows[0][8] == "r=1: 0.5 (-) r=10: 0.2 (-)"           # j = 1: not in the paper
    assert gaussian_rows(Group("digits", "rainbow_mlp", ()), summary())[1][3:6] == [OTHER, 0.2, "-"]


@pytest.mark.parametrize("count, shown", [(8, [1, 3, 5]), (4, [1, 3]), (2, [1]), (1, [0])])
def test_the_gaussianity_figure_shows_the_papers_layers_j_2_4_6(count, shown):
    assert gaussian_layers(count) == shown
