"""Diffeomorphism and noise stability of a representation (seed004 §2.1-§2.5, §2.8, §2.11).

Relative stability asks how much a representation f moves under a small smooth deformation tau of the input,
compared with how much it moves under white noise eta of the same norm (Petrini et al. 2021, Tomasini et al. 2023):

    D_f = E||f(tau x) - f(x)||^2 / E||f(x) - f(z)||^2        (diffeo sensitivity)
    G_f = E||f(x + eta) - f(x)||^2 / E||f(x) - f(z)||^2      (noise sensitivity)
    R_f = D_f / G_f                                            (relative stability)

The pieces, in the order a stage uses them:

    T = temperature_for_displacement(1.0, n=32, cut=3)        # 1.132e-3, seed004 §2.1
    x_tau = diffeo(x, T, cut=3, generator=g)                  # one random field per image
    x_eta = matched_noise(x, x_tau, generator=g)              # ||eta_i|| = ||x_tau_i - x_i||
    acc = StabilityAccumulator()
    acc.update({"out": f(x)}, {"out": f(x_tau)}, {"out": f(x_eta)})   # once per batch of probes
    acc.result()["out"]                                       # {"D", "G", "R", "den"}

Twopoints ("scale detection") data use a one-pixel translation of each active pixel instead of a diffeomorphism
(`translate_points`, seed004 §2.8; the moved points are redrawn by `datasets.twopoints.render_points`).
`shuffle_conv_channels` destroys the channel-to-channel wiring of a trained net while keeping every 2-D filter
(seed004 §2.5).

The 1-D scale-detection task of §2.12 moves each active site by one (`move_sites`, label kept) and adds rectified
noise of matched variance (`rectified_noise`).

`constant_filter_stabilities` is the solvable model of §2.11: a 1-D CNN with homogeneous filters and ReLU whose
D_f, G_f, R_f follow power laws in depth k (s=1: D_f ~ k^-1, G_f ~ k^(1/2), R_f ~ k^(-3/2));
`pooling_model_prediction` is its closed form for s = F = 2 (D_f ~ 2^-k, G_f ~ 2^k, R_f ~ 4^-k).

Every random draw takes an explicit `torch.Generator`; draws happen on the generator's device (the inputs' device
when `generator` is None) and are moved to the inputs' device, so a CPU generator also drives CUDA inputs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from utils.device import draw_device

__all__ = [
    "temperature_range", "temperature_for_displacement", "typical_displacement",
    "displacement_fields", "warp", "diffeo", "matched_noise",
    "translate_points", "move_sites", "rectified_noise",
    "relative_stability", "StabilityAccumulator", "layer_stabilities",
    "shuffle_conv_channels",
    "constant_filter_network", "constant_filter_stabilities", "pooling_model_prediction",
]

DEN_EPSILON = 1e-10  # added to the pair-distance denominator, as in seed004 §2.3


def _randn(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Standard normal draws on the generator's device (or `device`), returned on `device`."""
    return torch.randn(shape, generator=generator, device=draw_device(generator, device), dtype=dtype).to(device)


def _check_cut(cut: int) -> None:
    if cut < 2:
        raise ValueError(f"cut must be an integer >= 2 for a temperature (ln(cut) > 0), got {cut}")


# ----------------------------------------------------------------------------------------------------------------
# Temperatures (seed004 §2.1)
# ----------------------------------------------------------------------------------------------------------------

def temperature_range(n: int, cut: int) -> tuple[float, float]:
    """Natural temperature range of the max-entropy diffeomorphism (seed004 §2.1).

    T_min = 1 / (pi n^2 ln c) makes the typical central displacement half a pixel; T_max = 4 / (pi^3 c^2 ln c) is
    the largest T without overhangs (|grad tau| ~ 1). The range is non-empty only when c < 2n/pi.

    Args:
      n: image side in pixels.
      cut: high-frequency cut-off c (>= 2).

    Returns:
      (T_min, T_max) as floats; for n=32: c=3 -> (2.83e-4, 1.31e-2), c=15 -> (1.15e-4, 2.12e-4).
    """
    _check_cut(cut)
    log_cut = math.log(cut)
    return 1.0 / (math.pi * n**2 * log_cut), 4.0 / (math.pi**3 * cut**2 * log_cut)


