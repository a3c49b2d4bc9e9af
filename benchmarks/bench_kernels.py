"""Gram spectra between layers (seed000 §8): the toolkit's d x d form vs the n x n eigendecompositions of §8.

Toolkit: `gram_factor` (eigh of the d x d covariance, F = X W) and `cka_spectrum` on the r_a x r_b matrix F_a^T F_b.
Reference, as seed000 §8 writes it: uncentred Gram G = X X^T (n x n), K_c = H G H, eigh, keep lambda > 1e-6 max,
P = V_a^T V_b, M = L_a^1/2 P L_b^1/2 and the eigenvalues of M M^T (plus the cca / reg0 / reg1 spectra of §8, so
both sides compute the same four spectra). Compared: the CKA values (sums of the cka spectra), in float64.

    python benchmarks/run_all.py --only kernels                  # n = 2000 (d = 256, 512; 6 layers)
    python benchmarks/run_all.py --only kernels --size large     # n = 10000, seed000's num_stability: the pairs
                                                                 # only, each n x n eigh takes a minute or more
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import time
from collections.abc import Callable

import torch

from benchmarks.common import Result, best_time, max_rel_diff, peak_memory_mb, sync
from measures.similarity import SPECTRUM_THRESHOLD, cka_spectrum, gram_factor

SIZES = {
    "default": dict(n=2000, pair_dims=(256, 512), layer_dims=(64, 128, 128, 256, 256, 512)),
    "large": dict(n=10000, pair_dims=(256, 512), layer_dims=()),
}
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
LATENT = 32  # shared latent factors, so that layers are partly similar (CKA between 0 and 1)


def layer_features(n: int, dims: tuple[int, ...], generator: torch.Generator, device: torch.device):
    """Float32 features (n, d) per layer: a shared latent mixed in plus noise, with power-law channel scales."""
    latent = torch.randn(n, LATENT, generator=generator, device=device)
    features = []
    for d in dims:
        mix = torch.randn(LATENT, d, generator=generator, device=device) / math.sqrt(LATENT)
        noise = torch.randn(n, d, generator=generator, device=device)
        scales = torch.arange(1, d + 1, device=device, dtype=torch.float32).rsqrt()     # variance ~ 1/m
        features.append((latent @ mix + noise) * scales)
    return features


def _keep_large(values: torch.Tensor) -> torch.Tensor:
    values = values.sort(descending=True).values
    return values[values > SPECTRUM_THRESHOLD * values[0]]


def reference_gram_eigen(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """seed000 §8: eigenvalues (descending, > 1e-6 max) and eigenvectors of the centred n x n Gram."""
    X = X.reshape(X.shape[0], -1).double()
    G = X @ X.T                                                                    # (n, n), as stored by §6.4
    Kc = G - G.mean(0, keepdim=True) - G.mean(1, keepdim=True) + G.mean()          # H G H
    eigenvalues, V = torch.linalg.eigh(Kc)
    eigenvalues, V = eigenvalues.flip(0), V.flip(1)
    keep = eigenvalues > SPECTRUM_THRESHOLD * eigenvalues[0]
    return eigenvalues[keep], V[:, keep]


def reference_spectra(eigen_a, eigen_b) -> dict[str, torch.Tensor]:
    """seed000 §8 spectra of a layer pair from the two n x n eigendecompositions."""
    (la, Va), (lb, Vb) = eigen_a, eigen_b
    if Va is Vb:
        return {name: _keep_large(values) for name, values in
                {"cka": la.square() / la.square().sum(), "cca": torch.ones_like(la),
                 "reg0": la / la.sum(), "reg1": la / la.sum()}.items()}
    P = Va.T @ Vb                                                                   # (r_a, r_b)
    M = la.sqrt()[:, None] * P * lb.sqrt()[None, :]
    MMt = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
    spectra = {
        "cka": torch.linalg.eigvalsh(MMt) / (la.square().sum() * lb.square().sum()).sqrt(),
        "cca": torch.linalg.svdvals(P),
        "reg1": torch.linalg.eigvalsh((P * lb) @ P.T) / lb.sum(),
        "reg0": torch.linalg.eigvalsh((P.T * la) @ P) / la.sum(),
    }
    return {name: _keep_large(values) for name, values in spectra.items()}


def cka_matrix(factors: list, spectra: Callable) -> torch.Tensor:
    """(L, L) CKA values, sum of the cka spectrum of every pair (i <= j), from per-layer factors or eigens."""
    L = len(factors)
    values = torch.zeros(L, L, dtype=torch.float64)
    for i in range(L):
        for j in range(i, L):
            values[i, j] = values[j, i] = spectra(factors[i], factors[j])["cka"].sum()
    return values


def for_peak_memory(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """Wrap fn for `peak_memory_mb`, which on CPU runs it in a forked child and reads the RSS growth.

    In the child only: one thread, since OpenMP (libgomp) deadlocks in a child forked from a process that already
    ran a parallel region; and glibc serves every allocation of 1 MiB or more by mmap, so that the RSS follows the
    live tensors (as the CUDA allocator's peak does) instead of the heap left by whatever the parent ran before.
    fn is returned unchanged on CUDA, where nothing is forked.
    """
    if device.type != "cpu":
        return fn

    def in_child():
        torch.set_num_threads(1)
        mallopt = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt", None)
        if mallopt is not None:
            mallopt(M_MMAP_THRESHOLD, 2**20)
        return fn()
    return in_child


def timed_once(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    """Wall time and output of one call (the reference is too slow to repeat)."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    n = cfg["n"]
    generator = torch.Generator(device=device).manual_seed(0)
    results = []
    for d in cfg["pair_dims"]:
        Xa, Xb = layer_features(n, (d, d), generator, device)

        def toolkit(Xa=Xa, Xb=Xb):
            return cka_spectrum(Xa, Xb)["cka"].sum()

        def reference(Xa=Xa, Xb=Xb):
            return reference_spectra(reference_gram_eigen(Xa), reference_gram_eigen(Xb))["cka"].sum()

        # the peak of the reference runs it again, in a one-thread child: affordable at the default size only
        peaks = [peak_memory_mb(for_peak_memory(fn, device), device) for fn in (toolkit, reference)] \
            if size == "default" else [None, None]
        reference_s, reference_cka = timed_once(reference, device)
        results.append(Result(f"cka spectrum pair n={n} d={d}", best_time(toolkit, device), reference_s,
                              max_rel_diff(toolkit(), reference_cka), *peaks, note=f"CKA {float(reference_cka):.4f}"))

    if not cfg["layer_dims"]:
        return results
    layers = layer_features(n, cfg["layer_dims"], generator, device)

    def toolkit_matrix():
        return cka_matrix([gram_factor(X) for X in layers], cka_spectrum)

    def reference_matrix():
        return cka_matrix([reference_gram_eigen(X) for X in layers], reference_spectra)

    reference_s, reference_values = timed_once(reference_matrix, device)
    results.append(Result(f"cka spectra {len(layers)}x{len(layers)} layers n={n}", best_time(toolkit_matrix, device),
                          reference_s, max_rel_diff(toolkit_matrix(), reference_values),
                          note=f"d={'/'.join(map(str, cfg['layer_dims']))}"))
    return results
