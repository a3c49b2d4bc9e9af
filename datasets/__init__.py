"""Dataset registry: `build_dataset(name, split, root)`, `list_datasets()`, `ood_sets(id)`, `near_ood(id)`."""
from datasets.base import ImageData, normalize
from datasets.registry import build_dataset, list_datasets, near_ood, ood_sets

__all__ = ["ImageData", "build_dataset", "list_datasets", "near_ood", "normalize", "ood_sets"]
