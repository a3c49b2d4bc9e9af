"""rainbow.py on five tiny digits MLPs: outputs, self-alignment, clipping at d = D, rainbow accuracy, done-skip,
determinism, bad input; the trained accuracies of two seeds against their train_log.csv; then extractor.py +
averaging.py write the seed002 section and figures. File names and keys come from pipeline.contract (layer keys
0-based: ll = 00..L-1)."""
import csv

import numpy as np
import pytest
import torch

import averaging
import extractor
import rainbow
from measures import alignment as al
from pipeline import contract, rainbow_nets
from utils.cli import run_main
from utils.io import load_json
from utils.rundir import DONE_FILE, RunDir

SEEDS = 5
MODEL = ["--model-name", "rainbow_mlp", "--traindata", "digits", "--device", "cpu"]
FAST = ["--num_samples", "2", "--clip_points", "6", "--ks_ranks", "1", "10"]
TRAIN = ("--width", "0.25", "--epochs", "4", "--recipe", "seed002_tutorial")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, trained_run):
    workdir = tmp_path_factory.mktemp("rainbow")
    for seed in range(SEEDS):
        trained_run(workdir, "rainbow_mlp", "digits", seed, *TRAIN)
    assert rainbow.main([*MODEL, "--workdir", str(workdir), *FAST]) == 0
    return workdir


def run0(workdir):
    return RunDir.of(workdir, "digits", "rainbow_mlp", 0)


def load(workdir, key):
    return contract.load(run0(workdir), "rainbow", key)


def test_outputs_have_the_documented_keys_and_shapes(workdir):
    L, M = 3, SEEDS
    alignment = load(workdir, "alignment")
    assert alignment["dims"].tolist() == [3072, 128, 64]
    assert alignment["r2"].shape == alignment["error"].shape == (L, M - 1)
    assert np.all(alignment["r2"][1:] > 0.5) and np.all(alignment["r2"] <= 1 + 1e-9)
    spectra = load(workdir, "spectra")
    assert spectra["weight_00"].shape == (3072,) and spectra["activation_01"].shape == (128,)
    assert spectra["weight_init_01"].shape == (64,) and "activation_00" not in spectra
    assert np.all(np.diff(spectra["weight_01"]) <= 1e-12)
    result = load(workdir, "rainbow")
    assert result["rainbow_accuracy"].shape == result["rainbow_top5"].shape == (2, L)
    assert result["seeds"].tolist() == list(range(M)) and result["trained_top5"].shape == (M,)
    assert np.all(result["rainbow_top5"] >= result["rainbow_accuracy"])
    assert np.isnan(result["retrained_accuracy"]).all()                    # --retrain_epochs 0: not retrained
    convergence = load(workdir, "convergence")
    assert convergence["nets"].tolist() == [1, M] and convergence["operator_error"].shape == (2, L)
    assert np.allclose(convergence["operator_error"][-1], 0) and np.all(convergence["operator_error"][0] > 0)
    assert convergence["spectrum_01"].shape == (2, 128) and convergence["accuracy_02"].shape == (2, 6)
    dynamics = load(workdir, "dynamics")
    assert dynamics["epochs"].tolist() == [0, 4]                            # the kept checkpoints
    assert np.allclose(dynamics["amplification_01"][0], 1) and np.allclose(dynamics["cosine_01"][0], 1)
    gauss = load(workdir, "gaussianity")
    assert gauss["ks_pvalue"].shape == (L - 1, 2) and gauss["whitened_01"].shape == (M * 64, 2)
    assert np.isnan(gauss["mp_white"][0]) and 0 <= gauss["mp_white"][1] <= 1   # M N <= D at layer 0: white
    summary = load(workdir, "summary")
    assert set(summary["clip_within_1pct"]) == {"weight", "activation", "random"}
    assert summary["rainbow_last_trained"] == result["rainbow_accuracy"][:, L - 2].tolist()   # the paper's reading
    assert summary["rainbow_accuracy"] == result["rainbow_accuracy"][:, L - 1].tolist()       # the full rainbow
    for seed in range(M):  # the stage's trained accuracy is the training's last test accuracy
        log = load_json(RunDir.of(workdir, "digits", "rainbow_mlp", seed).root / DONE_FILE)
        assert summary["trained_accuracy"][str(seed)] == pytest.approx(log["test_acc"])


