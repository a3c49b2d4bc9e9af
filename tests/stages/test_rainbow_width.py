"""The width sweep of rainbow_width.py (stage rainbow-width; seed002 §2 resampling_width, alignment_convergence,
covariance_convergence): rainbow MLPs of widths 1/8, 1/4 and 1/2 (two seeds each, one workdir per width) aligned to
the widest. Checks: shapes; the operator-norm error of layer 0's C_l (the image: no alignment) against numpy on the
raw weights; the alignment error of the widest nets; each width's accuracies copied from its rainbow stage; the
report's width figure and table; one-line errors for a repeated width and a missing rainbow stage."""
import csv
import shutil

import numpy as np
import pytest
import scipy.sparse.linalg

import averaging
import extractor
import rainbow
import rainbow_width
from pipeline import contract
from pipeline.loaded import LoadedRun
from utils.cli import run_main
from utils.rundir import RunDir

MLP = ["--model-name", "rainbow_mlp", "--traindata", "digits", "--device", "cpu"]
WIDTHS = (0.125, 0.25, 0.5)
FAST = ["--num_samples", "2", "--clip_points", "3", "--ks_ranks", "1"]


def workdir_of(root, width):
    return root / f"w{width}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, trained_run):
    root = tmp_path_factory.mktemp("rainbow_width")
    for width in WIDTHS:
        for seed in (0, 1):
            trained_run(workdir_of(root, width), "rainbow_mlp", "digits", seed, "--width", str(width), "--epochs", "2",
                        "--recipe", "seed002_tutorial")
        retrain = ["--retrain_epochs", "1"] if width == WIDTHS[0] else []
        assert rainbow.main([*MLP, "--workdir", str(workdir_of(root, width)), *FAST, *retrain]) == 0
    widest = workdir_of(root, WIDTHS[-1])
    argv = [*MLP, "--workdir", str(widest), "--sweep_workdirs", *[str(workdir_of(root, w)) for w in WIDTHS[:-1]]]
    assert rainbow_width.main(argv) == 0
    return root


def group_run(root, width):
    return RunDir.of(workdir_of(root, width), "digits", "rainbow_mlp", 0)


def test_the_sweep_holds_every_width_against_the_widest(sweep):
    result = contract.load(group_run(sweep, WIDTHS[-1]), "rainbow-width", "widths")
    S, L = len(WIDTHS), 3
    assert result["widths"].tolist() == list(WIDTHS)
    assert result["dims"].tolist() == [[3072, 64, 32], [3072, 128, 64], [3072, 256, 128]]
    assert result["alignment_error"].shape == (S, L, 2) and np.all(result["alignment_error"][:, 0] == 0)
    errors = result["alignment_error"][:, 1:]
    np.testing.assert_allclose(errors[-1, :, 0], 0, atol=1e-6)       # the reference: the widest net 1 (§5.2)
    errors[-1, :, 0] = 1
    assert np.all((errors > 0) & (errors < 4))
    assert np.isnan(result["operator_error"][-1]).all() and np.all(result["operator_error"][:-1] > 0)
    assert result["weight_01"].shape == (S, 256) and result["activation_02"].shape == (S, 128)
    assert np.isnan(result["activation_02"][0, 32:]).all()            # width 1/8: 32 channels, NaN-padded
    for s, width in enumerate(WIDTHS):                                # accuracies: each width's own rainbow stage
        summary = contract.load(group_run(sweep, width), "rainbow", "summary")
        assert result["rainbow_full"][s].tolist() == summary["rainbow_accuracy"]
        assert result["rainbow_last_trained"][s].tolist() == summary["rainbow_last_trained"]
        assert result["trained_accuracy"][s].tolist() == list(summary["trained_accuracy"].values())
    assert np.isfinite(result["rainbow_retrained"][0, 0]) and np.isnan(result["rainbow_retrained"][1:]).all()


