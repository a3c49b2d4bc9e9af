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
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import torch

from datasets import near_ood
from measures.classification import accuracy, predictions
from measures.ood import dims_exp, log_sensitivity_score, metric_vector, msp_score, paper_metric_vector
from measures.spectra import residual_params, stable_rank, threshold_ratios
from pipeline import contract
from pipeline.contract import TRAIN_SET, StageOutput, done, done_record, layer_key, load, stage_path
from pipeline.evaluation import detection_sets, test_set_tag
from pipeline.loaded import LoadedRun, load_config
from reports.seed000.layout import (
    ALL_METRICS,
    KINDS,
    LAYER_SCORES,
    NOISE_QUANTILES,
    PAPER_CAPS,
    RESAMPLE_SEED,
    SPECTRUM_KEEP,
    STAGES,
    VARIANT_KEYS,
)
from utils.errors import ToolkitError
from utils.rundir import RunDir
from utils.taps import capture_inputs


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
    """The analysis caps against seed000's as JSON: the stage's record when it has one, else from its flags; and
    whether the stage let float32 products run in TF32 (--allow-tf32)."""
    flags = record.get("flags", {})
    tf32 = bool(flags.get("allow_tf32", False))
    if "caps" in record and "paper_caps" in record:
        return json.dumps({"caps": record["caps"], "paper_caps": record["paper_caps"], "recorded": True,
                           "allow_tf32": tf32})
    caps = {"ratios": len(flags.get("ratio_index", record.get("variants", [])[1:])),
            **{key: flags.get(key) for key in ("num_grams", "num_stability", "stability_variants", "max_samples")}}
    return json.dumps({"caps": caps, "paper_caps": PAPER_CAPS, "recorded": False, "allow_tf32": tf32})


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
        denominators = {"projection_ratio": uncompressed_norm0,
                        "projection_ratio_own": {ds: proj[ds]["norm0"] for ds in (dataset, *sets)}}
        for key, column in LAYER_SCORES.items():
            if column not in proj[dataset]:
                continue  # bn_norm: written by newer analysis stages only
            denominator = denominators.get(key)
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
        dist = {ds: load(run, "features", "mahalanobis", layer=layer_key(layer), ds=ds) for ds in (dataset, *sets)}
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