def test_a_rainbow_net_of_five_digits_mlps_classifies_far_above_chance(workdir):
    result = load(workdir, "rainbow")
    accuracy = result["rainbow_accuracy"]
    assert accuracy[:, -1].min() > 0.5                      # 10 classes: chance is 0.1
    assert np.all(accuracy[:, 0] == result["trained_accuracy"][0])   # column 0: net 1 itself


def test_clipping_at_d_equal_d_keeps_the_accuracy_and_at_zero_loses_it(workdir):
    clipping = load(workdir, "clipping")
    reference = float(clipping["reference_accuracy"])
    # the original's grid, np.arange(0, D + 1, D / 5) truncated (a rounded linspace gives 26, 77 and 13, 26)
    assert clipping["d_01"].tolist() == [0, 25, 51, 76, 102, 128]
    assert clipping["d_02"].tolist() == [0, 12, 25, 38, 51, 64]
    for key in ("01", "02"):
        assert clipping[f"d_{key}"][-1] == {"01": 128, "02": 64}[key]
        assert np.allclose(clipping[f"accuracy_{key}"][:, -1], reference)
        assert np.all(clipping[f"accuracy_{key}"][:, 0] < 0.3)


def test_aligning_a_network_to_itself_gives_the_identity(workdir):
    runs, nets, _ = rainbow_nets.open_runs(rainbow.parse_args([*MODEL, "--workdir", str(workdir)]), torch.device("cpu"))
    data = rainbow_nets.load_data(rainbow.parse_args([*MODEL, "--max-samples", "300"]), nets[0].loaded)
    pairs, _ = rainbow_nets.pair_moments([nets[0], nets[0]], data, "train")
    for (moments,) in pairs:  # A = I on the span of the activations (dead ReLU units leave it free elsewhere)
        A, K = al.procrustes(moments.cross), moments.cross
        assert torch.allclose(A @ K, K, atol=1e-9 * float(K.abs().max()))
        assert float(al.alignment_r2(K, moments.sq_norm_a, moments.sq_norm_b)) == pytest.approx(1.0)
    for aligner, (moments,) in zip(rainbow_nets.align_nets([nets[0], nets[0]], data, num_iters=1)[1:], pairs):
        for A in aligner.alignments:
            assert torch.allclose(A @ moments.cross, moments.cross, atol=1e-9 * float(moments.cross.abs().max()))


def test_done_is_skipped_and_a_fixed_seed_is_deterministic(workdir, capsys):
    before = {name: load(workdir, name) for name in ("rainbow", "clipping", "gaussianity")}
    path = contract.stage_path(run0(workdir), "rainbow", "rainbow")
    stamp = path.stat().st_mtime_ns
    assert rainbow.main([*MODEL, "--workdir", str(workdir), *FAST]) == 0
    assert "up to date" in capsys.readouterr().out and path.stat().st_mtime_ns == stamp
    assert rainbow.main([*MODEL, "--workdir", str(workdir), *FAST, "--force"]) == 0
    for name, arrays in before.items():
        again = load(workdir, name)
        assert all(np.array_equal(arrays[key], again[key], equal_nan=arrays[key].dtype.kind == "f")
                   for key in arrays), name


