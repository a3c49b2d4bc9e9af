"""Training recipes of the four papers, as data.

| recipe      | source               | optimiser                          | schedule                        | augmentation   |
|-------------|----------------------|------------------------------------|---------------------------------|----------------|
| seed000     | seed000 §4 (default) | SGD 0.1 m 0.9, wd 5e-4 on all      | cosine per iteration, T=all     | crop+flip+erase|
| seed004     | seed004 §3           | SGD 0.1 m 0.9, wd 5e-4 on dim != 1 | cosine per epoch, T=0.8 epochs  | crop+flip      |
| seed004_fcn | seed004 §3 (FCNs)    | Adam 0.1 (sic, as published), wd 0 | constant                        | crop+flip      |
| twopoints   | seed004 §3           | SGD 0.05 m 0.9, wd 5e-4 on dim != 1| cosine per epoch, T=0.8 epochs  | none, hinge    |
| akamaster   | seed003 §3 (resnet20)| SGD 0.1 m 0.9, wd 1e-4 on all      | x0.1 at epochs 100 and 150      | crop+flip      |
| seed003_selectivity | seed003 §10 (repo 2 fine-tune) | Adam 2e-4, wd 0 | constant, 10 epochs, batch 128 | crop+flip |
| seed002     | seed002 §4           | SGD 0.01 m 0.9, wd 1e-4 on all     | x0.1 every 50 epochs            | crop+flip      |
| seed002_nowd| seed002 §4 ("nowd")  | SGD 0.01 m 0.9, wd 0               | x0.1 every 50 epochs            | crop+flip      |
| seed002_tutorial | seed002 §7      | SGD 0.01 m 0.9, wd 0               | constant                        | none           |

Initialisation is part of a recipe: seed004 and twopoints train from PyTorch's default init of every layer
(seed004 §3; `models.layers.pytorch_default_init_`), seed004_fcn from the FCNs' own mean-field init, and the others
from each architecture's own init (seed000 §4: torchvision's kaiming fan_out for the convs of VGG-bn and ResNet);
seed003_selectivity starts from a trained run's weights instead (train_classifier.py --selectivity_reg).
seed004's recipes keep the best-test-accuracy checkpoint (best.pt) and stop at the first epoch whose mean
training loss is exactly zero. Flags (--lr, --wdecay, --batchsize, --epochs) override a recipe's values.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from utils.errors import ToolkitError


@dataclass(frozen=True)
class Recipe:
    name: str
    epochs: int
    lr: float
    batchsize: int = 128
    optimizer: str = "sgd"            # sgd | adam
    momentum: float = 0.9
    wdecay: float = 5e-4
    wdecay_on_all: bool = True        # False: no weight decay on biases and BN parameters (dim == 1)
    schedule: str = "cosine_iter"     # cosine_iter | cosine_epoch | multistep | step | constant
    cosine_fraction: float = 1.0      # cosine_epoch: T_max = cosine_fraction * epochs
    milestones: tuple[int, ...] = ()  # multistep epochs
    step_size: int = 0                # step: decay every step_size epochs
    gamma: float = 0.1
    crop_padding: int = 4             # 0 disables the random crop
    flip: bool = True
    erasing: bool = False
    loss: str = "cross_entropy"       # cross_entropy | hinge
    normalization: str | None = None  # None: the dataset's own; "imagenet": ImageNet statistics
    init: str = "model"               # model: the architecture's own init (seed000: torchvision's kaiming fan_out for
                                      # VGG-bn and ResNet convs); pytorch: every layer's PyTorch default (seed004 §3)
    keep_best: bool = False
    stop_at_zero_loss: bool = False
    notes: tuple[str, ...] = field(default=())


RECIPES: dict[str, Recipe] = {
    "seed000": Recipe("seed000", epochs=1200, lr=0.1, erasing=True),
    "seed004": Recipe("seed004", epochs=250, lr=0.1, wdecay_on_all=False, schedule="cosine_epoch",
                      cosine_fraction=0.8, init="pytorch", keep_best=True, stop_at_zero_loss=True),
    "seed004_fcn": Recipe("seed004_fcn", epochs=250, lr=0.1, optimizer="adam", wdecay=0.0, schedule="constant",
                          keep_best=True, stop_at_zero_loss=True,
                          notes=("seed004 left Adam at lr 0.1 for the FCNs; kept as published",)),
    "twopoints": Recipe("twopoints", epochs=300, lr=0.05, wdecay_on_all=False, schedule="cosine_epoch",
                        cosine_fraction=0.8, crop_padding=0, flip=False, loss="hinge", init="pytorch",
                        keep_best=True, stop_at_zero_loss=True),
    "akamaster": Recipe("akamaster", epochs=200, lr=0.1, wdecay=1e-4, schedule="multistep", milestones=(100, 150),
                        normalization="imagenet"),
    # repo 2's finetune_with_selectivity_regularizer: the trained net fine-tuned with the selectivity regulariser
    # (train_classifier.py --selectivity_reg; its normalisation is that of the run it starts from)
    "seed003_selectivity": Recipe("seed003_selectivity", epochs=10, lr=2e-4, optimizer="adam", wdecay=0.0,
                                  schedule="constant"),
    "seed002": Recipe("seed002", epochs=150, lr=0.01, wdecay=1e-4, schedule="step", step_size=50,
                      normalization="imagenet"),
    "seed002_nowd": Recipe("seed002_nowd", epochs=150, lr=0.01, wdecay=0.0, schedule="step", step_size=50,
                           normalization="imagenet"),
    "seed002_tutorial": Recipe("seed002_tutorial", epochs=5, lr=0.01, wdecay=0.0, schedule="constant",
                               crop_padding=0, flip=False, normalization="imagenet"),
}


def get_recipe(name: str, **overrides) -> Recipe:
    """The named recipe with the non-None `overrides` (epochs, lr, wdecay, batchsize) applied."""
    if name not in RECIPES:
        raise ToolkitError(f"unknown --recipe {name!r}; choose one of {', '.join(RECIPES)}")
    values = {key: value for key, value in overrides.items() if value is not None}
    recipe = replace(RECIPES[name], **values)
    if recipe.epochs < 1 or recipe.lr <= 0 or recipe.batchsize < 1:
        raise ToolkitError("--epochs and --batchsize must be >= 1 and --lr > 0")
    if recipe.init not in INITS:
        raise ToolkitError(f"recipe init {recipe.init!r} is not one of {INITS}")
    return recipe


INITS = ("model", "pytorch")
