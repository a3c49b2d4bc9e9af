"""stability.py on tiny digits and twopoints runs: every mode, its files, done-skip, determinism, the accuracies of
the hinge head, reports."""
import csv
import json

import numpy as np
import pytest
import torch

import averaging
import extractor
import stability
from datasets import build_dataset
from models import build_model
from pipeline.contract import STABILITY_MODES, load, stage_dir
from utils.rundir import DONE_FILE, RunDir

P = "60"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, trained_run):
    """vgg11 (with BatchNorm) at width 0.25 on digits, lenet on twopoints, lenet on corrupted digits."""
    workdir = tmp_path_factory.mktemp("stability")
    trained_run(workdir, "vgg11", "digits", 0, "--width", "0.25", "--epochs", "2")
    trained_run(workdir, "lenet", "twopoints", 0, "--ptr", "256", "--epochs", "1")
    trained_run(workdir, "lenet", "digits", 0, "--width", "0.5", "--epochs", "1", "--gaussian_corruption_std", "5")
    return workdir


TWOPOINTS = ("--ptr", "256")        # the twopoints run's identity: it lives in lenet@ptr256/
CORRUPTED = ("--gaussian_corruption_std", "5")   # the corrupted lenet lives in lenet@sigma5/
VARIANTS = {TWOPOINTS: "ptr256", CORRUPTED: "sigma5", (): ""}


def measure(workdir, *extra, model="vgg11", data="digits", run=()):
    assert stability.main(["--model-name", model, "--traindata", data, "--workdir", str(workdir), "--device", "cpu",
                           "--P", P, *run, *extra]) == 0


def results(workdir, mode, model="vgg11", data="digits", run=()):
    """(stability arrays, summary) of a mode (trained, init, shuffled), keys checked against the contract."""
    run, name = RunDir.of(workdir, data, model, 0, VARIANTS[run]), STABILITY_MODES[mode]
    return load(run, name, "stability"), load(run, name, "summary")


def test_trained_init_and_shuffled_write_every_node(workdir):
    for extra in ((), ("--init",), ("--shuffle_channels",)):
        measure(workdir, "--by_layer", *extra)
    for mode in ("trained", "init", "shuffled"):
        arrays, summary = results(workdir, mode)
        nodes = list(arrays["nodes"])
        # 8 x (conv, BN, ReLU), 5 max-pools, the logits; VGG's global pool of the 1x1 map is no node (issue 17)
        assert nodes[0] == "features.0" and nodes[-1] == "output" and len(nodes) == 30 and "avgpool" not in nodes
        assert all(arrays[key].shape == (30,) for key in ("dims", "D", "G", "R", "den"))
        assert arrays["dims"][-1] == 10 and np.all(np.isfinite(arrays["R"])) and np.all(arrays["R"] > 0)
        np.testing.assert_allclose(arrays["R"], arrays["D"] / arrays["G"], rtol=1e-12)
        assert summary["output"]["R"] == pytest.approx(arrays["R"][-1]) and summary["P"] == 60
        assert summary["deformation"] == "diffeo" and summary["temperature"] == pytest.approx(1.132e-3, rel=1e-3)
    assert results(workdir, "init")[1]["checkpoint"] == "init" and results(workdir, "init")[1]["epoch"] == 0
    assert results(workdir, "trained")[1]["epoch"] == 2
    trained, shuffled = results(workdir, "trained")[0], results(workdir, "shuffled")[0]
    assert trained["R"][0] == pytest.approx(shuffled["R"][0], rel=0.01)  # grey digits: RGB permutation ~ nothing
    assert not np.allclose(trained["R"][-1], shuffled["R"][-1])


def test_done_is_skipped_force_recomputes_and_results_are_deterministic(workdir, capsys):
    measure(workdir, "--by_layer")
    first = results(workdir, "trained")[0]
    marker = stage_dir(RunDir.of(workdir, "digits", "vgg11", 0), "stability") / DONE_FILE
    stamp = marker.stat().st_mtime_ns
    measure(workdir, "--by_layer")
    assert "up to date" in capsys.readouterr().out and marker.stat().st_mtime_ns == stamp
    measure(workdir, "--by_layer", "--batchsize", "25", "--force")
    again = results(workdir, "trained")[0]
    for key in ("D", "G", "R", "den"):
        np.testing.assert_allclose(again[key], first[key], rtol=1e-10)  # same seed, any batch size
    measure(workdir, "--force")  # the output only
    output_only = results(workdir, "trained")[0]
    assert list(output_only["nodes"]) == ["output"]
    for key in ("D", "G", "R", "den"):
        assert output_only[key][0] == pytest.approx(first[key][-1], rel=1e-10)


def test_laplacian_spectra_of_trained_and_init_filters(workdir):
    measure(workdir, "--laplacian")
    arrays = load(RunDir.of(workdir, "digits", "vgg11", 0), "laplacian", "laplacian")
    assert list(arrays["layers"]) == ["features.0", "features.4", "features.8", "features.11", "features.15",
                                      "features.18", "features.22", "features.25"]
    np.testing.assert_allclose(arrays["eigenvalues_00"], [0, 1, 1, 2, 3, 3, 4, 4, 6], atol=1e-12)
    for index in range(8):
        trained, init = arrays[f"trained_{index:02d}"], arrays[f"init_{index:02d}"]
        assert trained.shape == init.shape == (9,) and np.all(trained > 0) and not np.allclose(trained, init)


