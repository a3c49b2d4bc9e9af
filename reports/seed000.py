"""seed000 (dimensionality-induced information loss of outliers): per-run scores and the across-seed section.

extract(run) reads analysis/, features/ and kernels/ (whichever have finished) and writes extract/seed000.npz.
Detection metrics (the last axis M = 26 of every metric array, names ALL_METRICS) are seed000's 13-value vector
(§9: AUROC, AUPR_IN, AUNPV_TPR, AUPR_OUT, AUPPV_TNR, then TNR@TPR, FPR@TPR, TPR@FPR, FNR@FPR at rho = 0.90 and 0.95)
twice: entries 0-12 (METRICS) as the authors' extractor computes them (`measures.ood.paper_metric_vector`: per-sample
trapezoids, exact rate matches, NaN where no point sits at a rate), entries 13-25 (SKLEARN_METRICS, a toolkit
extra) with scikit-learn's conventions (`measures.ood.metric_vector`). The in-distribution test set is the positive
class and every entry reads higher = better detection; the scores where lower means in-distribution in seed000
(the Mahalanobis distance, the noise sensitivity log(chi + 1e-7)) go through the paper's reading as the original
reads them (higher_is_id=False). OOD scores are resampled with replacement to the ID size by a generator seeded
with RESAMPLE_SEED when the sizes differ (§9). A score that is not finite for every sample (no BatchNorm after a
layer, a layer not perturbed) gives NaN metrics.

The detection sets are the reported OOD sets followed by the validation OOD set, which chooses hyper-parameters at
averaging time: the choice analyzing.py records in its _done.json (ood_sets, near_ood, validation_ood, ood_note,
ood_tags), else the dataset's defaults (datasets.ood_sets / near_ood / validation_ood), marked "default".
Keys (V network variants "all", then one per evaluated threshold; L layers; D detection sets; M = 26 metrics;
P perturbed layers; S sets; K Mahalanobis grid; C classes; Q = 5 noise quantiles):
  meta:            model () the architecture; num_classes (); layer_spatial (L,) H x W of every layer's input (1 for
                   a vector; from one zero image through the run's network; absent when the checkpoint is not
                   readable)
  from analysis/:  variants (V,); ratio_index (V - 1,) the position of each threshold among the 53 of seed000 §6.1
                   (the pooling key across seeds); ratios (V - 1,); detection_sets (D,) file tags; detection_names
                   (D,) the sets' names; validation_set (), near_set () tags; ood_source () "recorded" or
                   "default"; ood_note () why the sets are not the paper's ("" if they are); caps () JSON
                   {"caps": the stage's caps, "paper_caps": seed000's, "recorded": bool};
                   weight_stable_rank (L,) sum s^2 / s_max^2; weight_norms (L, 4) s_max, sqrt(sum s^2), sum s and
                   the number of singular values (seed000's sval-norm); residual_params (V,) seed000 §10's residual
                   parameter fraction of each variant (1 for "all"); accuracy (V, 2) train and test
                   (measures.classification: a hinge head too); msp (V, D, M) with score measures.ood.msp_score;
                   projection_ratio (V, L, D, M) with seed000's proposed score normr = norm1 of the variant /
                   norm0 of the uncompressed network "all" (its extractor.py; > 1 possible on a compressed net);
                   projection_ratio_own (V, L, D, M), a toolkit extra, with norm1 / norm0 both of the variant (the
                   fraction of the variant's own input energy); projection_norm, feature_norm, patch_norm
                   (V, L, D, M) with scores norm1, norm00 and norm0 of the variant's own features; bn_norm
                   (V, L, D, M) with score norm00_bn (seed000's k_bn: ||BN output of weight layer l||^2; only
                   when the stage writes it);
                   predicted_fraction (1 + D, C) fraction of the ID test set, then of each detection set, predicted
                   as each class by "all"; noise_layers (P,); noise_eta () the relative noise norm; noise_sets
                   (S,) the ID test set, the detection sets and traindata when measured; noise_quantiles
                   (V, P, L + 1, S, Q) the sample quantiles NOISE_QUANTILES of chi (0.5, 0.31731051, 0.68268949,
                   0.04550026, 0.95449974, the original's levels: the median, +-1 and +-2 sigma);
                   noise_metrics (V, P, L + 1, D, M) with score log(chi + 1e-7), higher = more OOD (the sklearn
                   half on measures.ood.log_sensitivity_score = -log(chi + 1e-7)); NaN where m < the perturbed
                   layer or the variant was not perturbed
  from features/:  covariance_stable_rank (L,) sum l^2 / l_max^2 of the tied covariance; covariance_norms (L, 4)
                   l_max, sqrt(sum l^2), sum l, D (seed000's sigma-tied-norm); mahalanobis_dims (L, K) the counts d
                   of dims_exp(D_l), 0-padded; mahalanobis (L, D, K, M) with score -M_d, NaN where d exceeds the
                   layer's grid or its directions of non-zero variance (the paper's half on M_d itself, higher =
                   more OOD, as the original scores (M_d / d)^(1/3)); mahalanobis_full (L, D, M) at d = D (every
                   direction of non-zero variance; only when the stage writes distance_full) and
                   mahalanobis_full_dims (L,)
  from kernels/:   cka_sets (S,); cka (S, L, L) linear CKA between layers within each set; gram_eigenvalues
                   (S, L, r) centred-Gram eigenvalues, descending, 0-padded; gram_lengths (S, L); gram_norms
                   (S, L, 4); <kind>_norms (S, L, L, 4) max, sqrt(sum v^2), sum v, count of each layer pair's
                   spectrum for kind in cka, cca, reg0, reg1 (seed000's *-all-norm_interlayers: sum v of cka is
                   the CKA matrix); <kind>_spectra (S, L, L, <= SPECTRUM_KEEP) the largest values of each spectrum.
                   Layout of reg0/reg1: entry [a, b] is the spectrum of pair (min(a, b), max(a, b)) as kernels.py
                   stores it (symmetric); the original stores reg0 and reg1 swapped below the diagonal and its
                   averaging recombines them (reg0 on and below the diagonal, reg1 above), which gives this reg1.

average(groups, out, options) writes per (dataset, model) five figures (the detection overview, projection against
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

import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

from datasets import near_ood
from measures.classification import accuracy, predictions
from measures.ood import METRIC_NAMES, dims_exp, log_sensitivity_score, metric_vector, msp_score, paper_metric_vector
from measures.spectra import residual_params, stable_rank, threshold_ratios
from pipeline import contract
from pipeline.contract import TRAIN_SET, StageOutput, done, done_record, load, stage_path
from pipeline.evaluation import detection_sets, test_set_tag
from pipeline.loaded import LoadedRun, load_config
from reports import Group, ReportOptions
from reports.figures import band, legend, markdown_table, new_figure, save_figure, summary, vertical_line, write_csv
from reports.references import MISSING, markdown, reference_cell
from utils.errors import ToolkitError
from utils.rundir import RunDir
from utils.taps import capture_inputs

TITLE = "Dimensionality-induced information loss of outliers (seed000)"
STAGES = [name for name, record in contract.STAGES.items() if record.scope == "run" and record.paper == "000"]
METRICS = METRIC_NAMES                                               # the paper's reading, entries 0-12
SKLEARN_METRICS = tuple(f"{name} (sklearn)" for name in METRIC_NAMES)  # the toolkit's reading, entries 13-25
ALL_METRICS = METRICS + SKLEARN_METRICS
M = {name: i for i, name in enumerate(ALL_METRICS)}
# the paper's 7 table columns (seed000 §10); its "FPR@TPR90" / "FPR@TPR95" columns hold TNR@TPR (§9), named so here
TABLE_METRICS = ("AUROC", "AUPR_IN", "AUPR_OUT", "TNR@TPR90", "TPR@FPR10", "TNR@TPR95", "TPR@FPR05")
PAPER_LABELS = {"TNR@TPR90": "FPR@TPR90", "TNR@TPR95": "FPR@TPR95"}
NOISE_QUANTILES = (0.5, 0.31731051, 0.68268949, 0.04550026, 0.95449974)  # the original extractor's levels
RESAMPLE_SEED = 0
CKA_FLOOR = 0.04
SPECTRUM_KEEP = 512
KINDS = ("cka", "cca", "reg0", "reg1")
PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "mnist")
PAPER_MODELS = ("vgg13", "vgg16", "resnet18", "resnet34")
# seed000 §2.2 (averaging.py's `lowdiml`): the transition layer lies between layers floor(t) and ceil(t), per
# (model, ID dataset); CIFAR-10, SVHN and MNIST share one row
_T10 = {"vgg13": 7.5, "vgg16": 9.5, "resnet18": 15.5, "resnet34": 27.5}
_T100 = {"vgg13": 9.5, "vgg16": 11.5, "resnet18": 16.5, "resnet34": 33.5}
TRANSITION = {(model, ds): table[model] for ds, table in (("cifar10", _T10), ("svhn", _T10), ("mnist", _T10),
                                                           ("cifar100", _T100)) for model in PAPER_MODELS}
# the layer at which seed000's table reads the projection norm (its averaging.py, per ID dataset: spec §10 names the
# CIFAR ones; SVHN and MNIST differ from CIFAR-10 for resnet34 only); the ratio is read at the FC input throughout
_NORM = {"cifar10": (8, 10, 15, 27), "cifar100": (10, 11, 17, 33), "svhn": (8, 10, 15, 29), "mnist": (8, 10, 15, 29)}
NORM_LAYER = {(model, ds): layers[i] for ds, layers in _NORM.items() for i, model in enumerate(PAPER_MODELS)}
# the protocol of every row of the main table
PROTOCOLS = {"paper": "paper's protocol", "paper-other": "paper's protocol, other data",
             "extra": "toolkit extra"}
# seed000 §6's sizes, used only when the analysis stage does not record its own `paper_caps`
PAPER_CAPS = {"ratios": 53, "num_grams": 10000, "num_stability": 10000, "stability_variants": "every",
              "max_samples": None}
VARIANT_KEYS = ("accuracy", "residual_params", "msp", "projection_ratio", "projection_ratio_own", "projection_norm",
                "feature_norm", "patch_norm", "bn_norm", "noise_quantiles", "noise_metrics")
LAYER_SCORES = {"projection_ratio": "norm1", "projection_ratio_own": "norm1", "projection_norm": "norm1",
                "feature_norm": "norm00", "patch_norm": "norm0", "bn_norm": "norm00_bn"}


FORMAT = 2   # 2: 26 metrics (the paper's reading, then scikit-learn's) and projection_ratio_own


def has_outputs(run: RunDir) -> bool:
    return any(done(run, stage) for stage in STAGES)


def _metrics(score_id, score_ood, higher_is_id: bool = True) -> np.ndarray:
    """ALL_METRICS of one score (ID positive): the paper's reading, then scikit-learn's, OOD resampled to the ID size
    (the same draw for both); NaN when a score is not finite for every sample. higher_is_id=False: a score where
    lower means in-distribution, read as seed000 reads it (measures.ood.paper_metric_vector)."""
    s_id, s_ood = np.asarray(score_id, dtype=np.float64), np.asarray(score_ood, dtype=np.float64)
    if not (np.isfinite(s_id).all() and np.isfinite(s_ood).all()):
        return np.full(len(ALL_METRICS), np.nan)
    s_id, s_ood = torch.from_numpy(s_id), torch.from_numpy(s_ood)
    paper = paper_metric_vector(s_id, s_ood, torch.Generator().manual_seed(RESAMPLE_SEED), higher_is_id)
    sign = 1.0 if higher_is_id else -1.0
    toolkit = metric_vector(sign * s_id, sign * s_ood, torch.Generator().manual_seed(RESAMPLE_SEED))
    return torch.cat([paper, toolkit]).numpy()


def _done_record(run: RunDir, stage: str, *keys: str) -> dict:
    """The stage's _done.json, which must hold `keys` (a one-line error otherwise)."""
    record = done_record(run, stage)
    missing = [key for key in keys if key not in record]
    if missing:
        raise ToolkitError(f"{contract.stage_dir(run, stage)}: the done record lacks {missing}; rerun "
                           f"{contract.stage(stage).script} with --force")
    return record


