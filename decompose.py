"""Class-specific filters (seed003, "Decomposing the Deep"): indices, validate, finetune, essential.

    python decompose.py indices   --model-name resnet20 --traindata cifar10 --seed 0 -k 5 10 20
    python decompose.py validate  --model-name resnet20 --traindata cifar10 --seed 0
    python decompose.py essential --model-name resnet20 --traindata cifar10 --seed 0
    python decompose.py finetune  --model-name resnet20 --traindata cifar10 --seed 0 -k 5 --epochs 10 --lr 1e-4
    python decompose.py validate  --model-name resnet20 --traindata cifar10 --weights resnet20-12fca82f.th \\
        --normalization imagenet --indices resnet20_cifar-10_indices.json

The network is a trained run (<workdir>/<dataset>/<model>/rnd<seed>) or, with --weights, any checkpoint file
of a registered architecture (the akamaster `{"state_dict"}` format included); outputs go to the run folder's
decompose/<subcommand>/ either way. The features are the global-average-pooled input of the classifier
(the output of --layer for `indices`). Files written (documented here only):
- indices/indices.json      {"<k>": {"<class>": [filter, ...]}}: S_c per k (§4; from --indices or --csg-gates if given)
- indices/indices.npz       histograms_<k> (classes, D) top-k vote counts the sets were read from (computed sets
                            only), fc_topk_overlap_<k> (classes,)
- indices/summary.json      per k: mutual information with/without self-pairs (§9), union size, mean overlap;
                            psi selectivity at 0.5 and the class-selectivity index of the layer (§10)
- validate/validate.json    full and decomposed test accuracy per k (§5), gathered and masked forms' max gap
- essential/essential.json  per k and class: images still classified correctly when S_c (noise_at_inf) or the
                            other features (noise_at_noninf) are replaced by N(0, 1) (§7), out of n
- finetune/finetune.json    per k: accuracy before and after each epoch of Adam finetuning (§6);
  finetune/finetuned_k<k>.pt the finetuned backbone + decomposed head (tensors only)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from datasets import build_dataset
from datasets.augment import random_crop_flip
from datasets.normalization import normalization_for
from measures import decomposition as dec
from models import build_model
from models.layers import analysis_layers
from models.weights import load_weights
from pipeline.loaded import load_run_model
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, run_main
from utils.device import make_generator, resolve_device
from utils.errors import ToolkitError
from utils.io import load_json, load_torch, save_json, save_npz, save_torch
from utils.rundir import RunDir, mark_done, recorded_flags, skip_if_done
from utils.taps import LayerTaps

BATCH = 500
SUBCOMMANDS = ("indices", "validate", "finetune", "essential")


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=SUBCOMMANDS, help="what to compute")
    add_run_flags(parser, default_model="resnet20")
    add_stage_flags(parser)
    parser.add_argument("-k", type=float, nargs="+", default=[5, 10, 20],
                        help="filters per class: integers, or fractions in (0, 1) of the L1 mass (§4)")
    parser.add_argument("--layer", default=None,
                        help="indices only: module whose GAP output is analysed (default: the classifier input)")
    parser.add_argument("--weights", default=None, help="a checkpoint file instead of the run's own weights")
    parser.add_argument("--normalization", choices=["dataset", "imagenet"], default="dataset",
                        help="with --weights: input normalisation the checkpoint was trained with")
    parser.add_argument("--indices", default=None, help="JSON file of filter sets to use instead of computing them")
    parser.add_argument("--csg-gates", default=None,
                        help="a (classes, filters) CSG gate matrix (.npy/.pt); sets = the k largest gates (§8)")
    parser.add_argument("--csg-smallest", action="store_true",
                        help="take the k SMALLEST gates, as the original code did (§8, §12.2)")
    parser.add_argument("--epochs", type=int, default=10, help="finetune: epochs")
    parser.add_argument("--lr", type=float, default=2e-4, help="finetune: Adam learning rate")
    parser.add_argument("--batchsize", type=int, default=64, help="finetune: batch size")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="use at most this many images of each split (streamed ImageNet-scale data)")
    parser.add_argument("--noise-seed", type=int, default=0, help="essential/finetune: generator seed")
    args = parser.parse_args(argv)
    if any(k <= 0 or (k >= 1 and k != int(k)) for k in args.k):
        parser.error("-k takes integers >= 1 or fractions in (0, 1)")
    return args


# ---- the network and its data ------------------------------------------------------------------------
@dataclass
class Network:
    """The analysed network, its input normalisation and where its results go."""

    model: nn.Module
    mean: tuple
    std: tuple
    num_classes: int
    device: torch.device
    run: RunDir


def load_network(args, device) -> Network:
    """The run's trained model, or --weights loaded into the registry architecture."""
    run = RunDir.of(args.workdir, args.traindata, args.model_name, args.seed)
    if args.weights is None:
        model, config, _ = load_run_model(run, args.start_epoch, device=device)
        data = config["data"]
        return Network(model, tuple(data["mean"]), tuple(data["std"]), config["model"]["num_classes"], device, run)
    num_classes = build_dataset(args.traindata, "test", args.data_root).num_classes
    model = build_model(args.model_name, num_classes, width=args.width)
    load_weights(model, args.weights)
    mean, std = normalization_for(None if args.normalization == "dataset" else "imagenet", args.traindata)
    return Network(model.to(device).eval(), mean, std, num_classes, device, run)


