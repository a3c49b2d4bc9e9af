"""Class-specific filters (seed003, "Decomposing the Deep"): indices, validate, finetune, essential.

    python decompose.py indices   --model-name resnet20 --traindata cifar10 --seed 0    # k = 5, 10, ..., 30
    python decompose.py validate  --model-name resnet20 --traindata cifar10 --seed 0
    python decompose.py essential --model-name resnet20 --traindata cifar10 --seed 0
    python decompose.py finetune  --model-name resnet20 --traindata cifar10 --seed 0 -k 5 --epochs 10 --lr 1e-4
    python decompose.py validate  --model-name resnet20 --traindata cifar10 --weights resnet20-12fca82f.th \\
        --indices resnet20_cifar-10_indices.json    # akamaster's file: ImageNet statistics, as it was trained
    python decompose.py indices   --model-name resnet20 --traindata cifar10 --csg-gates gates.npy \\
        --csg-weights best_save_CSG.pth -k 5        # the CSG sets (smallest gates), scored on the CSG net (§7-8)

The network is a trained run (<workdir>/<dataset>/<model>/rnd<seed>, pipeline.loaded.LoadedRun.from_args) or,
with --weights, any checkpoint file of a registered architecture (the akamaster `{"state_dict"}` format included;
LoadedRun.from_weights, epoch -1 in the stage's _done.json). It is fed with the statistics it was trained with
(config.json "data"; for --weights ImageNet's for akamaster's files, as akamaster's trainer used, else the
dataset's) unless --normalization asks for others (stated on stderr); every stage's _done.json records the mean and
std it used. Outputs go to the run folder's decompose/<subcommand>/ either way (names: pipeline.contract, stages
decompose-<subcommand>). Filter sets of CSG (--csg-gates, or --source csg) are kept apart from ours: the same
files under decompose/csg/<subcommand>/ (stages decompose-csg-<subcommand>); validate, essential and finetune
read the indices of --source (default ours). A CSG set is the k SMALLEST gates of its class, as in the paper's code
(§8, §12.2; --csg-order largest, Liang et al.'s reading, is a toolkit extra). The paper scores the CSG sets on the
CSG-trained ResNet-20 (§7-8): --csg-weights FILE makes the csg stages measure that network; without it they measure
the run's own network (a departure; _done.json records csg_weights and the report says which). The head must have
one output per class (a one-output hinge head has no class-specific sets). The features are the
global-average-pooled input of the classifier (the output of --layer for `indices`). Finetuning runs the training
loop's epochs (training.loop.Trainer, writing nothing into the run). Files written (documented here only):
- indices/indices.json      {"<k>": {"<class>": [filter, ...]}}: S_c per k (§4; from --indices or --csg-gates if given)
- indices/indices.npz       histograms_<k> (classes, D) top-k vote counts the sets were read from (computed sets
                            only), fc_topk_overlap_<k> (classes,)
- indices/summary.json      per k: mutual information with/without self-pairs (§9), union size, mean overlap;
                            psi selectivity at 0.5 and the class-selectivity index of the layer (§10)
- indices/selectivity.npz   psi at 0.5 and the mean class-selectivity index of EVERY analysis layer (its input,
                            spatially averaged, from the same pass over the train split; §10), per-unit SI
- validate/validate.json    full and decomposed test accuracy per k (§5), gathered and masked forms' max gap
- essential/essential.json  per k and class: images still classified correctly when S_c (noise_at_inf) or the
                            other features (noise_at_noninf) are replaced by N(0, 1) (§7), out of n
- finetune/finetune.json    per k: accuracy before and after each epoch of Adam finetuning (§6);
  finetune/finetuned_k<k>.pt the finetuned backbone + decomposed head (tensors only)
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from datasets.base import to_device
from measures import decomposition as dec
from pipeline import contract
from pipeline.contract import layer_key
from pipeline.loaded import NORMALIZATIONS, LoadedRun, choose_normalization
from training.loop import TrainData, Trainer, evaluate
from training.recipes import Recipe
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, run_main
from utils.device import make_generator, measurement_device
from utils.errors import ToolkitError
from utils.io import load_json, load_torch
from utils.rundir import RunDir, recorded_flags
from utils.taps import LayerTaps, spatial_mean

BATCH = 500
VAL_TRANSFORMS = ("crop", "squash")
SUBCOMMANDS = ("indices", "validate", "finetune", "essential")
CSG_ORDERS = ("smallest", "largest")


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=SUBCOMMANDS, help="what to compute")
    add_run_flags(parser, default_model="resnet20")
    parser.set_defaults(width=None)  # the run's own (checked against config.json); 1 for --weights
    add_stage_flags(parser)
    parser.add_argument("-k", type=float, nargs="+", default=None,
                        help="filters per class: integers, or fractions in (0, 1) of the L1 mass (§4) (default: the "
                             "paper's grid, 5..30 for CIFAR-10 and other small sets, 10..100 for ImageNet, 5..50 "
                             "for Tiny-ImageNet)")
    parser.add_argument("--layer", default=None,
                        help="indices only: module whose GAP output is analysed (default: the classifier input)")
    parser.add_argument("--weights", default=None, help="a checkpoint file instead of the run's own weights")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                        help="input statistics to use instead of those the network was trained with (the run's "
                             "config.json; with --weights ImageNet's for akamaster's files, else the dataset's); "
                             "a mismatch is stated on stderr")
    parser.add_argument("--indices", default=None, help="JSON file of filter sets to use instead of computing them")
    parser.add_argument("--csg-gates", default=None,
                        help="a (classes, filters) CSG gate matrix (.npy, or .pt/.pth holding it or a dict with it "
                             "under 'csg'); sets = the k smallest gates, as the paper's code (§8, §12.2)")
    parser.add_argument("--csg-order", choices=CSG_ORDERS, default="smallest",
                        help="which gates make a CSG set: smallest = the paper's (its sets, argsort(1)[:, :k], §8); "
                             "largest = a toolkit extra, Liang et al.'s reading (a large gate = the filter belongs "
                             "to the class) (default: smallest)")
    parser.add_argument("--csg-weights", default=None,
                        help="the CSG-trained network's weights (§7-8: the paper scores the CSG sets on it): with "
                             "--source csg, validate, essential, finetune and indices' summary measure this network "
                             "instead of the run's (default: the run's own network, a departure the report names)")
    parser.add_argument("--source", choices=contract.DECOMPOSE_SOURCES, default=None,
                        help="whose filter sets: ours (computed, or --indices) or csg (--csg-gates, or --indices "
                             "with CSG sets); each has its own outputs (default: csg with --csg-gates, else ours)")
    parser.add_argument("--epochs", type=int, default=10, help="finetune: epochs")
    parser.add_argument("--lr", type=float, default=2e-4, help="finetune: Adam learning rate")
    parser.add_argument("--batchsize", type=int, default=64, help="finetune: batch size")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="use at most this many images of each split (streamed ImageNet-scale data)")
    parser.add_argument("--noise-seed", type=int, default=0, help="essential/finetune: generator seed")
    parser.add_argument("--val-transform", choices=VAL_TRANSFORMS, default="crop",
                        help="image folders (imagenet, imagefolder:PATH): crop = Resize(256) + CenterCrop(224); "
                             "squash = Resize((224, 224)) without a crop, as the original code (§11; it scores "
                             "below the usual top-1)")
    args = parser.parse_args(argv)
    if args.indices and args.csg_gates:
        parser.error("give the filter sets by --indices or by --csg-gates, not both")
    if args.csg_gates and args.source == "ours":
        parser.error("--csg-gates gives CSG filter sets; drop --source ours")
    args.source = args.source or ("csg" if args.csg_gates else "ours")
    if args.csg_weights and args.source != "csg":
        parser.error("--csg-weights is the network the CSG sets are scored on; add --source csg (or --csg-gates)")
    if args.command == "indices" and args.source == "csg" and not (args.csg_gates or args.indices):
        parser.error("indices --source csg reads the CSG sets from --csg-gates FILE (or --indices FILE)")
    if args.k is not None and any(k <= 0 or (k >= 1 and k != int(k)) for k in args.k):
        parser.error("-k takes integers >= 1 or fractions in (0, 1)")
    return args


def default_k_grid(dataset: str) -> list[float]:
    """The paper's k grid (l1_norm.py, spec §4): ImageNet 10, 20, ..., 100; Tiny-ImageNet 5, 10, ..., 50;
    CIFAR-10 5, 10, ..., 30, also for every other (small) dataset. Folder datasets are told by name."""
    name = dataset.lower()
    if "imagenet" in name:
        return [float(k) for k in (range(5, 51, 5) if "tiny" in name else range(10, 101, 10))]
    return [float(k) for k in range(5, 31, 5)]


def requested_ks(args) -> list[float]:
    """-k as given, else the default grid of the dataset."""
    return list(args.k) if args.k is not None else default_k_grid(args.traindata)


# ---- the network and its data ------------------------------------------------------------------------
def open_network(args, device) -> LoadedRun:
    """The run's trained model (its flags checked), or --weights loaded into the registry architecture; fed with
    the statistics it was trained with unless --normalization (stated on stderr) asks for others; outputs go to
    the run folder either way. Decomposition needs a multi-class head."""
    weights = args.csg_weights or args.weights   # --csg-weights: the CSG net scores the CSG sets (§7-8)
    if weights is None:
        loaded = LoadedRun.from_args(args, device=device)
        data = loaded.config["data"]
        if args.normalization is not None:
            data["mean"], data["std"] = choose_normalization(args.normalization, (data["mean"], data["std"]),
                                                             split_of(args, loaded, "test"),
                                                             str(loaded.run.config))
    else:
        run = RunDir.from_args(args)
        loaded = LoadedRun.from_weights(run, weights, args.model_name, args.traindata, args.data_root,
                                        num_classes=args.num_classes, width=args.width,
                                        normalization=args.normalization, device=device)
    if loaded.loss == "hinge" or loaded.config["model"]["outputs"] < 2:
        raise ToolkitError(f"decomposition needs a multi-class head (one output per class); {loaded.run.root} has "
                           "a one-output hinge head, for which class-specific filter sets are undefined")
    return loaded


def split_of(args, loaded: LoadedRun, split: str):
    """A split of the run's dataset as decompose reads it: unaugmented, folders with --val-transform (§11)."""
    return loaded.dataset(split, args.data_root, squash=args.val_transform == "squash")