def test_the_mean_of_the_widest_nets_is_the_labelled_extra_reference(sweep, tmp_path):
    """--reference mean aligns every net, the widest net 1 included, to the widest nets' mean representation."""
    root = tmp_path / "copy"
    shutil.copytree(sweep, root)
    argv = [*MLP, "--workdir", str(workdir_of(root, WIDTHS[-1])), "--reference", "mean", "--force",
            "--sweep_workdirs", *[str(workdir_of(root, w)) for w in WIDTHS[:-1]]]
    assert rainbow_width.main(argv) == 0
    mean = contract.load(group_run(root, WIDTHS[-1]), "rainbow-width", "widths")
    single = contract.load(group_run(sweep, WIDTHS[-1]), "rainbow-width", "widths")
    assert np.all(mean["alignment_error"][-1, 1:] > 1e-4)
    np.testing.assert_array_equal(mean["operator_error"][:, 0], single["operator_error"][:, 0])   # layer 0: no A


def test_layer_0_operator_error_matches_numpy_on_the_raw_weights(sweep):
    """Layer 0 sees the image in every net (no alignment): ||C(s) D - C(ref) D|| / ||C(ref) D|| with numpy."""
    def covariance(width):
        rows = np.concatenate([LoadedRun.open(RunDir.of(workdir_of(sweep, width), "digits", "rainbow_mlp", seed))
                               .model.fc1.weight.detach().double().numpy() for seed in (0, 1)])
        return rows.T @ rows / len(rows) * rows.shape[1]

    def norm(matrix):                                                   # symmetric: the largest |eigenvalue|
        return abs(scipy.sparse.linalg.eigsh(matrix, k=1, which="LM", return_eigenvectors=False)[0])

    reference = covariance(WIDTHS[-1])
    result = contract.load(group_run(sweep, WIDTHS[-1]), "rainbow-width", "widths")
    for s, width in enumerate(WIDTHS[:-1]):
        expected = norm(covariance(width) - reference) / norm(reference)
        assert result["operator_error"][s, 0] == pytest.approx(expected, rel=1e-8)


def test_the_report_draws_the_width_figures(sweep):
    widest = workdir_of(sweep, WIDTHS[-1])
    for seed in (0, 1):
        assert extractor.main([*MLP, "--seed", str(seed), "--workdir", str(widest)]) == 0
    assert averaging.main(["--workdir", str(widest), "--no-pdf"]) == 0
    report = widest / "report"
    text = (report / "report.md").read_text()
    assert "Width sweep" in text and "reference" in text
    for stem in ("_width", "_covariance", "_dynamics"):
        assert (report / f"seed002_digits_rainbow_mlp{stem}.png").is_file()
    # the numbers the width figure draws, as the CSV holds them, against the sweep file they come from
    result = contract.load(group_run(sweep, WIDTHS[-1]), "rainbow-width", "widths")
    rows = list(csv.DictReader((report / "seed002_width.csv").read_text().splitlines()))
    assert [float(row["width"]) for row in rows] == list(WIDTHS)
    for s, row in enumerate(rows):
        assert row["protocol"] == "paper's protocol, other data" and row["seeds M"] == "2"   # the paper: M = 1
        assert row["paper trained"] == row["paper rainbow"] == row["paper retrained"] == "-"  # CIFAR-10's only
        assert float(row["trained"]) == pytest.approx(np.nanmedian(result["trained_accuracy"][s]), abs=1e-12)
        errors = np.nanmedian(result["alignment_error"][s, 1:], axis=1)
        np.testing.assert_allclose([float(e) for e in row["alignment error per layer 1..L-1"].split()], errors,
                                   atol=5e-4)
        operator = row["operator-norm error of C_l per layer 0..L-1"]
        if s == len(WIDTHS) - 1:
            assert operator == "reference"
        else:
            np.testing.assert_allclose([float(e) for e in operator.split()], result["operator_error"][s], atol=5e-4)
    assert "M = 1 net per width" in text


@pytest.mark.parametrize("case, message", [("same width", "same width"), ("no rainbow stage", "rainbow.py")])
def test_bad_sweeps_are_one_line_exit_2(sweep, tmp_path, trained_run, capsys, case, message):
    widest = str(workdir_of(sweep, WIDTHS[-1]))
    if case == "same width":
        others = [str(workdir_of(sweep, WIDTHS[-1]))]
    else:       # two trained nets of width 1/16 whose rainbow stage was not run
        for seed in (0, 1):
            trained_run(tmp_path, "rainbow_mlp", "digits", seed, "--width", "0.0625", "--epochs", "1",
                        "--recipe", "seed002_tutorial")
        others = [str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        run_main(rainbow_width.main, [*MLP, "--workdir", widest, "--sweep_workdirs", *others, "--force"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
