"""reports/seed000/ on hand-made files, no training: the extraction of seed000's 13 metrics (the paper's reading
and scikit-learn's), noise quantiles, k_bn, full-D Mahalanobis and kernel spectra from stage files written through
the contract (against scikit-learn and numpy on the same numbers), the paper's normr over the uncompressed network's
norm0, and the averaging: thresholds pooled by their position among the 53, never by their index in a run; the
paper's fixed layers; the OOD sets, caps and row protocols named in the report.
"""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import averaging
import extractor
from pipeline.contract import TRAIN_SET, load, open_stage
from reports import Group, ReportOptions, figures
from reports.seed000 import ALL_METRICS, Seeds
from utils.io import save_json
from utils.rundir import RunDir

L, CLASSES, P = 3, 3, 2
N = {TRAIN_SET: 30, "digits": 40, "photos": 40, "uniform": 25, "digits_vflip": 40}   # uniform: resampled to 40
SETS = list(N)
OOD = ["photos", "uniform"]            # reported, in order; near-OOD: uniform; validation: digits_vflip
NOISE_LAYERS = [0, 2]
ROW = {name: i for i, name in enumerate(ALL_METRICS)}
SK = [ROW["AUROC (sklearn)"], ROW["AUPR_IN (sklearn)"], ROW["AUPR_OUT (sklearn)"]]


def threshold(q: int) -> float:
    """seed000 §6.1's 53 thresholds written out: 1e-6, 1e-5, 1e-4, 10^(0.1 i - 3), 10^(0.05 i - 2)."""
    return [1e-6, 1e-5, 1e-4][q] if q < 3 else 10 ** (0.1 * (q - 3) - 3) if q < 13 else 10 ** (0.05 * (q - 13) - 2)


def write_config(run: RunDir, model="resnet18", classes=CLASSES) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    save_json(run.config, {"model": {"name": model, "outputs": classes, "num_classes": classes, "in_channels": 1,
                                     "image_size": 8, "width": 1.0},
                           "data": {"name": "digits", "mean": [0.5], "std": [0.5]},
                           "recipe": {"name": "seed000", "loss": "cross_entropy"}})


