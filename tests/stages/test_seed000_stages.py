"""analyzing.py, features.py, kernels.py and reports/seed000/ on one tiny ResNet-18 run (digits), and analyzing.py
on a twopoints run (one-output hinge head, no OOD sets).

The references are computed here from features captured directly with utils.taps and from numpy: patch energies
through F.unfold, projections through numpy's SVD of the weight matrix, a rank-truncated network rebuilt by hand
from numpy's SVD, noise sensitivity from a perturbed pass of our own with the generator's draws redrawn by hand,
BN outputs captured by the modules' names, pooled class covariances with numpy, linear CKA with
measures.similarity.linear_cka on the raw features. Every stage path comes from pipeline.contract.
"""
import copy
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from sklearn.metrics import roc_auc_score

import analyzing
import averaging
import extractor
import features
import kernels
from datasets import build_dataset
from measures.similarity import linear_cka
from pipeline.contract import TRAIN_SET, done_record, layer_key, stage, stage_path
from pipeline.loaded import LoadedRun
from reports import figures
from utils.rundir import RunDir
from utils.taps import LayerTaps, capture_inputs

N_SAMPLES, N_GRAMS, N_STABILITY, BATCH = 120, 80, 16, 32
L = 18  # resnet18: conv1, 16 block convs, fc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, trained_run):
    workdir = tmp_path_factory.mktemp("seed000")
    trained_run(workdir, "resnet18", "digits", 0, "--width", "0.125", "--epochs", "2")
    return workdir


def flags(workdir, *extra):
    return ["--model-name", "resnet18", "--traindata", "digits", "--num_classes", "10", "--seed", "0", "--workdir",
            str(workdir), "--device", "cpu", "--resume", "--max-samples", str(N_SAMPLES), "--batchsize", str(BATCH),
            *extra]


ANALYSIS = ("--ratios", "2", "--num_grams", str(N_GRAMS), "--num_stability", str(N_STABILITY))


@pytest.fixture(scope="module")
def run(workdir):
    assert analyzing.main(flags(workdir, *ANALYSIS)) == 0
    assert features.main(flags(workdir)) == 0
    assert kernels.main(flags(workdir)) == 0
    return RunDir.of(workdir, "digits", "resnet18", 0)


@pytest.fixture(scope="module")
def network(workdir):
    return LoadedRun.from_args(analyzing.parse_args(flags(workdir)))


