"""Weight spectra, low-rank networks, projection energies, noise sensitivity and Gram data (seed000 §5-§6).

    python analyzing.py --model-name resnet18 --traindata cifar10 --num_classes 10 --start_epoch 1200 --resume
    python analyzing.py --model-name resnet18 --traindata digits --ratios 6 --num_grams 300 --num_stability 200

Layer l is the input of the l-th analysis weight layer (DESIGN.md "Layers", seed000 §5): the main-path convs and
the classifier, shortcut convs excluded. One float64 SVD per weight matrix (§6.1) gives its singular values and,
for every threshold ratio r, the rank k(r) = #{s_j > r s_0}. Network variants (§6.2): "all" is the trained
network; "<q>" (q = 000..052, the position of r among the 53 thresholds) replaces every analysis weight by its
rank-k(r) truncation W_k, leaving BN, biases and shortcuts untouched; a threshold whose ranks equal those of the
threshold below it gives the same network and is not evaluated again (`ratio_positions`). Evaluation sets:
"traindata" (the train split, no augmentation), the in-distribution test set (named after the dataset),
datasets.ood_sets(dataset) (the reported OOD sets) and datasets.validation_ood(dataset) (the set that chooses d
and the rank threshold later); a dataset without OOD sets (imagenet, imagefolder:PATH, twopoints) gets only its
train and test splits (pipeline/evaluation.py).

Per variant and evaluation set, one forward pass per batch captures every layer and reduces each sample (§6.3):
  norm00 = ||x||^2 of the whole feature;
  norm0  = sum over the layer's receptive-field patches of ||patch||^2 (each pixel counted once per window that
           covers it, for the layer's own stride and padding; = norm00 for a Linear);
  norm1  = sum over patches of ||V_k^T patch||^2, the energy in the top-k right-singular space of the variant's
           own weight ("all": k = every singular vector). Readers form the proposed score normr = norm1 / norm0.
Noise sensitivity (§6.5), on the first --num_stability samples of the test and OOD sets (not traindata: the
scores compare ID test with OOD samples), for every variant (--stability_variants original: "all" only): for each
perturbed layer l, f_l <- f_l + eta ||f_l|| xi / ||xi|| (xi ~ N(0, I) per sample from a generator seeded with
--seed afresh for every variant and set, so all variants see the same draws), propagated forward in eval mode;
then chi_m = ||f_m(x~) - f_m(x)||^2 / ||f_m(x)||^2 at every layer m >= l and at the logits (chi_l = eta^2).
The noise is added in place by a forward pre-hook on weight layer l, so every consumer of f_l (the residual
shortcut too) sees the perturbed feature. Perturbed layers ("noise layers"): for residual networks the block
boundaries, i.e. layer 0, the input of every residual block and the classifier input (seed000's `layers0`:
0, 1, 3, ..., 17 for ResNet-18); every layer for networks without residual blocks (VGG: 0..10, as in seed000).
Gram data (§6.4) of the "all" network on the first --num_grams samples of each set: per layer the flattened
features when d < n, else the uncentred linear Gram X X^T, both float64 (DESIGN.md "Performance": the cheaper of
the two forms); kernels.py turns either into centred-Gram spectra. The tied covariance of the train features
(§6.6) is computed by features.py. Memory: the first max(--num_grams, --num_stability) samples of a batch are
kept at every layer, and the Gram samples of a whole set until its Gram is formed (n x sum_l d_l floats).

Files in <run>/analysis/ (L layers, R ratios, N samples of a set, n = the samples kept for noise or Grams):
  svals.npz                   svals (L, max_len) singular values, descending, zero-padded; lengths (L,);
                              ratios (R,); ratio_index (R,) their positions among the 53 thresholds; ndims (L, R);
                              fan_in, fan_out (L,) the weight matrix shapes (for the residual parameter count)
  projections_<tag>_<ds>.npz  norm00, norm0, norm1 (N, L) float64; logits (N, outputs); labels (N,) (-1 for OOD);
                              ranks (L,) the k of every layer's projector
  sensitivity_<tag>_<ds>.npz  chi (n, P, L + 1) float64: chi[i, p, m] at layer m (m = L: the logits) when layer
                              noise_layers[p] is perturbed, NaN for m < noise_layers[p]; noise_layers (P,); eta ()
                              (for the perturbed variants and the test and OOD sets)
  grams_<ds>.npz              per layer ll = 00..L-1 either feat_<ll> (n, d) or gram_<ll> (n, n), float64
  _done.json                  flags, argv, variants, datasets, test accuracy of every variant (the hinge head
                              of a twopoints run included: measures.classification), seconds
where <tag> is "all" or a three-digit ratio position q, and <ds> is traindata, the dataset, or an OOD set.

Flags and evaluation sets are shared with features.py and kernels.py (pipeline/evaluation.py); file names
come from pipeline/contract.py.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from measures.ood import patch_energy, projection_energy
from measures.similarity import gram_linear
from measures.spectra import WeightSVD, rank_at_ratio, threshold_ratios, truncate, weight_svd
from pipeline.contract import TRAIN_SET, StageOutput, open_stage
from pipeline.evaluation import check_positive, evaluation_sets, set_size, stage_parser, test_set_tag
from pipeline.loaded import LoadedRun
from utils.cli import run_main
from utils.device import make_generator, resolve_device
from utils.taps import LayerTaps

ETA = 0.1
DEFAULT_GRAMS = 1000
DEFAULT_STABILITY = 1000


def parse_args(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--ratios", type=int, default=53,
                        help="evaluate N of the 53 threshold ratios of seed000 §6.1, evenly spaced among those "
                             "that give distinct rank-truncated networks (duplicates are never evaluated)")
    parser.add_argument("--num_grams", type=int, default=DEFAULT_GRAMS,
                        help="samples of each set whose Gram data are kept (seed000: 10000)")
    parser.add_argument("--num_stability", type=int, default=DEFAULT_STABILITY,
                        help="samples of each set used for noise sensitivity (seed000: 10000)")
    parser.add_argument("--eta", type=float, default=ETA, help="relative noise norm of the perturbation (§6.5)")
    parser.add_argument("--stability_variants", choices=["every", "original"], default="every",
                        help="noise sensitivity for every network variant (§6.5) or for the original one only "
                             "(the perturbed passes cost ~3x the clean passes)")
    args = parser.parse_args(argv)
    check_positive(parser, args, "--ratios", "--num_grams", "--num_stability", "--batchsize", "--max-samples")
    if args.ratios > 53:
        parser.error(f"--ratios takes at most the 53 thresholds of seed000 §6.1, got {args.ratios}")
    if args.eta <= 0:
        parser.error(f"--eta must be positive, got {args.eta}")
    return args


def ratio_positions(ranks: torch.Tensor, count: int) -> list[int]:
    """`count` of the 53 thresholds whose rank-truncated networks differ, evenly spaced among them (seed000 §6.2).

    A threshold that keeps the same rank at every layer as the one below it gives the same network, so only the
    first threshold of each distinct rank configuration is a candidate; the lowest and highest are always kept.

    Args:
      ranks: (L, 53) k(r) of every layer at every threshold, non-increasing along r.
      count: how many networks to evaluate (all distinct ones when count >= their number).
    """
    distinct = [q for q in range(ranks.shape[1]) if q == 0 or not torch.equal(ranks[:, q], ranks[:, q - 1])]
    if count >= len(distinct):
        return distinct
    return [distinct[i] for i in sorted({int(round(i)) for i in np.linspace(0, len(distinct) - 1, count)})]


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


@dataclass
class Variant:
    """One evaluated network: its tag, per-layer ranks, and the projector rows V_k^T of every layer."""

    tag: str
    ranks: list[int]
    projectors: list[torch.Tensor]   # (k, fan_in) rows of Vh per layer, float64


def variants(svds: list[WeightSVD], ranks: torch.Tensor, positions: list[int]) -> Iterator[Variant]:
    """"all" (full-rank projectors), then one variant per evaluated ratio (§6.2)."""
    full = [svd.S.numel() for svd in svds]
    yield Variant("all", full, [svd.Vh for svd in svds])
    for column, q in enumerate(positions):
        ks = [int(k) for k in ranks[:, column]]
        yield Variant(f"{q:03d}", ks, [svd.Vh[:k] for svd, k in zip(svds, ks)])


@torch.no_grad()
def install(layers: list[nn.Module], originals: list[torch.Tensor], svds: list[WeightSVD], variant: Variant) -> None:
    """Write the variant's weights into the working copy: the originals for "all", W_k otherwise."""
    for layer, original, svd, k in zip(layers, originals, svds, variant.ranks):
        weight = original if variant.tag == "all" else truncate(svd, k)[0]
        layer.weight.copy_(weight)