def classifier_of(model: nn.Module) -> nn.Linear:
    layers = model.weight_layers() if hasattr(model, "weight_layers") else None
    last = layers[-1] if layers else analysis_layers(model, torch.zeros(1, 3, 32, 32))[1][-1]
    if not isinstance(last, nn.Linear):
        raise ToolkitError(f"the last weight layer of {type(model).__name__} is not a Linear classifier")
    return last


def named_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise ToolkitError(f"--layer {name!r} is not a module of the model; e.g. {', '.join(list(modules)[1:6])}")
    return modules[name]


@torch.no_grad()
def gap_features(net: Network, module, data, max_samples=None, capture="input"):
    """(GAP features (N, D), logits (N, classes), labels (N,)): one forward pass per batch, eval mode, no
    augmentation; in-memory or streamed data alike (the first `max_samples`)."""
    model, device = net.model, net.device
    mean_t, std_t = normalization_tensors(net)
    pooled = lambda i, t: t.mean(dim=(2, 3)) if t.dim() == 4 else t  # noqa: E731
    feats, logits, labels = [], [], []
    for images, batch_labels in tqdm(data.batches(BATCH, max_samples), desc=f"features {data.name}", unit="batch",
                                     disable=None, leave=False):
        x = (images.to(device) - mean_t) / std_t
        with LayerTaps([module], reduce=pooled, capture=capture) as taps:
            logits.append(model(x).float().cpu())
        feats.append(taps.values[0].float().cpu())
        labels.append(batch_labels)
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def normalization_tensors(net: Network) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, -1, 1, 1)
    return (torch.tensor(net.mean, device=net.device).reshape(shape),
            torch.tensor(net.std, device=net.device).reshape(shape))


# ---- filter sets ---------------------------------------------------------------------------------------
def k_label(k: float) -> str:
    return str(int(k)) if k >= 1 else str(k)


def sets_from_json(path: str | Path, num_classes: int, n_filters: int, ks: list[float]) -> dict[str, list]:
    """Validate a JSON file of sets: {"<class>": [...]} or {"<k>": {"<class>": [...]}}."""
    data = load_json(path)
    if all(isinstance(v, list) for v in data.values()):
        data = {k_label(ks[0]): data}
    out = {}
    for k, sets in data.items():
        if not isinstance(sets, dict) or sorted(sets, key=int) != [str(c) for c in range(num_classes)]:
            raise ToolkitError(f"{path}: the sets for k={k} must map every class 0..{num_classes - 1} to a list")
        for c, filters in sets.items():
            if not all(isinstance(f, int) and 0 <= f < n_filters for f in filters):
                raise ToolkitError(f"{path}: class {c} lists filters outside 0..{n_filters - 1}")
        out[k] = [torch.tensor(sets[str(c)], dtype=torch.long) for c in range(num_classes)]
    return out