def classifier_of(loaded: LoadedRun) -> nn.Linear:
    """The classifier: the last analysis weight layer, which must be a Linear layer."""
    last = loaded.layers[-1]
    if not isinstance(last, nn.Linear):
        raise ToolkitError(f"the last weight layer of {type(loaded.model).__name__} is not a Linear classifier")
    return last


def named_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise ToolkitError(f"--layer {name!r} is not a module of the model; e.g. {', '.join(list(modules)[1:6])}")
    return modules[name]


@torch.no_grad()
def gap_features(loaded: LoadedRun, module, data, max_samples=None, capture="input",
                 per_layer: dec.LayerSelectivity | None = None):
    """(GAP features (N, D), logits (N, classes), labels (N,)): one forward pass per batch, eval mode, no
    augmentation; in-memory or streamed data alike (the first `max_samples`). `per_layer`, when given, is fed
    the spatially averaged input of every analysis layer in the same pass (seed003 §10). The pooled rows stay on
    the device until the set is done and come to the CPU in one copy each (no host sync per batch, issue 27)."""
    feats, logits, labels = [], [], []
    for _, x, batch_labels in loaded.batches(data, BATCH, max_samples, desc=f"features {data.name}"):
        with LayerTaps([module], reduce=spatial_mean, capture=capture) as taps, \
                LayerTaps(loaded.layers if per_layer is not None else [], reduce=spatial_mean) as layer_taps:
            logits.append(loaded.model(x).float())          # (B, classes)
        if per_layer is not None:
            per_layer.update([value.float() for value in layer_taps.values], batch_labels)
        feats.append(taps.values[0].float())                # (B, D)
        labels.append(batch_labels)
    return torch.cat(feats).cpu(), torch.cat(logits).cpu(), torch.cat(labels).cpu()


