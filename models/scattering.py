"""Learned scattering networks (Guth et al., "A Rainbow in Deep Network Black Boxes", JMLR 2024; seed002 §3).

Block j maps x_{j-1} (B, N_{j-1}, M, M) to x_j (B, N_j, M', M'):
  Fw    fixed wavelet filtering of every channel in Fourier space, after reflection padding to
        P = ((M + 2) // 2 + 1) * 2: a Gaussian low-pass x*phi and L = 4 Morlet band-passes x*psi_theta;
  mod   modulus of the band-passes only: z_j = [x*phi, |x*psi_theta|], D_j = (1 + L) N_{j-1} real channels
        (low-pass channels first, then band-pass channel c*L + theta);
  Std   per-channel standardisation, BatchNorm2d without affine parameters;
  Pr    the learned 1x1 convolution W_j (N_j, D_j), no bias, PyTorch's default init;
  N     division of every spatial position's channel vector by its L2 norm (no eps); the J8 nets only: the
        paper's 4-block nets are 'Fw Std Pr' without N (run_exps.py paper_exp, `norm` left False).
The classifier is BatchNorm2d(affine=False) -> flatten -> Linear without bias.

Filters (§3): Morlet psi = Gabor minus K times its Gaussian envelope (zero mean), slant 4 / L = 1, angles
theta_t = (int(L - L/2 - 1) - t) pi / L, periodised spatial filters whose FFTs are taken real.
- `scattering` (the CIFAR "J8" net, factorised filters): block i = 0, 2, 4, 6 uses psi (sigma 0.8, xi 3 pi / 4)
  without subsampling, block i = 1, 3, 5, 7 psi (sigma 0.8 sqrt 1.5, xi pi / sqrt 2) and subsamples by 2
  (Fourier periodisation, then 1 pixel cropped); both use phi with sigma 0.8 / sqrt 2. N = [64, 128, 256, 512,
  512, 512, 512, 512] x width; spatial sizes 32 -> 32 -> 16 -> 16 -> 8 -> 8 -> 4 -> 4 -> 2 and D = 15, 320, 640,
  1280, 2560, ... for RGB inputs at width 1 (the classifier sees 512 x 2 x 2).
- `scattering4` (the 4-block "paperexps" net): the standard J = 1 Morlet (psi sigma 0.8, xi 3 pi / 4) and the
  original's low-pass phi with sigma 0.8 2^(J - 1) = 0.8 for J = 1, with subsampling in every block; N = [64 w,
  128 w, 256 w, 512]: width w scales N_1..N_3 only, as the original's scale-width experiments (N_4 = 512 stays);
  32 -> 16 -> 8 -> 4 -> 2. Built without N, as the paper's nets (`...-L4-clbnstd-clnobias-nowd-...`, no `-norm`);
  `scattering4_norm` is the same net with N (a toolkit extra). (Until issue 28 scattering4 had N, and until the
  fix before it phi had sigma 1.6 and the width scaled N_4 too: scattering4 runs trained before either load
  without error but are another net, and must be trained again.)
- `scattering_skip` (the complex "skip" variant of §3, 'Fw rho Std Pr N', the paper's resampling nets, 91.6% on
  CIFAR-10 at width 1): the J8 net whose blocks keep the complex linear coefficients beside their modulus,
  z_j = [x*phi, x*psi_theta, |x*phi|, |x*psi_theta|] (complex, D_j = 2 (1 + L) N_{j-1}: 30, 640, 1280, ... for RGB);
  Std standardises each complex channel, (z - E z) / sqrt(E|z - E z|^2 + eps) (ComplexStandardization: batch
  statistics in train, running ones in eval, momentum 0.1, unbiased running variance); the real P acts on real and
  imaginary parts alike (RealProjection), so activations stay complex; N divides by the complex L2 norm; the
  classifier splits real and imaginary parts into 2 N_J channels before its BatchNorm. Trained with the seed002
  recipe, as the plain J8 net.
Not built: ImageNet's Scattering-11.
Analysis layers: the J projections Pr then the classifier. `standardizations()` lists the non-affine BatchNorm
whose output IS the input of each of them, for the statistics recomputation of rainbow sampling (§5.4 c).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.layers import scaled
from models.registry import register_model
from utils.errors import ToolkitError

ORIENTATIONS = 4
PERIODS = 2  # the spatial filters are periodised over (2 PERIODS + 1)^2 copies of the grid


@dataclass(frozen=True)
class FilterBank:
    """One block's wavelets (seed002 §3): Morlet (sigma, xi), Gaussian low-pass sigma, subsampling."""

    psi_sigma: float
    psi_xi: float
    phi_sigma: float
    subsample: bool