def stage_files(run: RunDir, positions: list[int], rng: np.random.Generator) -> dict:
    """analysis/, features/, kernels/ of a fake 3-layer run, written through the contract; returns the numbers."""
    write_config(run)
    tags = ["all", *(f"{q:03d}" for q in positions)]
    choice = {"ood_sets": OOD, "near_ood": "uniform", "validation_ood": "digits_vflip", "ood_note": "",
              "ood_tags": {name: name for name in [*OOD, "digits_vflip"]}}
    caps = {"ratios": len(positions), "num_grams": 8, "num_stability": 10, "max_samples": None,
            "stability_variants": "every", "batchsize": 128}
    paper = {"ratios": 53, "num_grams": 10000, "num_stability": 10000, "max_samples": None,
             "stability_variants": "every", "batchsize": 128}
    out = open_stage(run, "analysis", {"ratio_index": positions}, force=True)
    svals = np.abs(rng.standard_normal((L, 4)))
    svals = -np.sort(-svals, axis=1)
    out.save("svals", {"svals": svals, "lengths": np.array([4, 4, 3]), "ratios": np.array(positions, float),
                       "ratio_index": np.array(positions), "ndims": np.ones((L, len(positions)), int),
                       "same_as": np.arange(len(positions)), "fan_in": np.array([9, 36, 4]),
                       "fan_out": np.array([4, 4, CLASSES])})
    numbers = {"projections": {}, "chi": {}}
    for v, tag in enumerate(tags):
        for ds in SETS:
            n, shift = N[ds], (0.0 if ds in (TRAIN_SET, "digits") else 0.6)
            norm0 = np.exp(rng.standard_normal((n, L)))
            norm1 = norm0 * rng.uniform(0.2, 1.0, (n, L)) * np.exp(-shift * v * rng.uniform(size=(n, L)))
            norm1 = np.minimum(norm1, norm0)
            bn = np.exp(rng.standard_normal((n, L)) - shift)
            bn[:, -1] = np.nan                                            # no BatchNorm after the classifier
            labels = rng.integers(0, CLASSES, n) if ds in (TRAIN_SET, "digits") else -np.ones(n, int)
            arrays = {"norm00": norm0 * 2, "norm0": norm0, "norm1": norm1, "norm00_bn": bn,
                      "logits": rng.standard_normal((n, CLASSES)) * (1 + v), "labels": labels,
                      "ranks": np.array([4, 4, 3]) - min(v, 2)}
            out.save("projections", arrays, tag=tag, ds=ds)
            numbers["projections"][tag, ds] = arrays
            if tag in ("all", tags[-1]):                                 # two perturbed variants
                chi = np.exp(rng.standard_normal((10, P, L + 1)) - 4 + shift)
                for p, layer in enumerate(NOISE_LAYERS):
                    chi[:, p, :layer] = np.nan
                    chi[:, p, layer] = 0.01
                out.save("sensitivity", {"chi": chi, "noise_layers": np.array(NOISE_LAYERS), "eta": np.array(0.1)},
                         tag=tag, ds=ds)
                numbers["chi"][tag, ds] = chi
    out.done(variants=tags, datasets=SETS, caps=caps, paper_caps=paper, **choice)

    out = open_stage(run, "features", {}, force=True)
    D = 4
    out.save("eigenvalues", {"eigenvalues": np.array([[3.0, 2, 1, 0.5], [4, 1, 0.1, 0], [2, 2, 1, 1]]),
                             "dims": np.array([D, 3, D]), "counts": np.array([10, 10, 10])})
    numbers["mahalanobis"] = {}
    for layer in range(L):
        for ds in SETS[1:]:
            n, shift = N[ds], (0.0 if ds == "digits" else 1.0)
            distance = np.cumsum(np.abs(rng.standard_normal((n, D))) + shift, axis=1)
            full = distance[:, -1] + rng.uniform(size=n)
            arrays = {"distance_exp": distance, "inferred_exp": np.zeros((n, D), int),
                      "distance_eps": np.zeros((n, 21)), "inferred_eps": np.zeros((n, 21), int),
                      "dims_exp": np.arange(1, D + 1), "dims_eps": np.full(21, D), "distance_full": full,
                      "inferred_full": np.zeros(n, int), "dims_full": np.array(D)}
            out.save("mahalanobis", arrays, layer=f"{layer:02d}", ds=ds)
            numbers["mahalanobis"][layer, ds] = arrays
    out.done(datasets=SETS[1:], **choice)

    out = open_stage(run, "kernels", {}, force=True)
    numbers["kernels"] = {}
    for ds in SETS:
        r = 6
        spectra = {f"{p}_{k}": None for k in ("cka", "cca", "reg0", "reg1") for p in ("sum", "spectrum", "length")}
        for kind in ("cka", "cca", "reg0", "reg1"):
            spectrum = np.abs(rng.standard_normal((L, L, r)))
            spectrum[..., 4:] = 0                                       # 4 valid values, zero padding
            spectra[f"spectrum_{kind}"], spectra[f"length_{kind}"] = spectrum, np.full((L, L), 4)
            spectra[f"sum_{kind}"] = spectrum.sum(-1)
        gram = -np.sort(-np.abs(rng.standard_normal((L, r))), axis=1)
        arrays = {"gram_eigenvalues": gram, "gram_lengths": np.full(L, r), "cka": spectra["sum_cka"], **spectra}
        out.save("kernels", arrays, ds=ds)
        numbers["kernels"][ds] = arrays
    out.done(datasets=SETS, **choice)
    return numbers


def resampled(score_ood: np.ndarray, n_id: int) -> np.ndarray:
    """The report's resampling of OOD scores to the ID size: torch.randint from a generator seeded 0."""
    if len(score_ood) == n_id:
        return score_ood
    return score_ood[torch.randint(len(score_ood), (n_id,), generator=torch.Generator().manual_seed(0)).numpy()]