def layer_selectivity(loaded: LoadedRun, per_layer: dec.LayerSelectivity) -> dict:
    """The indices stage's selectivity file (pipeline.contract): Psi(0.5) and the mean class selectivity index
    of every analysis layer (seed003 §10), NaN for a layer that took negative values (the network input)."""
    signed = torch.tensor(per_layer.signed())
    units = per_layer.unit_selectivity()
    mean_si = torch.stack([u.mean() for u in units])
    return {"names": loaded.layer_names, "widths": per_layer.widths(), "signed": signed,
            "psi": torch.where(signed, torch.nan, per_layer.psi()),
            "class_selectivity": torch.where(signed, torch.nan, mean_si),
            **{layer_key(layer, "unit_si"): u for layer, u in enumerate(units)}}


# ---- filter sets ---------------------------------------------------------------------------------------
def k_label(k: float) -> str:
    return str(int(k)) if k >= 1 else str(k)


def sets_from_json(path: str | Path, num_classes: int, n_filters: int, ks: list[float]) -> dict[str, list]:
    """Validate a JSON file of sets: {"<class>": [...]} or {"<k>": {"<class>": [...]}}."""
    return sets_from_data(load_json(path), path, num_classes, n_filters, ks)


def sets_from_data(data: dict, where, num_classes: int, n_filters: int, ks: list[float]) -> dict[str, list]:
    """Filter sets read from JSON (`where` names the file in errors): {"<k>": [LongTensor per class]}."""
    if all(isinstance(v, list) for v in data.values()):
        data = {k_label(ks[0]): data}
    out = {}
    for k, sets in data.items():
        if not isinstance(sets, dict) or sorted(sets, key=int) != [str(c) for c in range(num_classes)]:
            raise ToolkitError(f"{where}: the sets for k={k} must map every class 0..{num_classes - 1} to a list")
        for c, filters in sets.items():
            if not all(isinstance(f, int) and 0 <= f < n_filters for f in filters):
                raise ToolkitError(f"{where}: class {c} lists filters outside 0..{n_filters - 1}")
        out[k] = [torch.tensor(sets[str(c)], dtype=torch.long) for c in range(num_classes)]
    return out