def test_twopoints_uses_the_one_pixel_move_and_corrupted_probes(workdir):
    measure(workdir, "--by_layer", model="lenet", data="twopoints", run=TWOPOINTS)
    arrays, summary = results(workdir, "trained", model="lenet", data="twopoints", run=TWOPOINTS)
    assert summary["deformation"] == "translation" and summary["temperature"] is None
    assert arrays["nodes"][-1] == "output" and arrays["dims"][-1] == 1  # hinge: one output
    assert np.all(np.isfinite(arrays["R"])) and np.all(arrays["R"] > 0)
    measure(workdir, "--corrupt_test", model="lenet", run=CORRUPTED)
    arrays, summary = results(workdir, "trained", model="lenet", run=CORRUPTED)
    assert summary["corruption_std"] == 5.0 and summary["train_corruption_std"] == 5.0
    assert np.isfinite(arrays["R"][0]) and arrays["R"][0] > 0


def test_twopoints_accuracies_are_the_logged_one_and_the_hinge_head_on_every_probe(workdir):
    """One hinge output: the summary's test accuracy is train_log.csv's test_acc at the measured epoch, and its probe
    accuracy over the whole probe split (5000 probes) is (f(x) > 0) == label, computed here by hand."""
    measure(workdir, "--P", "5000", model="lenet", data="twopoints", run=TWOPOINTS)
    run = RunDir.of(workdir, "twopoints", "lenet", 0, VARIANTS[TWOPOINTS])
    summary = load(run, "stability", "summary")
    with run.train_log.open() as handle:
        logged = {int(row["epoch"]): float(row["test_acc"]) for row in csv.DictReader(handle)}
    assert summary["checkpoint"] == "best" and summary["P"] == 5000
    assert summary["test_accuracy"] == logged[summary["epoch"]]
    config = json.loads(run.config.read_text())
    spec = config["model"]
    assert config["recipe"]["loss"] == "hinge" and spec["outputs"] == 1
    assert config["data"]["mean"] == [0.0] and config["data"]["std"] == [1.0]  # twopoints is not normalised
    model = build_model("lenet", num_classes=1, in_channels=spec["in_channels"], width=spec["width"],
                        image_size=spec["image_size"])
    model.load_state_dict(torch.load(run.best, weights_only=True)["model"])
    probes = build_dataset("twopoints", "probe")
    assert len(probes) == 5000
    with torch.no_grad():
        output = model.double().eval()(probes.images.double())
    by_hand = float(((output.reshape(-1) > 0).long() == probes.labels).double().mean())
    assert summary["probe_accuracy"] == pytest.approx(by_hand, abs=1e-12)
    assert by_hand != pytest.approx(0.5)  # an argmax over the one output would say 0 for every probe: exactly 0.5


def test_extract_and_average_draw_the_seed004_figures(workdir):
    for extra in (("--by_layer",), ("--by_layer", "--init"), ("--by_layer", "--shuffle_channels"), ("--laplacian",)):
        measure(workdir, *extra, "--force")
    measure(workdir, "--by_layer", model="lenet", data="twopoints", run=TWOPOINTS)
    for model, data, run in (("vgg11", "digits", ()), ("lenet", "twopoints", TWOPOINTS)):
        assert extractor.main(["--model-name", model, "--traindata", data, "--workdir", str(workdir), *run]) == 0
    extracted = load(RunDir.of(workdir, "digits", "vgg11", 0), "extract", "seed004")
    assert {"trained_R", "init_R", "shuffled_R", "laplacian_layers", "laplacian_init_07"} <= set(extracted)
    assert 0 <= extracted["test_error"] <= 1
    assert averaging.main(["--workdir", str(workdir)]) == 0
    report = workdir / "report"
    text = (report / "report.md").read_text()
    assert "(seed004)" in text and "R_f init" in text and "digits/vgg11" in text and "twopoints/lenet" in text
    for stem in ("seed004_rf_vs_error", "seed004_digits_vgg11_layers", "seed004_digits_vgg11_laplacian",
                 "seed004_twopoints_lenet@ptr256_layers"):
        assert (report / f"{stem}.png").is_file() and (report / f"{stem}.pdf").is_file()
    # the output points the R_f-against-error figure draws, as the table holds them, from the measured stability
    header, _, *rows = [line.strip("| ").split(" | ") for line in text.splitlines()
                        if line.startswith("| group | protocol | sigma |") or line.startswith("|---")
                        or line.startswith("| digits/vgg11 |")][:3]
    row = dict(zip(header, rows[0]))
    measured = load(RunDir.of(workdir, "digits", "vgg11", 0), "stability", "stability")
    assert float(row["R_f trained"]) == pytest.approx(float(measured["R"][-1]), rel=1e-3)
    assert float(row["D_f trained"]) == pytest.approx(float(measured["D"][-1]), rel=1e-3)
    assert float(row["test error"]) == pytest.approx(float(extracted["test_error"]), rel=1e-3)