def sets_from_gates(path: str, ks: list[float], smallest: bool) -> dict[str, list]:
    """CSG sets from a (classes, filters) gate matrix: the k largest gates (or smallest, as the original)."""
    gates = torch.as_tensor(load_torch(path) if path.endswith(".pt") else np.load(path, allow_pickle=False)).float()
    if gates.dim() != 2:
        raise ToolkitError(f"{path}: expected a (classes, filters) gate matrix, got shape {tuple(gates.shape)}")
    return {k_label(k): list(gates.topk(int(k), dim=1, largest=not smallest).indices) for k in ks if k >= 1}


def stored_sets(args, net: Network, n_filters: int) -> dict[str, list]:
    """The filter sets given by --indices or --csg-gates, else those written by `decompose.py indices`."""
    num_classes, run = net.num_classes, net.run
    if args.indices:
        return sets_from_json(args.indices, num_classes, n_filters, args.k)
    if args.csg_gates:
        return sets_from_gates(args.csg_gates, args.k, args.csg_smallest)
    path = run.stage("decompose/indices") / "indices.json"
    if not path.is_file():
        raise ToolkitError(f"no filter sets at {path}; run `python decompose.py indices` with the same run flags "
                           "first, or pass --indices FILE")
    return sets_from_json(path, num_classes, n_filters, args.k)


# ---- subcommands ---------------------------------------------------------------------------------------
def cmd_indices(args, net: Network, out: Path) -> dict:
    train = build_dataset(args.traindata, "train", args.data_root, augment=False)  # sets from unaugmented images
    module = named_module(net.model, args.layer) if args.layer else classifier_of(net.model)
    features, _, labels = gap_features(net, module, train, args.max_samples, "output" if args.layer else "input")
    num_classes = net.num_classes
    weight = classifier_of(net.model).weight.detach().cpu()
    arrays, summary, sets_by_k = {}, {}, {}
    if args.indices or args.csg_gates:
        sets_by_k = stored_sets(args, net, features.shape[1])
    else:
        for k in args.k:
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
    as_json = {k: {str(c): s.tolist() for c, s in enumerate(sets)} for k, sets in sets_by_k.items()}
    save_json(out / "indices.json", as_json)
    save_npz(out / "indices.npz", **arrays)
    save_json(out / "summary.json", summary)
    return summary


def cmd_validate(args, net: Network, out: Path) -> dict:
    test = build_dataset(args.traindata, "test", args.data_root)
    head = classifier_of(net.model)
    features, logits, labels = gap_features(net, head, test, args.max_samples)
    weight, bias = head.weight.detach().cpu().float(), head.bias.detach().cpu().float()
    sets_by_k = stored_sets(args, net, features.shape[1])
    result = {"full": accuracy(logits, labels), "decomposed": {}, "max_form_gap": {}}
    for k, sets in sets_by_k.items():
        gathered = dec.decomposed_logits(features, weight, bias, sets)
        masked = dec.decomposed_logits_masked(features, weight, bias, sets)
        result["decomposed"][k] = accuracy(gathered, labels)
        result["max_form_gap"][k] = float((gathered - masked).abs().max())
    save_json(out / "validate.json", result)
    return result