def sets_from_gates(path: str, ks: list[float], order: str = "smallest") -> dict[str, list]:
    """CSG sets from a (classes, filters) gate matrix (§8): the k smallest gates of each class, as the paper's code
    (`csg.argsort(1)[:, :k]`), or with order "largest" the k largest (Liang et al.'s reading, a toolkit extra)."""
    found = load_torch(path) if path.endswith((".pt", ".pth")) else np.load(path, allow_pickle=False)
    if isinstance(found, dict):
        if "csg" not in found:
            raise ToolkitError(f"{path} holds no gate matrix: expected a tensor, or a dict with the gates under "
                               f"'csg' (keys found: {', '.join(map(str, list(found)[:6]))})")
        found = found["csg"]
    gates = torch.as_tensor(found).float()
    if gates.dim() != 2:
        raise ToolkitError(f"{path}: expected a (classes, filters) gate matrix, got shape {tuple(gates.shape)}")
    if any(k < 1 for k in ks):
        raise ToolkitError("CSG filter sets take integer k (the k largest gates); drop the fractions from -k")
    too_many = [k_label(k) for k in ks if k > gates.shape[1]]
    if too_many:
        raise ToolkitError(f"{path} gates {gates.shape[1]} filters; -k {' '.join(too_many)} does not fit")
    order_of = gates.argsort(dim=1, stable=True, descending=order == "largest")
    return {k_label(k): list(order_of[:, :int(k)]) for k in ks}


