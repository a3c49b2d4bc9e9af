"""stability.py on tiny digits and twopoints runs: every mode, its files, done-skip, determinism, reports."""

import numpy as np
import pytest

import averaging
import extractor
import stability
import train_classifier
from utils.io import load_json, load_npz
from utils.rundir import RunDir

P = "60"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """vgg11 (with BatchNorm) at width 0.25 on digits, lenet on twopoints, lenet on corrupted digits."""
    workdir = tmp_path_factory.mktemp("stability")
    common = ["--no-progress", "--device", "cpu", "--workdir", str(workdir)]
    train_classifier.main(["--model-name", "vgg11", "--traindata", "digits", "--width", "0.25", "--epochs", "2",
                           *common])
    train_classifier.main(["--model-name", "lenet", "--traindata", "twopoints", "--ptr", "256", "--epochs", "1",
                           *common])
    train_classifier.main(["--model-name", "lenet", "--traindata", "digits", "--width", "0.5", "--epochs", "1",
                           "--gaussian_corruption_std", "5", *common])
    return workdir


def measure(workdir, *extra, model="vgg11", data="digits"):
    assert stability.main(["--model-name", model, "--traindata", data, "--workdir", str(workdir), "--device", "cpu",
                           "--P", P, *extra]) == 0


def results(workdir, mode, model="vgg11", data="digits"):
    folder = RunDir.of(workdir, data, model, 0).stage(f"stability/{mode}")
    return load_npz(folder / "stability.npz", required=("nodes", "dims", "D", "G", "R", "den")), \
        load_json(folder / "summary.json")


def test_trained_init_and_shuffled_write_every_node(workdir):
    for extra in ((), ("--init",), ("--shuffle_channels",)):
        measure(workdir, "--by_layer", *extra)
    for mode in ("trained", "init", "shuffled"):
        arrays, summary = results(workdir, mode)
        nodes = list(arrays["nodes"])
        assert nodes[0] == "features.0" and nodes[-1] == "output" and len(nodes) == 31  # 8 x (conv, BN, ReLU) ...
        assert all(arrays[key].shape == (31,) for key in ("dims", "D", "G", "R", "den"))
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
    marker = RunDir.of(workdir, "digits", "vgg11", 0).stage("stability/trained") / "_done.json"
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
    arrays = load_npz(RunDir.of(workdir, "digits", "vgg11", 0).stage("stability/laplacian") / "laplacian.npz")
    assert list(arrays["layers"]) == ["features.0", "features.4", "features.8", "features.11", "features.15",
                                      "features.18", "features.22", "features.25"]
    np.testing.assert_allclose(arrays["eigenvalues_00"], [0, 1, 1, 2, 3, 3, 4, 4, 6], atol=1e-12)
    for index in range(8):
        trained, init = arrays[f"trained_{index:02d}"], arrays[f"init_{index:02d}"]
        assert trained.shape == init.shape == (9,) and np.all(trained > 0) and not np.allclose(trained, init)


def test_twopoints_uses_the_one_pixel_move_and_corrupted_probes(workdir):
    measure(workdir, "--by_layer", model="lenet", data="twopoints")
    arrays, summary = results(workdir, "trained", model="lenet", data="twopoints")
    assert summary["deformation"] == "translation" and summary["temperature"] is None
    assert arrays["nodes"][-1] == "output" and arrays["dims"][-1] == 1  # hinge: one output
    assert np.all(np.isfinite(arrays["R"])) and np.all(arrays["R"] > 0)
    measure(workdir, "--corrupt_test", model="lenet")
    arrays, summary = results(workdir, "trained", model="lenet")
    assert summary["corruption_std"] == 5.0 and np.isfinite(arrays["R"][0]) and arrays["R"][0] > 0


def test_extract_and_average_draw_the_seed004_figures(workdir):
    for extra in (("--by_layer",), ("--by_layer", "--init"), ("--by_layer", "--shuffle_channels"), ("--laplacian",)):
        measure(workdir, *extra, "--force")
    measure(workdir, "--by_layer", model="lenet", data="twopoints")
    for model, data in (("vgg11", "digits"), ("lenet", "twopoints")):
        assert extractor.main(["--model-name", model, "--traindata", data, "--workdir", str(workdir)]) == 0
    extracted = load_npz(RunDir.of(workdir, "digits", "vgg11", 0).extract / "seed004.npz")
    assert {"trained_R", "init_R", "shuffled_R", "laplacian_layers", "laplacian_init_07"} <= set(extracted)
    assert 0 <= extracted["test_error"] <= 1
    assert averaging.main(["--workdir", str(workdir)]) == 0
    report = workdir / "report"
    text = (report / "report.md").read_text()
    assert "(seed004)" in text and "R_f init" in text and "digits/vgg11" in text and "twopoints/lenet" in text
    for stem in ("seed004_rf_vs_error", "seed004_digits_vgg11_layers", "seed004_digits_vgg11_laplacian",
                 "seed004_twopoints_lenet_layers"):
        assert (report / f"{stem}.png").is_file() and (report / f"{stem}.pdf").is_file()
