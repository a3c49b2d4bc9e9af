"""Image classifiers by name: `build_model(name, num_classes, in_channels=3, width=1.0, image_size=32)`,
`list_models()`.

One file per family, each registering its architectures with `@register_model(name)` (models/registry.py).
Every module of this package is imported here, so a new model file registers itself by being added; no list
to edit. Analysis layers of any model: `models.layers.analysis_layers`; checkpoints: `models.weights`.
"""
import importlib
import pkgutil

from models.registry import build_model, list_models, register_model

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["build_model", "list_models", "register_model"]
