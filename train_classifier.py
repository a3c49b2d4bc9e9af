"""Train one (dataset, model, seed) run into <workdir>/<dataset>/<model>/rnd<seed>/.

    python train_classifier.py --model-name resnet18 --traindata digits --num_classes 10 --epochs 10 --width 0.25
    python train_classifier.py --model-name resnet18 --traindata cifar10 --num_classes 10 --epochs 1200   # seed000
    python train_classifier.py --model-name resnet20 --traindata cifar10 --recipe akamaster              # seed003
    python train_classifier.py --model-name resnet20 --traindata cifar10 --selectivity_reg -0.1   # seed003 §10

Writes config.json, train_log.csv, checkpoints/epoch_XXXX.pt (epoch 0 = the initialisation, every
--save-every epochs, the --save-epochs and the last), checkpoints/last.pt (every epoch, for --resume) and best.pt
for the seed004 recipes, then _done.json. `--resume` continues exactly where an interrupted run stopped. The
selectivity regulariser (--selectivity_reg, training.selectivity) is run-defining: such runs live in
<model>@si<ALPHA>/ and config.json "flags" records selectivity_reg.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from datasets import build_dataset
from datasets.base import to_device
from datasets.normalization import normalization_for
from models import build_model
from models.layers import pytorch_default_init_
from training.loop import Speed, TrainData, Trainer
from training.recipes import RECIPES, get_recipe
from training.selectivity import SelectivityRegularizer
from utils.cli import ToolkitParser, add_run_flags, non_negative_float, positive_float, run_main
from utils.device import deterministic_algorithms, make_generator, resolve_device
from utils.errors import ToolkitError
from utils.io import load_json, load_torch
from utils.rundir import RunDir, clear_done, invalidate_measurements, is_done, jsonable, mark_done, write_config


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    add_run_flags(parser)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="hyper-parameters of a paper (default: seed000, or twopoints for --traindata twopoints)")
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the recipe's)")
    parser.add_argument("--lr", type=positive_float, default=None, help="initial learning rate (default: the recipe's)")
    parser.add_argument("--wdecay", type=non_negative_float, default=None, help="weight decay (default: the recipe's)")
    parser.add_argument("--batchsize", type=int, default=None, help="batch size (default: the recipe's, 128)")
    parser.add_argument("--save-every", type=int, default=0,
                        help="keep checkpoints/epoch_XXXX.pt every N epochs (0: only the first and the last)")
    parser.add_argument("--save-epochs", type=int, nargs="+", default=[], metavar="EPOCH",
                        help="also keep checkpoints/epoch_XXXX.pt at these epochs (seed002 §4: 0 1 2 5 10 20 50 100)")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast of forward and loss (weights and optimiser stay float32); for GPUs")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels_last memory layout for the convolutions (faster on recent GPUs, and on CPU: "
                             "1.36x for resnet18 at width 0.25 on one core; reproduce.py's demo uses it)")
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                        help="torch.compile the forward passes with this backend (default inductor; it pays off "
                             "on GPUs over many epochs, and the first batches compile for about a minute); an "
                             "execution choice like --device, not a run flag")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms on CUDA (cuBLAS workspace setting, no cuDNN autotuning, global "
                             "average pooling as a plain mean): a GPU run is then repeatable bit for bit on the same "
                             "GPU and software, somewhat slower; CPU runs are repeatable without it; an execution "
                             "choice like --device, not a run flag")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoints/last.pt if it exists")
    parser.add_argument("--start_epoch", type=int, default=None,
                        help="with --resume: restart from checkpoints/epoch_XXXX.pt of this epoch instead")
    parser.add_argument("--force", action="store_true", help="retrain from scratch even if the run exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    args.width = 1.0 if args.width is None else args.width
    if args.compile and args.compile not in torch.compiler.list_backends(exclude_tags=()):
        raise ToolkitError(f"unknown --compile backend {args.compile!r}; use inductor (the default), aot_eager "
                           f"(tracing only) or see torch.compiler.list_backends()")
    return args


def run_flags(args, recipe) -> dict:
    """The flags that define a run; resuming with different ones is refused."""
    return {"model": args.model_name, "traindata": args.traindata, "seed": args.seed, "width": args.width,
            "recipe": dataclasses.asdict(recipe), "corruption": args.gaussian_corruption_std,
            "ptr": args.ptr if args.traindata == "twopoints" else None, "bf16": args.bf16,
            "channels_last": args.channels_last,
            **({"selectivity_reg": args.selectivity_reg} if args.selectivity_reg else {})}


def load_data(args, recipe, device) -> tuple[TrainData, object]:
    options = {"ptr": args.ptr, "seed": args.seed} if args.traindata == "twopoints" else {}
    train = build_dataset(args.traindata, "train", args.data_root, **options)
    if not hasattr(train, "images"):
        raise ToolkitError(f"{args.traindata} is streamed from image folders; train_classifier.py trains on "
                           "in-memory datasets only (digits, mnist, cifar10, cifar100, svhn, twopoints)")
    test = build_dataset(args.traindata, "test", args.data_root, **options)
    if args.num_classes is not None and args.num_classes != train.num_classes:
        raise ToolkitError(f"--num_classes {args.num_classes} does not match {args.traindata}, "
                           f"which has {train.num_classes} classes")
    mean, std = normalization_for(recipe.normalization, args.traindata)
    shape = (1, -1, 1, 1)
    data = TrainData(to_device(train.images, device), train.labels.to(device), to_device(test.images, device),
                     test.labels.to(device), torch.tensor(mean, device=device).reshape(shape),
                     torch.tensor(std, device=device).reshape(shape))
    return data, train


def main(argv=None) -> int:
    args = parse_args(argv)
    default_recipe = "twopoints" if args.traindata == "twopoints" else "seed000"
    recipe = get_recipe(args.recipe or default_recipe, epochs=args.epochs, lr=args.lr, wdecay=args.wdecay,
                        batchsize=args.batchsize)
    if args.deterministic:
        deterministic_algorithms()
    device = resolve_device(args.device)
    run = RunDir.from_args(args)
    flags = run_flags(args, recipe)
    if is_done(run.root, flags) and not args.force:
        print(f"{run.root} is already trained with these flags; nothing to do (use --force to retrain)")
        return 0

    data, train = load_data(args, recipe, device)
    outputs = 1 if recipe.loss == "hinge" else train.num_classes
    _, channels, height, _ = train.images.shape
    torch.manual_seed(args.seed)
    model = build_model(args.model_name, num_classes=outputs, in_channels=channels, width=args.width,
                        image_size=height)
    if recipe.init == "pytorch":
        pytorch_default_init_(model)
    model = model.to(device)
    trainer = Trainer(model, data, recipe, run, make_generator(args.seed), save_every=args.save_every,
                      save_epochs=tuple(args.save_epochs),
                      corruption_std=args.gaussian_corruption_std, progress=not args.no_progress,
                      speed=Speed(bf16=args.bf16, channels_last=args.channels_last, compile=args.compile or "",
                                  deterministic=args.deterministic),
                      regularizer=SelectivityRegularizer(model, args.selectivity_reg) if args.selectivity_reg else None)
    resume_from(trainer, run, args, flags)
    if args.force:
        run.discard_checkpoints()
        invalidate_measurements(run)  # measurements of the replaced network are stale
    clear_done(run.root)  # a continued or restarted run is not finished until it ends

    mean, std = normalization_for(recipe.normalization, args.traindata)
    write_config(run, device, flags=flags, argv=vars(args),
                 model={"name": args.model_name, "outputs": outputs, "num_classes": train.num_classes,
                        "in_channels": channels, "image_size": height, "width": args.width},
                 data={"name": args.traindata, "mean": list(mean), "std": list(std), "train_size": len(train.labels)},
                 recipe=dataclasses.asdict(recipe))
    started = time.perf_counter()
    test_acc = trainer.run()
    mark_done(run.root, flags, test_acc=test_acc, epochs=trainer.state.epoch)
    print(f"{run.root}: test accuracy {test_acc:.4f} after {trainer.state.epoch} epochs "
          f"({time.perf_counter() - started:.1f} s)")
    return 0


def resume_from(trainer: Trainer, run: RunDir, args, flags: dict) -> None:
    """Restore last.pt (or epoch_XXXX.pt with --start_epoch) when --resume; refuse to overwrite otherwise."""
    exists = run.last.is_file()
    if args.force or not (exists or args.start_epoch is not None):
        return
    if not args.resume:
        raise ToolkitError(f"{run.root} already holds a run; pass --resume to continue it or --force to restart")
    if run.config.is_file() and load_json(run.config).get("flags") != jsonable(flags):
        raise ToolkitError(f"{run.root} was trained with other flags (see its config.json); "
                           "use another --seed or --workdir, or --force to restart")
    if args.start_epoch is not None:
        path = run.epoch_checkpoint(args.start_epoch)
        if not path.is_file():
            raise ToolkitError(f"--start_epoch {args.start_epoch}: no checkpoint {path}; "
                               f"kept epochs: {run.saved_epochs() or 'none'}")
        trainer.model.load_state_dict(load_torch(path)["model"])
        trainer.state.epoch = args.start_epoch
        return
    trainer.load_checkpoint_dict(load_torch(run.last))


if __name__ == "__main__":
    run_main(main)
