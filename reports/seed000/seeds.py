"""The extracted seed000 arrays of one (dataset, model) group's seeds, pooled by threshold position, with the
selection sets (near-OOD for the paper's choices, validation for the toolkit's) and seed000's fixed layers."""
from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

from measures.spectra import threshold_ratios
from pipeline.contract import load, stage_path
from reports import Group, ReportOptions
from reports.seed000.layout import ALL_METRICS, NORM_LAYER, PAPER_DATASETS, TRANSITION, VARIANT_KEYS
from utils.errors import ToolkitError


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