FACTORIZED = (FilterBank(0.8, 3 * math.pi / 4, 0.8 / math.sqrt(2), False),
              FilterBank(0.8 * math.sqrt(1.5), math.pi / math.sqrt(2), 0.8 / math.sqrt(2), True))
J_STANDARD = 1                                     # one scale per block: the original's filter_bank(J=1)
STANDARD = FilterBank(0.8, 3 * math.pi / 4, 0.8 * 2 ** (J_STANDARD - 1), True)   # phi: sigma 0.8 2^(J-1)


def padded_size(size: int) -> int:
    """P = ((M + 2) // 2 + 1) * 2, the size after reflection padding (36 for 32)."""
    return ((size + 2) // 2 + 1) * 2


def output_size(size: int, subsample: bool) -> int:
    """M for a block without subsampling; P / 2 - 2 (one pixel cropped on each side) with it."""
    return padded_size(size) // 2 - 2 if subsample else size


def orientations(count: int = ORIENTATIONS) -> list[float]:
    """theta_t = (int(L - L/2 - 1) - t) pi / L, t = 0..L-1 (pi/4, 0, -pi/4, -pi/2 for L = 4)."""
    return [(int(count - count / 2 - 1) - t) * math.pi / count for t in range(count)]


def gabor(size: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> torch.Tensor:
    """(size, size) complex128 periodised Gabor filter centred at pixel (0, 0), normalised by 2 pi sigma^2 / slant.

    g(u) = exp(-u^T R diag(1, slant^2) R^T u / (2 sigma^2) + i xi (u_0 cos theta + u_1 sin theta)) for the
    rotation R by theta, summed over the shifted grids u + (a size, b size), |a|, |b| <= PERIODS.
    """
    rotation = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
                            dtype=torch.float64)
    curvature = rotation @ torch.diag(torch.tensor([1.0, slant ** 2], dtype=torch.float64)) @ rotation.T
    curvature = curvature / (2 * sigma ** 2)
    grid = torch.arange(size, dtype=torch.float64)
    shifts = torch.arange(-PERIODS, PERIODS + 1, dtype=torch.float64) * size
    u0 = (grid[None, :] + shifts[:, None])[:, None, :, None]   # (shifts, 1, size, 1)
    u1 = (grid[None, :] + shifts[:, None])[None, :, None, :]   # (1, shifts, 1, size)
    quadratic = curvature[0, 0] * u0 ** 2 + 2 * curvature[0, 1] * u0 * u1 + curvature[1, 1] * u1 ** 2
    phase = xi * (u0 * math.cos(theta) + u1 * math.sin(theta))
    filt = torch.exp(torch.complex(-quadratic, phase)).sum(dim=(0, 1))
    return filt / (2 * math.pi * sigma ** 2 / slant)


def morlet(size: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> torch.Tensor:
    """(size, size) complex128 zero-mean Morlet: gabor(xi) - K gabor(0), K = sum gabor(xi) / sum gabor(0)."""
    wave = gabor(size, sigma, theta, xi, slant)
    envelope = gabor(size, sigma, theta, 0.0, slant)
    return wave - wave.sum() / envelope.sum() * envelope


def filter_bank_hat(size: int, bank: FilterBank, count: int = ORIENTATIONS) -> torch.Tensor:
    """(1 + L, size, size) float32 real Fourier transforms: the low-pass phi, then psi_theta for each theta."""
    slant = 4 / count
    spatial = [gabor(size, bank.phi_sigma, 0.0, 0.0)]
    spatial += [morlet(size, bank.psi_sigma, theta, bank.psi_xi, slant) for theta in orientations(count)]
    return torch.fft.fft2(torch.stack(spatial)).real.to(torch.float32)


class WaveletModulus(nn.Module):
    """Fw + mod: (B, C, M, M) real -> (B, (1 + L) C, M', M') = [x*phi, |x*psi_theta|] (seed002 §3)."""

    def __init__(self, size: int, bank: FilterBank):
        super().__init__()
        self.size, self.padded, self.subsample = size, padded_size(size), bank.subsample
        self.pad_left = (self.padded - size) // 2
        self.pad_right = self.padded - size - self.pad_left
        if self.pad_right >= size or output_size(size, bank.subsample) < 1:
            raise ToolkitError(f"the scattering block cannot filter {size}x{size} maps; use larger images "
                               "(at least 16x16 for `scattering`)")
        self.register_buffer("filters_hat", filter_bank_hat(self.padded, bank), persistent=False)

    def filtered(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, M, M) real or complex -> (B, C, 1 + L, M', M') complex: x * phi, then x * psi_theta."""
        padding = (self.pad_left, self.pad_right, self.pad_left, self.pad_right)
        x_hat = torch.fft.fft2(nn.functional.pad(x, padding, mode="reflect"))   # (B, C, P, P)
        filtered = x_hat[:, :, None] * self.filters_hat                         # (B, C, 1 + L, P, P)
        if self.subsample:  # spatial subsampling by 2 = averaging the two periods of the spectrum
            half = self.padded // 2
            filtered = filtered.reshape(*filtered.shape[:3], 2, half, 2, half).mean(dim=(3, 5))
            return torch.fft.ifft2(filtered)[..., 1:half - 1, 1:half - 1]
        crop = slice(self.pad_left, self.pad_left + self.size)
        return torch.fft.ifft2(filtered)[..., crop, crop]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        out = self.filtered(x)
        lowpass = out[:, :, 0].real                                              # (B, C, M', M')
        bandpass = out[:, :, 1:].abs().reshape(batch, -1, *out.shape[-2:])      # (B, C L, M', M'), c L + theta
        return torch.cat([lowpass, bandpass], dim=1)


class WaveletSkip(WaveletModulus):
    """Fw + rho of the skip variant: (B, C, M, M) real or complex -> (B, 2 (1 + L) C, M', M') complex,
    [x*phi, x*psi_theta, |x*phi|, |x*psi_theta|] (seed002 §3), each part in WaveletModulus's channel order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        out = self.filtered(x)
        lowpass = out[:, :, 0]                                                   # (B, C, M', M') complex
        bandpass = out[:, :, 1:].reshape(batch, -1, *out.shape[-2:])            # (B, C L, M', M'), c L + theta
        linear = torch.cat([lowpass, bandpass], dim=1)
        return torch.cat([linear, linear.abs().to(linear.dtype)], dim=1)


class ComplexStandardization(nn.Module):
    """Std of complex channels, non-affine: (z - mu) / sqrt(var + eps) with mu = E z and var = E|z - mu|^2 per
    channel over batch and space; batch statistics in train mode (running ones updated with momentum 0.1, the
    variance unbiased, as BatchNorm), running ones in eval mode. The running mean is held as real (C, 2) pairs
    (`running_mean_ri`, so that Module.to(float dtype) keeps it) and read and written through the complex view
    `running_mean`, which rainbow sampling resets in place (seed002 §5.4 c)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum, self.affine = eps, momentum, False
        self.register_buffer("running_mean_ri", torch.zeros(channels, 2))
        self.register_buffer("running_var", torch.ones(channels))

    @property
    def running_mean(self) -> torch.Tensor:
        """(C,) complex view of running_mean_ri (writing into it writes the buffer)."""
        return torch.view_as_complex(self.running_mean_ri)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        dims = (0, *range(2, z.dim()))
        if self.training:
            mean = z.mean(dim=dims)
            var = (z - mean.reshape(1, -1, *[1] * (z.dim() - 2))).abs().square().mean(dim=dims)
            count = z.numel() // z.shape[1]
            with torch.no_grad():
                self.running_mean_ri.mul_(1 - self.momentum).add_(self.momentum * torch.view_as_real(mean.detach()))
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach() * count / max(count - 1, 1))
        else:
            mean, var = self.running_mean, self.running_var
        shape = (1, -1, *[1] * (z.dim() - 2))
        return (z - mean.reshape(shape)) / torch.sqrt(var + self.eps).reshape(shape)


class RealProjection(nn.Conv2d):
    """The learned 1x1 convolution P with real weights; a complex input is projected part by part,
    P z = P Re z + i P Im z (the skip variant's P, seed002 §3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_complex():
            return torch.complex(super().forward(x.real), super().forward(x.imag))
        return super().forward(x)


class ScatteringBlock(nn.Module):
    """Fw mod Std Pr N (or Fw mod Std Pr with `norm` False): (B, N_{j-1}, M, M) -> (B, N_j, M', M')."""

    def __init__(self, in_channels: int, out_channels: int, size: int, bank: FilterBank, skip: bool = False,
                 norm: bool = True):
        super().__init__()
        self.norm = norm
        if skip:   # the complex skip variant: D_j = 2 (1 + L) N_{j-1}
            self.wavelets = WaveletSkip(size, bank)
            self.dim = 2 * (1 + ORIENTATIONS) * in_channels
            self.std = ComplexStandardization(self.dim)
            self.proj = RealProjection(self.dim, out_channels, 1, bias=False)
        else:
            self.wavelets = WaveletModulus(size, bank)
            self.dim = (1 + ORIENTATIONS) * in_channels                          # D_j = 5 N_{j-1}
            self.std = nn.BatchNorm2d(self.dim, affine=False)
            self.proj = nn.Conv2d(self.dim, out_channels, 1, bias=False)
        self.out_size = output_size(size, bank.subsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.std(self.wavelets(x)))                                # (B, N_j, M', M')
        return x / x.norm(dim=1, keepdim=True) if self.norm else x               # |.|: the complex norm too


class LearnedScattering(nn.Module):
    """J scattering blocks and a standardised linear classifier: (B, in_channels, S, S) -> (B, num_classes)."""

    def __init__(self, channels: list[int], banks: list[FilterBank], num_classes: int, in_channels: int = 3,
                 width: float = 1.0, image_size: int = 32, scaled_blocks: int | None = None, skip: bool = False,
                 norm: bool = True):
        """`width` multiplies the channels of the first `scaled_blocks` blocks (default: every block); `skip`
        builds the complex skip variant; `norm` ends every block with N (seed002 §3)."""
        super().__init__()
        scaled_blocks = len(channels) if scaled_blocks is None else scaled_blocks
        widths = [scaled(c, width) if j < scaled_blocks else c for j, c in enumerate(channels)]
        blocks, size, previous = [], image_size, in_channels
        for out_channels, bank in zip(widths, banks):
            blocks.append(ScatteringBlock(previous, out_channels, size, bank, skip, norm))
            size, previous = blocks[-1].out_size, out_channels
        self.blocks = nn.ModuleList(blocks)
        self.skip = skip
        features = 2 * previous if skip else previous                            # skip: real and imaginary parts
        self.classifier_std = nn.BatchNorm2d(features, affine=False)
        self.fc = nn.Linear(features * size * size, num_classes, bias=False)
        self.classifier_input_shape = (features, size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.skip:
            x = torch.cat([x.real, x.imag], dim=1)                               # (B, 2 N_J, side, side)
        return self.fc(self.classifier_std(x).flatten(1))                        # (B, N_J * side^2) -> classes

    def weight_layers(self) -> list[nn.Module]:
        """The J projections Pr, then the classifier."""
        return [block.proj for block in self.blocks] + [self.fc]

    def standardizations(self) -> list[nn.BatchNorm2d]:
        """The non-affine BatchNorm feeding each weight layer (the classifier's input is its flattened output)."""
        return [block.std for block in self.blocks] + [self.classifier_std]


@register_model("scattering")
def scattering(**kwargs) -> LearnedScattering:
    return LearnedScattering([64, 128, 256, 512, 512, 512, 512, 512], list(FACTORIZED) * 4, **kwargs)


@register_model("scattering_skip")
def scattering_skip(**kwargs) -> LearnedScattering:
    return LearnedScattering([64, 128, 256, 512, 512, 512, 512, 512], list(FACTORIZED) * 4, skip=True, **kwargs)


@register_model("scattering4")
def scattering4(**kwargs) -> LearnedScattering:
    """The paper's 4-block net, 'Fw Std Pr' without N (seed002 §3 "paperexps"; issue 28 item 6)."""
    return LearnedScattering([64, 128, 256, 512], [STANDARD] * 4, scaled_blocks=3, norm=False, **kwargs)


@register_model("scattering4_norm")
def scattering4_norm(**kwargs) -> LearnedScattering:
    """scattering4 with N ending every block, as the J8 nets (a toolkit extra, not the paper's 4-block net)."""
    return LearnedScattering([64, 128, 256, 512], [STANDARD] * 4, scaled_blocks=3, **kwargs)
