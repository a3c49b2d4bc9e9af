"""Datasets: `build_dataset(name, split, root)` returns pixel-space images with the normalisation to apply later.

See datasets/registry.py for the table of datasets, datasets/normalization.py for the constants,
datasets/augment.py and datasets/perturbations.py for what happens to a batch on the device.
"""
from datasets.base import ImageData, denormalize, normalize
from datasets.normalization import normalization_for
from datasets.registry import build_dataset, has_ood_sets, list_datasets, near_ood, ood_sets, validation_ood

__all__ = ["ImageData", "build_dataset", "denormalize", "has_ood_sets", "list_datasets", "near_ood",
           "normalization_for", "normalize", "ood_sets", "validation_ood"]