def load(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def captured(network, ds, split, count):
    """Inputs of every analysis layer and the logits for the first `count` images, captured directly."""
    x = network.inputs(build_dataset(ds, split).images[:count])
    return capture_inputs(network.model, network.layers, x)


SETS = [TRAIN_SET, "digits", "photos", "digits_rot90", "uniform", "digits_vflip"]


def test_analysis_files_and_shapes(run):
    done = done_record(run, "analysis")
    assert done["datasets"] == SETS and done["variants"] == ["all", "000", "052"]
    svals = load(stage_path(run, "analysis", "svals"))
    assert svals["svals"].shape == (L, 64) and svals["ndims"].shape == (L, 2)
    assert np.allclose(svals["ratios"], [1e-6, 10 ** -0.05]) and svals["ratio_index"].tolist() == [0, 52]
    assert (np.diff(svals["ndims"], axis=1) <= 0).all() and (svals["ndims"] >= 1).all()
    for tag in done["variants"]:
        for ds in SETS:
            arrays = load(stage_path(run, "analysis", "projections", tag=tag, ds=ds))
            assert {k: v.shape for k, v in arrays.items()} == {
                "norm00": (N_SAMPLES, L), "norm0": (N_SAMPLES, L), "norm1": (N_SAMPLES, L),
                "norm00_bn": (N_SAMPLES, L), "logits": (N_SAMPLES, 10), "labels": (N_SAMPLES,), "ranks": (L,)}
            assert np.isnan(arrays["norm00_bn"][:, -1]).all() and (arrays["norm00_bn"][:, :-1] > 0).all()
            ratio = arrays["norm1"] / arrays["norm0"]
            assert (ratio >= 0).all() and (ratio <= 1 + 1e-9).all()
            assert np.allclose(arrays["norm0"][:, -1], arrays["norm00"][:, -1])  # a Linear has one "patch"
    # seed000's ResNet-18 noise layers: 0, the block inputs, the classifier input
    chi = load(stage_path(run, "analysis", "sensitivity", tag="052", ds="photos"))
    assert chi["noise_layers"].tolist() == [0, 1, 3, 5, 7, 9, 11, 13, 15, 17]
    assert chi["chi"].shape == (N_STABILITY, 10, L + 1)
    # seed000 measures noise sensitivity on traindata too
    train_chi = load(stage_path(run, "analysis", "sensitivity", tag="all", ds=TRAIN_SET))["chi"]
    assert train_chi.shape == (N_STABILITY, 10, L + 1)
    np.testing.assert_allclose(train_chi[:, 1, 1], 0.01, rtol=1e-5)
    assert svals["same_as"].tolist() == [0, 1]
    assert done["caps"] == {"ratios": 2, "num_grams": N_GRAMS, "num_stability": N_STABILITY,
                            "max_samples": N_SAMPLES, "stability_variants": "every", "batchsize": BATCH,
                            "batchsize_used": BATCH}
    assert done["paper_caps"]["num_grams"] == 10000 and done["paper_caps"]["batchsize"] == 128
    assert done["gram_samples"] == {ds: N_GRAMS for ds in SETS}
    assert done["stability_samples"] == {ds: N_STABILITY for ds in SETS}
    assert done["ood_sets"] == SETS[2:5] and done["near_ood"] == "digits_rot90" and done["ood_note"] == ""
    assert done["validation_ood"] == "digits_vflip" and done["flags"]["norm0_corner_bug"] is False
    grams = load(stage_path(run, "analysis", "grams", ds="digits"))
    assert sorted(grams) == sorted(f"feat_{i:02d}" if i == 17 else f"gram_{i:02d}" for i in range(L))
    assert grams["gram_05"].shape == (N_GRAMS, N_GRAMS) and grams["feat_17"].shape == (N_GRAMS, 64)


def test_noise_sensitivity_is_eta_squared_at_the_perturbed_layer(run):
    for tag in ("all", "052"):
        data = load(stage_path(run, "analysis", "sensitivity", tag=tag, ds="digits"))
        chi, perturbed = data["chi"], data["noise_layers"]
        for p, layer in enumerate(perturbed):
            np.testing.assert_allclose(chi[:, p, layer], 0.01, rtol=1e-5)
            assert np.isnan(chi[:, p, :layer]).all() and np.isfinite(chi[:, p, layer:]).all()
        assert (chi[:, :, -1] > 0).all()  # the noise reaches the logits


def test_energies_match_unfold_and_numpy_svd(run, network):
    feats, logits = captured(network, "digits", "test", BATCH)
    saved = load(stage_path(run, "analysis", "projections", tag="all", ds="digits"))
    np.testing.assert_allclose(saved["logits"][:BATCH], logits.numpy(), rtol=1e-4, atol=1e-4)
    for index, (layer, x) in enumerate(zip(network.layers, feats)):
        weight = layer.weight.detach().double().reshape(layer.weight.shape[0], -1).numpy()
        vh = np.linalg.svd(weight, full_matrices=False)[2]
        if x.dim() == 4:  # patches (B, C*kh*kw, positions), zero padding included
            patches = F.unfold(x.double(), layer.kernel_size, padding=layer.padding, stride=layer.stride).numpy()
        else:
            patches = x.double().numpy()[:, :, None]
        norm0 = (patches ** 2).sum((1, 2))
        norm1 = (np.einsum("kd,bdp->bkp", vh, patches) ** 2).sum((1, 2))
        np.testing.assert_allclose(saved["norm0"][:BATCH, index], norm0, rtol=1e-5)
        np.testing.assert_allclose(saved["norm1"][:BATCH, index], norm1, rtol=1e-4)
        np.testing.assert_allclose(saved["norm00"][:BATCH, index], (x.double() ** 2).flatten(1).sum(1), rtol=1e-6)


def test_full_rank_variant_equals_the_original_network(run):
    svals = load(stage_path(run, "analysis", "svals"))
    assert (svals["ndims"][:, 0] == svals["lengths"]).all()  # ratio 1e-6 keeps every singular value here
    full, original = (load(stage_path(run, "analysis", "projections", tag=tag, ds="photos")) for tag in ("000", "all"))
    assert (full["ranks"] == original["ranks"]).all()
    for key in ("norm00", "norm0", "norm1", "logits"):
        np.testing.assert_allclose(full[key], original[key], rtol=1e-3, atol=1e-5)
    truncated = load(stage_path(run, "analysis", "projections", tag="052", ds="photos"))
    assert (truncated["ranks"] <= full["ranks"]).all() and (truncated["ranks"] < full["ranks"]).any()


def truncated_by_hand(network, ranks):
    """A copy of the network whose analysis weights are rebuilt from numpy's SVD with the top-k singular values kept
    (BN, biases and shortcuts untouched); returns (model, its analysis layers, V_k^T of every layer)."""
    model = copy.deepcopy(network.model)
    layers = network.layers_of(model)
    rows = []
    for layer, k in zip(layers, ranks):
        weight = layer.weight.detach().double().reshape(layer.weight.shape[0], -1).numpy()
        u, s, vh = np.linalg.svd(weight, full_matrices=False)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy((u[:, :k] * s[:k]) @ vh[:k]).reshape(layer.weight.shape))
        rows.append(vh[:k])
    return model, layers, rows