def test_extract_and_average_write_the_seed002_section(workdir):
    for seed in range(SEEDS):
        assert extractor.main([*MODEL, "--seed", str(seed), "--workdir", str(workdir)]) == 0
        run = RunDir.of(workdir, "digits", "rainbow_mlp", seed)
        assert contract.load(run, "extract", "seed002")["seeds"] == list(range(SEEDS))
    assert averaging.main(["--workdir", str(workdir)]) == 0
    report = workdir / "report"
    text = (report / "report.md").read_text()
    assert "A Rainbow in Deep Network Black Boxes (seed002)" in text and "rainbow / trained" in text
    assert "column L-2" in text and "full rainbow" in text and "top-5" in text   # both readings
    for stem in ("", "_clipping", "_gaussian"):
        for ext in ("png", "pdf"):
            assert (report / f"seed002_digits_rainbow_mlp{stem}.{ext}").stat().st_size > 1000
    # the digits MLP: the tutorial's reading (every layer resampled) on other data, the others toolkit extras; the
    # paper's numbers are grey CIFAR-10's, so none stands beside digits
    rows = {row["reading"].split(":")[0]: row for row in csv.DictReader((report / "seed002_accuracy.csv").open())}
    assert rows["full rainbow"]["protocol"] == "paper's protocol, other data"
    assert rows["layers 0..L-3 resampled; last block + classifier trained-then-aligned (column L-2)"]["protocol"] \
        == "toolkit extra"
    assert {row["paper rainbow"] for row in rows.values()} == {"-"}
    summary = load(workdir, "summary")
    assert float(rows["full rainbow"]["rainbow top-1"]) == pytest.approx(np.median(summary["rainbow_accuracy"]))
    gaussian = list(csv.DictReader((report / "seed002_gaussianity.csv").open()))
    assert [row["protocol"] for row in gaussian] == ["paper's protocol, other data"] * 2
    assert float(gaussian[1]["MP outside (colored)"]) == pytest.approx(summary["mp_colored"][1])
    # covariance convergence: C_l from N = 1 and all 5 nets; with all of them, the clipping table's C_l PCA d
    convergence = list(csv.DictReader((report / "seed002_convergence.csv").open()))
    assert [row["nets N"] for row in convergence] == ["1", "5"]
    assert convergence[-1]["C_l(N) PCA d within 1%, layers 1..L-1"].split() == \
        [str(d) for d in summary["clip_within_1pct"]["weight"]]
    arrays, reference = load(workdir, "convergence"), float(load(workdir, "clipping")["reference_accuracy"])
    first = [int(arrays[f"d_0{layer}"][np.flatnonzero(arrays[f"accuracy_0{layer}"][0] >= reference - 0.01)[0]])
             for layer in (1, 2)]
    assert convergence[0]["C_l(N) PCA d within 1%, layers 1..L-1"].split() == [str(d) for d in first]
    assert {row["paper (j = 2)"] for row in convergence} == {"-"}