def sklearn_three(score_id, score_ood) -> list[float]:
    """AUROC, AUPR_IN, AUPR_OUT by scikit-learn."""
    score_ood = resampled(score_ood, len(score_id))
    labels, scores = np.r_[np.ones(len(score_id)), np.zeros(len(score_ood))], np.r_[score_id, score_ood]
    return [roc_auc_score(labels, scores), average_precision_score(labels, scores),
            average_precision_score(1 - labels, -scores)]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("seed000_report")
    rng = np.random.default_rng(0)
    numbers = {}
    for seed, positions in ((0, [0, 10, 20]), (1, [0, 20, 30])):
        run = RunDir.of(workdir, "digits", "resnet18", seed)
        numbers[seed] = stage_files(run, positions, rng)
        assert extractor.main(["--model-name", "resnet18", "--traindata", "digits", "--seed", str(seed),
                               "--workdir", str(workdir)]) == 0
    return workdir, numbers


def scores_of(workdir, seed):
    return load(RunDir.of(workdir, "digits", "resnet18", seed), "extract", "seed000")


def test_extracted_metrics_match_sklearn(extracted):
    workdir, numbers = extracted
    scores, proj = scores_of(workdir, 1), numbers[1]["projections"]
    assert scores["ratio_index"].tolist() == [0, 20, 30] and scores["variants"].tolist() == ["all", "000", "020",
                                                                                               "030"]
    np.testing.assert_allclose(scores["ratios"], [threshold(q) for q in (0, 20, 30)], rtol=1e-12)
    assert scores["detection_sets"].tolist() == [*OOD, "digits_vflip"] and str(scores["near_set"]) == "uniform"
    assert str(scores["ood_source"]) == "recorded"
    assert scores["projection_ratio"].shape == (4, L, 3, 26) and scores["msp"].shape == (4, 3, 26)
    differ = 0
    for v, tag in enumerate(["all", "000", "020", "030"]):
        for o, ds in enumerate([*OOD, "digits_vflip"]):
            for layer in range(L):
                # the paper's normr: norm1 of the variant over norm0 of the uncompressed network "all"
                ratio = {s: proj[tag, s]["norm1"][:, layer] / proj["all", s]["norm0"][:, layer] for s in ("digits", ds)}
                expected = sklearn_three(ratio["digits"], ratio[ds])
                np.testing.assert_allclose(scores["projection_ratio"][v, layer, o, SK], expected, atol=1e-12)
                # untied scores: the paper's trapezoid AUROC is sklearn's too
                assert scores["projection_ratio"][v, layer, o, 0] == pytest.approx(expected[0], abs=1e-12)
                own = {s: proj[tag, s]["norm1"][:, layer] / proj[tag, s]["norm0"][:, layer] for s in ("digits", ds)}
                own_expected = sklearn_three(own["digits"], own[ds])
                np.testing.assert_allclose(scores["projection_ratio_own"][v, layer, o, SK], own_expected, atol=1e-12)
                differ += v > 0 and abs(own_expected[0] - expected[0]) > 1e-3
                for key, column in (("feature_norm", "norm00"), ("patch_norm", "norm0"), ("projection_norm", "norm1")):
                    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(40)],
                                             np.r_[proj[tag, "digits"][column][:, layer],
                                                   resampled(proj[tag, ds][column][:, layer], 40)])
                    assert scores[key][v, layer, o, 0] == pytest.approx(expected, abs=1e-12)
            # k_bn: the BN output norm as a score, NaN where no BatchNorm follows the layer
            expected = sklearn_three(proj[tag, "digits"]["norm00_bn"][:, 0], proj[tag, ds]["norm00_bn"][:, 0])
            np.testing.assert_allclose(scores["bn_norm"][v, 0, o, SK], expected, atol=1e-12)
            assert np.isnan(scores["bn_norm"][v, -1]).all()
    assert differ > 10          # the two denominators give other AUROCs on the compressed variants
    # accuracy and residual parameters of each variant (argmax of the logits; k (fan_in + out) / full)
    logits = proj["020", "digits"]["logits"]
    assert scores["accuracy"][2, 1] == pytest.approx(np.mean(logits.argmax(1) == proj["020", "digits"]["labels"]))
    sizes = np.array([9 + 4, 36 + 4, 4 + CLASSES])
    ranks = proj["020", "digits"]["ranks"]
    assert scores["residual_params"][2] == pytest.approx((ranks * sizes).sum() / (np.array([4, 4, 3]) * sizes).sum())
    caps = json.loads(str(scores["caps"]))
    assert caps["recorded"] and caps["caps"]["num_grams"] == 8 and caps["paper_caps"]["num_grams"] == 10000
    assert caps["allow_tf32"] is False


