"""models/rainbow_tutorial.py and models/scattering.py (seed002 §3, §7): filters, sizes, D_j, shapes, registry."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import build_model, list_models
from models.scattering import (
    FACTORIZED,
    STANDARD,
    ComplexStandardization,
    RealProjection,
    WaveletModulus,
    WaveletSkip,
    filter_bank_hat,
    morlet,
    orientations,
)

RAINBOW_MODELS = ("rainbow_mlp", "rainbow_cnn", "scattering", "scattering4", "scattering4_norm", "scattering_skip")


@pytest.mark.parametrize("bank", [*FACTORIZED, STANDARD])
def test_morlet_filters_have_zero_mean_and_the_lowpass_unit_mean(bank):
    hat = filter_bank_hat(36, bank)                          # (1 + L, P, P), zero frequency at [0, 0]
    assert hat.shape == (5, 36, 36)
    assert torch.allclose(hat[1:, 0, 0], torch.zeros(4), atol=1e-6)
    assert hat[0, 0, 0] == pytest.approx(1.0, abs=0.01)
    for theta in orientations():
        assert abs(morlet(36, bank.psi_sigma, theta, bank.psi_xi).sum()) < 1e-12


@pytest.mark.parametrize("bank, sigma", [(STANDARD, 0.8 * 2 ** (1 - 1)),          # J = 1: sigma_phi = 0.8 2^(J-1)
                                         (FACTORIZED[0], 0.8 / math.sqrt(2)), (FACTORIZED[1], 0.8 / math.sqrt(2))])
def test_lowpass_is_the_spec_gaussian_in_fourier(bank, sigma):
    """phi = the periodised Gaussian of mass 1, exp(-|u|^2 / (2 sigma^2)) / (2 pi sigma^2); by Poisson summation its
    DFT is sum_k exp(-sigma^2 |omega + 2 pi k|^2 / 2), omega = 2 pi f (fftfreq), separable in the two axes. sigma
    from the spec (§3) and the original filter_bank: 0.8 2^(J-1) for the standard J = 1 bank of scattering4, 0.8 /
    sqrt 2 for the factorised ones."""
    size = 36
    omega = np.fft.fftfreq(size) * 2 * np.pi
    aliases = 2 * np.pi * np.arange(-3, 4)
    axis = np.exp(-sigma ** 2 * (omega[:, None] + aliases[None, :]) ** 2 / 2).sum(1)
    np.testing.assert_allclose(filter_bank_hat(size, bank)[0].numpy(), np.outer(axis, axis), atol=2e-6)


def test_orientations_and_the_peak_frequency_of_each_morlet():
    assert orientations() == pytest.approx([math.pi / 4, 0.0, -math.pi / 4, -math.pi / 2])
    size, bank = 64, FACTORIZED[0]
    hat = filter_bank_hat(size, bank)
    frequencies = torch.fft.fftfreq(size) * 2 * math.pi
    for index, theta in enumerate(orientations(), start=1):
        row, col = divmod(int(hat[index].abs().argmax()), size)
        peak = torch.stack([frequencies[row], frequencies[col]])
        assert peak.norm() == pytest.approx(bank.psi_xi, abs=2 * 2 * math.pi / size)  # the envelope shifts it
        assert torch.dot(peak, torch.tensor([math.cos(theta), math.sin(theta)])) > 0.9 * peak.norm()


def test_fourier_subsampling_equals_spatial_subsampling():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    bank = FACTORIZED[1]
    full = WaveletModulus(32, type(bank)(bank.psi_sigma, bank.psi_xi, bank.phi_sigma, False))(x)
    assert torch.allclose(WaveletModulus(32, bank)(x), full[..., ::2, ::2], atol=1e-5)


def test_scattering_sizes_and_dimensions_follow_the_spec():
    """§3: 32 -> 32 -> 16 -> 16 -> 8 -> 8 -> 4 -> 4 -> 2, D_j = 5 N_{j-1}, D = 15, 320, ..., 2048 features."""
    model = build_model("scattering", 10)
    sizes = [block.out_size for block in model.blocks]
    widths = [block.proj.out_channels for block in model.blocks]
    assert sizes == [32, 16, 16, 8, 8, 4, 4, 2]
    assert widths == [64, 128, 256, 512, 512, 512, 512, 512]
    assert [block.dim for block in model.blocks] == [5 * n for n in [3, *widths[:-1]]]
    assert [block.dim for block in model.blocks][:4] == [15, 320, 640, 1280]
    assert model.fc.in_features == 2048 and model.classifier_input_shape == (512, 2, 2)
    assert [block.out_size for block in build_model("scattering4", 10).blocks] == [16, 8, 4, 2]


@pytest.mark.parametrize("width", [0.125, 0.5, 2.0])
def test_scattering4_width_scales_the_first_three_blocks_only(width):
    """The original's scale-width experiments (run_exps.py paper_exp): N = [64 s, 128 s, 256 s, 512]."""
    model = build_model("scattering4", 10, width=width)
    assert [block.proj.out_channels for block in model.blocks] == [int(64 * width), int(128 * width),
                                                                   int(256 * width), 512]
    assert [block.dim for block in model.blocks] == [15, 5 * int(64 * width), 5 * int(128 * width),
                                                     5 * int(256 * width)]
    assert model.fc.in_features == 512 * 2 * 2
    assert [block.proj.out_channels for block in build_model("scattering", 10, width=width).blocks] == \
        [int(n * width) for n in [64, 128, 256, 512, 512, 512, 512, 512]]   # the J8 net scales every block