@pytest.mark.parametrize("case, message", [
    ("one seed", "at least 2 seeds"),
    ("untrained seed", "no trained run"),
    ("mismatch", "another architecture"),
    ("biased model", "bias-free"),
])
def test_bad_input_is_one_line_exit_2(workdir, tmp_path, capsys, trained_run, case, message):
    argv = [*MODEL, "--workdir", str(workdir), *FAST]
    if case == "one seed":
        argv += ["--seeds", "0"]
    elif case == "untrained seed":
        argv += ["--seeds", "0", "9"]
    elif case == "mismatch":
        for seed in (0, 1):
            trained_run(tmp_path, "rainbow_mlp", "digits", seed, *TRAIN)
        trained_run(tmp_path, "rainbow_mlp", "digits", 2, "--width", "0.5", "--epochs", "1",
                    "--recipe", "seed002_tutorial")
        argv = [*MODEL, "--workdir", str(tmp_path)]
    else:  # twopoints lenet (one-output hinge head): its layers have biases, so it cannot be rainbow-sampled
        for seed in (0, 1):
            trained_run(tmp_path, "lenet", "twopoints", seed, "--ptr", "256", "--epochs", "1")
        argv = ["--model-name", "lenet", "--traindata", "twopoints", "--ptr", "256", "--device", "cpu", "--workdir",
                str(tmp_path)]   # the runs live in lenet@ptr256/
    with pytest.raises(SystemExit) as exit_info:
        run_main(rainbow.main, argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_trained_accuracies_of_two_seeds_are_their_logged_test_accuracies(tmp_path, trained_run):
    """Independent check: each seed's trained accuracy is train_log.csv's test_acc at the epoch the stage loaded."""
    for seed in (0, 1):
        trained_run(tmp_path, "rainbow_mlp", "digits", seed, "--width", "0.25", "--epochs", "2",
                    "--recipe", "seed002_tutorial")
    assert rainbow.main([*MODEL, "--workdir", str(tmp_path), "--seeds", "0", "1", "--width", "0.25", *FAST]) == 0
    summary = contract.load(run0(tmp_path), "rainbow", "summary")
    assert summary["seeds"] == [0, 1] and summary["epochs"] == [2, 2]
    for seed, epoch in zip(summary["seeds"], summary["epochs"]):
        with RunDir.of(tmp_path, "digits", "rainbow_mlp", seed).train_log.open() as handle:
            logged = {int(row["epoch"]): float(row["test_acc"]) for row in csv.DictReader(handle)}
        assert summary["trained_accuracy"][str(seed)] == pytest.approx(logged[epoch], abs=1e-6)
    assert load(tmp_path, "rainbow")["trained_accuracy"].tolist() == list(summary["trained_accuracy"].values())


def test_a_width_that_differs_from_the_runs_is_one_line_exit_2(workdir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(rainbow.main, [*MODEL, "--workdir", str(workdir), *FAST, "--width", "0.5"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "--width" in err, err


def test_cosine_matrices_of_net_1_and_net_2(workdir):
    """|V_1 V_2^T| of layer 0 (shared input space) against numpy's SVD; after alignment the top blocks of the
    hidden layers are closer to the identity than before (§7 steps 5 and 7)."""
    cosines = load(workdir, "cosines")
    from pipeline.loaded import LoadedRun
    fc1 = [LoadedRun.open(RunDir.of(workdir, "digits", "rainbow_mlp", seed)).model.fc1.weight.detach().double().numpy()
           for seed in (0, 1)]
    vh = [np.linalg.svd(w, full_matrices=False)[2][:32] for w in fc1]
    np.testing.assert_allclose(cosines["weight_00"], np.abs(vh[0] @ vh[1].T), atol=1e-8)
    np.testing.assert_allclose(cosines["weight_aligned_00"], cosines["weight_00"])     # layer 0: A = I
    for key in ("activation", "weight"):
        before, after = cosines[f"{key}_01"], cosines[f"{key}_aligned_01"]
        assert before.shape == after.shape == (32, 32) and np.all(after <= 1 + 1e-9)
        assert after[0, 0] > 0.5 and np.trace(after[:5, :5]) > 2 * np.trace(before[:5, :5]), key


@pytest.mark.slow
def test_flat_classifier_aligns_the_cnn_classifier_over_its_1600_features(tmp_path, trained_run):
    """--flat_classifier: the tutorial CNN's classifier input is aligned as 64 x 5 x 5 = 1600 features (§7 step 9);
    by default over its 64 channels, space as samples."""
    for seed in (0, 1):
        trained_run(tmp_path, "rainbow_cnn", "digits", seed, "--width", "1", "--epochs", "1",
                    "--recipe", "seed002_tutorial")
    argv = ["--model-name", "rainbow_cnn", "--traindata", "digits", "--device", "cpu", "--workdir", str(tmp_path),
            "--max-samples", "200", "--clip_points", "2", "--num_samples", "1", "--cov_nets", "1"]
    run = RunDir.of(tmp_path, "digits", "rainbow_cnn", 0)
    assert rainbow.main(argv) == 0
    assert contract.load(run, "rainbow", "alignment")["dims"].tolist() == [3, 32, 64]
    assert rainbow.main([*argv, "--flat_classifier"]) == 0
    assert contract.load(run, "rainbow", "alignment")["dims"].tolist() == [3, 32, 1600]
    assert contract.load(run, "rainbow", "cosines")["activation_aligned_02"].shape == (32, 32)
