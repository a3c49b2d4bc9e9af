"""What the seed000 stages (analyzing.py, features.py, kernels.py) share: their flags and their evaluation sets.

    parser = stage_parser(__doc__)                       # run flags, --start_epoch/--resume/--force, batch, caps, OOD
    loaded = LoadedRun.from_args(args, device=resolve_device(args.device))
    choice = ood_choice(loaded, args)                    # the OOD sets (datasets.ood_choice), its note on stderr
    flags.update(choice_flags(choice))                   # a change of OOD sets recomputes the stage
    sets = evaluation_sets(loaded, args.data_root, choice)   # {"traindata": ..., <dataset>: ..., <ood tags>: ...}
    out.done(..., **choice_summary(choice))              # ood_sets, near_ood, validation_ood, ood_note, ood_tags

Evaluation sets (seed000 §3), keyed by their tags in the stage file names (pipeline.contract, e.g.
projections_<tag>_<ds>.npz): TRAIN_SET (the train split, no augmentation), the in-distribution test split (tagged
`test_set_tag(dataset)`), the test split of every reported OOD set, then the validation OOD set, which chooses d and
the rank threshold at averaging time. The OOD sets are `datasets.ood_choice.choose_ood(dataset, --data-root,
--ood-sets, --near-ood, --validation-ood)`: by default the paper's (datasets.ood_sets, near_ood, validation_ood), for
MNIST without the CIFAR/SVHN files an offline stand-in (with a note), or the user's (any registered dataset or
`imagefolder:PATH`, a class-less folder of images, resized and centre-cropped to the network's size as OpenOOD
does), each built by `build_ood_set` (labels -1).
An OOD set's tag is `set_tag(name)`: the name made folder-safe (utils.rundir.safe_name; imagefolder:/data/x ->
imagefolder__data_x, cut to 120 characters plus a hash when longer); the stages record the mapping tag -> name in
their _done.json (`ood_tags`). A dataset without OOD sets (imagenet, imagefolder:PATH, twopoints) and no --ood-sets
gets only its train and test splits. Images stay in pixel space; `LoadedRun.inputs` normalises each batch with the
run's constants. The readers (reports/seed000/) tell the detection sets among the evaluated tags with
`detection_sets(dataset, evaluated, record)` and the near-OOD set with `near_set(dataset, record)`, passing a
stage's _done.json record so that the user's choice is honoured.
"""
from __future__ import annotations

import hashlib
import sys

from datasets import has_ood_sets, near_ood, validation_ood
from datasets.ood_choice import OODChoice, build_ood_set, choose_ood
from pipeline.contract import TRAIN_SET
from pipeline.loaded import LoadedRun
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags
from utils.errors import ToolkitError
from utils.rundir import safe_name

BATCH = 500
TAG_LENGTH = 120  # longer tags (deep imagefolder paths) are cut and end in a hash of the name


def stage_parser(doc: str, ood: bool = True, reads_images: bool = True) -> ToolkitParser:
    """The flags of a seed000 stage: the run (seed000 README), --start_epoch/--resume/--force, batch and caps, and
    (with `ood`) the OOD sets --ood-sets/--near-ood/--validation-ood. A stage that reads no images
    (`reads_images=False`: kernels.py, from analyzing.py's stored Gram data) accepts --batchsize and --max-samples
    only so that the three stages share one command line, and says so in --help.

    --num_classes and --width only locate and check the run (LoadedRun.from_args): --width defaults to the run's
    own (utils.cli.add_run_flags), so a run trained at another width needs no flag, and a --width that disagrees
    with it is an error.
    """
    parser = ToolkitParser(description=doc.split("\n\n")[0])
    add_run_flags(parser)
    add_stage_flags(parser)
    unused = "" if reads_images else " [accepted so that the seed000 stages share one command line; this stage " \
        "reads analyzing.py's stored Gram data and uses no images: it does nothing here]"
    parser.add_argument("--batchsize", type=int, default=BATCH,
                        help="images per forward pass (seed000: 128; BN runs in eval mode, so it changes nothing "
                             "but the speed)" + unused)
    parser.add_argument("--max-samples", type=int, default=None,
                        help="use at most the first N images of every evaluation set (default: all)" + unused)
    if ood:
        parser.add_argument("--ood-sets", nargs="+", default=None, metavar="NAME",
                            help="the reported OOD sets: registered datasets or imagefolder:PATH (a folder of images, "
                                 "sub-folders included, classes ignored; other sizes are resized and centre-cropped "
                                 "to the network's, as OpenOOD does); default: the "
                                 "paper's (seed000 §3), or for MNIST without the CIFAR/SVHN files an offline stand-in")
        parser.add_argument("--near-ood", default=None, metavar="NAME",
                            help="the near-OOD set among the reported ones (seed000's dataref; default: the paper's, "
                                 "or the first of --ood-sets)")
        parser.add_argument("--validation-ood", default=None, metavar="NAME",
                            help="the set that chooses d and the rank threshold, never reported (default: "
                                 "<dataset>_vflip, the test images upside down)")
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