def test_scattering_layer_inputs_are_the_standardised_modulus_and_outputs_unit_norm():
    torch.manual_seed(0)
    model = build_model("scattering", 10, width=0.125).eval()
    shapes, outputs = [], []
    hooks = [block.proj.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
             for block in model.blocks]
    hooks += [block.register_forward_hook(lambda m, i, o: outputs.append(o)) for block in model.blocks]
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    for hook in hooks:
        hook.remove()
    sizes = [32, 16, 16, 8, 8, 4, 4, 2]  # P_j sees the (subsampled) output size of block j
    assert shapes == [(2, block.dim, s, s) for block, s in zip(model.blocks, sizes)]
    assert all(torch.allclose(o.norm(dim=1), torch.ones(1), atol=1e-5) for o in outputs)
    assert model.standardizations()[-1] is model.classifier_std
    assert all(not bn.affine for bn in model.standardizations())


def test_scattering4_blocks_have_no_channel_normalisation_as_the_paper():
    """seed002 §3 / issue 28 item 6: the paper's 4-block nets are 'Fw Std Pr' (no N): each block's output is
    P Std(Fw x) itself, not unit-norm per position; scattering4_norm divides it by its L2 norm over channels."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    plain, normed = build_model("scattering4", 10, width=0.25).eval(), build_model("scattering4_norm", 10, width=0.25)
    normed.load_state_dict(plain.state_dict())
    normed.eval()
    with torch.no_grad():
        for block, twin in zip(plain.blocks, normed.blocks):
            manual = nn.functional.conv2d(nn.functional.batch_norm(block.wavelets(x), block.std.running_mean,
                                                                   block.std.running_var, eps=block.std.eps),
                                          block.proj.weight)
            out = block(x)
            torch.testing.assert_close(out, manual, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(out.norm(dim=1), torch.ones(1), atol=1e-2)
            torch.testing.assert_close(twin(x), manual / manual.norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
            x = out


@pytest.mark.parametrize("name", RAINBOW_MODELS)
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])   # digits / cifar10, mnist
def test_registered_bias_free_and_forward_shapes(name, shape):
    assert name in list_models()
    channels, size, _ = shape
    model = build_model(name, 10, in_channels=channels, width=0.25, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.rand(3, *shape)).shape == (3, 10)
    layers = model.weight_layers()
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is None for m in layers)
    assert sum(p.numel() for p in build_model(name, 10, in_channels=channels, width=0.5, image_size=size)
               .parameters()) > sum(p.numel() for p in model.parameters())


def test_tutorial_layer_sizes():
    """§7: MLP 1024-512-256-10 on grey 32x32; CNN 32 -> 14 -> 5, Linear(1600, 10)."""
    mlp = build_model("rainbow_mlp", 10, in_channels=1)
    assert [(m.in_features, m.out_features) for m in mlp.weight_layers()] == [(1024, 512), (512, 256), (256, 10)]
    cnn = build_model("rainbow_cnn", 10, in_channels=1)
    assert cnn.fc.in_features == 1600 and cnn.classifier_input_shape == (64, 5, 5)
    assert build_model("rainbow_cnn", 10, in_channels=1, image_size=28).classifier_input_shape == (64, 4, 4)


@pytest.mark.parametrize("bank", [FACTORIZED[0], FACTORIZED[1]])
def test_skip_wavelets_keep_the_linear_coefficients_beside_the_modulus(bank):
    """§3 skip variant: z = [x*phi, x*psi_theta, |x*phi|, |x*psi_theta|]; for a real input its real low-pass and its
    band-pass moduli are the plain block's [x*phi, |x*psi_theta|]."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain, skip = WaveletModulus(32, bank)(x), WaveletSkip(32, bank)(x)
    assert skip.is_complex() and skip.shape == (2, 30, *plain.shape[2:])
    linear, modulus = skip[:, :15], skip[:, 15:]
    assert torch.allclose(modulus, linear.abs().to(modulus.dtype)) and torch.all(modulus.imag == 0)
    assert torch.allclose(linear[:, :3].real, plain[:, :3], atol=1e-5)           # low-pass of a real image
    assert torch.allclose(modulus[:, 3:].real, plain[:, 3:], atol=1e-5)          # |x * psi_theta|
    z = torch.randn(2, 4, 16, 16, dtype=torch.complex64)                         # a complex input (later blocks)
    wavelets = WaveletSkip(16, bank)
    out, real, imag = wavelets(z), wavelets(z.real), wavelets(z.imag)
    assert out.shape[1] == 40                                                    # linear in z: W(a + ib) = Wa + iWb
    assert torch.allclose(out[:, :20], real[:, :20] + 1j * imag[:, :20], atol=1e-5)