def fitting_ks(args, n_filters: int, where: str, note: bool = True) -> tuple[list[float], list[str]]:
    """(the ks to measure, the default-grid ks skipped): a k larger than the `n_filters` filters of the analysed
    layer (`where`) is skipped, with a one-line note on stderr (unless `note` is False: the sets were chosen
    before), when it comes from the default grid, and is a one-line error when -k asked for it."""
    ks = requested_ks(args)
    too_many = [k for k in ks if k > n_filters]
    if too_many and args.k is not None:
        raise ToolkitError(f"-k {' '.join(map(k_label, too_many))} exceeds the {n_filters} filters of {where}; "
                           f"pick k <= {n_filters} (or a fraction in (0, 1))")
    if too_many and note:
        print(f"note: k = {', '.join(map(k_label, too_many))} of the default grid skipped: {where} has "
              f"{n_filters} filters", file=sys.stderr)
    return [k for k in ks if k <= n_filters], [k_label(k) for k in too_many]


def stored_sets(args, loaded: LoadedRun, n_filters: int, where: str) -> tuple[dict[str, list], list[str]]:
    """(filter sets by k, default-grid ks skipped): those given by --indices or --csg-gates, else those that
    `decompose.py indices` wrote for --source (those of -k only, when given; the skipped ks are the indices
    stage's)."""
    ks, skipped = fitting_ks(args, n_filters, where, note=bool(args.csg_gates))
    if args.indices:
        found, skipped = sets_from_json(args.indices, loaded.num_classes, n_filters, ks), []
        where_sets = args.indices
    elif args.csg_gates:
        return sets_from_gates(args.csg_gates, ks, args.csg_order), skipped
    else:
        run, stage = loaded.run, contract.stage(contract.decompose_stage("indices", args.source))
        if not contract.done(run, stage.name):
            given = "--indices FILE" if args.source == "ours" else "--csg-gates FILE"
            raise ToolkitError(f"no filter sets in {stage.dir(run)}; run `python {stage.script} "
                               f"{stage.subcommand[0]}` with the same run flags first (`{stage.command(run)}`), or "
                               f"pass {given}")
        where_sets = stage.path(run, "indices")
        found = sets_from_data(contract.load(run, stage.name, "indices"), where_sets, loaded.num_classes,
                               n_filters, ks)
        skipped = contract.done_record(run, stage.name).get("skipped_k", [])
    if args.k is None:
        return found, skipped
    missing = [k_label(k) for k in ks if k_label(k) not in found]
    if missing:
        raise ToolkitError(f"{where_sets} holds no filter sets for k = {', '.join(missing)} (only for "
                           f"{', '.join(found)}); compute them with `decompose.py indices -k ...`, or drop -k")
    return {k_label(k): found[k_label(k)] for k in ks}, []


def filters_at(loaded: LoadedRun, module: nn.Module, capture: str) -> int:
    """The number of filters (channels, or features) `module` takes in or gives out, from one zero image."""
    with torch.no_grad(), LayerTaps([module], reduce=spatial_mean, capture=capture) as taps:
        loaded.model(loaded.example_input())
    return int(taps.values[0].shape[1])


def head_name(loaded: LoadedRun) -> str:
    return f"the classifier input of {loaded.config['model']['name']}"