def test_extracted_noise_mahalanobis_and_kernels(extracted):
    workdir, numbers = extracted
    scores, chi, dist = scores_of(workdir, 0), numbers[0]["chi"], numbers[0]["mahalanobis"]
    assert scores["noise_sets"].tolist() == ["digits", *OOD, "digits_vflip", TRAIN_SET]
    quantiles = scores["noise_quantiles"]                      # (V, P, L + 1, S, 5)
    for s, ds in enumerate(scores["noise_sets"]):
        for v, tag in ((0, "all"), (3, "020")):
            # seed000's levels: 1 - erf(1/sqrt 2), erf(1/sqrt 2), 1 - erf(sqrt 2), erf(sqrt 2) to 8 digits
            expected = np.quantile(chi[tag, ds][:, 1, 2:], [0.5, 0.31731051, 0.68268949, 0.04550026, 0.95449974],
                                   axis=0)
            np.testing.assert_allclose(quantiles[v, 1, 2:, s], expected.T, rtol=1e-12)
        assert np.isnan(quantiles[1:3]).all()                  # variants 000 and 010 were not perturbed
    assert np.isnan(quantiles[0, 1, :2]).all()                 # before the perturbed layer
    expected = sklearn_three(-np.log(chi["all", "digits"][:, 0, -1] + 1e-7), -np.log(chi["all", "uniform"][:, 0, -1]
                                                                                      + 1e-7))
    np.testing.assert_allclose(scores["noise_metrics"][0, 0, -1, 1, SK], expected, atol=1e-12)
    # the paper's reading of a lower-is-ID score: its AUROC is the AUROC of the negated score (no ties here)
    assert scores["noise_metrics"][0, 0, -1, 1, 0] == pytest.approx(expected[0], abs=1e-12)
    # Mahalanobis: -M_d scores on the dims_exp grid and at d = D
    for layer, k in ((0, 1), (2, 3)):
        expected = sklearn_three(-dist[layer, "digits"]["distance_exp"][:, k],
                                 -dist[layer, "photos"]["distance_exp"][:, k])
        np.testing.assert_allclose(scores["mahalanobis"][layer, 0, k, SK], expected, atol=1e-12)
        assert scores["mahalanobis"][layer, 0, k, 0] == pytest.approx(expected[0], abs=1e-12)
    expected = sklearn_three(-dist[2, "digits"]["distance_full"], -dist[2, "uniform"]["distance_full"])
    np.testing.assert_allclose(scores["mahalanobis_full"][2, 1, SK], expected, atol=1e-12)
    assert scores["mahalanobis_full_dims"].tolist() == [4, 4, 4]
    eigenvalues = np.array([4, 1, 0.1, 0.0])
    np.testing.assert_allclose(scores["covariance_norms"][1], [4, np.sqrt((eigenvalues ** 2).sum()), 5.1, 3])
    # kernels: spectra norms (max, Frobenius, trace, count) and the spectra themselves
    kernels = numbers[0]["kernels"]
    sets = scores["cka_sets"].tolist()
    for ds in (TRAIN_SET, "uniform"):
        spectrum = kernels[ds]["spectrum_cca"][0, 2, :4]
        np.testing.assert_allclose(scores["cca_norms"][sets.index(ds), 0, 2],
                                   [spectrum.max(), np.linalg.norm(spectrum), spectrum.sum(), 4])
        np.testing.assert_allclose(scores["cca_spectra"][sets.index(ds), 0, 2, :4], np.sort(spectrum)[::-1])
        np.testing.assert_allclose(scores["gram_eigenvalues"][sets.index(ds)], kernels[ds]["gram_eigenvalues"])
        np.testing.assert_allclose(scores["cka"][sets.index(ds)], kernels[ds]["cka"])