def _norms(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(..., 4): max, sqrt(sum v^2), sum v and the count of the first `lengths` values of each row (..., r)."""
    valid = np.arange(values.shape[-1]) < np.asarray(lengths)[..., None]
    v = np.where(valid, values, 0.0)
    return np.stack([np.where(valid, values, -np.inf).max(-1, initial=-np.inf).clip(min=0),
                     np.sqrt((v ** 2).sum(-1)), v.sum(-1), np.asarray(lengths, dtype=float)], axis=-1)


def _ood_choice(record: dict, dataset: str) -> dict:
    """The detection sets of a stage's record (module docstring): tags, names, near and validation tags, source."""
    evaluated = record["datasets"]
    tags = record.get("ood_tags")
    if isinstance(tags, dict) and "validation_ood" in record:
        if not record["validation_ood"]:
            return {"sets": []}
        tag_of = {name: tag for tag, name in tags.items()}
        sets = [tag_of[name] for name in record.get("ood_sets", []) if tag_of.get(name) in evaluated]
        sets.append(tag_of[record["validation_ood"]])
        return {"sets": sets, "names": [tags[tag] for tag in sets], "near": tag_of.get(record.get("near_ood")),
                "source": "recorded", "note": record.get("ood_note", "") or ""}
    sets = detection_sets(dataset, evaluated)
    if not sets:
        return {"sets": []}
    return {"sets": sets, "names": list(sets), "near": near_ood(dataset), "source": "default", "note": ""}


def _caps(record: dict) -> str:
    """The analysis caps against seed000's as JSON: the stage's record when it has one, else from its flags."""
    if "caps" in record and "paper_caps" in record:
        return json.dumps({"caps": record["caps"], "paper_caps": record["paper_caps"], "recorded": True})
    flags = record.get("flags", {})
    caps = {"ratios": len(flags.get("ratio_index", record.get("variants", [])[1:])),
            **{key: flags.get(key) for key in ("num_grams", "num_stability", "stability_variants", "max_samples")}}
    return json.dumps({"caps": caps, "paper_caps": PAPER_CAPS, "recorded": False})


def _analysis(run: RunDir, dataset: str, loss: str, classes: int) -> dict:
    record = _done_record(run, "analysis", "variants", "datasets")
    svals = load(run, "analysis", "svals")
    tags, L = record["variants"], len(svals["lengths"])
    choice = _ood_choice(record, dataset)
    sets = choice["sets"]
    shapes = list(zip(svals["fan_out"].tolist(), svals["fan_in"].tolist()))
    out = {"variants": np.array(tags), "ratio_index": np.array([int(tag) for tag in tags[1:]], dtype=int),
           "ratios": threshold_ratios().numpy()[[int(tag) for tag in tags[1:]]], "caps": _caps(record),
           "weight_stable_rank": [float(stable_rank(torch.as_tensor(row[:n])))
                                  for row, n in zip(svals["svals"], svals["lengths"])],
           "weight_norms": _norms(svals["svals"], svals["lengths"]),
           "residual_params": np.zeros(len(tags)), "accuracy": np.zeros((len(tags), 2))}
    if sets:
        out.update(detection_sets=np.array(sets), detection_names=np.array(choice["names"]),
                   validation_set=np.array(sets[-1]), near_set=np.array(choice["near"] or sets[0]),
                   ood_source=np.array(choice["source"]), ood_note=np.array(choice["note"]),
                   msp=np.full((len(tags), len(sets), len(ALL_METRICS)), np.nan))
    noise = _noise_layout(run, tags, dataset, sets)
    out.update(noise.pop("arrays"))
    reused = record.get("reused") if isinstance(record.get("reused"), dict) else {}
    uncompressed_norm0 = {}                     # norm0 of "all" (tags[0]), the paper's normr denominator
    for v, tag in enumerate(tags):
        if reused.get(tag) in tags[:v]:  # the same network as an earlier threshold: its files are copies
            for key in VARIANT_KEYS:
                if key in out:
                    out[key][v] = out[key][tags.index(reused[tag])]
            continue
        proj = {ds: load(run, "analysis", "projections", tag=tag, ds=ds) for ds in (TRAIN_SET, dataset, *sets)}
        if v == 0:
            uncompressed_norm0 = {ds: proj[ds]["norm0"] for ds in (dataset, *sets)}
        out["residual_params"][v] = float(residual_params(proj[dataset]["ranks"], shapes))
        out["accuracy"][v] = [accuracy(proj[ds]["logits"], proj[ds]["labels"], loss) for ds in (TRAIN_SET, dataset)]
        if not sets:
            continue
        out["msp"][v] = [_metrics(msp_score(proj[dataset]["logits"]), msp_score(proj[ds]["logits"])) for ds in sets]
        for key, column in LAYER_SCORES.items():
            if column not in proj[dataset]:
                continue  # bn_norm: written by newer analysis stages only
            denominator = {"projection_ratio": uncompressed_norm0, "projection_ratio_own": {
                ds: proj[ds]["norm0"] for ds in (dataset, *sets)}}.get(key)
            scores = {ds: proj[ds][column] / denominator[ds] if denominator else proj[ds][column]
                      for ds in (dataset, *sets)}
            values = out.setdefault(key, np.full((len(tags), L, len(sets), len(ALL_METRICS)), np.nan))
            values[v] = [[_metrics(scores[dataset][:, layer], scores[ds][:, layer]) for ds in sets]
                         for layer in range(L)]
        if tag == "all":
            out["predicted_fraction"] = [
                np.bincount(predictions(torch.as_tensor(proj[ds]["logits"]), loss).numpy(), minlength=classes)
                / len(proj[ds]["logits"]) for ds in (dataset, *sets)]
        if tag in noise["perturbed"]:
            _noise_variant(run, tag, v, dataset, sets, noise["sets"], out)
    return out


def _noise_layout(run: RunDir, tags: list[str], dataset: str, sets: list[str]) -> dict:
    """The perturbed variants, the sets whose noise quantiles are stored, and NaN arrays to fill."""
    measured = (dataset, *sets)
    perturbed = [tag for tag in tags if all(stage_path(run, "analysis", "sensitivity", tag=tag, ds=ds).is_file()
                                            for ds in measured)]
    if not perturbed:
        return {"perturbed": [], "sets": [], "arrays": {}}
    noise_sets = [*measured, *([TRAIN_SET] if stage_path(run, "analysis", "sensitivity", tag=perturbed[0],
                                                         ds=TRAIN_SET).is_file() else [])]
    first = load(run, "analysis", "sensitivity", tag=perturbed[0], ds=dataset)
    _, P, Lp1 = first["chi"].shape
    arrays = {"noise_layers": first["noise_layers"], "noise_eta": first["eta"], "noise_sets": np.array(noise_sets),
              "noise_quantiles": np.full((len(tags), P, Lp1, len(noise_sets), len(NOISE_QUANTILES)), np.nan)}
    if sets:
        arrays["noise_metrics"] = np.full((len(tags), P, Lp1, len(sets), len(ALL_METRICS)), np.nan)
    return {"perturbed": perturbed, "sets": noise_sets, "arrays": arrays}


def _noise_variant(run: RunDir, tag: str, v: int, dataset: str, sets: list[str], noise_sets: list[str],
                   out: dict) -> None:
    """Quantiles of chi per set and the log-sensitivity metrics of one perturbed variant, into out's arrays."""
    chi = {ds: load(run, "analysis", "sensitivity", tag=tag, ds=ds)["chi"]
           for ds in noise_sets if stage_path(run, "analysis", "sensitivity", tag=tag, ds=ds).is_file()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # NaN before the perturbed layer
        for s, ds in enumerate(noise_sets):
            if ds in chi:
                out["noise_quantiles"][v, ..., s, :] = np.moveaxis(np.nanquantile(chi[ds], NOISE_QUANTILES, axis=0),
                                                                   0, -1)
    if not sets:
        return
    sensitivity = {ds: -log_sensitivity_score(chi[ds]).numpy() for ds in (dataset, *sets)}   # log(chi + 1e-7)
    _, P, Lp1 = chi[dataset].shape
    for p in range(P):
        for m in range(Lp1):
            if np.isfinite(sensitivity[dataset][:, p, m]).all():
                out["noise_metrics"][v, p, m] = [_metrics(sensitivity[dataset][:, p, m], sensitivity[ds][:, p, m],
                                                          higher_is_id=False) for ds in sets]


def _features(run: RunDir, dataset: str, sets: list[str] | None) -> dict:
    """Covariance spectra and Mahalanobis metrics on `sets` (the analysis choice; None: the features record's)."""
    record = _done_record(run, "features", "datasets")
    if sets is None:
        sets = _ood_choice(record, dataset)["sets"]
    eig = load(run, "features", "eigenvalues")
    eigenvalues = np.clip(eig["eigenvalues"], 0, None)
    out = {"covariance_stable_rank": [float(stable_rank(torch.as_tensor(row[:n])))
                                      for row, n in zip(eigenvalues, eig["dims"])],
           "covariance_norms": _norms(eigenvalues, eig["dims"])}
    sets = [ds for ds in sets if ds in record["datasets"]]
    if not sets:
        return out
    grids = [dims_exp(int(D)).numpy() for D in eig["dims"]]
    width = max(len(grid) for grid in grids)
    metrics = np.full((len(grids), len(sets), width, len(ALL_METRICS)), np.nan)
    full = np.full((len(grids), len(sets), len(ALL_METRICS)), np.nan)
    full_dims = np.zeros(len(grids), dtype=int)
    for layer, grid in enumerate(grids):
        dist = {ds: load(run, "features", "mahalanobis", layer=f"{layer:02d}", ds=ds) for ds in (dataset, *sets)}
        columns = np.searchsorted(grid, dist[dataset]["dims_exp"])  # the saved d are a prefix of the full grid
        for o, ds in enumerate(sets):
            for k, column in enumerate(columns):
                metrics[layer, o, column] = _metrics(dist[dataset]["distance_exp"][:, k],
                                                     dist[ds]["distance_exp"][:, k], higher_is_id=False)
            if "distance_full" in dist[dataset]:
                full[layer, o] = _metrics(dist[dataset]["distance_full"], dist[ds]["distance_full"],
                                          higher_is_id=False)
        full_dims[layer] = int(dist[dataset].get("dims_full", 0))
    out.update(mahalanobis_dims=np.array([np.pad(grid, (0, width - len(grid))) for grid in grids]),
               mahalanobis=metrics)
    if "distance_full" in load(run, "features", "mahalanobis", layer="00", ds=dataset):
        out.update(mahalanobis_full=full, mahalanobis_full_dims=full_dims)
    return out


def _pad_stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack arrays that differ only in their last length, zero-padded."""
    width = max(a.shape[-1] for a in arrays)
    return np.stack([np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])]) for a in arrays])


def _kernels(run: RunDir) -> dict:
    sets = _done_record(run, "kernels", "datasets")["datasets"]
    files = [load(run, "kernels", "kernels", ds=ds) for ds in sets]
    out = {"cka_sets": np.array(sets), "cka": np.array([f["cka"] for f in files]),
           "gram_eigenvalues": _pad_stack([f["gram_eigenvalues"] for f in files]),
           "gram_lengths": np.array([f["gram_lengths"] for f in files]),
           "gram_norms": np.array([_norms(f["gram_eigenvalues"], f["gram_lengths"]) for f in files])}
    for kind in KINDS:
        spectra = [f[f"spectrum_{kind}"] for f in files]
        out[f"{kind}_norms"] = np.array([_norms(s, f[f"length_{kind}"]) for s, f in zip(spectra, files)])
        out[f"{kind}_spectra"] = _pad_stack([-np.sort(-s, axis=-1)[..., :SPECTRUM_KEEP] for s in spectra])
    return out


def _layer_spatial(run: RunDir) -> np.ndarray | None:
    """H x W of every analysis layer's input (1 for a vector), from one zero image; None when the run's network
    cannot be read."""
    try:
        loaded = LoadedRun.open(run)
    except ToolkitError:
        return None
    with torch.no_grad():
        inputs, _ = capture_inputs(loaded.model, loaded.layers, loaded.example_input())
    return np.array([int(np.prod(x.shape[2:])) if x.dim() > 2 else 1 for x in inputs])


def extract(run: RunDir, out: StageOutput) -> dict:
    """Write extract/seed000.npz (module docstring) from the stages that have finished; return a short summary."""
    config = load_config(run)
    dataset = test_set_tag(config["data"]["name"])  # the stages' file-name tag of the test split
    arrays: dict = {"model": config["model"]["name"], "num_classes": int(config["model"]["num_classes"])}
    spatial = _layer_spatial(run)
    if spatial is not None:
        arrays["layer_spatial"] = spatial
    if done(run, "analysis"):
        arrays.update(_analysis(run, dataset, config["recipe"]["loss"], int(config["model"]["num_classes"])))
    if done(run, "features"):
        sets = [str(ds) for ds in arrays["detection_sets"]] if "detection_sets" in arrays else None
        arrays.update(_features(run, dataset, sets if done(run, "analysis") else None))
    if done(run, "kernels"):
        arrays.update(_kernels(run))
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    out.save("seed000", arrays)
    summary = {"stages": [stage for stage in STAGES if done(run, stage)]}
    if "accuracy" in arrays:
        summary["test_accuracy"] = float(arrays["accuracy"][0, 1])
    if "detection_sets" in arrays:
        sets = [str(name) for name in arrays["detection_sets"]]
        summary["msp_auroc"] = dict(zip(sets, arrays["msp"][0, :, 0].tolist()))
        summary["projection_ratio_fc_auroc"] = dict(zip(sets, arrays["projection_ratio"][0, -1, :, 0].tolist()))
    return summary


# ---- across seeds -------------------------------------------------------------------------------------------------
def _positions(arrays: dict) -> list[int]:
    """The threshold positions (among the 53) of a run's variants 1..V-1: ratio_index, or older extracts' ratios
    matched to the 53 thresholds."""
    if "ratio_index" in arrays:
        return [int(q) for q in arrays["ratio_index"]]
    grid = np.log(threshold_ratios().numpy())
    return [int(np.argmin(np.abs(grid - np.log(r)))) for r in arrays.get("ratios", [])]


def _signature(arrays: dict) -> tuple:
    return frozenset(arrays), tuple(str(ds) for ds in arrays.get("detection_sets", ()))


class Seeds:
    """The extracted seed000 arrays of one group's seeds, stacked on a first (seed) axis; variants pooled by their
    threshold position (module docstring); the selection set; the paper's fixed layers."""

    def __init__(self, group: Group, options: ReportOptions):
        loaded = [(run, load(run, "extract", "seed000")) for run in group.runs
                  if stage_path(run, "extract", "seed000").is_file()]
        common = Counter(_signature(arrays) for _, arrays in loaded).most_common(1)[0][0] if loaded else None
        kept = [(run, arrays) for run, arrays in loaded if _signature(arrays) == common]
        self.names = [run.root.name for run, _ in kept]
        self.runs = [arrays for _, arrays in kept]
        self.incomplete = [run.root.name for run, arrays in loaded if _signature(arrays) != common]
        self.group, self.options = group, options
        self._stacked: dict[str, np.ndarray | None] = {}
        self.seed_positions = [_positions(arrays) for arrays in self.runs]
        self.positions = sorted(set().union(*map(set, self.seed_positions))) if self.runs else []
        self.complete = [q for q in self.positions if all(q in seed for seed in self.seed_positions)]
        self.missing = {name: [q for q in self.positions if q not in seed]
                        for name, seed in zip(self.names, self.seed_positions) if len(seed) < len(self.positions)}
        if not self.runs or "detection_sets" not in self.runs[0]:
            self.sets = []
            return
        if self.runs[0]["msp"].shape[-1] != len(ALL_METRICS):
            raise ToolkitError(f"{group.label}: extract/seed000.npz holds {self.runs[0]['msp'].shape[-1]} metrics, an "
                               f"older layout than this toolkit's {len(ALL_METRICS)}; run extractor.py again on its "
                               "runs (reproduce.py does)")
        first = self.runs[0]
        self.sets = [str(name) for name in first["detection_sets"]]
        names = first.get("detection_names", first["detection_sets"])
        self.set_names = dict(zip(self.sets, (str(name) for name in names)))
        self.reported = self.sets[:-1]
        self.near = str(first["near_set"])
        self.source = str(first.get("ood_source", "default"))
        self.validation = len(self.sets) - 1
        self.paper_select = self.sets.index(self.near) if self.near in self.sets[:-1] else None
        self.oracle = options.oracle and self.paper_select is not None
        self.select = self.paper_select if self.oracle else self.validation
        self.select_label = (f"{'oracle: reported near-OOD set' if self.oracle else 'validation set'} "
                             f"{self.name(self.sets[self.select])}")

    def name(self, tag: str) -> str:
        return self.set_names.get(tag, tag)

    def __getitem__(self, key: str) -> np.ndarray | None:
        """The key's arrays of every seed, stacked (once per key), variant keys pooled on (1 + positions) columns
        with NaN where a seed lacks a position; None when missing or of different shapes."""
        if key not in self._stacked:
            values = [run[key] for run in self.runs if key in run]
            if not values or len(values) < len(self.runs):
                self._stacked[key] = None
            elif key in VARIANT_KEYS:
                self._stacked[key] = np.stack([self._pooled(value, seed)
                                               for value, seed in zip(values, self.seed_positions)])
            else:
                same = len({v.shape for v in values}) == 1
                self._stacked[key] = np.stack(values) if same else None
        return self._stacked[key]

    def _pooled(self, value: np.ndarray, seed: list[int]) -> np.ndarray:
        pooled = np.full((1 + len(self.positions), *value.shape[1:]), np.nan)
        pooled[0] = value[0]
        for j, q in enumerate(seed):
            pooled[1 + self.positions.index(q)] = value[1 + j]
        return pooled

    def ratio(self, v: int) -> float:
        """The threshold of pooled column v >= 1."""
        return float(threshold_ratios()[self.positions[v - 1]])

    def _candidates(self) -> np.ndarray:
        """Pooled columns >= 1 eligible for a choice: the positions every seed has (all when none is shared)."""
        shared = self.complete or self.positions
        return np.array([1 + self.positions.index(q) for q in shared])

    def best_variant(self, key: str, layer: int, select: int | None = None) -> int:
        """The pooled column v >= 1 with the best median AUROC over seeds on set `select` (default: the selection
        set) at `layer`."""
        select = self.select if select is None else select
        columns = self._candidates()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.nanmedian(self[key][:, :, layer, select, 0][:, columns], axis=0)
        return int(columns[np.argmax(np.where(np.isfinite(values), values, -np.inf))])

    def best_variant_and_layer(self, key: str, select: int | None = None) -> tuple[int, int]:
        """(v >= 1, layer) with the best median AUROC over seeds on set `select` over every layer."""
        select = self.select if select is None else select
        columns = self._candidates()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.nanmedian(self[key][:, :, :, select, 0][:, columns], axis=0)  # (columns, L)
        v, layer = np.unravel_index(np.argmax(np.where(np.isfinite(values), values, -np.inf)), values.shape)
        return int(columns[v]), int(layer)

    def mahalanobis_at(self, layer: int, chosen: bool = True, select: int | None = None) -> np.ndarray:
        """(seeds, D, M) at the d chosen per seed on set `select` (else at the largest valid d)."""
        select = self.select if select is None else select
        values = self["mahalanobis"][:, layer]  # (seeds, D, K, M)
        valid = np.isfinite(values[:, select, :, 0])
        if chosen:
            picks = [int(np.nanargmax(row)) if np.isfinite(row).any() else 0 for row in values[:, select, :, 0]]
        else:
            picks = [int(np.flatnonzero(row)[-1]) if row.any() else 0 for row in valid]
        return np.stack([seed[:, k] for seed, k in zip(values, picks)])

    def mahalanobis_paper(self, layer: int, select: int) -> tuple[np.ndarray, int]:
        """(seeds, D, M) at seed000's table d and that d: one grid column for every seed, the best median AUROC
        over seeds on set `select` among the first lenmin - 1 columns, lenmin the fewest valid columns of a seed
        (its averaging.py drops the last shared one)."""
        values = self["mahalanobis"][:, layer]  # (seeds, D, K, M)
        lenmin = int(np.isfinite(values[:, select, :, 0]).sum(1).min())
        columns = np.arange(max(lenmin - 1, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(values[:, select, columns, 0], axis=0)
        k = int(columns[np.argmax(np.where(np.isfinite(medians), medians, -np.inf))])
        return values[:, :, k], int(self.runs[0]["mahalanobis_dims"][layer][k])

    # ---- the paper's layers ----
    @property
    def layers(self) -> int:
        return len(self.runs[0]["weight_stable_rank"]) if "weight_stable_rank" in self.runs[0] else 0

    def paper_key(self) -> tuple[tuple[str, str], str]:
        """(model, seed000 dataset) of the paper's layer tables and how the dataset was matched: the ID dataset
        itself when it is one of seed000's, else the CIFAR set of its class count (an assumption, said so)."""
        first = self.runs[0]
        model = str(first["model"]) if "model" in first else self.group.model
        if self.group.dataset in PAPER_DATASETS:
            return (model, self.group.dataset), f"{model} on {self.group.dataset}"
        classes = int(first["num_classes"]) if "num_classes" in first else 10
        stand_in = "cifar100" if classes >= 100 else "cifar10"
        return (model, stand_in), (f"{model} on {stand_in}, assumed for {self.group.dataset} ({classes} classes; "
                                   "seed000 has no row for it)")

    def transition(self) -> tuple[float | None, str]:
        """seed000's transition layer t (between layers floor(t) and ceil(t)) and where it comes from."""
        key, matched = self.paper_key()
        if key in TRANSITION:
            return TRANSITION[key], f"seed000 §2.2 lowdiml for {matched}"
        spatial = self.runs[0].get("layer_spatial")
        if spatial is None:
            return None, "unknown (no layer sizes recorded)"
        reductions = [layer for layer in range(1, len(spatial)) if 1 < spatial[layer] < spatial[layer - 1]]
        if not reductions:
            return None, "none (no spatial pooling before the global one)"
        return reductions[-1] - 0.5, ("seed000 §2.2's rule: just after the deepest pooling other than the global "
                                      "one")

    def norm_layer(self) -> tuple[int, str]:
        """The layer of the projection-norm row (seed000 §10) and where it comes from. Without a row in seed000's
        table: the toolkit's rule ceil(t), moved back to the nearest block boundary (a perturbed layer of the noise
        stage, seed000's `layers0`) when those are known; it gives seed000's layer in 13 of its 16 (dataset, model)
        cases, not for vgg16 on CIFAR-100 (12 against 11) and resnet34 on SVHN and MNIST (27 against 29)."""
        key, matched = self.paper_key()
        if key in NORM_LAYER:
            return NORM_LAYER[key], f"seed000's table layer for {matched}"
        t, _ = self.transition()
        if t is None:
            return self.layers - 1, "the FC input (no transition layer known; toolkit rule)"
        layer = min(int(np.ceil(t)), self.layers - 1)
        boundaries = self.runs[0].get("noise_layers")
        if boundaries is not None and any(int(b) <= layer for b in boundaries):
            layer = max(int(b) for b in boundaries if int(b) <= layer)
            return layer, "toolkit rule: the last block boundary up to ceil(transition layer)"
        return layer, "toolkit rule: the first layer past the transition layer"


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
            notes.append(f"projection ratio (proposed), chosen on the {where}: ratio {seeds.ratio(v):.3g} (position "
                         f"{seeds.positions[v - 1]}), residual parameters {np.nanmedian(params[:, v]):.3f}, test "
                         f"accuracy {np.nanmedian(accuracy[:, v, 1]):.4f} at that threshold (uncompressed "
                         f"{np.nanmedian(accuracy[:, 0, 1]):.4f}; seed000 printed the accuracy of the threshold one "
                         "position off, indexing its 54 networks with the 53-threshold index)")
    if own is not None:
        v = seeds.best_variant("projection_ratio_own", -1, val)
        rows.append(Row("projection ratio with the compressed network's own norm0, FC input, ratio chosen on the "
                        "validation set", "extra", own[:, v, -1]))
    return rows, notes


def _table(seeds: Seeds) -> tuple[list[list], list[list], list[list], list[str]]:
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


def _choice_notes(seeds: Seeds) -> list[str]:
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
        notes.append(("analysis caps below the paper's: " + ", ".join(differ) if differ
                      else "analysis at the paper's sizes") + source)
    if seeds["bn_norm"] is None:
        notes.append("k_bn (BN output norms): not written by this analysis stage (norm00_bn)")
    return notes


# ---- figures --------------------------------------------------------------------------------------------------------
class Draw:
    """Shared drawing state of one figure set: the statistic across seeds and per-seed curves."""

    def __init__(self, seeds: Seeds, stat: str):
        self.seeds, self.stat, self.per_seed = seeds, stat, seeds.options.per_seed
        self.transition, _ = seeds.transition() if seeds.layers else (None, "")

    def curve(self, ax, x, values, label=None, **kwargs):
        return band(ax, x, values, label=label, stat=self.stat, per_seed=self.per_seed, **kwargs)

    def centre(self, values, axis=0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return summary(values, self.stat, axis=axis)[0]

    def layer_axis(self, ax, label: str = "layer") -> None:
        vertical_line(ax, self.transition, "transition layer")
        ax.set_xlabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    @property
    def stat_label(self) -> str:
        return "median, 25-75% band" if self.stat == "median" else "mean ± std"


def _seeds(seeds: Seeds) -> str:
    return f"{len(seeds.runs)} seed{'s' if len(seeds.runs) != 1 else ''}"


def _fraction_axis(ax) -> None:
    """Log x axis of fractions labelled 0.01, 0.02, 0.05, 0.1, ... 1."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _stem(seeds: Seeds, topic: str, stat: str) -> str:
    base = f"seed000_{seeds.group.dataset}_{seeds.group.model}" + (f"_{topic}" if topic else "")
    return base + ("-mean" if stat == "mean" else "")


def _detection_figure(d: Draw, out: Path) -> Path:
    seeds = d.seeds
    fig, axes = new_figure(ncols=2, nrows=2, width=4.6, height=3.2)
    _mahalanobis_panels(d, axes[0, 0], axes[0, 1])
    _projection_layer_panel(d, axes[1, 0])
    _feature_norm_panel(d, axes[1, 1])
    fig.suptitle(f"{seeds.group.label}: OOD detection, {_seeds(seeds)} ({d.stat_label}); choices on the "
                 f"{seeds.select_label}")
    return save_figure(fig, out, _stem(seeds, "", d.stat))


def _mahalanobis_panels(d: Draw, ax_layer, ax_dims) -> None:
    seeds, values = d.seeds, d.seeds["mahalanobis"]
    if values is None:
        ax_layer.set_visible(False)
        ax_dims.set_visible(False)
        return
    L = values.shape[1]
    chosen = np.stack([seeds.mahalanobis_at(layer) for layer in range(L)], axis=1)  # (seeds, L, D, M)
    every = np.stack([seeds.mahalanobis_at(layer, chosen=False) for layer in range(L)], axis=1)
    full = seeds["mahalanobis_full"]
    for o, tag in enumerate(seeds.reported):
        line = d.curve(ax_layer, np.arange(L), chosen[:, :, o, 0], label=seeds.name(tag), marker=".")
        ax_layer.plot(np.arange(L), d.centre(every[:, :, o, 0]), linestyle="--", color=line.get_color())
        if full is not None:
            ax_layer.plot(np.arange(L), d.centre(full[:, :, o, 0]), linestyle=":", color=line.get_color())
    d.layer_axis(ax_layer)
    styles = [Line2D([], [], color="k", linestyle=s) for s in ("-", "--", ":")]
    ax_layer.set(ylabel="AUROC", title="Mahalanobis: AUROC per layer")
    handles, labels = ax_layer.get_legend_handles_labels()
    ax_layer.legend(handles + styles[:3 if full is not None else 2],
                    labels + ["d chosen per seed", "largest d of the grid", "full d = D"][:3 if full is not None
                                                                                           else 2], fontsize=7)
    dims = seeds.runs[0]["mahalanobis_dims"][-1]
    keep = np.isfinite(values[:, -1, 0, :, 0]).any(0) & (dims > 0)
    for o, tag in enumerate(seeds.reported):
        line = d.curve(ax_dims, dims[keep], values[:, -1, o, keep, 0], label=seeds.name(tag))
        if full is not None:
            ax_dims.plot(np.median(seeds["mahalanobis_full_dims"][:, -1]), d.centre(full[:, -1, o, 0]), marker="*",
                         markersize=9, color=line.get_color(), linestyle="none")
    ax_dims.set(xscale="log", xlabel="components d", ylabel="AUROC",
                title="Mahalanobis at the FC input" + (" (star: d = D)" if full is not None else ""))
    legend(ax_dims, fontsize=7)


def _projection_layer_panel(d: Draw, ax) -> None:
    seeds = d.seeds
    ratio, norm = seeds["projection_ratio"], seeds["projection_norm"]
    if ratio is None or ratio.shape[1] < 2:
        ax.set_visible(False)
        return
    layer, _ = seeds.norm_layer()
    v_ratio, v_norm = seeds.best_variant("projection_ratio", -1), seeds.best_variant("projection_norm", layer)
    layers = np.arange(ratio.shape[2])
    for o, tag in enumerate(seeds.reported):
        line = d.curve(ax, layers, ratio[:, v_ratio, :, o, 0], label=seeds.name(tag), marker=".")
        ax.plot(layers, d.centre(norm[:, v_norm, :, o, 0]), linestyle="--", color=line.get_color())
    ax.axvline(layer, color="0.6", linestyle=":", linewidth=1.0)
    d.layer_axis(ax)
    handles, labels = ax.get_legend_handles_labels()
    styles = [Line2D([], [], color="k", linestyle="-"), Line2D([], [], color="k", linestyle="--"),
              Line2D([], [], color="0.6", linestyle=":")]
    ax.legend(handles + styles, labels + [f"ratio ||V_k^T x||²/||x||², r = {seeds.ratio(v_ratio):.2g}",
                                          f"norm ||V_k^T x||², r = {seeds.ratio(v_norm):.2g}",
                                          f"norm layer {layer}"], fontsize=7)
    ax.set(ylabel="AUROC", title="projection scores at the chosen thresholds")


def _feature_norm_panel(d: Draw, ax) -> None:
    """AUROC per layer of the original network's feature norms as scores (norm00, norm0, k_bn)."""
    seeds = d.seeds
    scores = [(key, label, style) for key, label, style in
              (("feature_norm", "||x||² (norm00)", "-"), ("patch_norm", "patch energy (norm0)", "--"),
               ("bn_norm", "||BN output||² (k_bn)", ":")) if seeds[key] is not None]
    if not scores:
        ax.set_visible(False)
        return
    layers = np.arange(seeds[scores[0][0]].shape[2])
    for o in range(len(seeds.reported)):
        colour = f"C{o}"
        for key, _, style in scores:
            ax.plot(layers, d.centre(seeds[key][:, 0, :, o, 0]), linestyle=style, color=colour, marker=".",
                    markersize=3)
    d.layer_axis(ax)
    handles = [Line2D([], [], color=f"C{o}") for o in range(len(seeds.reported))]
    handles += [Line2D([], [], color="k", linestyle=style) for _, _, style in scores]
    labels = [seeds.name(t) for t in seeds.reported] + [label for _, label, _ in scores]
    if d.transition is not None:
        handles.append(Line2D([], [], color="0.4", linestyle="--"))
        labels.append("transition layer")
    ax.legend(handles, labels, fontsize=7, ncol=2)
    ax.axhline(0.5, color="0.7", linewidth=0.8)
    ax.set(ylabel="AUROC", title="feature norms of the original network as scores (toolkit extra)")


def _projection_figure(d: Draw, out: Path) -> Path | None:
    """AUROC on the near-OOD set against the residual parameter fraction, one line per layer (seed000 §10)."""
    seeds = d.seeds
    ratio, norm, params = seeds["projection_ratio"], seeds["projection_norm"], seeds["residual_params"]
    if ratio is None or ratio.shape[1] < 2:
        return None
    fig, axes = new_figure(ncols=3, nrows=1, width=4.4, height=3.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x = np.nanmedian(params[:, 1:], axis=0)
    order = np.argsort(x)
    near = seeds.sets.index(seeds.near) if seeds.near in seeds.sets else 0
    L = ratio.shape[2]
    cmap, scale = colormaps["viridis"], Normalize(0, L - 1)
    norm_layer, _ = seeds.norm_layer()
    for ax, values, title, mark in ((axes[0, 0], norm, "projection norm ||V_k^T x||²", norm_layer),
                                    (axes[0, 1], ratio, "projection ratio ||V_k^T x||²/||x||²", L - 1)):
        for layer in range(L):
            centre = d.centre(values[:, 1:, layer, near, 0])[order]
            ax.plot(x[order], centre, color=cmap(scale(layer)), linewidth=0.9, alpha=0.8)
        d.curve(ax, x[order], values[:, 1:, mark, near, 0][:, order], color="k", marker=".", linewidth=2,
                label=f"layer {mark}" + (" (FC input)" if mark == L - 1 else " (fixed)"))
        ax.axhline(0.5, color="0.7", linewidth=0.8)
        _fraction_axis(ax)
        ax.set(xlabel="residual parameter fraction", ylabel=f"AUROC ({seeds.name(seeds.near)})", title=title)
        legend(ax, fontsize=7, loc="lower left")
        fig.colorbar(ScalarMappable(norm=scale, cmap=cmap), ax=ax, label="layer",
                     ticks=MaxNLocator(integer=True))
    accuracy = seeds["accuracy"]
    d.curve(axes[0, 2], x[order], accuracy[:, 1:, 1][:, order], label="rank-truncated, test", marker=".")
    d.curve(axes[0, 2], x[order], accuracy[:, 1:, 0][:, order], label="rank-truncated, train", marker=".",
            linestyle="--")
    axes[0, 2].axhline(d.centre(accuracy[:, 0, 1]), color="grey", linestyle=":", label="original, test")
    _fraction_axis(axes[0, 2])
    axes[0, 2].set(xlabel="residual parameter fraction", ylabel="accuracy", title="low-rank networks")
    legend(axes[0, 2], fontsize=7)
    fig.suptitle(f"{seeds.group.label}: projection scores on the near-OOD set {seeds.name(seeds.near)} for every "
                 f"layer ({d.stat_label} over {_seeds(seeds)} for the black line)")
    return save_figure(fig, out, _stem(seeds, "projection", d.stat))


def _spectra_figure(d: Draw, out: Path) -> Path:
    seeds = d.seeds
    fig, axes = new_figure(ncols=3, nrows=1, width=4.2, height=3.2)
    ax = axes[0, 0]
    for key, label in (("weight_stable_rank", "weights"), ("covariance_stable_rank", "tied feature covariance")):
        values = seeds[key]
        if values is not None:
            d.curve(ax, np.arange(values.shape[1]), values, label=label, marker=".")
    d.layer_axis(ax)
    ax.set(yscale="log", ylabel="stable rank (||·||_F / ||·||_2)²", title="stable rank per layer")
    legend(ax, fontsize=7)
    _cka_last_panel(d, axes[0, 1])
    _prediction_panel(d, axes[0, 2])
    fig.suptitle(f"{seeds.group.label}: spectra, similarity to the last layer, predictions ({d.stat_label}, "
                 f"{_seeds(seeds)})")
    return save_figure(fig, out, _stem(seeds, "spectra", d.stat))


def _cka_last_panel(d: Draw, ax) -> None:
    values = d.seeds["cka"]
    if values is None:
        ax.set_visible(False)
        return
    layers = np.arange(values.shape[2])
    for s, tag in enumerate(str(t) for t in d.seeds.runs[0]["cka_sets"]):
        d.curve(ax, layers, values[:, s, :, -1], label=_set_label(d.seeds, tag))
    d.layer_axis(ax)
    ax.set(ylabel="linear CKA with the FC input", title="CKA of each layer with the last")
    legend(ax, fontsize=7)


def _set_label(seeds: Seeds, tag: str) -> str:
    role = {seeds.group.dataset: "ID test", TRAIN_SET: "ID train"}.get(tag)
    if seeds.sets:
        role = role or {seeds.near: "near-OOD", seeds.sets[-1]: "validation"}.get(tag)
    name = seeds.name(tag) if seeds.sets else tag
    return f"{name} ({role})" if role else name


def _prediction_panel(d: Draw, ax) -> None:
    seeds, fractions = d.seeds, d.seeds["predicted_fraction"]
    if fractions is None:
        ax.set_visible(False)
        return
    names = [seeds.group.dataset, *seeds.reported]
    classes = np.arange(fractions.shape[2])
    width = 0.8 / len(names)
    for s, tag in enumerate(names):
        centre = d.centre(fractions[:, s])
        cv = centre.std() / centre.mean()
        ax.bar(classes + (s - (len(names) - 1) / 2) * width, centre, width=width,
               label=f"{_set_label(seeds, tag)}: CV {cv:.2f}")
    ax.set(xlabel="predicted class", ylabel="fraction of the set", title="predictions of the original network",
           xticks=classes)
    legend(ax, fontsize=7)


def _cka_figure(d: Draw, out: Path) -> Path | None:
    """A linear-CKA heatmap between layers for every set (ID train and test, each OOD set)."""
    seeds, values = d.seeds, d.seeds["cka"]
    if values is None:
        return None
    sets = [str(s) for s in seeds.runs[0]["cka_sets"]]
    ncols = min(3, len(sets))
    nrows = -(-len(sets) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=3.6, height=3.3)
    image = None
    for ax, (s, tag) in zip(axes.flat, enumerate(sets)):
        image = ax.imshow(np.clip(d.centre(values[:, s]), CKA_FLOOR, 1), norm=LogNorm(CKA_FLOOR, 1),
                          origin="lower", cmap="viridis")
        ax.grid(False)
        if d.transition is not None:
            for line in (ax.axvline, ax.axhline):
                line(d.transition, color="w", linestyle="--", linewidth=0.8)
        ax.set(xlabel="layer", ylabel="layer", title=_set_label(seeds, tag))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=ax, label="linear CKA (log scale)")
    for ax in list(axes.flat)[len(sets):]:
        ax.set_visible(False)
    fig.suptitle(f"{seeds.group.label}: linear CKA between layers within each set ({d.stat} over "
                 f"{_seeds(seeds)}; dashed: transition layer)")
    return save_figure(fig, out, _stem(seeds, "cka", d.stat))


def _noise_figure(d: Draw, out: Path) -> Path | None:
    """Top: median chi per layer for each perturbed layer (ID test, near-OOD, ID train); bottom: chi at the logits
    with its +-1 sigma sample quantiles for every set, the log-sensitivity AUROC, and the perturbed layers' key."""
    seeds = d.seeds
    quantiles = seeds["noise_quantiles"]
    if quantiles is None:
        return None
    layers = seeds.runs[0]["noise_layers"]
    noise_sets = [str(s) for s in seeds.runs[0]["noise_sets"]]
    shown = [tag for tag in (seeds.group.dataset, seeds.near if seeds.sets else None, TRAIN_SET)
             if tag in noise_sets]
    fig, axes = new_figure(ncols=3, nrows=2, width=4.2, height=3.3)
    Lp1 = quantiles.shape[3]
    cmap, scale = colormaps["viridis"], Normalize(0, max(len(layers) - 1, 1))
    for ax, tag in zip(axes[0], shown):
        s = noise_sets.index(tag)
        for p, start in enumerate(layers):
            ax.plot(np.arange(start, Lp1), d.centre(quantiles[:, 0, p, start:, s, 0]), color=cmap(scale(p)),
                    marker=".", markersize=3, label=str(start))
        d.layer_axis(ax, f"layer m ({Lp1 - 1} = logits)")
        ax.set(yscale="log", ylim=(1e-5, 1), ylabel="median χ over samples",
               title=f"noise sensitivity, {_set_label(seeds, tag)}")
    for ax in axes[0, len(shown):]:
        ax.set_visible(False)
    ax = axes[1, 0]
    for s, tag in enumerate(noise_sets):
        centre = [d.centre(quantiles[:, 0, :, -1, s, q]) for q in range(3)]
        line = ax.plot(layers, centre[0], marker=".", label=_set_label(seeds, tag))[0]
        ax.fill_between(layers, centre[1], centre[2], color=line.get_color(), alpha=0.15, linewidth=0)
    d.layer_axis(ax, "perturbed layer")
    ax.set(yscale="log", ylabel="χ at the logits", title="χ at the logits: median and ±1σ sample quantiles")
    legend(ax, fontsize=7)
    ax = axes[1, 1]
    metrics = seeds["noise_metrics"]
    if metrics is not None:
        for o, tag in enumerate(seeds.reported):
            d.curve(ax, layers, metrics[:, 0, :, -1, o, 0], label=seeds.name(tag), marker=".")
        ax.axhline(0.5, color="0.7", linewidth=0.8)
        d.layer_axis(ax, "perturbed layer")
        ax.set(ylabel="AUROC of -log χ", title="detection by sensitivity at the logits")
        legend(ax, fontsize=7)
    else:
        ax.set_visible(False)
    key = axes[1, 2]
    handles, labels = axes[0, 0].get_legend_handles_labels()
    key.axis("off")
    key.legend(handles[:len(layers)], labels[:len(layers)], title="perturbed layer (top panels)", loc="center",
               ncol=2, fontsize=8)
    eta = f"η = {float(seeds.runs[0]['noise_eta']):g}" if "noise_eta" in seeds.runs[0] else "relative noise η"
    fig.suptitle(f"{seeds.group.label}: noise sensitivity χ = ||f(x~) - f(x)||² / ||f(x)||² of the original network "
                 f"({eta}; {d.stat} over {_seeds(seeds)})")
    return save_figure(fig, out, _stem(seeds, "noise", d.stat))


def _figures(seeds: Seeds, out: Path) -> list[Path]:
    paths = []
    for stat in ("median", "mean") if seeds.options.mean_std else ("median",):
        d = Draw(seeds, stat)
        for draw in (_detection_figure, _projection_figure, _spectra_figure, _cka_figure, _noise_figure):
            path = draw(d, out)
            if path is not None:
                paths.append(path)
    return paths


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    """Figures per (dataset, model), the main detection table (CSV + markdown); returns the report section."""
    rows, sklearn_rows, csv_rows, sections = [], [], [], []
    for group in groups:
        seeds = Seeds(group, options)
        if not seeds.sets:
            continue
        group_rows, group_sklearn, group_csv, notes = _table(seeds)
        rows += group_rows
        sklearn_rows += group_sklearn
        csv_rows += group_csv
        notes = _choice_notes(seeds) + notes
        t, where = seeds.transition()
        notes.append(f"transition layer {t if t is not None else 'unknown'} ({where}; dashed on every per-layer "
                     "panel)")
        if seeds.incomplete:
            notes.append(f"left out (other stages, flags or OOD sets): {', '.join(seeds.incomplete)}")
        figures = "\n\n".join(f"![{group.label} {path.stem}]({path.name})" for path in _figures(seeds, out))
        sections.append(f"### {group.label} ({_seeds(seeds)}: {', '.join(seeds.names)})\n\nFigures: choices on the "
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
