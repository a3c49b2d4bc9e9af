"""Weight spectra, low-rank networks, projection energies, noise sensitivity and Gram data (seed000 §5-§6).

    python analyzing.py --model-name resnet18 --traindata cifar10 --num_classes 10 --start_epoch 1200 --resume
    python analyzing.py --model-name resnet18 --traindata digits --ratios 6 --num_grams 300 --num_stability 200

Layer l is the input of the l-th analysis weight layer (DESIGN.md "Layers", seed000 §5): the main-path convs and
the classifier, shortcut convs excluded. One float64 SVD per weight matrix (§6.1) gives its singular values and,
for every threshold ratio r, the rank k(r) = #{s_j > r s_0}. Network variants (§6.2): "all" is the trained
network; "<q>" (q = 000..052, the position of r among the 53 thresholds) replaces every analysis weight by its
rank-k(r) truncation W_k, leaving BN, biases and shortcuts untouched. --ratios N evaluates the thresholds at the
positions round(linspace(0, 52, N)) (`ratio_positions`), which depend on N only, so every seed of a grid covers the
same thresholds. A threshold whose ranks equal, at every layer, those of the threshold before it in that list gives
the same network: it is not evaluated again, but its files are written all the same (copies of the numbers of the
first threshold with that network; svals.npz `same_as` says which), so every threshold has its files.
Evaluation sets (pipeline/evaluation.py): "traindata" (the train split, no augmentation), the in-distribution test
set (named after the dataset), the reported OOD sets and the validation OOD set (which chooses d and the rank
threshold later) of datasets.ood_choice.choose_ood: the paper's by default, or --ood-sets/--near-ood/
--validation-ood; a dataset without OOD sets (imagenet, imagefolder:PATH, twopoints) and no --ood-sets gets only
its train and test splits.

Per variant and evaluation set, one forward pass per batch captures every layer and reduces each sample (§6.3):
  norm00 = ||x||^2 of the whole feature;
  norm0  = sum over the layer's receptive-field patches of ||patch||^2 (each pixel counted once per window that
           covers it, for the layer's own stride and padding; = norm00 for a Linear). With --norm0-corner-bug, the
           original's stride-1 multiplicity instead: for a 3x3, stride-1, pad-1 conv on a map larger than 2x2 its
           fourth corner term (x4) sums the right edge without its corners again instead of the bottom-right
           pixel, i.e. norm0 + 4 (sum of x^2 over rows 1..H-2 of the last column - x^2 at the bottom-right pixel)
           (`corner_bug_offset`; seed000 "bugs"; only conv layers' norm0 moves, never the classifier's);
  norm1  = sum over patches of ||V_k^T patch||^2, the energy in the top-k right-singular space of the variant's
           own weight ("all": k = every singular vector). Readers form the proposed score normr = norm1 / norm0;
  norm00_bn = ||BN_l(W_l f_l)||^2, the output of the BatchNorm that takes weight layer l's output (seed000's
           "k_bn": before the ReLU and the residual add), NaN where no BatchNorm follows layer l (the classifier,
           networks without BN).
Noise sensitivity (§6.5), on the first --num_stability samples of every set, traindata included (as seed000), for
every variant (--stability_variants original: "all" only): for each perturbed layer l, f_l <- f_l + eta ||f_l||
xi / ||xi|| (xi ~ N(0, I) per sample from a generator seeded with --seed afresh for every variant and set, so all
variants and sets see the same draws: one randn of f_l's shape per perturbed layer, in the order of noise_layers,
per batch), propagated forward in eval mode; then chi_m = ||f_m(x~) - f_m(x)||^2 / ||f_m(x)||^2 at every layer
m >= l and at the logits (chi_l = eta^2). The noise is added in place by a forward pre-hook on weight layer l, so
every consumer of f_l (the residual shortcut too) sees the perturbed feature. Perturbed layers ("noise layers"):
for residual networks the block boundaries, i.e. layer 0, the input of every residual block and the classifier
input (seed000's `layers0`: 0, 1, 3, ..., 17 for ResNet-18); every layer for networks without residual blocks
(VGG: 0..10, as in seed000).
Gram data (§6.4) of the "all" network on the first --num_grams samples of each set: per layer the flattened
features when d < n, else the uncentred linear Gram X X^T, both float64 (DESIGN.md "Performance": the cheaper of
the two forms); kernels.py turns either into centred-Gram spectra. The tied covariance of the train features
(§6.6) is computed by features.py. Memory: the first --num_stability samples of a batch are
kept on the device at every layer (noise sensitivity compares with them), the first --num_grams on the CPU; the Gram
samples' features go to one file per layer beside the stage's files (n x d_l
floats each, removed when the set's grams file is written: pipeline/spill.py), and each layer's form is computed
as it is written, so memory holds one layer's (at most n x n float64: 800 MB at n = 10,000). A pass that runs out
of device memory runs again with half the batch (utils.memory), recorded as caps.batchsize_used.
The paper's sizes (`reproduce.py --paper 000 --full`): --ratios 53 --num_grams 10000 --num_stability 10000
--batchsize 128, every variant perturbed; smaller caps are recorded in _done.json (`caps` beside `paper_caps`).

Files in <run>/analysis/ (L layers, R ratios, N samples of a set, n = the samples kept for noise or Grams):
  svals.npz                   svals (L, max_len) singular values, descending, zero-padded; lengths (L,);
                              ratios (R,); ratio_index (R,) their positions among the 53 thresholds (the same for
                              every seed: ratio_positions(R)); ndims (L, R); same_as (R,) the column of the first
                              threshold with the same network (= its own column when evaluated, else its files are
                              copies of that column's); fan_in, fan_out (L,) the weight matrix shapes (for the
                              residual parameter count)
  projections_<tag>_<ds>.npz  norm00, norm0, norm1, norm00_bn (N, L) float64; logits (N, outputs); labels (N,) (-1
                              for OOD); ranks (L,) the k of every layer's projector
  sensitivity_<tag>_<ds>.npz  chi (n, P, L + 1) float64: chi[i, p, m] at layer m (m = L: the logits) when layer
                              noise_layers[p] is perturbed, NaN for m < noise_layers[p]; noise_layers (P,); eta ()
                              (for the perturbed variants, every set)
  grams_<ds>.npz              per layer ll = 00..L-1 either feat_<ll> (n, d) or gram_<ll> (n, n), float64
  _done.json                  flags (the OOD choice included), argv; variants (every tag with files: "all" then one
                              per threshold), reused {tag: the tag whose numbers it copies}, datasets (tags),
                              test_accuracy of every variant (the hinge head of a twopoints run included:
                              measures.classification), caps and paper_caps (ratios, num_grams, num_stability,
                              max_samples, stability_variants, batchsize; caps also batchsize_used: the smallest
                              batch a pass ran with, utils.memory), gram_samples and stability_samples
                              {ds: n}, norm0_corner_bug, ood_sets, near_ood, validation_ood (names), ood_note,
                              ood_tags {tag: name} (pipeline.evaluation.choice_summary), seconds
where <tag> is "all" or a three-digit ratio position q, and <ds> is traindata, the dataset, or an OOD set's tag.

Flags and evaluation sets are shared with features.py and kernels.py (pipeline/evaluation.py); file names
come from pipeline/contract.py.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from measures.ood import patch_energy, projection_energy, squared_norms
from measures.spectra import WeightSVD, rank_at_ratio, threshold_ratios, truncate, weight_svd
from pipeline.contract import StageOutput, open_stage
from pipeline.evaluation import (
    check_positive,
    choice_flags,
    choice_summary,
    evaluation_sets,
    ood_choice,
    set_size,
    stage_parser,
    test_set_tag,
)
from pipeline.loaded import LoadedRun
from pipeline.spill import SpilledRows
from utils.cli import run_main
from utils.device import make_generator, measurement_device
from utils.memory import halving_batch
from utils.taps import LayerTaps

ETA = 0.1
DEFAULT_GRAMS = 1000
DEFAULT_STABILITY = 1000
THRESHOLDS = 53
# seed000's own sizes (§6): every threshold, 10,000 Gram and noise samples, every variant perturbed, batches of 128
PAPER_CAPS = {"ratios": THRESHOLDS, "num_grams": 10000, "num_stability": 10000, "max_samples": None,
              "stability_variants": "every", "batchsize": 128}


def parse_args(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--ratios", type=int, default=THRESHOLDS,
                        help="evaluate N of the 53 threshold ratios of seed000 §6.1, at the positions "
                             "round(linspace(0, 52, N)): the same for every seed; a threshold whose network equals "
                             "the previous one's is not recomputed, its files copy that one's")
    parser.add_argument("--num_grams", type=int, default=DEFAULT_GRAMS,
                        help="samples of each set whose Gram data are kept (seed000: 10000)")
    parser.add_argument("--num_stability", type=int, default=DEFAULT_STABILITY,
                        help="samples of each set used for noise sensitivity (seed000: 10000)")
    parser.add_argument("--eta", type=float, default=ETA, help="relative noise norm of the perturbation (§6.5)")
    parser.add_argument("--stability_variants", choices=["every", "original"], default="every",
                        help="noise sensitivity for every network variant (§6.5) or for the original one only "
                             "(the perturbed passes cost ~3x the clean passes)")
    parser.add_argument("--norm0-corner-bug", action="store_true",
                        help="reproduce the original code's norm0 for 3x3 stride-1 convs, whose fourth corner term "
                             "counts the right edge again instead of the bottom-right pixel (seed000 'bugs'; moves "
                             "conv layers' norm0 and normr only); default: the exact patch multiplicity")
    args = parser.parse_args(argv)
    check_positive(parser, args, "--ratios", "--num_grams", "--num_stability", "--batchsize", "--max-samples")
    if args.ratios > THRESHOLDS:
        parser.error(f"--ratios takes at most the {THRESHOLDS} thresholds of seed000 §6.1, got {args.ratios}")
    if args.eta <= 0:
        parser.error(f"--eta must be positive, got {args.eta}")
    return args


def ratio_positions(count: int, total: int = THRESHOLDS) -> list[int]:
    """The positions among the `total` thresholds that --ratios `count` evaluates: round(linspace(0, total - 1,
    count)), halves rounded up; they depend on `count` only, so every seed covers the same thresholds. Distinct for
    count <= total (the spacing is >= 1); the lowest and, for count >= 2, the highest are always among them."""
    return sorted({int(np.floor(x + 0.5)) for x in np.linspace(0, total - 1, count)})


def same_network(ranks: torch.Tensor) -> list[int]:
    """For every evaluated threshold (a column of `ranks`, (L, R)), the column of the first one with the same
    network: a column whose ranks equal the previous column's at every layer gives the same rank-truncated network
    (ranks are non-increasing along the thresholds, so equal networks are always adjacent)."""
    same: list[int] = []
    for column in range(ranks.shape[1]):
        same.append(same[-1] if column and torch.equal(ranks[:, column], ranks[:, column - 1]) else column)
    return same


def noise_layers(loaded: LoadedRun) -> list[int]:
    """Perturbed layers: block boundaries of residual networks (seed000 `layers0`), else every layer."""
    blocks = [name for name, module in loaded.model.named_modules()
              if name and (hasattr(module, "shortcut") or hasattr(module, "downsample"))]
    if not blocks:
        return list(range(len(loaded.layers)))
    names = loaded.layer_names
    starts = {next(i for i, layer in enumerate(names) if layer.startswith(block + "."))
              for block in blocks if any(layer.startswith(block + ".") for layer in names)}
    return sorted(starts | {0, len(loaded.layers) - 1})


@torch.no_grad()
def batch_norms_after(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> list[nn.Module | None]:
    """The BatchNorm whose input is each layer's output (seed000's "k_bn"), None where no BatchNorm takes it (the
    classifier; networks without BN). Found in one forward pass of `x` by matching tensors, so any architecture
    whose BN is applied to the conv's output works."""
    outputs: dict[int, torch.Tensor] = {}
    found: dict[int, nn.Module] = {}

    def keep(index: int):
        def hook(module, inputs, output):
            outputs[index] = output
        return hook

    def match(module, inputs):
        for index, output in outputs.items():
            if inputs[0] is output:
                found.setdefault(index, module)

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    handles += [norm.register_forward_pre_hook(match) for norm in norms]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [found.get(index) for index in range(len(layers))]