# ---- subcommands ---------------------------------------------------------------------------------------
def cmd_indices(args, loaded: LoadedRun, out: contract.StageOutput) -> dict:
    train = split_of(args, loaded, "train")  # sets from unaugmented images
    module = named_module(loaded.model, args.layer) if args.layer else classifier_of(loaded)
    capture = "output" if args.layer else "input"
    n_filters = filters_at(loaded, module, capture)
    where = f"--layer {args.layer}" if args.layer else head_name(loaded)
    if args.indices or args.csg_gates:
        sets_by_k, skipped = stored_sets(args, loaded, n_filters, where)
    else:
        ks, skipped = fitting_ks(args, n_filters, where)
    per_layer = dec.LayerSelectivity(loaded.num_classes, k=0.5)
    features, _, labels = gap_features(loaded, module, train, args.max_samples, capture, per_layer)
    num_classes = loaded.num_classes
    weight = classifier_of(loaded).weight.detach().cpu()
    arrays, summary = {}, {}
    if not (args.indices or args.csg_gates):
        sets_by_k = {}
        for k in ks:
            sets, counts = dec.class_filters(features, labels, int(k) if k >= 1 else k, num_classes,
                                             return_histograms=True)
            sets_by_k[k_label(k)] = sets
            arrays[f"histograms_{k_label(k)}"] = counts
    for k, sets in sets_by_k.items():
        overlap = dec.topk_weight_overlap(sets, weight, max(len(s) for s in sets)) if not args.layer \
            else torch.zeros(len(sets))
        arrays[f"fc_topk_overlap_{k}"] = overlap
        summary[k] = {
            "mutual_info": dec.filter_sets_mutual_info(sets, features.shape[1], include_self=True),
            "mutual_info_offdiag": dec.filter_sets_mutual_info(sets, features.shape[1], include_self=False),
            "fc_topk_overlap_mean": float(overlap.float().mean()),
            **dec.overlap_summary(sets, features.shape[1]),
        }
    summary["psi_selectivity_0.5"] = float(dec.psi_selectivity(features, labels, 0.5))
    summary["class_selectivity_index"] = float(dec.class_selectivity_index(features, labels).mean())
    summary["skipped_k"], summary["filters"] = skipped, n_filters
    out.save("indices", {k: {str(c): s.tolist() for c, s in enumerate(sets)} for k, sets in sets_by_k.items()})
    out.save("histograms", arrays)
    out.save("summary", summary)
    out.save("selectivity", layer_selectivity(loaded, per_layer))
    return summary, skipped


def features_of_test_split(args, loaded: LoadedRun):
    """(classifier, the stored sets by k, skipped ks, GAP features, logits, labels of the test split): what validate
    and essential both start from."""
    head = classifier_of(loaded)
    sets_by_k, skipped = stored_sets(args, loaded, head.in_features, head_name(loaded))
    features, logits, labels = gap_features(loaded, head, split_of(args, loaded, "test"), args.max_samples)
    return head, sets_by_k, skipped, features, logits, labels


def cmd_validate(args, loaded: LoadedRun, out: contract.StageOutput) -> dict:
    head, sets_by_k, skipped, features, logits, labels = features_of_test_split(args, loaded)
    weight, bias = head.weight.detach().cpu().float(), head.bias.detach().cpu().float()
    result = {"full": loaded.accuracy(logits, labels), "decomposed": {}, "max_form_gap": {}}
    for k, sets in sets_by_k.items():
        gathered = dec.decomposed_logits(features, weight, bias, sets)
        masked = dec.decomposed_logits_masked(features, weight, bias, sets)
        result["decomposed"][k] = loaded.accuracy(gathered, labels)
        result["max_form_gap"][k] = float((gathered - masked).abs().max())
    out.save("validate", result)
    return result, skipped


