"""Create a run directory from a local weights file, so every measurement stage can read it (issue 10).

    python import_weights.py --model-name torchvision:resnet50 --traindata imagenet --data-root /data \\
        --weights resnet50-19c8e357.pth --seed 0
    python import_weights.py --model-name resnet20 --traindata cifar10 --weights resnet20-12fca82f.th \\
        --seed 0                                      # akamaster's checkpoint: ImageNet statistics (seed003 §3)

The architecture comes from the registry (any registered name or torchvision:<arch>), with num_classes from the
dataset (or --num_classes) and the image size of its test split; the file is read with models.weights.load_weights
(weights_only; plain, wrapped or `module.`-prefixed state dicts; mismatched keys are listed), all through
pipeline.loaded.LoadedRun.from_weights. Nothing is downloaded. The normalisation recorded is the one the weights
were trained with: ImageNet statistics for akamaster's files ({"best_prec1", "state_dict"}; its trainer used them),
the dataset's for any other layout; --normalization overrides it, and a mismatch is stated on stderr.
Writes into <workdir>/<traindata>/<model-name>/rnd<seed>/, every file atomically:
  config.json                 the format of train_classifier.py (utils.rundir.write_config), with recipe
                              {"name": "imported", "loss": "cross_entropy"}, "data" mean/std of the normalisation
                              (above) and "imported": {"weights": the file's absolute path, "sha256": its digest,
                              "normalization": "imagenet" or "dataset"}
  checkpoints/epoch_0001.pt   the imported weights as the one (and last) trained epoch; epoch 0 is the
                              initialisation in a trained run, which an imported run does not have (so stages'
                              --init and stability's --laplacian, which need it, say it is missing)
  checkpoints/last.pt         the same weights, so train_classifier.py refuses to overwrite the run
  _done.json                  the flags, the sha256 and the epoch
No train_log.csv is written: the weights come with no measured accuracy (stability.py then reports None).
The config is written first and _done.json last, so an import killed part-way is simply rerun. An existing run
is kept unless --force, which also deletes its other checkpoints (epoch_*.pt, best.pt) and the done marks of the
stages measured on it (utils.rundir.invalidate_measurements), so those stages recompute on the new weights.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.loaded import IMPORTED_RECIPE, NORMALIZATIONS, LoadedRun
from utils.cli import ToolkitParser, add_run_flags, run_main
from utils.errors import ToolkitError
from utils.io import load_json, save_torch, sha256_of
from utils.rundir import CHECKPOINT_FORMAT, DONE_FILE, RunDir, invalidate_measurements, mark_done, write_config

IMPORTED_EPOCH = 1


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    add_run_flags(parser)
    parser.add_argument("--weights", required=True, help="the state-dict file to import (.pt, .pth, .th)")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                        help="input normalisation the weights were trained with (default: ImageNet's for akamaster's "
                             "files, the dataset's otherwise); a mismatch with the file's layout is stated")
    parser.add_argument("--force", action="store_true", help="replace an existing run at the same place")
    args = parser.parse_args(argv)
    args.width = 1.0 if args.width is None else args.width  # the architecture's width (add_run_flags: stages)
    return args


def unfinished_import(run: RunDir, digest: str) -> bool:
    """True when `run` is an import of the same file that was interrupted before its _done.json."""
    if (run.root / DONE_FILE).is_file() or not run.config.is_file():
        return False
    return load_json(run.config).get("imported", {}).get("sha256") == digest


def main(argv=None) -> int:
    args = parse_args(argv)
    weights = Path(args.weights).resolve()
    if not weights.is_file():
        raise ToolkitError(f"no weights file {args.weights}; pass the path of a downloaded state dict to --weights")
    run = RunDir.from_args(args)
    digest = sha256_of(weights)
    if not args.force and (run.config.is_file() or run.saved_epochs()) and not unfinished_import(run, digest):
        raise ToolkitError(f"{run.root} already holds a run; use another --seed or --workdir, or --force to replace it")

    loaded = LoadedRun.from_weights(run, weights, args.model_name, args.traindata, args.data_root,
                                    num_classes=args.num_classes, width=args.width, normalization=args.normalization)
    config, normalization = loaded.config, loaded.extras["normalization"]
    num_classes = config["model"]["num_classes"]
    if args.force:  # a replaced run's other epochs would otherwise stay "the last epoch"
        invalidate_measurements(run)
        for path in [*map(run.epoch_checkpoint, run.saved_epochs()), run.best]:
            path.unlink(missing_ok=True)

    flags = {"model": args.model_name, "traindata": args.traindata, "seed": args.seed, "width": args.width,
             "recipe": IMPORTED_RECIPE, "corruption": 0.0, "ptr": None, "num_classes": num_classes,
             "normalization": normalization, "weights": str(weights), "sha256": digest}
    write_config(run, "cpu", flags=flags, argv=vars(args), **config,
                 imported={"weights": str(weights), "sha256": digest, "normalization": normalization})
    checkpoint = {"format": CHECKPOINT_FORMAT, "epoch": IMPORTED_EPOCH, "model": loaded.model.state_dict()}
    save_torch(run.epoch_checkpoint(IMPORTED_EPOCH), checkpoint)
    save_torch(run.last, checkpoint)
    mark_done(run.root, flags, sha256=digest, epochs=IMPORTED_EPOCH)
    print(f"{run.root}: imported {weights.name} (sha256 {digest[:12]}...) as epoch {IMPORTED_EPOCH} of "
          f"{args.model_name}, {num_classes} classes")
    return 0


if __name__ == "__main__":
    run_main(main)