def set_tag(name: str) -> str:
    """An OOD set's tag in file names: safe_name(name), cut to TAG_LENGTH characters plus '-' and 8 hex digits of
    the name's SHA-1 when longer (so a deep folder path still gives a short, distinct, folder-safe tag)."""
    tag = safe_name(name)
    if len(tag) <= TAG_LENGTH:
        return tag
    return f"{tag[:TAG_LENGTH]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def ood_choice(loaded: LoadedRun, args) -> OODChoice | None:
    """The OOD sets of this measurement (datasets.ood_choice.choose_ood on the stage's flags); its note, when it has
    one (the offline stand-in, an implied --near-ood), goes to stderr as one line. None: no OOD sets."""
    choice = choose_ood(loaded.dataset_name, args.data_root, getattr(args, "ood_sets", None),
                        getattr(args, "near_ood", None), getattr(args, "validation_ood", None))
    if choice is not None:
        tags = [test_set_tag(loaded.dataset_name), TRAIN_SET, *map(set_tag, choice.evaluated)]
        clashes = sorted({tag for tag in tags if tags.count(tag) > 1})
        if clashes:
            raise ToolkitError(f"the evaluation sets {', '.join(choice.evaluated)} give the same file tag "
                               f"{clashes[0]}; rename one of the folders")
        if choice.note:
            print(f"note: {choice.note}", file=sys.stderr)
    return choice


def choice_flags(choice: OODChoice | None) -> dict:
    """The OOD choice as a stage records it among its flags (a change recomputes the stage)."""
    return choice.flags() if choice is not None else {"ood_sets": [], "near_ood": None, "validation_ood": None}


def choice_summary(choice: OODChoice | None) -> dict:
    """The OOD choice as a stage writes it into its _done.json summary, for the reports to name the sets:
    ood_sets (reported names, in order), near_ood, validation_ood (names), ood_note (why the sets are not the
    paper's, or ""), ood_tags {file tag: name} of every evaluated OOD set."""
    if choice is None:
        return {"ood_sets": [], "near_ood": None, "validation_ood": None, "ood_note": "", "ood_tags": {}}
    return {**choice.flags(), "ood_note": choice.note, "ood_tags": {set_tag(name): name for name in choice.evaluated}}


def evaluation_sets(loaded: LoadedRun, data_root: str, choice: OODChoice | None = None,
                    with_train: bool = True) -> dict:
    """{TRAIN_SET: train split, test_set_tag(dataset): its test split, set_tag(ood): the test images of every OOD
    set of `choice` (reported ones, then the validation set; build_ood_set, labels -1)} (module docstring), each
    as the network sees it (LoadedRun.dataset; the OOD sets at the run's image size and channels)."""
    sets = {TRAIN_SET: loaded.dataset("train", data_root)} if with_train else {}
    sets[test_set_tag(loaded.dataset_name)] = loaded.dataset("test", data_root)
    if choice is not None:
        spec = loaded.config["model"]
        for name in choice.evaluated:
            sets[set_tag(name)] = build_ood_set(name, data_root, spec["image_size"], spec["in_channels"])
    return sets


def _recorded(record: dict | None) -> bool:
    return bool(record) and bool(record.get("validation_ood"))


def detection_sets(dataset: str, evaluated: list[str], record: dict | None = None) -> list[str]:
    """Among the evaluated tags, the reported OOD sets in evaluation order, then the validation set; [] when there
    are none. With a stage's _done.json `record` that names its OOD choice (choice_summary), that choice;
    otherwise (older records) the dataset's defaults."""
    if _recorded(record):
        reported = [set_tag(name) for name in record["ood_sets"]]
        return [ds for ds in evaluated if ds in reported] + [set_tag(record["validation_ood"])]
    if record is not None and "validation_ood" in record or not has_ood_sets(dataset):
        return []
    validation = validation_ood(dataset)
    return [ds for ds in evaluated if ds not in (TRAIN_SET, dataset, validation)] + [validation]


def near_set(dataset: str, record: dict | None = None) -> str | None:
    """The near-OOD set's tag (seed000's dataref): the record's choice, else the dataset's default; None when the
    measurement has no OOD sets."""
    if _recorded(record):
        return set_tag(record["near_ood"])
    if record is not None and "validation_ood" in record or not has_ood_sets(dataset):
        return None
    return near_ood(dataset)


def set_size(data, max_samples: int | None) -> int:
    """The number of images of `data` a stage reads with --max-samples."""
    return len(data) if max_samples is None else min(len(data), max_samples)