# ---- averaging ---------------------------------------------------------------------------------------------------
def hand_extract(workdir, seed: int, positions: list[int], auroc: dict, model="resnet18", classes=10, variant="",
                 dataset="digits", sets=("photos", "digits_vflip"), **extra):
    """An extract/seed000.npz of an 18-layer run with the AUROC (metric 0) of every score given by hand:
    auroc[(position, set)] for the FC-input projection ratio and norm ("all" is position None)."""
    run = RunDir.of(workdir, dataset, model, seed, variant)
    write_config(run, model, classes)
    V, D, Ls = 1 + len(positions), 2, 18
    ratio = np.full((V, Ls, D, len(ALL_METRICS)), 0.5)
    for v, q in enumerate([None, *positions]):
        for o, ds in enumerate(sets):
            ratio[v, :, o, 0] = auroc.get((q, ds), 0.5)
    arrays = {"model": model, "num_classes": classes, "variants": np.array(["all", *(f"{q:03d}" for q in positions)]),
              "ratio_index": np.array(positions), "ratios": np.array([threshold(q) for q in positions]),
              "detection_sets": np.array(sets), "detection_names": np.array(sets),
              "validation_set": np.array(sets[-1]), "near_set": np.array(sets[0]),
              "ood_source": np.array("default"), "ood_note": np.array(""),
              "weight_stable_rank": np.ones(Ls), "residual_params": np.linspace(1, 0.2, V),
              "accuracy": np.full((V, 2), 0.9), "msp": np.full((V, D, len(ALL_METRICS)), 0.6),
              "projection_ratio": ratio, "projection_norm": ratio.copy(), **extra}
    out = open_stage(run, "extract", {}, force=True)
    out.save("seed000", arrays)
    out.done()
    return run


# AUROC of the FC-input projection ratio on (position, set). Validation set: by position, the shared positions 0
# and 20 give medians 0.61 and 0.71 -> 20; position 10 (0.95, seed 0 only) and 30 (0.90, seed 1 only) are never
# chosen. Pooled by index (the old way), index 2 = (0.95, 0.72) would win with 0.835. The near-OOD set (photos)
# prefers position 0 (0.925 against 0.85): --oracle chooses it.
AUROC = {0: {(0, "digits_vflip"): 0.60, (10, "digits_vflip"): 0.95, (20, "digits_vflip"): 0.70,
             (0, "photos"): 0.90, (10, "photos"): 0.99, (20, "photos"): 0.80},
         1: {(0, "digits_vflip"): 0.62, (20, "digits_vflip"): 0.72, (30, "digits_vflip"): 0.90,
             (0, "photos"): 0.95, (20, "photos"): 0.90, (30, "photos"): 0.99}}


@pytest.fixture()
def pooled(tmp_path):
    runs = (hand_extract(tmp_path, 0, [0, 10, 20], AUROC[0]), hand_extract(tmp_path, 1, [0, 20, 30], AUROC[1]))
    return tmp_path, Group("digits", "resnet18", runs)