def projector_weight(layer: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """V_k^T as a (k, in, kh, kw) weight with the layer's geometry: ||V_k^T p||^2 = ||Pi_k p||^2 (§6.1)."""
    return rows.reshape(rows.shape[0], *layer.weight.shape[1:])


def energy(x: torch.Tensor) -> torch.Tensor:
    """||x||^2 per sample, accumulated in float64: (B, ...) -> (B,)."""
    return x.flatten(1).square().sum(1, dtype=torch.float64)


class BatchReducer:
    """LayerTaps callback: per-sample energies of every layer, and the first `keep` samples' features."""

    def __init__(self, layers: list[nn.Module], variant: Variant, keep: int):
        self.layers, self.keep = layers, keep
        self.weights = [projector_weight(layer, rows) for layer, rows in zip(layers, variant.projectors)]

    def __call__(self, index: int, x: torch.Tensor) -> dict:
        layer = self.layers[index]
        return {"norm00": energy(x), "norm0": patch_energy(x, layer),
                "norm1": projection_energy(x, layer, self.weights[index]), "head": x[:self.keep].clone()}


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
    scales = [energy(f) for f in clean] + [energy(clean_logits)]
    chi = torch.full((n, len(perturbed), L + 1), float("nan"), dtype=torch.float64, device=x.device)
    for p, start in enumerate(perturbed):
        reduce = lambda m, f: energy(f - clean[m]) if m >= start else None  # noqa: E731,B023
        handle = layers[start].register_forward_pre_hook(perturb_in_place(eta, generator))
        try:
            with LayerTaps(layers, reduce=reduce) as taps:
                logits = model(x.clone())
        finally:
            handle.remove()
        chi[:, p, start:L] = torch.stack(taps.values[start:], dim=1)
        chi[:, p, L] = energy(logits - clean_logits)
    return chi / torch.stack(scales, dim=1)[:, None, :]


@torch.no_grad()
def measure_set(model: nn.Module, layers: list[nn.Module], variant: Variant, data, loaded: LoadedRun, args,
                ds: str, perturbed: list[int]) -> tuple[dict, torch.Tensor | None, list | None]:
    """One pass over an evaluation set: energies, logits, labels; chi on the first samples (None for traindata or
    when this variant is not perturbed); the first samples' features of every layer for the Gram data of "all"."""
    original = variant.tag == "all"
    noisy = ds != TRAIN_SET and (original or args.stability_variants == "every")
    n_stab = min(args.num_stability, set_size(data, args.max_samples)) if noisy else 0
    n_gram = min(args.num_grams, set_size(data, args.max_samples)) if original else 0
    generator = make_generator(loaded.device, args.seed)
    columns = {"norm00": [], "norm0": [], "norm1": [], "logits": [], "labels": []}
    chi, gram_rows = [], [[] for _ in layers] if original else None
    for start, x, labels in loaded.batches(data, args.batchsize, args.max_samples, f"{variant.tag} {ds}"):
        keep = max(0, min(len(x), max(n_stab, n_gram) - start))
        with LayerTaps(layers, reduce=BatchReducer(layers, variant, keep)) as taps:
            logits = model(x)
        for key in ("norm00", "norm0", "norm1"):
            columns[key].append(torch.stack([value[key] for value in taps.values], dim=1).cpu())
        columns["logits"].append(logits.cpu())
        columns["labels"].append(labels.cpu())
        heads = [value["head"] for value in taps.values]
        rows = max(0, min(len(x), n_stab - start))
        if rows:
            chi.append(sensitivities(model, layers, x[:rows], [h[:rows] for h in heads], logits[:rows], perturbed,
                                     args.eta, generator).cpu())
        rows = max(0, min(len(x), n_gram - start))
        if rows:
            for store, head in zip(gram_rows, heads):
                store.append(head[:rows].flatten(1).cpu())
    arrays = {key: torch.cat(parts) for key, parts in columns.items()}
    return arrays, torch.cat(chi) if chi else None, gram_rows


def gram_arrays(rows: list[list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """feat_<ll> (n, d) when d < n, else gram_<ll> = X X^T (n, n), float64 (the cheaper form)."""
    arrays = {}
    for index, parts in enumerate(rows):
        X = torch.cat(parts).to(torch.float64)
        n, d = X.shape
        arrays[f"feat_{index:02d}" if d < n else f"gram_{index:02d}"] = X if d < n else gram_linear(X)
    return arrays


def save_spectra(out: StageOutput, layers: list[nn.Module], svds: list[WeightSVD], ranks: torch.Tensor,
                 positions: list[int]) -> None:
    lengths = [svd.S.numel() for svd in svds]
    svals = torch.zeros(len(svds), max(lengths), dtype=torch.float64)
    for row, svd in zip(svals, svds):
        row[:svd.S.numel()] = svd.S.cpu()
    out.save("svals", {"svals": svals, "lengths": np.array(lengths), "ratios": threshold_ratios()[positions],
                       "ratio_index": np.array(positions), "ndims": ranks.cpu(),
                       "fan_in": np.array([layer.weight[0].numel() for layer in layers]),
                       "fan_out": np.array([layer.weight.shape[0] for layer in layers])})


def main(argv=None) -> int:
    args = parse_args(argv)
    loaded = LoadedRun.from_args(args, device=resolve_device(args.device))
    started = time.perf_counter()
    svds = [weight_svd(layer.weight) for layer in loaded.layers]
    every = threshold_ratios()
    all_ranks = torch.stack([rank_at_ratio(svd.S, every.to(svd.S.device)) for svd in svds]).cpu()  # (L, 53)
    positions = ratio_positions(all_ranks, args.ratios)
    ranks = all_ranks[:, positions]                                                                # (L, R)
    flags = {"epoch": loaded.epoch, "ratio_index": positions, "num_grams": args.num_grams,
             "num_stability": args.num_stability, "stability_variants": args.stability_variants,
             "max_samples": args.max_samples, "eta": args.eta, "seed": args.seed}
    out = open_stage(loaded.run, "analysis", flags, args.force)
    if out is None:
        return 0
    save_spectra(out, loaded.layers, svds, ranks, positions)

    sets = evaluation_sets(loaded, args.data_root)
    test_set = test_set_tag(loaded.dataset_name)
    perturbed = noise_layers(loaded)
    model = copy.deepcopy(loaded.model)
    layers = loaded.layers_of(model)
    originals = [layer.weight.detach().clone() for layer in loaded.layers]
    accuracy = {}
    for variant in variants(svds, ranks, positions):
        install(layers, originals, svds, variant)
        for ds, data in sets.items():
            arrays, chi, gram_rows = measure_set(model, layers, variant, data, loaded, args, ds, perturbed)
            out.save("projections", {**arrays, "ranks": np.array(variant.ranks)}, tag=variant.tag, ds=ds)
            if chi is not None:
                out.save("sensitivity", {"chi": chi, "noise_layers": np.array(perturbed), "eta": np.array(args.eta)},
                         tag=variant.tag, ds=ds)
            if gram_rows is not None:
                out.save("grams", gram_arrays(gram_rows), ds=ds)
            if ds == test_set:
                accuracy[variant.tag] = loaded.accuracy(arrays["logits"], arrays["labels"])
    seconds = time.perf_counter() - started
    out.done(variants=list(accuracy), datasets=list(sets), test_accuracy=accuracy, seconds=seconds)
    print(f"{out.dir}: {len(accuracy)} networks x {len(sets)} sets, test accuracy {accuracy['all']:.4f} "
          f"(rank-truncated: {min(accuracy.values()):.4f} .. {max(accuracy.values()):.4f}) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