def unfolded(layer, x):
    """(B, C*kh*kw, positions) patches of a conv input (zero padding included), or (B, D, 1) for a Linear."""
    if x.dim() == 4:
        return F.unfold(x.double(), layer.kernel_size, padding=layer.padding, stride=layer.stride).numpy()
    return x.double().numpy()[:, :, None]


def test_truncated_variant_against_a_network_truncated_by_hand(run, network):
    svals = load(stage_path(run, "analysis", "svals"))
    saved = load(stage_path(run, "analysis", "projections", tag="052", ds="photos"))
    assert (saved["ranks"] == svals["ndims"][:, 1]).all()
    model, layers, rows = truncated_by_hand(network, saved["ranks"])
    feats, logits = capture_inputs(model, layers, network.inputs(build_dataset("photos", "test").images[:BATCH]))
    np.testing.assert_allclose(saved["logits"][:BATCH], logits.numpy(), rtol=1e-4, atol=1e-4)
    for index, (layer, x, vh) in enumerate(zip(layers, feats, rows)):
        norm1 = (np.einsum("kd,bdp->bkp", vh, unfolded(layer, x)) ** 2).sum((1, 2))
        np.testing.assert_allclose(saved["norm1"][:BATCH, index], norm1, rtol=1e-4)
        np.testing.assert_allclose(saved["norm00"][:BATCH, index], (x.double() ** 2).flatten(1).sum(1), rtol=1e-5)


def feeding_module(network, model, index):
    """The module whose input is feature `index` for every consumer: the model for layer 0, a residual block for a
    block's first conv (its shortcut reads the same input), else the weight layer itself."""
    modules = dict(model.named_modules())
    if index == 0:
        return model
    name = network.layer_names[index]
    block = name.rpartition(".")[0]
    if name.endswith(".conv1") and hasattr(modules.get(block), "downsample"):
        return modules[block]
    return modules[name]


def energy(x):
    return (x.double() ** 2).flatten(1).sum(1).numpy()


@pytest.mark.parametrize("tag", ["all", "052"])
def test_noise_sensitivity_against_an_independent_perturbed_pass(run, network, tag):
    """chi of every perturbed layer, downstream layers and logits, against a perturbed pass of our own: the noise
    redrawn by hand from a generator seeded with --seed (one randn of the feature's shape per perturbed layer, in
    order), scaled in float64 and fed in by replacing the input of the module that reads the feature."""
    saved = load(stage_path(run, "analysis", "sensitivity", tag=tag, ds="digits"))
    ranks = load(stage_path(run, "analysis", "projections", tag=tag, ds="digits"))["ranks"]
    model, layers, _ = truncated_by_hand(network, ranks) if tag != "all" else (network.model, network.layers, None)
    x = network.inputs(build_dataset("digits", "test").images[:N_STABILITY])
    clean, clean_logits = capture_inputs(model, layers, x)
    generator = torch.Generator().manual_seed(0)
    draws = [torch.randn(clean[index].shape, generator=generator) for index in saved["noise_layers"]]
    for p, (start, xi) in enumerate(zip(saved["noise_layers"], draws)):
        f = clean[start].double()
        scale = 0.1 * f.flatten(1).norm(dim=1) / xi.double().flatten(1).norm(dim=1)
        noisy = (f + xi.double() * scale.reshape(-1, *[1] * (f.dim() - 1))).float()
        handle = feeding_module(network, model, start).register_forward_pre_hook(
            lambda module, inputs, noisy=noisy: (noisy, *inputs[1:]))
        try:
            perturbed, logits = capture_inputs(model, layers, x)
        finally:
            handle.remove()
        expected = [energy(perturbed[m] - clean[m]) / energy(clean[m]) for m in range(start, L)]
        expected.append(energy(logits - clean_logits) / energy(clean_logits))
        np.testing.assert_allclose(saved["chi"][:, p, start:], np.stack(expected, 1), rtol=1e-3, atol=1e-9)


