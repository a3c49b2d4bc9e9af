"""Centred-Gram spectra of every layer and the CKA / CCA / regression spectra between layers (seed000 §8).

    python kernels.py --model-name resnet18 --traindata cifar10 --num_classes 10 --start_epoch 1200 --resume

Run analyzing.py first: this stage reads its Gram data (analysis/grams_<ds>.npz, the first --num_grams samples of
each evaluation set through the original network, stored per layer as features or as the linear Gram, whichever
is smaller). For every set and layer, the centred Gram K_c = H X X^T H (H = I - 1 1^T / n) is reduced to its
eigenvalues above 1e-6 x the largest and the matching factor F (K_c = F F^T): from the features through the d x d
covariance when d < n, from the stored Gram otherwise (measures.similarity.gram_factor / gram_factor_from_gram),
so no n x n matrix is formed when d < n. For every pair of layers a <= b, measures.similarity.cka_spectrum gives
  cka   eigenvalues of M M^T / sqrt(sum la^2 sum lb^2), M = F_a^T F_b; their sum is linear CKA;
  cca   singular values of P = V_a^T V_b (cosines of the principal angles);
  reg1  eigenvalues of P Lb P^T / sum lb; reg0  eigenvalues of P^T La P / sum la;
each kept above 1e-6 x its largest. Pairs (b, a) are filled by symmetry (reg0 and reg1 swap). CKA is within one
set (all layers see the same n samples), for every set.

Files in <run>/kernels/ (L layers, n Gram samples, r <= n values per spectrum; zero padding beyond the lengths):
  kernels_<ds>.npz   for ds = traindata, the dataset, every OOD set:
                     gram_eigenvalues (L, r) float64 descending; gram_lengths (L,)
                     cka (L, L) linear CKA matrix (= sum of the cka spectrum)
                     sum_<kind> (L, L), spectrum_<kind> (L, L, r), length_<kind> (L, L) for kind in cka, cca,
                     reg0, reg1 (entry [a, b]: layer a against layer b)
  _done.json         flags (the analysis stage's flags), argv, datasets (tags), ood_sets, near_ood, validation_ood,
                     ood_note, ood_tags (the analysis stage's OOD choice, pipeline.evaluation.choice_summary), seconds
The sets are the analysis stage's (its --ood-sets choice included), so this stage takes no OOD flags.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from measures.similarity import GramFactor, cka_spectrum, gram_factor, gram_factor_from_gram
from pipeline.contract import done_record, layer_key, load, open_stage, require, stage_dir
from pipeline.evaluation import choice_summary, stage_parser
from pipeline.loaded import check_run_flags, load_config
from utils.cli import run_main
from utils.device import measurement_device
from utils.errors import ToolkitError
from utils.rundir import RunDir

KINDS = ("cka", "cca", "reg0", "reg1")
SWAPPED = {"cka": "cka", "cca": "cca", "reg0": "reg1", "reg1": "reg0"}
OOD_KEYS = tuple(choice_summary(None))   # the summary keys naming the OOD choice (ood_sets, near_ood, ...)


def parse_args(argv=None):
    return stage_parser(__doc__, ood=False, reads_images=False).parse_args(argv)


def layer_factors(grams: dict[str, np.ndarray], device: torch.device) -> list[GramFactor]:
    """One GramFactor per layer, from feat_<ll> (n, d) or gram_<ll> (n, n) as analyzing.py stored it, computed on
    `device` one layer at a time and kept on the CPU (every layer's n x r float64 factor on a GPU at once would be
    0.8 GB each at n = 10,000); the pairs move to the device one at a time (`similarity_arrays`)."""
    count = len({key.split("_")[1] for key in grams})
    factors = []
    for index in range(count):
        features = grams.get(layer_key(index, "feat"))
        if features is not None:
            factor = gram_factor(torch.from_numpy(features).to(device))
        else:
            factor = gram_factor_from_gram(torch.from_numpy(grams[layer_key(index, "gram")]).to(device))
        factors.append(factor.to("cpu"))
    return factors


def padded(rows: list[torch.Tensor], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D tensors into a zero-padded array of `shape` + (max length,), with their lengths."""
    width = max(len(row) for row in rows)
    values = np.zeros((len(rows), width))
    for out, row in zip(values, rows):
        out[:len(row)] = row.cpu().numpy()
    return values.reshape(*shape, width), np.array([len(row) for row in rows]).reshape(shape)


def similarity_arrays(factors: list[GramFactor], desc: str,
                      device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Gram eigenvalues and every pair's spectra, sums and lengths (module docstring); each pair is computed on
    `device`, where only its two factors are held (layer a's for its whole row of pairs)."""
    L = len(factors)
    spectra = {kind: [[None] * L for _ in range(L)] for kind in KINDS}
    pairs = [(a, b) for a in range(L) for b in range(a, L)]
    held = (-1, None)
    for a, b in tqdm(pairs, desc=desc, unit="pair", disable=None, leave=False):
        if held[0] != a:
            held = (a, factors[a].to(device))
        result = cka_spectrum(held[1], held[1] if b == a else factors[b].to(device))
        for kind in KINDS:
            spectra[kind][a][b] = result[kind]
            spectra[SWAPPED[kind]][b][a] = result[kind]
    arrays = {}
    arrays["gram_eigenvalues"], arrays["gram_lengths"] = padded([f.eigenvalues for f in factors], (L,))
    for kind in KINDS:
        flat = [spectrum for row in spectra[kind] for spectrum in row]
        arrays[f"spectrum_{kind}"], arrays[f"length_{kind}"] = padded(flat, (L, L))
        arrays[f"sum_{kind}"] = np.array([float(s.sum()) for s in flat]).reshape(L, L)
    arrays["cka"] = arrays["sum_cka"]
    return arrays


def analysis_flags(run: RunDir, args) -> dict:
    """The analysis stage's done record (its flags and datasets); errors when it has not run or ran on another
    epoch."""
    require(run, "analysis")
    done = done_record(run, "analysis")
    if "datasets" not in done:
        raise ToolkitError(f"the analysis stage's done record of {run.root} lists no datasets; rerun analyzing.py "
                           "with --force")
    if args.start_epoch is not None and args.start_epoch != done["flags"]["epoch"]:
        raise ToolkitError(f"{stage_dir(run, 'analysis')} holds epoch {done['flags']['epoch']}, not --start_epoch "
                           f"{args.start_epoch}; rerun analyzing.py --start_epoch {args.start_epoch} first")
    return done


def main(argv=None) -> int:
    args = parse_args(argv)
    run = RunDir.from_args(args)
    check_run_flags(args, load_config(run), run)  # a clear error when the run does not exist or the flags disagree
    analysis = analysis_flags(run, args)
    flags = {"analysis": analysis["flags"], "allow_tf32": args.allow_tf32}
    out = open_stage(run, "kernels", flags, args.force)
    if out is None:
        return 0
    started = time.perf_counter()
    device = measurement_device(args.device, args.allow_tf32)
    for ds in analysis["datasets"]:
        grams = load(run, "analysis", "grams", ds=ds)
        out.save("kernels", similarity_arrays(layer_factors(grams, device), ds, device), ds=ds)
    seconds = time.perf_counter() - started
    choice = {key: analysis[key] for key in OOD_KEYS if key in analysis}
    out.done(datasets=analysis["datasets"], **choice, seconds=seconds)
    print(f"{out.dir}: Gram spectra and layer-pair CKA on {len(analysis['datasets'])} sets in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