@dataclass
class Variant:
    """One evaluated network: its tag, the tags of every threshold with this network (whose files it writes),
    per-layer ranks, and the projector rows V_k^T of every layer."""

    tag: str
    tags: tuple[str, ...]
    ranks: list[int]
    projectors: list[torch.Tensor]   # (k, fan_in) rows of Vh per layer, float64


def variants(svds: list[WeightSVD], ranks: torch.Tensor, positions: list[int]) -> Iterator[Variant]:
    """"all" (full-rank projectors), then one variant per distinct network among the evaluated ratios (§6.2),
    each carrying the tags of every threshold that gives it."""
    full = [svd.S.numel() for svd in svds]
    yield Variant("all", ("all",), full, [svd.Vh for svd in svds])
    same = same_network(ranks)
    for column, q in enumerate(positions):
        if same[column] != column:
            continue
        ks = [int(k) for k in ranks[:, column]]
        tags = tuple(f"{positions[j]:03d}" for j in range(len(positions)) if same[j] == column)
        yield Variant(f"{q:03d}", tags, ks, [svd.Vh[:k] for svd, k in zip(svds, ks)])


@torch.no_grad()
def install(layers: list[nn.Module], originals: list[torch.Tensor], svds: list[WeightSVD], variant: Variant) -> None:
    """Write the variant's weights into the working copy: the originals for "all", W_k otherwise."""
    for layer, original, svd, k in zip(layers, originals, svds, variant.ranks):
        weight = original if variant.tag == "all" else truncate(svd, k)[0]
        layer.weight.copy_(weight)