def temperature_for_displacement(delta: float, n: int, cut: int) -> float:
    """Temperature whose typical central displacement is `delta` pixels: T = 4 delta^2 / (pi n^2 ln c) (seed004 §2.1).

    This asymptotic formula is the one the stability code uses; for small c the exact RMS displacement of the
    finite sine sum differs (1.27 px at the centre for delta=1, c=3, n=32).

    Args:
      delta: typical displacement in pixels.
      n: image side in pixels.
      cut: high-frequency cut-off c (>= 2).

    Returns:
      T as a float; 1.132e-3 for (delta=1, n=32, c=3) and 1.478e-3 for n=28.
    """
    _check_cut(cut)
    return 4.0 * delta**2 / (math.pi * n**2 * math.log(cut))


def typical_displacement(T: float, n: int, cut: int) -> float:
    """Typical central displacement in pixels, delta = (n/2) sqrt(pi T ln c) (seed004 §2.1).

    The inverse of `temperature_for_displacement`.

    Args:
      T: temperature.
      n: image side in pixels.
      cut: high-frequency cut-off c (>= 2).

    Returns:
      delta as a float.
    """
    _check_cut(cut)
    return 0.5 * n * math.sqrt(math.pi * T * math.log(cut))


# ----------------------------------------------------------------------------------------------------------------
# Max-entropy diffeomorphism (seed004 §2.1)
# ----------------------------------------------------------------------------------------------------------------

def _sine_basis(cut: int, n: int, device, dtype) -> torch.Tensor:
    """(cut, n) matrix sin(k pi u) for k = 1..cut and u = linspace(0, 1, n), exactly zero at u = 0 and u = 1."""
    k = torch.arange(1, cut + 1, device=device, dtype=dtype)
    u = torch.linspace(0.0, 1.0, n, device=device, dtype=dtype)
    basis = torch.sin(math.pi * k[:, None] * u[None, :])
    basis[:, -1] = 0.0  # sin(k pi) is 0 (sin(0) already is); drop the 1e-16 round-off so the border is exactly still
    return basis


