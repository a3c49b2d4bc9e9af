"""Train one (dataset, model, seed) run into <workdir>/<dataset>/<model>/rnd<seed>/.

    python train_classifier.py --model-name resnet18 --traindata digits --num_classes 10 --epochs 10 --width 0.25
    python train_classifier.py --model-name resnet18 --traindata cifar10 --num_classes 10 --epochs 1200   # seed000
    python train_classifier.py --model-name resnet20 --traindata cifar10 --recipe akamaster              # seed003
    python train_classifier.py --model-name resnet20 --traindata cifar10 --selectivity_reg -0.1   # seed003 §10

Writes config.json, train_log.csv, checkpoints/epoch_XXXX.pt (epoch 0 = the initialisation, every
--save-every epochs, the --save-epochs and the last), checkpoints/last.pt (every epoch, for --resume) and best.pt
for the seed004 recipes, then _done.json. `--resume` continues exactly where an interrupted run stopped. The
selectivity regulariser (--selectivity_reg, training.selectivity) is run-defining: such runs live in
<model>@si<ALPHA>/ and config.json "flags" records selectivity_reg and selectivity_start. By default it is the
paper's reading (seed003 §10, repo 2's finetune_with_selectivity_regularizer): the trained plain run of the same
dataset, model, seed and other variant flags (<model>/rnd<seed>, its last epoch) is fine-tuned with the regulariser
by recipe seed003_selectivity (Adam, lr 2e-4, 10 epochs, batch 128), fed with that run's normalisation; epoch 0 is
the plain run's network and the flags record the sha256 of its checkpoint, so a retrained plain run is never
mistaken for the start. --selectivity_start scratch trains from initialisation with the regulariser instead
(Leavitt & Morcos's protocol, a toolkit extra).
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
from pipeline.loaded import LoadedRun, checkpoint_path
from training.loop import Speed, TrainData, Trainer
from training.recipes import RECIPES, get_recipe
from training.selectivity import SelectivityRegularizer
from utils.cli import ToolkitParser, add_run_flags, non_negative_float, positive_float, run_main
from utils.device import deterministic_algorithms, make_generator, resolve_device
from utils.errors import ToolkitError
from utils.io import load_json, load_torch, sha256_of
from utils.rundir import (
    DONE_FILE,
    RunDir,
    clear_done,
    invalidate_measurements,
    is_done,
    jsonable,
    mark_done,
    run_variant,
    write_config,
)

SELECTIVITY_STARTS = ("finetune", "scratch")
SELECTIVITY_RECIPE = "seed003_selectivity"


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    add_run_flags(parser)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="hyper-parameters of a paper (default: seed000, twopoints for --traindata twopoints, "
                             f"{SELECTIVITY_RECIPE} for a --selectivity_reg fine-tune)")
    parser.add_argument("--selectivity_start", choices=SELECTIVITY_STARTS, default="finetune",
                        help="with --selectivity_reg: finetune = the paper's reading (seed003 §10): start from the "
                             "trained plain run of the same seed (<model>/rnd<seed>) and fine-tune it with the "
                             f"regulariser ({SELECTIVITY_RECIPE}: Adam 2e-4, 10 epochs, batch 128); scratch = a "
                             "toolkit extra, Leavitt & Morcos's protocol: train from initialisation with the "
                             "regulariser and --recipe (default: finetune)")
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
    if args.compile and args.compile not in torch.compiler.list_backends(exclude_tags=()):
        raise ToolkitError(f"unknown --compile backend {args.compile!r}; use inductor (the default), aot_eager "
                           f"(tracing only) or see torch.compiler.list_backends()")
    return args


def run_flags(args, recipe, start: LoadedRun | None = None) -> dict:
    """The flags that define a run; resuming with different ones is refused."""
    return {"model": args.model_name, "traindata": args.traindata, "seed": args.seed, "width": args.width,
            "recipe": dataclasses.asdict(recipe), "corruption": args.gaussian_corruption_std,
            "ptr": args.ptr if args.traindata == "twopoints" else None, "bf16": args.bf16,
            "channels_last": args.channels_last,
            **({"selectivity_reg": args.selectivity_reg, "selectivity_start": args.selectivity_start}
               if args.selectivity_reg else {}),
            **({"start_sha256": start.extras["sha256"]} if start is not None else {})}


def selectivity_start(args) -> LoadedRun | None:
    """The network a --selectivity_reg fine-tune starts from (seed003 §10): the last epoch of the trained plain run
    of the same dataset, model, seed and other variant flags, with the sha256 of its checkpoint in extras; None
    without the regulariser or with --selectivity_start scratch."""
    if not args.selectivity_reg or args.selectivity_start == "scratch":
        return None
    plain = RunDir.of(args.workdir, args.traindata, args.model_name, args.seed,
                      run_variant(args.traindata, args.gaussian_corruption_std, args.ptr))
    if not (plain.root / DONE_FILE).is_file():
        raise ToolkitError(f"--selectivity_reg fine-tunes the trained plain run {plain.root} (seed003 §10), which is "
                           f"not trained yet: run `python train_classifier.py {' '.join(plain.identity())}` first, "
                           "or pass --selectivity_start scratch (from initialisation, a toolkit extra)")
    start = LoadedRun.open(plain)
    start.extras["sha256"] = sha256_of(checkpoint_path(plain))
    width = start.config["model"]["width"]
    if args.width is not None and args.width != width:
        raise ToolkitError(f"--width {args.width:g} does not match the plain run {plain.root} it fine-tunes "
                           f"(width {width:g}); drop --width")
    args.width = width
    return start


def load_data(args, device, stats: tuple) -> tuple[TrainData, object]:
    """(the train and test splits on `device` with their normalisation `stats` = (mean, std), the train split)."""
    options = {"ptr": args.ptr, "seed": args.seed} if args.traindata == "twopoints" else {}
    train = build_dataset(args.traindata, "train", args.data_root, **options)
    if not hasattr(train, "images"):
        raise ToolkitError(f"{args.traindata} is streamed from image folders; train_classifier.py trains on "
                           "in-memory datasets only (digits, mnist, cifar10, cifar100, svhn, twopoints)")
    test = build_dataset(args.traindata, "test", args.data_root, **options)
    if args.num_classes is not None and args.num_classes != train.num_classes:
        raise ToolkitError(f"--num_classes {args.num_classes} does not match {args.traindata}, "
                           f"which has {train.num_classes} classes")
    mean, std = stats
    shape = (1, -1, 1, 1)
    data = TrainData(to_device(train.images, device), train.labels.to(device), to_device(test.images, device),
                     test.labels.to(device), torch.tensor(mean, device=device).reshape(shape),
                     torch.tensor(std, device=device).reshape(shape))
    return data, train


def main(argv=None) -> int:
    args = parse_args(argv)
    start = selectivity_start(args)
    args.width = 1.0 if args.width is None else args.width
    default_recipe = SELECTIVITY_RECIPE if start else "twopoints" if args.traindata == "twopoints" else "seed000"
    recipe = get_recipe(args.recipe or default_recipe, epochs=args.epochs, lr=args.lr, wdecay=args.wdecay,
                        batchsize=args.batchsize)
    if args.deterministic:
        deterministic_algorithms()
    device = resolve_device(args.device)
    run = RunDir.from_args(args)
    flags = run_flags(args, recipe, start)
    if is_done(run.root, flags) and not args.force:
        print(f"{run.root} is already trained with these flags; nothing to do (use --force to retrain)")
        return 0

    mean, std = ((start.config["data"]["mean"], start.config["data"]["std"]) if start is not None   # its inputs
                 else normalization_for(recipe.normalization, args.traindata))
    data, train = load_data(args, device, (mean, std))
    outputs = 1 if recipe.loss == "hinge" else train.num_classes
    _, channels, height, _ = train.images.shape
    torch.manual_seed(args.seed)
    if start is not None:   # the plain run's trained network (seed003 §10)
        model = start.model
    else:
        model = build_model(args.model_name, num_classes=outputs, in_channels=channels, width=args.width,
                            image_size=height)
        if recipe.init == "pytorch":
            pytorch_default_init_(model)
    model = model.to(device)
    regularizer = SelectivityRegularizer(model, args.selectivity_reg, train.num_classes) if args.selectivity_reg \
        else None
    trainer = Trainer(model, data, recipe, run, make_generator(args.seed), save_every=args.save_every,
                      save_epochs=tuple(args.save_epochs),
                      corruption_std=args.gaussian_corruption_std, progress=not args.no_progress,
                      speed=Speed(bf16=args.bf16, channels_last=args.channels_last, compile=args.compile or "",
                                  deterministic=args.deterministic),
                      regularizer=regularizer)
    resume_from(trainer, run, args, flags)
    if args.force:
        run.discard_checkpoints()
        invalidate_measurements(run)  # measurements of the replaced network are stale
    clear_done(run.root)  # a continued or restarted run is not finished until it ends

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
