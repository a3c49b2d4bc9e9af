"""Model registry: `build_model(name, num_classes, in_channels=3, width=1.0, image_size=32)`, `list_models()`."""
from models import efficientnet, resnet, resnet_cifar, small, vgg  # noqa: F401  (register the families)
from models.registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