def cmd_essential(args, loaded: LoadedRun, out: contract.StageOutput) -> dict:
    head, sets_by_k, skipped, features, _, labels = features_of_test_split(args, loaded)
    head_cpu = copy.deepcopy(head).cpu().float().eval()
    generator = make_generator(args.noise_seed)
    result = {}
    for k, sets in sets_by_k.items():
        counts = {"noise_at_inf": [], "noise_at_noninf": [], "n": []}
        for c, chosen in enumerate(sets):
            f = features[labels == c]
            with torch.no_grad():
                for name, complement in (("noise_at_inf", False), ("noise_at_noninf", True)):
                    noisy = dec.replace_features(f, chosen, generator, complement=complement)
                    counts[name].append(int((loaded.predictions(head_cpu(noisy)) == c).sum()))
            counts["n"].append(len(f))
        result[k] = counts
    out.save("essential", result)
    return result, skipped


def cmd_finetune(args, loaded: LoadedRun, out: contract.StageOutput) -> dict:
    """Adam over the whole backbone and the decomposed head, plain cross-entropy, train mode, crop + flip (§6):
    the training loop's own epochs (training.loop.Trainer, writing nothing), test accuracy before and after each."""
    train, test = split_of(args, loaded, "train"), split_of(args, loaded, "test")
    if not hasattr(train, "images"):
        raise ToolkitError(f"finetune trains with the training loop, which holds the train split on the device as one "
                           f"tensor and augments it there; {args.traindata} is streamed from image folders, which it "
                           f"cannot take yet: finetune on an in-memory dataset (cifar10, digits, ...)")
    model, device = loaded.model, loaded.device
    head = classifier_of(loaded)
    sets_by_k, skipped = stored_sets(args, loaded, head.in_features, head_name(loaded))
    take = slice(args.max_samples)
    data = TrainData(to_device(train.images[take], device), train.labels[take].to(device),
                     to_device(test.images[take], device),
                     test.labels[take].to(device), inputs=loaded.inputs)
    recipe = Recipe("decompose-finetune", epochs=args.epochs, lr=args.lr, batchsize=args.batchsize,
                    optimizer="adam", wdecay=0.0, schedule="constant", loss=loaded.loss)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    parent, attr = _parent_of(model, head)
    result = {}
    for k, sets in sets_by_k.items():
        model.load_state_dict(original)
        setattr(parent, attr, dec.DecomposedHead(head.weight.detach(), head.bias.detach(), sets).to(device))
        trainer = Trainer(model, data, recipe, None, make_generator(args.noise_seed), progress=False)
        curve = [evaluate(model, data, recipe)]
        for _ in tqdm(range(args.epochs), desc=f"finetune k={k}", unit="epoch", disable=None, leave=False):
            curve.append(trainer.train_epoch()["test_acc"])
        result[k] = {"before": curve[0], "after_epoch": curve[1:]}
        out.save("finetuned", {name: v.cpu() for name, v in model.state_dict().items()}, k=k)
        setattr(parent, attr, head)
    model.load_state_dict(original)
    out.save("finetune", result)
    return result, skipped


def _parent_of(model: nn.Module, child: nn.Module) -> tuple[nn.Module, str]:
    for name, module in model.named_modules():
        if module is child:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr
    raise ToolkitError("the classifier is not a submodule of the model")


COMMANDS = {"indices": cmd_indices, "validate": cmd_validate, "finetune": cmd_finetune, "essential": cmd_essential}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = measurement_device(args.device, args.allow_tf32)
    run = RunDir.from_args(args)
    out = contract.open_stage(run, contract.decompose_stage(args.command, args.source), recorded_flags(args),
                              args.force)
    if out is None:
        return 0
    loaded = open_network(args, device)
    result, skipped = COMMANDS[args.command](args, loaded, out)
    data = loaded.config["data"]
    out.done(epoch=loaded.epoch, checkpoint=loaded.checkpoint, mean=data["mean"], std=data["std"], skipped_k=skipped)
    print(f"{out.dir}: {json.dumps(result)[:300]}")
    return 0


if __name__ == "__main__":
    run_main(main)