def test_complex_standardization_and_real_projection():
    torch.manual_seed(0)
    std = ComplexStandardization(3)
    z = torch.complex(torch.randn(64, 3, 4, 4) * 2 + 1, torch.randn(64, 3, 4, 4) - 3)
    y = std.train()(z)
    rows = y.movedim(1, -1).reshape(-1, 3)
    assert torch.allclose(rows.mean(0), torch.zeros(3, dtype=y.dtype), atol=1e-5)
    assert torch.allclose((rows - rows.mean(0)).abs().square().mean(0), torch.ones(3), atol=1e-3)
    flat = z.movedim(1, -1).reshape(-1, 3)
    assert torch.allclose(std.running_mean, 0.1 * flat.mean(0), atol=1e-5)       # momentum 0.1 from zero
    unbiased = (flat - flat.mean(0)).abs().square().sum(0) / (len(flat) - 1)
    assert torch.allclose(std.running_var, 0.9 + 0.1 * unbiased, atol=1e-4)
    std.to(torch.float32)                                                        # LoadedRun.open casts modules
    assert std.running_mean.is_complex() and std.running_mean.abs().sum() > 0
    std.running_mean.copy_(torch.tensor([1 + 1j, 0, 0]))                        # rainbow sampling's in-place reset
    assert std.running_mean_ri[0].tolist() == [1.0, 1.0]
    projection = RealProjection(3, 2, 1, bias=False)
    expected = torch.complex(F.conv2d(z.real, projection.weight), F.conv2d(z.imag, projection.weight))
    assert torch.allclose(projection(z), expected) and torch.allclose(projection(z.real), expected.real)


def test_scattering_skip_is_the_complex_j8_net():
    torch.manual_seed(0)
    model = build_model("scattering_skip", 10, width=0.125).eval()
    assert [block.dim for block in model.blocks] == [2 * 5 * n for n in [3, 8, 16, 32, 64, 64, 64, 64]]
    assert model.fc.in_features == 2 * 64 * 2 * 2 and model.classifier_input_shape == (128, 2, 2)
    inputs, outputs = [], []
    hooks = [block.proj.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for block in model.blocks]
    hooks += [block.register_forward_hook(lambda m, i, o: outputs.append(o)) for block in model.blocks]
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    for hook in hooks:
        hook.remove()
    assert all(x.is_complex() for x in inputs) and all(o.is_complex() for o in outputs)
    assert all(torch.allclose(o.abs().square().sum(1).sqrt(), torch.ones(1), atol=1e-5) for o in outputs)
    assert all(isinstance(layer, nn.Conv2d) and layer.bias is None for layer in model.weight_layers()[:-1])
