"""seed000's constants for its report: the metric names of the extract file's metric axis, the paper's layer
tables (transition layer, fixed norm layer) per (model, ID dataset), the protocols of the table's rows, and the
extract file's layout version."""
from __future__ import annotations

from measures.ood import METRIC_NAMES
from pipeline import contract

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
# seed000 §6's sizes, used only when the analysis stage does not record its own `paper_caps`
PAPER_CAPS = {"ratios": 53, "num_grams": 10000, "num_stability": 10000, "stability_variants": "every",
              "max_samples": None}
VARIANT_KEYS = ("accuracy", "residual_params", "msp", "projection_ratio", "projection_ratio_own", "projection_norm",
                "feature_norm", "patch_norm", "bn_norm", "noise_quantiles", "noise_metrics")
LAYER_SCORES = {"projection_ratio": "norm1", "projection_ratio_own": "norm1", "projection_norm": "norm1",
                "feature_norm": "norm00", "patch_norm": "norm0", "bn_norm": "norm00_bn"}


FORMAT = 2   # 2: 26 metrics (the paper's reading, then scikit-learn's) and projection_ratio_own