def cmd_essential(args, net: Network, out: Path) -> dict:
    test = build_dataset(args.traindata, "test", args.data_root)
    head = classifier_of(net.model)
    features, _, labels = gap_features(net, head, test, args.max_samples)
    head_cpu = nn.Linear(head.in_features, head.out_features).eval()
    head_cpu.load_state_dict({k: v.cpu().float() for k, v in head.state_dict().items()})
    generator = torch.Generator().manual_seed(args.noise_seed)
    result = {}
    for k, sets in stored_sets(args, net, features.shape[1]).items():
        counts = {"noise_at_inf": [], "noise_at_noninf": [], "n": []}
        for c, chosen in enumerate(sets):
            f = features[labels == c]
            with torch.no_grad():
                for name, complement in (("noise_at_inf", False), ("noise_at_noninf", True)):
                    noisy = dec.replace_features(f, chosen, generator, complement=complement)
                    counts[name].append(int((head_cpu(noisy).argmax(1) == c).sum()))
            counts["n"].append(len(f))
        result[k] = counts
    save_json(out / "essential.json", result)
    return result


def cmd_finetune(args, net: Network, out: Path) -> dict:
    """Adam over the whole backbone and the decomposed head, plain cross-entropy, train mode (§6)."""
    train = build_dataset(args.traindata, "train", args.data_root)
    test = build_dataset(args.traindata, "test", args.data_root)
    if not hasattr(train, "images"):
        raise ToolkitError(f"finetune needs an in-memory dataset; {args.traindata} is streamed (not supported yet)")
    model, device = net.model, net.device
    head = classifier_of(model)
    sets_by_k = stored_sets(args, net, head.in_features)
    mean_t, std_t = normalization_tensors(net)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    result = {}
    for k, sets in sets_by_k.items():
        model.load_state_dict(original)
        decomposed = dec.DecomposedHead(head.weight.detach(), head.bias.detach(), sets).to(device)
        parent, attr = _parent_of(model, head)
        setattr(parent, attr, decomposed)
        curve = [evaluate(model, test, mean_t, std_t, device)]
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
        generator = make_generator(device, args.noise_seed)
        x_all, y_all = train.images.to(device), train.labels.to(device)
        for _ in tqdm(range(args.epochs), desc=f"finetune k={k}", unit="epoch", disable=None):
            model.train()
            perm = torch.randperm(len(y_all), generator=generator, device=device)
            for start in range(0, len(perm), args.batchsize):
                index = perm[start:start + args.batchsize]
                x = (random_crop_flip(x_all[index], generator) - mean_t) / std_t
                loss = nn.functional.cross_entropy(model(x), y_all[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            curve.append(evaluate(model, test, mean_t, std_t, device))
        result[k] = {"before": curve[0], "after_epoch": curve[1:]}
        save_torch(out / f"finetuned_k{k}.pt", {k2: v.cpu() for k2, v in model.state_dict().items()})
        setattr(parent, attr, head)
    model.load_state_dict(original)
    save_json(out / "finetune.json", result)
    return result


def _parent_of(model: nn.Module, child: nn.Module) -> tuple[nn.Module, str]:
    for name, module in model.named_modules():
        if module is child:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr
    raise ToolkitError("the classifier is not a submodule of the model")


@torch.no_grad()
def evaluate(model, data, mean_t, std_t, device) -> float:
    model.eval()
    logits = torch.cat([model((data.images[s:s + BATCH].to(device) - mean_t) / std_t).cpu()
                        for s in range(0, len(data.images), BATCH)])
    return accuracy(logits, data.labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


COMMANDS = {"indices": cmd_indices, "validate": cmd_validate, "finetune": cmd_finetune, "essential": cmd_essential}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    run = RunDir.of(args.workdir, args.traindata, args.model_name, args.seed)
    out = run.stage(f"decompose/{args.command}")
    flags = recorded_flags(args)
    if skip_if_done(out, flags, args.force):
        return 0
    result = COMMANDS[args.command](args, load_network(args, device), out)
    mark_done(out, flags)
    print(f"{out}: {json.dumps(result)[:300]}")
    return 0


if __name__ == "__main__":
    run_main(main)