def displacement_fields(
    batch: int,
    n: int,
    T: float | torch.Tensor,
    cut: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel displacements (dx, dy) of `batch` independent max-entropy diffeomorphisms (seed004 §2.1).

    phi(u, v) = sum_{i,j=1..c} C_ij sin(i pi u) sin(j pi v), with u the column and v the row coordinate on
    linspace(0, 1, n) and C_ij ~ N(0, T / (i^2 + j^2)) inside the disk sqrt(i^2 + j^2) < c + 1/2 (zero outside).
    Two independent fields per image give dx = n phi_x and dy = n phi_y; both vanish on the border.
    All fields come from one draw of (batch, 2, c, c) coefficients and one einsum with the sine basis.

    Args:
      batch: number of independent fields B.
      n: image side in pixels.
      T: temperature, a float or a (B,) tensor (one temperature per image).
      cut: high-frequency cut-off c (>= 1).
      generator: source of the coefficients (None = global RNG).
      device, dtype: where and in which precision the fields are built.

    Returns:
      dx, dy: (B, n, n) tensors; dx[b, y, x] is the column displacement of pixel (y, x).
    """
    if cut < 1 or n < 2:
        raise ValueError(f"need cut >= 1 and n >= 2, got cut={cut}, n={n}")
    T = torch.as_tensor(T, device=device, dtype=dtype).expand(batch)
    if bool((T < 0).any()):
        raise ValueError("the temperature T must be >= 0")
    k = torch.arange(1, cut + 1, device=device, dtype=dtype)
    k2 = k[:, None] ** 2 + k[None, :] ** 2                                            # (c, c), [i, j]
    std = torch.where(k2.sqrt() < cut + 0.5, k2.rsqrt(), torch.zeros_like(k2))
    coeffs = _randn((batch, 2, cut, cut), generator, device, dtype) * std            # (B, 2, c, c)
    coeffs = coeffs * T.sqrt()[:, None, None, None]
    basis = _sine_basis(cut, n, device, dtype)                                        # (c, n)
    fields = n * torch.einsum("bfij,ix,jy->bfyx", coeffs, basis, basis)               # (B, 2, n, n)
    return fields[:, 0], fields[:, 1]


WARP_CHUNK = 64  # images per step of `warp`: the temporaries of one step stay in cache (4x faster at 5000 images)
GAUSSIAN_SIGMA = 0.4715  # width (pixels) of the Gaussian interpolation kernel of the authors' `remap` (seed004 §2.1)
INTERPOLATIONS = ("linear", "nearest", "gaussian")


def warp(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, interp: str = "linear") -> torch.Tensor:
    """Deform images by per-pixel displacements: out[y, x] = img(y - dy[y, x], x - dx[y, x]) (seed004 §2.1).

    Source coordinates are clamped to [0, n - 1] (border replicate). 'linear' interpolates bilinearly between
    the floor and ceil neighbours (both the same pixel at an integer coordinate, so a zero displacement is the
    identity exactly); 'nearest' rounds the source coordinates; 'gaussian' is the authors' third option (used in
    NeurIPS'21): out[y, x] = sum_{q,p} c_{qp} img[q, p] with normalised Gaussian weights over ALL pixels,
    c_{qp} = exp(-((q - y')^2 + (p - x')^2) / (2 s^2)) / sum_{q,p} exp(...), s = GAUSSIAN_SIGMA and (y', x') the
    clamped source point (not the identity at zero displacement: it blurs slightly). One gather of all neighbours
    (linear, nearest) or one separable contraction (gaussian: the weights factor into rows times columns) per
    WARP_CHUNK images.

    Args:
      images: (B, C, H, W) floating tensor.
      dx, dy: (B, H, W) column and row displacements in pixels.
      interp: 'linear', 'nearest' or 'gaussian'.

    Returns:
      (B, C, H, W) tensor, same dtype and device as `images`.
    """
    if interp not in INTERPOLATIONS:
        raise ValueError(f"interp must be one of {INTERPOLATIONS}, got {interp!r}")
    B, C, H, W = images.shape
    rows = torch.arange(H, device=images.device, dtype=dx.dtype)[:, None]
    cols = torch.arange(W, device=images.device, dtype=dx.dtype)[None, :]
    out = torch.empty_like(images)
    for start in range(0, B, WARP_CHUNK):
        chunk = slice(start, min(B, start + WARP_CHUNK))
        b = chunk.stop - chunk.start
        src_y = (rows - dy[chunk]).clamp(0, H - 1)                                    # (b, H, W)
        src_x = (cols - dx[chunk]).clamp(0, W - 1)
        if interp == "gaussian":
            out[chunk] = _gaussian_remap(images[chunk], src_y, src_x)
            continue
        flat = images[chunk].reshape(b, C, H * W)
        if interp == "nearest":
            index = (src_y.round() * W + src_x.round()).long().reshape(b, 1, H * W)
            out[chunk] = flat.gather(2, index.expand(b, C, H * W)).reshape(b, C, H, W)
            continue
        y0, x0 = src_y.floor(), src_x.floor()
        corner = (y0 * W + x0).long()                                                 # (b, H, W) top-left
        down, right = (src_y.ceil() - y0).long() * W, (src_x.ceil() - x0).long()      # 0 at integer coordinates
        index = torch.stack([corner, corner + right, corner + down, corner + down + right], 1)
        p = flat.gather(2, index.reshape(b, 1, 4 * H * W).expand(b, C, 4 * H * W)).reshape(b, C, 4, H * W)
        wy = (src_y - y0).to(images.dtype).reshape(b, 1, H * W)
        wx = (src_x - x0).to(images.dtype).reshape(b, 1, H * W)
        top = p[:, :, 0] + wx * (p[:, :, 1] - p[:, :, 0])
        bottom = p[:, :, 2] + wx * (p[:, :, 3] - p[:, :, 2])
        out[chunk] = (top + wy * (bottom - top)).reshape(b, C, H, W)
    return out


def _gaussian_remap(images: torch.Tensor, src_y: torch.Tensor, src_x: torch.Tensor) -> torch.Tensor:
    """The 'gaussian' interpolation of `warp`: exp(-(dq^2 + dp^2) / 2s^2) = exp(-dq^2 / 2s^2) exp(-dp^2 / 2s^2), and
    so is its normalisation, so the (H W) x (H W) weights of each image are rows (b, H, W, H) times columns
    (b, H, W, W)."""
    H, W = images.shape[-2:]
    weights = []
    for source, size in ((src_y, H), (src_x, W)):
        grid = torch.arange(size, device=images.device, dtype=source.dtype)
        kernel = (-(source[..., None] - grid) ** 2 / (2 * GAUSSIAN_SIGMA**2)).exp()      # (b, H, W, size)
        weights.append((kernel / kernel.sum(-1, keepdim=True)).to(images.dtype))
    return torch.einsum("byxq,byxp,bcqp->bcyx", weights[0], weights[1], images)


def diffeo(
    images: torch.Tensor,
    T: float | torch.Tensor,
    cut: int,
    generator: torch.Generator | None = None,
    interp: str = "linear",
) -> torch.Tensor:
    """Apply an independent random max-entropy diffeomorphism to each image of a batch (seed004 §2.1).

    tau x(s) = x(s - tau(s)) with tau drawn by `displacement_fields` and applied by `warp`. Perturbations act in
    pixel space, before normalisation (DESIGN.md). The same generator state, dtype and inputs give the same output.

    Args:
      images: (B, C, n, n) floating tensor (square images).
      T: temperature, a float or a (B,) tensor; e.g. temperature_for_displacement(1, n, cut).
      cut: high-frequency cut-off c (seed004 default 3).
      generator: source of the random fields (None = global RNG).
      interp: 'linear' (default, bilinear), 'nearest' or 'gaussian' (see `warp`).

    Returns:
      (B, C, n, n) deformed images, same dtype and device.
    """
    B, _, H, W = images.shape
    if H != W:
        raise ValueError(f"diffeo needs square images, got {H}x{W}")
    dx, dy = displacement_fields(B, H, T, cut, generator, images.device, images.dtype)
    return warp(images, dx, dy, interp)


# ----------------------------------------------------------------------------------------------------------------
# Noise of matched norm (seed004 §2.2)
# ----------------------------------------------------------------------------------------------------------------

def matched_noise(
    x: torch.Tensor,
    x_tau: torch.Tensor,
    generator: torch.Generator | None = None,
    magnitude: float | None = None,
) -> torch.Tensor:
    """Add white noise whose norm equals, per sample, the norm of the diffeo perturbation (seed004 §2.2).

    eta_i ~ N(0, I) is rescaled so that ||eta_i|| = ||x_tau_i - x_i|| exactly (norm over all non-batch axes;
    per image, not the batch average, quirk §7.3). No rectification.

    Args:
      x: (B, ...) clean inputs.
      x_tau: (B, ...) deformed inputs, same shape.
      generator: source of eta (None = global RNG).
      magnitude: if given, every ||eta_i|| equals this value instead (`--noise_magnitude`).

    Returns:
      x + eta, same shape, dtype and device as `x`.
    """
    if x.shape != x_tau.shape:
        raise ValueError(f"x and x_tau must have the same shape, got {tuple(x.shape)} and {tuple(x_tau.shape)}")
    eta = _randn(x.shape, generator, x.device, x.dtype)
    if magnitude is None:
        target = (x_tau.double() - x.double()).flatten(1).norm(dim=1)
    else:
        target = torch.full((x.shape[0],), float(magnitude), dtype=torch.float64, device=x.device)
    scale = target / eta.double().flatten(1).norm(dim=1)
    return x + (eta.double() * scale.view(-1, *[1] * (x.dim() - 1))).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Twopoints "diffeomorphism" (seed004 §2.8)
# ----------------------------------------------------------------------------------------------------------------

def translate_points(points: torch.Tensor, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Move every active pixel to one of its 8 neighbours: the twopoints deformation (seed004 §2.8).

    Each point moves by round(e), with e a uniformly random unit 2-D direction, so a step is diagonal about a third
    of the time and never zero; the result is clipped to [0, d - 1] (a point on the edge may then stay put).

    Args:
      points: (N, P, 2) integer pixel coordinates (row, col); P = 2 for twopoints.
      d: image side.
      generator: source of the directions (None = global RNG).

    Returns:
      (N, P, 2) int64 coordinates, each within 1 of the original in every coordinate.
    """
    direction = _randn(points.shape, generator, points.device, torch.float64)
    step = (direction / direction.norm(dim=-1, keepdim=True)).round().long()
    return (points.long() + step).clamp(0, d - 1)


# ----------------------------------------------------------------------------------------------------------------
# 1-D scale detection (seed004 §2.12)
# ----------------------------------------------------------------------------------------------------------------

def move_sites(sites: torch.Tensor, length: int, block: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The 1-D "diffeomorphism" of the scale-detection task (seed004 §2.12): every active site moves by +1 or -1
    (a fair coin each), is clipped to [0, length - 1], and the move is undone when it would change the site's block
    floor(r / block), so the label of the block task is kept. A site may therefore stay put (at an edge, or at a
    block border when the coin points outward).

    Args:
      sites: (N, K) integer positions (K = 2 for the task).
      length: signal length L.
      block: block size xi.
      generator: source of the coins (None = global RNG).

    Returns:
      (N, K) int64 positions, each within 1 of the original and in the same block.
    """
    source = generator.device if generator is not None else "cpu"
    step = 2 * torch.randint(0, 2, sites.shape, generator=generator, device=source).to(sites.device) - 1
    moved = (sites.long() + step).clamp(0, length - 1)
    return torch.where(moved // block == sites.long() // block, moved, sites.long())


def rectified_noise(x: torch.Tensor, x_tau: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + ReLU(eta) with eta i.i.d. N(0, s^2) per site, s^2 = mean((x_tau - x)^2) over every probe and site: the
    noise of the 1-D scale-detection code (seed004 §2.12), matched in variance on average over the batch (not per
    sample, unlike `matched_noise`) and rectified.

    Args:
      x, x_tau: (N, ...) clean and moved signals, same shape.
      generator: source of eta (None = global RNG).

    Returns:
      x + ReLU(eta), same shape, dtype and device as `x`.
    """
    if x.shape != x_tau.shape:
        raise ValueError(f"x and x_tau must have the same shape, got {tuple(x.shape)} and {tuple(x_tau.shape)}")
    scale = (x_tau.double() - x.double()).pow(2).mean().sqrt()
    eta = _randn(x.shape, generator, x.device, torch.float64) * scale
    return x + eta.relu().to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# D_f, G_f, R_f (seed004 §2.3)
# ----------------------------------------------------------------------------------------------------------------

class StabilityAccumulator:
    """Streaming D_f, G_f, R_f for many layers at once, without storing activations (seed004 §2.3).

    Feed batches of probes with `update`; `result` gives the same numbers as `relative_stability` on all probes at
    once. The denominator uses mean_{i,j} ||f_i - f_j||^2 = 2 (mean_i ||f_i||^2 - ||mean_i f_i||^2) over all P^2
    ordered pairs, diagonal included (quirk §7.1); sums are kept in float64 around the first batch's mean to avoid
    cancellation.

    With median=True (the original's `--mean_stability 0`) each numerator is the sum over features of the
    per-feature median over probes (the lower middle value for an even count, torch's convention) of the squared
    change, while den stays the pair mean, as in the relativestability code. A median needs every probe, so this
    mode keeps the (P, M) squared changes of every layer (2 P M float64 values per layer) until `result`.

        acc = StabilityAccumulator()
        for x in probe_batches:
            acc.update(taps(x), taps(diffeo(x, ...)), taps(matched_noise(x, ...)))   # dict name -> (b, ...)
        acc.result()                                                                # name -> {"D", "G", "R", "den"}
    """

    def __init__(self, median: bool = False) -> None:
        self.median = median
        self._stats: dict[str, dict[str, torch.Tensor | int | list]] = {}

    def update(
        self,
        f_x: Mapping[str, torch.Tensor],
        f_tau: Mapping[str, torch.Tensor],
        f_eta: Mapping[str, torch.Tensor],
    ) -> None:
        """Add one batch of probes.

        Args:
          f_x, f_tau, f_eta: dicts layer name -> (b, ...) representations of x, tau x and x + eta, same keys and
            shapes; each is flattened to (b, M) and accumulated in float64 on its device.
        """
        for name, fx in f_x.items():
            fx = fx.detach().flatten(1).double()
            ft = f_tau[name].detach().flatten(1).double()
            fe = f_eta[name].detach().flatten(1).double()
            if ft.shape != fx.shape or fe.shape != fx.shape:
                raise ValueError(f"layer {name!r}: f_x, f_tau, f_eta shapes differ")
            stats = self._stats.get(name)
            if stats is None:
                stats = self._stats[name] = {"count": 0, "shift": fx.mean(0), "sum": torch.zeros_like(fx[0]),
                                             "sumsq": fx.new_zeros(()), "dnum": fx.new_zeros(()),
                                             "gnum": fx.new_zeros(()), "dsq": [], "gsq": []}
            centred = fx - stats["shift"]
            stats["count"] += fx.shape[0]
            stats["sum"] += centred.sum(0)
            stats["sumsq"] += centred.pow(2).sum()
            if self.median:
                stats["dsq"].append((ft - fx).pow(2))
                stats["gsq"].append((fe - fx).pow(2))
            else:
                stats["dnum"] += (ft - fx).pow(2).sum()
                stats["gnum"] += (fe - fx).pow(2).sum()

    def result(self) -> dict[str, dict[str, float]]:
        """D, G, R and den per layer (floats, float64 arithmetic).

        Returns:
          dict name -> {"D": Dnum/den, "G": Gnum/den, "R": Dnum/Gnum, "den": mean pair distance + 1e-10}.
        """
        out = {}
        for name, stats in self._stats.items():
            count = stats["count"]
            mean = stats["sum"] / count
            den = (2 * (stats["sumsq"] / count - mean.pow(2).sum())).clamp_min(0) + DEN_EPSILON
            if self.median:
                dnum, gnum = (_lower_median(torch.cat(stats[key])).sum() for key in ("dsq", "gsq"))
            else:
                dnum, gnum = stats["dnum"] / count, stats["gnum"] / count
            out[name] = _ratios(dnum, gnum, den)
        return out


def _ratios(dnum: torch.Tensor, gnum: torch.Tensor, den: torch.Tensor) -> dict[str, float]:
    return {"D": (dnum / den).item(), "G": (gnum / den).item(), "R": (dnum / gnum).item(), "den": den.item()}


def _lower_median(values: torch.Tensor) -> torch.Tensor:
    """Per-column median, the lower middle value for an even count (torch.median's convention)."""
    return values.median(dim=0).values


def relative_stability(
    f_x: torch.Tensor, f_tau: torch.Tensor, f_eta: torch.Tensor, median: bool = False
) -> dict[str, float]:
    """Diffeo sensitivity D_f, noise sensitivity G_f and relative stability R_f of one layer (seed004 §2.3).

    den  = mean over all P^2 ordered pairs (i, j), diagonal included, of ||f(x_i) - f(x_j)||^2, plus 1e-10
    Dnum = mean_i ||f(tau x_i) - f(x_i)||^2,  Gnum = mean_i ||f(x_i + eta_i) - f(x_i)||^2
    D = Dnum / den,  G = Gnum / den,  R = Dnum / Gnum (den cancels).

    With median=True (`--mean_stability 0`) each numerator is a sum over features of the per-feature median over
    samples (the lower middle value for even P) of the squared difference, while den stays the pair mean, as in
    the relativestability code. This is `StabilityAccumulator` fed with a single batch.

    Args:
      f_x, f_tau, f_eta: (P, ...) representations of x, tau x and x + eta (any layer shape; flattened to (P, M)).
      median: use the per-feature median instead of the mean in the numerators.

    Returns:
      {"D", "G", "R", "den"} as floats computed in float64.
    """
    accumulator = StabilityAccumulator(median=median)
    accumulator.update({"f": f_x}, {"f": f_tau}, {"f": f_eta})
    return accumulator.result()["f"]


def layer_stabilities(
    f_x: Sequence[torch.Tensor], f_tau: Sequence[torch.Tensor], f_eta: Sequence[torch.Tensor]
) -> dict[str, list[float]]:
    """D, G, R per layer, on each layer's full output and on its channel mean (seed004 §2.12: the 1-D code's
    measurement at every post-ReLU block output, and its option Mean=True that averages over channels first).

    Args:
      f_x, f_tau, f_eta: per layer, (P, C, ...) outputs for x, tau x and x + eta (the same layers in each).

    Returns:
      {"D", "G", "R", "chmean_D", "chmean_G", "chmean_R"}: lists over layers of `relative_stability` on the
      output and on its mean over dim 1 (channels).
    """
    out: dict[str, list[float]] = {}
    for prefix, reduce in (("", lambda f: f), ("chmean_", lambda f: f.mean(1))):
        values = [relative_stability(*(reduce(f) for f in layer)) for layer in zip(f_x, f_tau, f_eta, strict=True)]
        out.update({f"{prefix}{key}": [v[key] for v in values] for key in ("D", "G", "R")})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Channel shuffling (seed004 §2.5)
# ----------------------------------------------------------------------------------------------------------------

def shuffle_conv_channels(
    state_dict: Mapping[str, torch.Tensor], generator: torch.Generator | None = None, outputs: bool = False
) -> dict[str, torch.Tensor]:
    """Permute the input channels of every conv weight with a fresh random permutation (seed004 §2.5).

    Every 4-D tensor of the state dict (conv weights, the first conv included, so RGB is permuted too) gets
    w[:, perm] with its own permutation; outputs=True (mode 2) also permutes the output axis. BatchNorm statistics,
    biases and linear weights are untouched (quirk §7.7): each 2-D filter slice survives (spatial pooling), the
    learned channel-to-channel wiring (channel pooling) does not.

    Args:
      state_dict: name -> tensor (not modified).
      generator: source of the permutations, drawn on its device (None = global RNG, CPU).
      outputs: also permute output channels.

    Returns:
      a new dict with the same keys; 4-D tensors permuted, the others the same tensors.
    """
    source = generator.device if generator is not None else "cpu"
    shuffled = {}
    for name, tensor in state_dict.items():
        if tensor.dim() == 4:
            perm_in = torch.randperm(tensor.shape[1], generator=generator, device=source).to(tensor.device)
            tensor = tensor[:, perm_in]
            if outputs:
                perm_out = torch.randperm(tensor.shape[0], generator=generator, device=source).to(tensor.device)
                tensor = tensor[perm_out]
        shuffled[name] = tensor
    return shuffled


# ----------------------------------------------------------------------------------------------------------------
# Constant-filter theory model (seed004 §2.11)
# ----------------------------------------------------------------------------------------------------------------

def constant_filter_network(
    x: torch.Tensor, depth: int, kernel_size: int, stride: int = 1, unit_filters: bool = False
) -> list[torch.Tensor]:
    """Layer outputs of the 1-D CNN with homogeneous (constant) filters and ReLU (seed004 §2.11).

    Each layer zero-pads (F - 1)//2 on both sides, sums windows of size F with stride s, multiplies by s/F
    (by 1 with unit_filters=True) and applies ReLU: perfect spatial pooling, nothing else.

    Args:
      x: (P, N) one-channel signals.
      depth: number of layers L.
      kernel_size: filter size F.
      stride: stride s.
      unit_filters: filter value 1 instead of s/F.

    Returns:
      list of L tensors (P, N_k), the output of layers k = 1..L.
    """
    value = 1.0 if unit_filters else stride / kernel_size
    pad = (kernel_size - 1) // 2
    outputs = []
    for _ in range(depth):
        x = F.pad(x, (pad, pad)).unfold(-1, kernel_size, stride).sum(-1).mul(value).relu()
        outputs.append(x)
    return outputs


def constant_filter_stabilities(
    depth: int,
    kernel_size: int,
    stride: int = 1,
    size: int | None = None,
    generator: torch.Generator | None = None,
    unit_filters: bool = False,
) -> list[dict[str, float]]:
    """D_f, G_f, R_f per layer of the constant-filter CNN on single-pixel inputs (seed004 §2.11).

    Inputs are the N one-hot signals (the N x N identity), tau x is each input rolled by one pixel, and the noise
    is matched in norm per input (§2.2) and then rectified: x_eta = ReLU(x + eta). Predictions: for s=1,
    Dnum ~ k^(-3/2), den ~ k^(-1/2), so D_f ~ k^-1, G_f ~ k^(1/2), R_f ~ k^(-3/2) (the receptive field spreads
    diffusively); for s=F=2, D_f ~ 2^-k and G_f ~ 2^k. Finite N and small k bend the power laws (for s=1, F=3,
    N=400 the fitted D_f exponent over k = 8..64 is -0.95).

    Args:
      depth: number of layers L.
      kernel_size: filter size F.
      stride: stride s.
      size: signal length N; default one more than the receptive field F + (F - 1) sum_{i=1..L} s^i.
      generator: source of the noise (None = global RNG).
      unit_filters: filter value 1 instead of s/F.

    Returns:
      list of L dicts {"D", "G", "R", "den"}, for layers k = 1..L.
    """
    if size is None:
        size = kernel_size + (kernel_size - 1) * sum(stride**i for i in range(1, depth + 1)) + 1
    x = torch.eye(size, dtype=torch.float64)
    x_tau = x.roll(1, dims=1)
    x_eta = matched_noise(x, x_tau, generator=generator).relu()
    layers = (constant_filter_network(inputs, depth, kernel_size, stride, unit_filters) for inputs in (x, x_tau, x_eta))
    return [relative_stability(fx, ft, fe) for fx, ft, fe in zip(*layers)]


def pooling_model_prediction(depth: int, size: int) -> list[dict[str, float]]:
    """Closed form of `constant_filter_stabilities(depth, 2, 2, size)` (s = F = 2, filter value s/F = 1: layer k sums
    blocks of 2^k sites; every input is >= 0 so the ReLUs never act), on N = size one-hot inputs, N a multiple of
    2^depth with at least two blocks left at the last layer (seed004 §2.11):

      den_k  = 2 (1 - 2^k / N)                               two one-hots share a block with probability 2^k / N
      Dnum_k = 2^(1-k)                                       the roll by one leaves the block for N / 2^k inputs
      Gnum_k = 1 + (2^k - 1)/pi + (2/N) (1/2 - (2^k - 1)/pi)  expectation over the rectified noise, eta ~ N(0, 2/N)
                                                               per site (||eta|| = ||tau x - x|| = sqrt 2): a block
                                                               sums 2^k rectified values of mean s/sqrt(2 pi)
    so D_k = Dnum_k / den_k ~ 2^-k exactly, G_k ~ 2^k / (2 pi) and R_k = Dnum_k / Gnum_k ~ 2 pi 4^-k (the notebook's
    "const" for R_f does not follow; seed004 §2.11 and §8). Dnum and den are exact; Gnum is the mean over noise
    draws (one draw on N = 1024 inputs lies within 1% of it), treating the norm-fixed eta as i.i.d. Gaussian.

    Args:
      depth: number of layers L.
      size: N, a multiple of 2^depth, at least 2^(depth + 1) (one block left would make den 0).

    Returns:
      list of L dicts {"D", "G", "R", "den"} for k = 1..L.
    """
    if size % 2**depth or size < 2 ** (depth + 1):
        raise ValueError(f"size must be a multiple of 2^depth = {2**depth} and at least twice that, got {size}")
    out = []
    for k in range(1, depth + 1):
        den = 2 * (1 - 2**k / size)
        dnum = 2.0 ** (1 - k)
        gnum = 1 + (2**k - 1) / math.pi + (2 / size) * (0.5 - (2**k - 1) / math.pi)
        out.append({"D": dnum / den, "G": gnum / den, "R": dnum / gnum, "den": den})
    return out