def test_thresholds_pool_by_position_not_index(pooled):
    _, group = pooled
    seeds = Seeds(group, ReportOptions())
    assert seeds.positions == [0, 10, 20, 30] and seeds.complete == [0, 20]
    assert seeds.missing == {"rnd0": [30], "rnd1": [10]}
    values = seeds["projection_ratio"][:, :, -1, 1, 0]          # (seeds, 1 + positions) on the validation set
    np.testing.assert_array_equal(values[:, 3], [0.70, 0.72])  # position 20: seed 0's 3rd threshold, seed 1's 2nd
    np.testing.assert_array_equal(values[:, 1], [0.60, 0.62])
    assert values[0, 2] == 0.95 and np.isnan(values[1, 2]) and np.isnan(values[0, 4]) and values[1, 4] == 0.90
    # the choice: argmax over the shared positions of the median over seeds, computed here by hand
    medians = {q: np.median([AUROC[s][q, "digits_vflip"] for s in (0, 1)]) for q in (0, 20)}
    best = max(medians, key=medians.get)
    assert best == 20 and seeds.positions[seeds.best_variant("projection_ratio", -1) - 1] == best
    oracle = Seeds(group, ReportOptions(oracle=True))
    assert oracle.positions[oracle.best_variant("projection_ratio", -1) - 1] == 0


def test_report_names_missing_positions_and_the_chosen_threshold(pooled):
    workdir, _ = pooled
    assert averaging.main(["--workdir", str(workdir), "--mean-std", "--per-seed", "--no-pdf"]) == 0
    assert figures.FORMATS == ["png", "pdf"]   # --no-pdf held for that report only, not for later drawing in-process
    report = (workdir / "report" / "report.md").read_text()
    assert "rnd0 lacks positions 30" in report and "rnd1 lacks positions 10" in report
    assert f"projection ratio (proposed), chosen on the validation set: ratio {threshold(20):.3g} (position 20)" \
        in report
    rows = {}                                       # the first table (the paper's reading); the second is sklearn's
    for line in report.splitlines():
        if line.startswith("| digits/resnet18 | photos"):
            rows.setdefault(line.split(" | ")[2], line)
    proposed = rows["projection ratio, FC input, ratio chosen on the validation set (proposed)"]
    assert "| toolkit extra | 0.850 (0.025); 0.850 ± 0.050 |" in proposed       # photos at position 20: 0.80, 0.90
    # the paper's protocol: chosen on the near-OOD set (photos): position 0 (medians 0.925 against 0.85), other data
    paper = rows["projection ratio, FC input, ratio chosen on the near-OOD set (proposed)"]
    assert "| paper's protocol, other data | 0.925 (0.013); 0.925 ± 0.025 |" in paper
    assert f"projection ratio (proposed), chosen on the near-OOD set: ratio {threshold(0):.3g} (position 0)" in report
    assert rows["MSP"].split(" | ")[3] == "paper's protocol, other data"
    assert "TNR@TPR90 (paper: FPR@TPR90)" in report and "| digits_vflip |" not in report
    assert "OOD sets: photos (default); near-OOD: photos (default); validation: digits_vflip (default)" in report
    assert "projection norm, layer 15 (fixed), ratio chosen" in report    # seed000 §10: resnet18, 10 classes
    assert (workdir / "report" / "seed000_digits_resnet18-mean.png").is_file()
    header = (workdir / "report" / "seed000_table.csv").read_text().splitlines()[0]
    assert all(f"{name} median" in header for name in ALL_METRICS) and "FNR@FPR95 (sklearn) std" in header
    assert averaging.main(["--workdir", str(workdir), "--oracle", "--no-pdf"]) == 0
    report = (workdir / "report" / "report.md").read_text()
    assert "Figures: choices on the oracle: reported near-OOD set photos" in report