def test_bn_output_norms_against_the_named_batch_norms(run, network):
    saved = load(stage_path(run, "analysis", "projections", tag="all", ds="digits"))
    modules = dict(network.model.named_modules())
    names = [name.replace("conv", "bn") for name in network.layer_names[:-1]]  # conv1 -> bn1, layer1.0.conv2 -> bn2
    with LayerTaps([modules[name] for name in names], capture="output", reduce=lambda i, y: energy(y)) as taps:
        network.model(network.inputs(build_dataset("digits", "test").images[:BATCH]))
    np.testing.assert_allclose(saved["norm00_bn"][:BATCH, :-1], np.stack(taps.values, 1), rtol=1e-5)


def test_mahalanobis_against_numpy(run, network):
    train = build_dataset("digits", "train")
    feats, _ = captured(network, "digits", "train", N_SAMPLES)
    test_feats, _ = captured(network, "digits", "test", N_SAMPLES)
    labels = train.labels[:N_SAMPLES].numpy()
    for index in (9, L - 1):
        z = feats[index].double()
        z = (z.sum((2, 3)) if z.dim() == 4 else z).numpy()
        zt = test_feats[index].double()
        zt = (zt.sum((2, 3)) if zt.dim() == 4 else zt).numpy()
        means = np.stack([z[labels == c].mean(0) for c in range(10)])
        centred = z - means[labels]
        eigenvalues, vectors = np.linalg.eigh(centred.T @ centred / len(z))
        eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]
        saved = load(stage_path(run, "features", "mahalanobis", layer=f"{index:02d}", ds="digits"))
        np.testing.assert_allclose(load(stage_path(run, "features", "eigenvalues"))["eigenvalues"][index][:5],
                                   eigenvalues[:5], rtol=1e-6)
        d = int(saved["dims_exp"][-1])
        offsets = ((zt[:, None, :] - means[None]) @ vectors[:, :d]) ** 2 / eigenvalues[:d]  # (N, classes, d)
        distances = offsets.sum(-1)
        np.testing.assert_allclose(saved["distance_exp"][:, -1], distances.min(1), rtol=1e-5)
        assert (saved["inferred_exp"][:, -1] == distances.argmin(1)).all()
        assert d <= saved["dims_eps"][-1] and saved["distance_eps"].shape == (N_SAMPLES, 21)
        # the full dimension: every direction of non-zero variance (beyond dims_exp's last count)
        full = int((eigenvalues / eigenvalues[0] > 1e-7).sum())
        assert int(saved["dims_full"]) == full and full >= d
        offsets = ((zt[:, None, :] - means[None]) @ vectors[:, :full]) ** 2 / eigenvalues[:full]
        np.testing.assert_allclose(saved["distance_full"], offsets.sum(-1).min(1), rtol=1e-5)
        assert (saved["inferred_full"] == offsets.sum(-1).argmin(1)).all()