def projector_weight(layer: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """V_k^T as a (k, in, kh, kw) weight with the layer's geometry: ||V_k^T p||^2 = ||Pi_k p||^2 (§6.1)."""
    return rows.reshape(rows.shape[0], *layer.weight.shape[1:])


def has_corner_bug(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether seed000's stride-1 norm0 formula (with its corner bug) applies: a 3x3, stride-1, pad-1 conv on a
    map larger than 2x2 (2x2 maps take x4 everywhere there, which is exact)."""
    return (isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) == (3, 3) and tuple(layer.stride) == (1, 1)
            and layer.padding in ((1, 1), 1) and tuple(layer.dilation) == (1, 1) and x.shape[2] > 2
            and x.shape[3] > 2)


def corner_bug_offset(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """seed000's norm0 minus the exact patch energy, (B,) float64: its fourth corner term (weight 4) sums the right
    edge without its corners (rows 1..H-2 of the last column) instead of the bottom-right pixel, so it adds
    4 (sum x^2 over that edge - x^2 at the bottom-right pixel), summed over channels; 0 where `has_corner_bug` is
    False."""
    if not has_corner_bug(layer, x):
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    x2 = x.to(torch.float64).square()
    return 4 * (x2[:, :, 1:-1, -1].sum((1, 2)) - x2[:, :, -1, -1].sum(1))


class BatchReducer:
    """LayerTaps callback: per-sample energies of every layer, the first `on_device` samples' features on the device
    (the clean features noise sensitivity compares with) and the first `on_host` samples' features on the CPU (the
    Gram rows, which go to disk): no device copy of a layer's input is kept that the device does not need."""

    def __init__(self, layers: list[nn.Module], variant: Variant, on_device: int, on_host: int,
                 corner_bug: bool = False):
        self.layers, self.on_device, self.on_host, self.corner_bug = layers, on_device, on_host, corner_bug
        self.weights = [projector_weight(layer, rows) for layer, rows in zip(layers, variant.projectors)]

    def __call__(self, index: int, x: torch.Tensor) -> dict:
        layer = self.layers[index]
        norm0 = patch_energy(x, layer)
        if self.corner_bug:
            norm0 = norm0 + corner_bug_offset(x, layer)
        return {"norm00": squared_norms(x), "norm0": norm0,
                "norm1": projection_energy(x, layer, self.weights[index]), "head": x[:self.on_device].clone(),
                "host": x[:self.on_host].to("cpu", copy=True)}


def perturb_in_place(eta: float, generator: torch.Generator):
    """Forward pre-hook adding eta ||f|| xi / ||xi|| to a layer's input in place (seed000 §6.5)."""
    def hook(module: nn.Module, inputs: tuple) -> None:
        f = inputs[0]
        xi = torch.randn(f.shape, generator=generator, device=generator.device, dtype=f.dtype).to(f.device)
        scale = eta * f.flatten(1).norm(dim=1) / xi.flatten(1).norm(dim=1)
        f.add_(xi * scale.reshape(-1, *[1] * (f.dim() - 1)))
    return hook


@torch.no_grad()
def sensitivities(model: nn.Module, layers: list[nn.Module], x: torch.Tensor, clean: list[torch.Tensor],
                  clean_logits: torch.Tensor, perturbed: list[int], eta: float, generator: torch.Generator
                  ) -> torch.Tensor:
    """chi (n, P, L + 1) for inputs x (n, ...): one forward pass per perturbed layer, NaN before it (§6.5).

    chi_m = ||f_m(x~) - f_m(x)||^2 / ||f_m(x)||^2 for the clean features `clean` and logits `clean_logits`.
    """
    n, L = x.shape[0], len(layers)
    scales = [squared_norms(f) for f in clean] + [squared_norms(clean_logits)]
    chi = torch.full((n, len(perturbed), L + 1), float("nan"), dtype=torch.float64, device=x.device)
    for p, start in enumerate(perturbed):
        reduce = lambda m, f: squared_norms(f - clean[m]) if m >= start else None  # noqa: E731,B023
        handle = layers[start].register_forward_pre_hook(perturb_in_place(eta, generator))
        try:
            with LayerTaps(layers, reduce=reduce) as taps:
                logits = model(x.clone())
        finally:
            handle.remove()
        chi[:, p, start:L] = torch.stack(taps.values[start:], dim=1)
        chi[:, p, L] = squared_norms(logits - clean_logits)
    return chi / torch.stack(scales, dim=1)[:, None, :]


@dataclass
class Counts:
    """How many samples of a set a variant's pass keeps for noise sensitivity and for the Gram data."""

    stability: int
    grams: int


def counts(variant: Variant, data, args) -> Counts:
    size = set_size(data, args.max_samples)
    original = variant.tag == "all"
    noisy = original or args.stability_variants == "every"
    return Counts(min(args.num_stability, size) if noisy else 0, min(args.num_grams, size) if original else 0)


@torch.no_grad()
def measure_set(model: nn.Module, layers: list[nn.Module], norms: list[nn.Module | None], variant: Variant, data,
                loaded: LoadedRun, args, ds: str, perturbed: list[int], spill: SpilledRows | None, batch: int
                ) -> tuple[dict, torch.Tensor | None]:
    """One pass over an evaluation set in batches of `batch`: energies (BN outputs' too), logits, labels; chi on the
    first samples (None when this variant is not perturbed); the first kept.grams samples' features of every layer
    go to `spill`. Only chi's noise depends on the batch (its draws follow the batches)."""
    kept = counts(variant, data, args)
    generator = make_generator(args.seed)
    columns = {"norm00": [], "norm0": [], "norm1": [], "norm00_bn": [], "logits": [], "labels": []}
    chi = []
    with_bn = [index for index, norm in enumerate(norms) if norm is not None]
    for start, x, labels in loaded.batches(data, batch, args.max_samples, f"{variant.tag} {ds}"):
        noisy_rows = max(0, min(len(x), kept.stability - start))
        gram_rows = max(0, min(len(x), kept.grams - start))
        reducer = BatchReducer(layers, variant, noisy_rows, gram_rows, args.norm0_corner_bug)
        with LayerTaps(layers, reduce=reducer) as taps, \
                LayerTaps([norms[i] for i in with_bn], reduce=lambda i, y: squared_norms(y),
                          capture="output") as bn_taps:
            logits = model(x)
        for key in ("norm00", "norm0", "norm1"):
            columns[key].append(torch.stack([value[key] for value in taps.values], dim=1).cpu())
        norm_bn = torch.full((len(x), len(layers)), float("nan"), dtype=torch.float64)
        for column, index in enumerate(with_bn):
            norm_bn[:, index] = bn_taps.values[column].cpu()
        columns["norm00_bn"].append(norm_bn)
        columns["logits"].append(logits.cpu())
        columns["labels"].append(labels.cpu())
        if noisy_rows:
            chi.append(sensitivities(model, layers, x[:noisy_rows], [value["head"] for value in taps.values],
                                     logits[:noisy_rows], perturbed, args.eta, generator).cpu())
        if gram_rows:
            spill.append([value["host"] for value in taps.values])
    arrays = {key: torch.cat(parts) for key, parts in columns.items()}
    return arrays, torch.cat(chi) if chi else None


def gram_spill(out: StageOutput, variant: Variant, data, args, layers: list[nn.Module], ds: str,
               device: torch.device) -> contextlib.AbstractContextManager[SpilledRows | None]:
    """Where the pass over `ds` puts the Gram samples' features (pipeline.spill), or None when it keeps none."""
    if not counts(variant, data, args).grams:
        return contextlib.nullcontext()
    return SpilledRows(out.dir / f".gram_rows_{ds}", len(layers), device)


def save_spectra(out: StageOutput, layers: list[nn.Module], svds: list[WeightSVD], ranks: torch.Tensor,
                 positions: list[int]) -> None:
    lengths = [svd.S.numel() for svd in svds]
    svals = torch.zeros(len(svds), max(lengths), dtype=torch.float64)
    for row, svd in zip(svals, svds):
        row[:svd.S.numel()] = svd.S.cpu()
    out.save("svals", {"svals": svals, "lengths": np.array(lengths), "ratios": threshold_ratios()[positions],
                       "ratio_index": np.array(positions), "ndims": ranks.cpu(),
                       "same_as": np.array(same_network(ranks)),
                       "fan_in": np.array([layer.weight[0].numel() for layer in layers]),
                       "fan_out": np.array([layer.weight.shape[0] for layer in layers])})


def main(argv=None) -> int:
    args = parse_args(argv)
    loaded = LoadedRun.from_args(args, device=measurement_device(args.device, args.allow_tf32))
    started = time.perf_counter()
    svds = [weight_svd(layer.weight) for layer in loaded.layers]
    every = threshold_ratios()
    all_ranks = torch.stack([rank_at_ratio(svd.S, every.to(svd.S.device)) for svd in svds]).cpu()  # (L, 53)
    positions = ratio_positions(args.ratios)
    ranks = all_ranks[:, positions]                                                                # (L, R)
    choice = ood_choice(loaded, args)
    flags = {"epoch": loaded.epoch, "ratio_index": positions, "num_grams": args.num_grams,
             "num_stability": args.num_stability, "stability_variants": args.stability_variants,
             "max_samples": args.max_samples, "eta": args.eta, "seed": args.seed,
             "norm0_corner_bug": args.norm0_corner_bug, "allow_tf32": args.allow_tf32, **choice_flags(choice)}
    out = open_stage(loaded.run, "analysis", flags, args.force)
    if out is None:
        return 0
    sets = evaluation_sets(loaded, args.data_root, choice)  # bad OOD folders fail here, before any file changes
    save_spectra(out, loaded.layers, svds, ranks, positions)

    test_set = test_set_tag(loaded.dataset_name)
    perturbed = noise_layers(loaded)
    model = copy.deepcopy(loaded.model)
    layers = loaded.layers_of(model)
    norms = batch_norms_after(model, layers, loaded.example_input())
    originals = [layer.weight.detach().clone() for layer in loaded.layers]
    accuracy, reused, samples, batches_used = {}, {}, {"grams": {}, "stability": {}}, set()
    for variant in variants(svds, ranks, positions):
        install(layers, originals, svds, variant)
        reused.update({tag: variant.tag for tag in variant.tags if tag != variant.tag})
        for ds, data in sets.items():
            def measure(batch: int, variant=variant, ds=ds, data=data) -> tuple[dict, torch.Tensor | None]:
                with gram_spill(out, variant, data, args, layers, ds, loaded.device) as spill:
                    arrays, chi = measure_set(model, layers, norms, variant, data, loaded, args, ds, perturbed,
                                              spill, batch)
                    if spill is not None:
                        out.save("grams", spill.gram_data(), ds=ds)
                        samples["grams"][ds] = spill.rows
                return arrays, chi
            (arrays, chi), batch = halving_batch(measure, args.batchsize, f"analysis of {variant.tag} on {ds}")
            batches_used.add(batch)
            for tag in variant.tags:
                out.save("projections", {**arrays, "ranks": np.array(variant.ranks)}, tag=tag, ds=ds)
                if chi is not None:
                    out.save("sensitivity", {"chi": chi, "noise_layers": np.array(perturbed),
                                             "eta": np.array(args.eta)}, tag=tag, ds=ds)
                if ds == test_set:
                    accuracy[tag] = loaded.accuracy(arrays["logits"], arrays["labels"])
            if chi is not None:
                samples["stability"][ds] = len(chi)
    tags = ["all", *(f"{q:03d}" for q in positions)]
    caps = {"ratios": len(positions), "num_grams": args.num_grams, "num_stability": args.num_stability,
            "max_samples": args.max_samples, "stability_variants": args.stability_variants,
            "batchsize": args.batchsize, "batchsize_used": min(batches_used)}
    seconds = time.perf_counter() - started
    out.done(variants=tags, reused=reused, datasets=list(sets), test_accuracy={tag: accuracy[tag] for tag in tags},
             caps=caps, paper_caps=PAPER_CAPS, gram_samples=samples["grams"], stability_samples=samples["stability"],
             norm0_corner_bug=args.norm0_corner_bug, **choice_summary(choice), seconds=seconds)
    print(f"{out.dir}: {len(tags)} networks ({len(tags) - len(reused)} distinct) x {len(sets)} sets, test accuracy "
          f"{accuracy['all']:.4f} (rank-truncated: {min(accuracy.values()):.4f} .. {max(accuracy.values()):.4f}) "
          f"in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