@pytest.mark.parametrize("dataset, model, classes, extra, layer, transition", [
    ("digits", "vgg13", 100, {}, 10, 9.5), ("digits", "resnet18", 100, {}, 17, 16.5),
    ("digits", "vgg16", 10, {}, 10, 9.5), ("cifar100", "vgg16", 100, {}, 11, 11.5),
    ("mnist", "resnet34", 10, {}, 29, 27.5), ("svhn", "resnet18", 10, {}, 15, 15.5),
    ("cifar10", "resnet34", 10, {}, 27, 27.5),
    ("digits", "lenet", 10, {"layer_spatial": np.array([1024, 196, 25, 1])}, 2, 1.5),
    # the rule moves ceil(4.5) = 5 back to the last block boundary (perturbed layer) 3
    ("digits", "resnet_toy", 10, {"layer_spatial": np.array([1024, 1024, 1024, 256, 256, 64, 64, 1]),
                                  "noise_layers": np.array([0, 1, 3, 6, 7])}, 3, 4.5),
    ("digits", "fcn4", 10, {"layer_spatial": np.ones(4, int)}, 17, None)])
def test_fixed_layers(tmp_path, dataset, model, classes, extra, layer, transition):
    """seed000's table layers per ID dataset, §2.2's transition layer, and the rule (just after the deepest pooling,
    back to a block boundary) elsewhere."""
    run = hand_extract(tmp_path, 0, [0, 20], {}, model=model, classes=classes, **extra)
    seeds = Seeds(Group(dataset, model, (run,)), ReportOptions())
    assert seeds.norm_layer()[0] == layer and seeds.transition()[0] == transition
    assert ("assumed for digits" in seeds.norm_layer()[1]) == (dataset == "digits" and transition in (9.5, 16.5))


def test_groups_of_variant_folders_are_averaged(tmp_path):
    """A run folder <model>@<variant> (a Gaussian-corruption or twopoints --ptr run) is found and averaged."""
    run = hand_extract(tmp_path, 0, [0, 20], AUROC[0], variant="sigma0.1")
    groups = averaging.find_groups(tmp_path, None)
    assert [(g.model, g.runs) for g in groups] == [(run.root.parent.name, (run,))]


def test_paper_rows_on_the_papers_data_carry_the_published_column(tmp_path):
    """ID CIFAR-10 with the paper's near-OOD set: the paper's rows are "paper's protocol" and MSP gets OpenOOD's
    number as literature context (reports/references.py); extras never do."""
    for seed in (0, 1):
        hand_extract(tmp_path, seed, [0, 20], {}, dataset="cifar10", sets=("cifar100", "cifar10_vflip"))
    assert averaging.main(["--workdir", str(tmp_path), "--no-pdf"]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    rows = {}
    for line in report.splitlines():
        if line.startswith("| cifar10/resnet18 | cifar100 |"):
            rows.setdefault(line.split(" | ")[2], line.rstrip(" |").split(" | "))
    assert rows["MSP"][3] == "paper's protocol" and rows["MSP"][-1] == "0.880 (literature: OpenOOD v1.5 near-OOD)"
    extra = rows["projection ratio, FC input, ratio chosen on the validation set (proposed)"]
    assert extra[3] == "toolkit extra" and extra[-1] == "-"
    assert "| 000 | cifar10 | resnet18 | msp | cifar100 | AUROC | 0.8803 | literature |" in report
    assert "no row has a published number of the paper" in report


def test_a_chosen_threshold_whose_network_is_at_chance_is_flagged(tmp_path):
    """The report says so when the proposed row's compressed network is near chance accuracy (1 / classes)."""
    for seed, accuracy in ((0, 0.09), (1, 0.11)):
        hand_extract(tmp_path, seed, [0, 20], AUROC[0], accuracy=np.full((3, 2), accuracy))
    assert averaging.main(["--workdir", str(tmp_path), "--no-pdf"]) == 0
    assert "near chance accuracy" in (tmp_path / "report" / "report.md").read_text()
    for seed in (0, 1):
        hand_extract(tmp_path, seed, [0, 20], AUROC[0], accuracy=np.full((3, 2), 0.5))
    assert averaging.main(["--workdir", str(tmp_path), "--no-pdf"]) == 0
    assert "near chance accuracy" not in (tmp_path / "report" / "report.md").read_text()