def test_cka_matrix_equals_linear_cka_of_captured_features(run, network):
    feats, _ = captured(network, "photos", "test", N_GRAMS)
    saved = load(stage_path(run, "kernels", "kernels", ds="photos"))
    # the sums of spectra cut at 1e-6 x their largest value: linear CKA up to ~1e-5
    assert saved["cka"].shape == (L, L) and np.allclose(np.diag(saved["cka"]), 1, atol=1e-4)
    np.testing.assert_allclose(saved["cka"], saved["cka"].T, rtol=1e-10)
    for a, b in ((0, 17), (4, 12), (16, 17)):
        assert saved["cka"][a, b] == pytest.approx(float(linear_cka(feats[a], feats[b])), rel=1e-4)
    # reg0 and reg1 swap under (a, b) -> (b, a); the cca spectrum holds cosines
    np.testing.assert_allclose(saved["sum_reg0"], saved["sum_reg1"].T)
    assert (saved["spectrum_cca"] <= 1 + 1e-12).all()
    assert saved["gram_eigenvalues"].shape[0] == L and (saved["gram_lengths"] <= N_GRAMS - 1).all()


def test_done_stages_are_skipped_and_force_redoes(run, workdir, capsys):
    marker = stage_path(run, "kernels", "kernels", ds="digits")
    before = marker.stat().st_mtime_ns
    assert analyzing.main(flags(workdir, *ANALYSIS)) == 0
    assert features.main(flags(workdir)) == 0
    assert kernels.main(flags(workdir)) == 0
    assert capsys.readouterr().out.count("nothing to do") == 3
    assert marker.stat().st_mtime_ns == before
    assert kernels.main(flags(workdir, "--force")) == 0
    assert marker.stat().st_mtime_ns != before


