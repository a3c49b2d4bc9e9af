"""What the seed000 stages (analyzing.py, features.py, kernels.py) share: their flags and their evaluation sets.

    parser = stage_parser(__doc__)                       # run flags, --start_epoch/--resume/--force, batch and caps
    loaded = LoadedRun.from_args(args, device=resolve_device(args.device))
    sets = evaluation_sets(loaded, args.data_root)       # {"traindata": ..., <dataset>: ..., <ood>: ..., <vflip>: ...}

Evaluation sets (seed000 §3), keyed by their tags in the stage file names (pipeline.contract, e.g.
projections_<tag>_<ds>.npz): TRAIN_SET (the train split, no augmentation), the in-distribution test split (tagged
`test_set_tag(dataset)`), the test split of every OOD set (datasets.ood_sets), then the validation OOD set
(datasets.validation_ood), which chooses d and the rank threshold at averaging time. A dataset without OOD sets
(imagenet, imagefolder:PATH, twopoints) gets only its train and test splits. Images stay in pixel space;
`LoadedRun.inputs` normalises each batch with the run's constants. The readers (reports/seed000.py) tell the
detection sets among the evaluated tags with `detection_sets`.
"""
from __future__ import annotations

from datasets import has_ood_sets, ood_sets, validation_ood
from pipeline.contract import TRAIN_SET
from pipeline.loaded import LoadedRun
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags
from utils.rundir import safe_name

BATCH = 500


def stage_parser(doc: str) -> ToolkitParser:
    """The flags of a seed000 stage: the run (seed000 README), --start_epoch/--resume/--force, batch and caps.

    --num_classes and --width only locate and check the run (LoadedRun.from_args): --width defaults to the run's
    own (utils.cli.add_run_flags), so a run trained at another width needs no flag, and a --width that disagrees
    with it is an error.
    """
    parser = ToolkitParser(description=doc.split("\n\n")[0])
    add_run_flags(parser)
    add_stage_flags(parser)
    parser.add_argument("--batchsize", type=int, default=BATCH, help="images per forward pass")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="use at most the first N images of every evaluation set (default: all)")
    return parser


def check_positive(parser: ToolkitParser, args, *flags: str) -> None:
    """A one-line usage error when an integer flag that must be >= 1 is not."""
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")


def test_set_tag(dataset: str) -> str:
    """The in-distribution test set's tag in file names: the dataset name, made folder-safe
    (imagefolder:/data/x -> imagefolder__data_x)."""
    return safe_name(dataset)


def defined_ood_sets(dataset: str) -> list[str]:
    """datasets.ood_sets(dataset) then datasets.validation_ood(dataset), or [] for a dataset with none defined."""
    return [*ood_sets(dataset), validation_ood(dataset)] if has_ood_sets(dataset) else []


def evaluation_sets(loaded: LoadedRun, data_root: str, with_train: bool = True) -> dict:
    """{TRAIN_SET: train split, test_set_tag(dataset): its test split, <ood>: the test split of every OOD set, then
    of the validation OOD set} (module docstring), each as the network sees it (LoadedRun.dataset)."""
    sets = {TRAIN_SET: loaded.dataset("train", data_root)} if with_train else {}
    sets[test_set_tag(loaded.dataset_name)] = loaded.dataset("test", data_root)
    for ood in defined_ood_sets(loaded.dataset_name):
        sets[ood] = loaded.dataset("test", data_root, name=ood)
    return sets


def detection_sets(dataset: str, evaluated: list[str]) -> list[str]:
    """Among the evaluated tags, the reported OOD sets in evaluation order, then the validation set; [] for a
    dataset without OOD sets."""
    if not has_ood_sets(dataset):
        return []
    validation = validation_ood(dataset)
    return [ds for ds in evaluated if ds not in (TRAIN_SET, dataset, validation)] + [validation]


def set_size(data, max_samples: int | None) -> int:
    """The number of images of `data` a stage reads with --max-samples."""
    return len(data) if max_samples is None else min(len(data), max_samples)