def test_kernels_before_analyzing_is_one_line(run, tmp_path):
    fresh = RunDir.of(tmp_path, "digits", "resnet18", 0)
    measured = [stage(name).folder for name in ("analysis", "features", "kernels")]
    shutil.copytree(run.root, fresh.root, ignore=shutil.ignore_patterns(*measured))
    result = subprocess.run([sys.executable, "kernels.py", "--model-name", "resnet18", "--traindata", "digits",
                             "--workdir", str(tmp_path), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "analyzing.py" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("extra", [("--ratios", "0"), ("--ratios", "54"), ("--num_stability", "0")])
def test_bad_flags_exit_2(extra):
    with pytest.raises(SystemExit) as exit_info:
        analyzing.parse_args(["--traindata", "digits", *extra])
    assert exit_info.value.code == 2


def test_extract_and_average_write_the_table(run, workdir):
    assert extractor.main(["--model-name", "resnet18", "--traindata", "digits", "--workdir", str(workdir)]) == 0
    scores = load(stage_path(run, "extract", "seed000"))
    assert scores["detection_sets"].tolist() == SETS[2:] and str(scores["validation_set"]) == "digits_vflip"
    assert scores["projection_ratio"].shape == (3, L, 4, 26) and scores["msp"].shape == (3, 4, 26)
    assert scores["cka"].shape == (6, L, L) and scores["noise_metrics"].shape == (3, 10, L + 1, 4, 26)
    assert scores["mahalanobis"].shape[:2] == (L, 4) and scores["mahalanobis"].shape[3] == 26
    assert scores["predicted_fraction"].shape == (5, 10)
    np.testing.assert_allclose(scores["predicted_fraction"].sum(1), 1)
    assert scores["residual_params"][0] == 1 and (scores["residual_params"][1:] <= 1).all()
    assert ((scores["projection_ratio"][..., 0] >= 0) & (scores["projection_ratio"][..., 0] <= 1)).all()
    # the stored Mahalanobis AUROC at the largest saved d equals sklearn's on the saved distances
    dist = {ds: load(stage_path(run, "features", "mahalanobis", layer="17", ds=ds)) for ds in ("digits", "photos")}
    k = len(dist["digits"]["dims_exp"]) - 1
    column = int(np.searchsorted(scores["mahalanobis_dims"][17], dist["digits"]["dims_exp"][k]))
    labels = np.r_[np.ones(N_SAMPLES), np.zeros(N_SAMPLES)]
    expected = roc_auc_score(labels, -np.r_[dist["digits"]["distance_exp"][:, k], dist["photos"]["distance_exp"][:, k]])
    assert scores["mahalanobis"][17, 0, column, 0] == pytest.approx(expected, abs=1e-12)
    for oracle in ([], ["--oracle", "--no-pdf"]):   # the PDFs once
        assert averaging.main(["--workdir", str(workdir), *oracle]) == 0
        report = (workdir / "report" / "report.md").read_text()
        assert "projection ratio, FC input, ratio chosen on the validation set (proposed)" in report
        assert "TPR@FPR05" in report
        assert ("validation set digits_vflip" in report) != bool(oracle)
        assert "| digits_vflip |" not in report  # the validation set is never reported
        assert "; TF32 off" in report            # the stage's --allow-tf32 choice, in the caps line
    assert (workdir / "report" / "seed000_table.csv").is_file()
    assert (workdir / "report" / "seed000_digits_resnet18.pdf").is_file()


@pytest.mark.slow
def test_papers_drawn_in_parallel_write_what_one_process_writes(run, workdir, monkeypatch):
    """averaging.py --jobs 2 (the papers' reports in forked processes) gives the report and tables of --jobs 1;
    --no-pdf leaves the PDFs out and says so."""
    monkeypatch.setattr(figures, "FORMATS", list(figures.FORMATS))  # --no-pdf must not reach later tests
    assert extractor.main(["--model-name", "resnet18", "--traindata", "digits", "--workdir", str(workdir)]) == 0
    report = workdir / "report"
    outputs = {}
    for jobs in ("1", "2"):
        shutil.rmtree(report, ignore_errors=True)
        assert averaging.main(["--workdir", str(workdir), "--jobs", jobs]) == 0
        text = (report / "report.md").read_text().split("\n", 3)[3]   # without the "Generated <time>" line
        outputs[jobs] = (text, {p.name: p.read_bytes() for p in report.glob("*.csv")},
                         sorted(p.name for p in report.glob("*.p*")))
    assert outputs["1"] == outputs["2"] and outputs["1"][1] and any(n.endswith(".pdf") for n in outputs["1"][2])
    shutil.rmtree(report)
    assert averaging.main(["--workdir", str(workdir), "--no-pdf"]) == 0
    assert not list(report.glob("*.pdf")) and list(report.glob("*.png"))
    assert "PNG only" in (report / "report.md").read_text()


def test_ratio_positions_depend_on_the_count_only():
    """Every seed evaluates the same thresholds: round(linspace(0, 52, N)), whatever its ranks."""
    assert analyzing.ratio_positions(53) == list(range(53))
    assert analyzing.ratio_positions(6) == [0, 10, 21, 31, 42, 52]
    assert analyzing.ratio_positions(2) == [0, 52] and analyzing.ratio_positions(1) == [0]
    assert all(len(analyzing.ratio_positions(n)) == n for n in range(1, 54))


def test_thresholds_that_repeat_a_network_point_to_the_first():
    ranks = torch.tensor([[5, 5, 5, 3, 3, 1], [4, 4, 2, 2, 2, 1]])  # (L, thresholds): new networks at 0, 2, 3, 5
    assert analyzing.same_network(ranks) == [0, 0, 2, 3, 3, 5]
    svds = [analyzing.weight_svd(torch.randn(6, 5)) for _ in range(2)]
    found = list(analyzing.variants(svds, ranks, [0, 1, 2, 3, 4, 5]))
    assert [(v.tag, v.tags) for v in found] == [("all", ("all",)), ("000", ("000", "001")), ("002", ("002",)),
                                                ("003", ("003", "004")), ("005", ("005",))]


def test_twopoints_hinge_run_reports_the_logged_test_accuracy(trained_run, tmp_path):
    """A one-output hinge head (twopoints, which has no OOD sets): analyzing.py measures the run's own test split
    (--ptr sets its size) and reports the accuracy training logged; features.py, kernels.py and the extraction run."""
    run = trained_run(tmp_path, "lenet", "twopoints", 0, "--ptr", "256", "--epochs", "1")
    argv = ["--model-name", "lenet", "--traindata", "twopoints", "--ptr", "256", "--workdir", str(tmp_path),
            "--device", "cpu", "--batchsize", "256"]
    assert analyzing.main([*argv, "--ratios", "1", "--num_grams", "16", "--num_stability", "8",
                           "--stability_variants", "original"]) == 0
    loaded = LoadedRun.open(run)
    assert loaded.loss == "hinge" and loaded.model(loaded.example_input()).shape == (1, 1)
    done = done_record(run, "analysis")
    assert done["datasets"] == [TRAIN_SET, "twopoints"]  # no OOD sets
    logged = loaded.logged_test_accuracy(done["flags"]["epoch"])
    assert done["test_accuracy"]["all"] == pytest.approx(logged, abs=1e-6)  # train_log.csv keeps 6 decimals
    projections = load(stage_path(run, "analysis", "projections", tag="all", ds="twopoints"))
    assert projections["logits"].shape == (4 * 256, 1)
    assert features.main(argv) == 0 and kernels.main(argv) == 0
    assert extractor.main(["--model-name", "lenet", "--traindata", "twopoints", "--ptr", "256", "--workdir",
                           str(tmp_path)]) == 0
    scores = load(stage_path(run, "extract", "seed000"))
    assert scores["accuracy"][0, 1] == pytest.approx(logged, abs=1e-6) and "detection_sets" not in scores


def test_kernels_hold_the_factors_on_the_cpu_and_move_one_pair_at_a_time(monkeypatch):
    """issue 27: layer_factors leaves every layer's factor on the CPU; similarity_arrays moves layer a's once per row
    and each b once per pair (L + L(L-1)/2 moves), and its CKA matrix is linear CKA of the features."""
    from measures.similarity import GramFactor

    rng = np.random.default_rng(3)
    feats = [rng.standard_normal((12, d)) for d in (3, 5, 20)]
    factors = kernels.layer_factors({layer_key(i, "feat"): f for i, f in enumerate(feats)}, torch.device("cpu"))
    assert all(f.factor.device.type == "cpu" for f in factors)
    moves = []
    original = GramFactor.to
    monkeypatch.setattr(GramFactor, "to", lambda self, device: moves.append(str(device)) or original(self, device))
    arrays = kernels.similarity_arrays(factors, "test", device="cpu")
    assert len(moves) == 3 + 3
    for a in range(3):
        for b in range(3):
            expected = linear_cka(torch.from_numpy(feats[a]), torch.from_numpy(feats[b]))
            assert arrays["cka"][a, b] == pytest.approx(float(expected), rel=1e-9)


@pytest.fixture
def out_of_memory_once(monkeypatch):
    """LoadedRun.batches raises torch.OutOfMemoryError at the first batch of the first pass asked for with the
    batch BATCH (as a device would), then behaves; returns the batch sizes every pass asked for."""
    asked, batches = [], LoadedRun.batches

    def batches_once(self, data, batch_size, *args, **kwargs):
        asked.append(batch_size)
        if batch_size == BATCH and asked.count(BATCH) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        yield from batches(self, data, batch_size, *args, **kwargs)
    monkeypatch.setattr(LoadedRun, "batches", batches_once)
    return asked


@pytest.mark.parametrize("script, name, files", [
    (features, "features", (("mahalanobis", {"layer": layer_key(0), "ds": "digits"}),
                            ("mahalanobis", {"layer": layer_key(L - 1), "ds": "photos"}))),
    (analyzing, "analysis", (("projections", {"tag": "all", "ds": "digits"}),
                             ("sensitivity", {"tag": "all", "ds": "digits"}), ("grams", {"ds": "digits"})))])
def test_a_pass_out_of_device_memory_runs_again_with_half_the_batch(run, tmp_path, out_of_memory_once, capfd,
                                                                    script, name, files):
    workdir = tmp_path / "w"
    shutil.copytree(run.root.parents[2], workdir)
    extra = ANALYSIS if script is analyzing else ()
    assert script.main(flags(workdir, *extra, "--force")) == 0
    assert out_of_memory_once[:2] == [BATCH, BATCH // 2]
    assert "out of device memory with a batch of 32; running the pass again with 16" in capfd.readouterr().err
    record = done_record(RunDir.of(workdir, "digits", "resnet18", 0), name)
    assert record["caps"]["batchsize"] == BATCH and record["caps"]["batchsize_used"] == BATCH // 2
    copy = RunDir.of(workdir, "digits", "resnet18", 0)
    for key, fields in files:   # the same numbers as the run at the full batch
        ours, reference = load(stage_path(copy, name, key, **fields)), load(stage_path(run, name, key, **fields))
        assert ours.keys() == reference.keys()
        for array in ours:
            np.testing.assert_allclose(ours[array], reference[array], rtol=1e-9, atol=1e-12, err_msg=f"{key} {array}")
