"""Tests of measures/stability.py (seed004 §2.1-§2.5, §2.8) against published constants, numpy/scipy references
and invariances."""
import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from measures.stability import (
    StabilityAccumulator,
    constant_filter_network,
    constant_filter_stabilities,
    diffeo,
    displacement_fields,
    layer_stabilities,
    matched_noise,
    move_sites,
    pooling_model_prediction,
    rectified_noise,
    relative_stability,
    shuffle_conv_channels,
    temperature_for_displacement,
    temperature_range,
    translate_points,
    typical_displacement,
    warp,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------- temperatures

def test_temperature_for_unit_displacement_matches_spec():
    assert temperature_for_displacement(1.0, n=32, cut=3) == pytest.approx(1.132e-3, abs=0.0005e-3)
    assert temperature_for_displacement(1.0, n=28, cut=3) == pytest.approx(1.478e-3, abs=0.0005e-3)


@pytest.mark.parametrize("cut, t_min, t_max", [(3, 2.83e-4, 1.31e-2), (5, 1.93e-4, 3.21e-3), (15, 1.15e-4, 2.12e-4)])
def test_temperature_range_table_n32(cut, t_min, t_max):
    """Spec §2.1 table to its 3 digits (its 1.31e-2 for c=3 is 1.3047e-2, so the tolerance is half a last digit)."""
    low, high = temperature_range(32, cut)
    assert low == pytest.approx(t_min, rel=5e-3)
    assert high == pytest.approx(t_max, rel=5e-3)


def test_typical_displacement_inverts_temperature_and_t_min_is_half_a_pixel():
    assert typical_displacement(temperature_for_displacement(1.7, 32, 5), 32, 5) == pytest.approx(1.7)
    assert typical_displacement(temperature_range(32, 4)[0], 32, 4) == pytest.approx(0.5)


def test_temperature_needs_cut_of_at_least_two():
    with pytest.raises(ValueError, match="cut"):
        temperature_for_displacement(1.0, 32, 1)


# ---------------------------------------------------------------------------------------------------- diffeo

def test_zero_temperature_is_the_identity():
    images = torch.rand(5, 3, 16, 16, generator=gen(0))
    torch.testing.assert_close(diffeo(images, 0.0, cut=5, generator=gen(1)), images, rtol=0, atol=0)


def test_displacement_is_zero_on_the_border_and_border_pixels_stay():
    dx, dy = displacement_fields(20, 16, 1e-2, 6, generator=gen(2))
    for field in (dx, dy):
        assert field.abs().amax() > 0.5
        for edge in (field[:, 0], field[:, -1], field[:, :, 0], field[:, :, -1]):
            assert torch.all(edge == 0)
    images = torch.rand(20, 2, 16, 16, generator=gen(3))
    out = diffeo(images, 1e-2, 6, generator=gen(2))
    torch.testing.assert_close(out[..., 0, :], images[..., 0, :], rtol=0, atol=0)
    torch.testing.assert_close(out[..., :, -1], images[..., :, -1], rtol=0, atol=0)


def test_rms_displacement_matches_spec_constants():
    """4000 fields at T(delta=1), c=3, n=32: RMS |tau| = 1.27 px at the centre, 0.82 px over the image (spec §2.1).

    Sampling error on the RMS is about 1%; a square cut-off instead of the disk gives 0.88 px over the image.
    """
    T = temperature_for_displacement(1.0, 32, 3)
    dx, dy = displacement_fields(4000, 32, T, 3, generator=gen(4), dtype=torch.float64)
    squared = dx**2 + dy**2
    assert squared[:, 15:17, 15:17].mean().sqrt().item() == pytest.approx(1.27, rel=0.03)
    assert squared.mean().sqrt().item() == pytest.approx(0.82, rel=0.03)
    correlation = (dx * dy).mean() / (dx.pow(2).mean() * dy.pow(2).mean()).sqrt()
    assert abs(correlation.item()) < 0.03                                               # dx and dy independent


def test_field_coefficients_have_variance_t_over_k2_inside_the_disk():
    """Recover C_ij with the discrete sine transform (DST-I) and compare with N(0, T / (i^2 + j^2)) on the disk."""
    n, cut, T, samples = 17, 4, 1e-3, 3000
    dx, _ = displacement_fields(samples, n, T, cut, generator=gen(5), dtype=torch.float64)
    p = np.arange(n) / (n - 1)
    basis = np.sin(np.pi * np.arange(1, cut + 1)[:, None] * p[None, :])             # (c, n)
    coeffs = np.einsum("byx,ix,jy->bij", dx.numpy() / n, basis, basis) * (2 / (n - 1)) ** 2
    i, j = np.meshgrid(np.arange(1, cut + 1), np.arange(1, cut + 1), indexing="ij")
    inside = np.sqrt(i**2 + j**2) < cut + 0.5
    variance = coeffs.var(axis=0)
    np.testing.assert_allclose(variance[inside], T / (i**2 + j**2)[inside], rtol=0.12)   # 2.6% sampling std
    np.testing.assert_allclose(variance[~inside], 0, atol=1e-20)
    assert (~inside).sum() == 3                                                       # (3,4), (4,3), (4,4)


def random_field(batch, n, scale, seed):
    g = gen(seed)
    return scale * torch.randn(batch, n, n, generator=g, dtype=torch.float64), \
        scale * torch.randn(batch, n, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("interp, order", [("linear", 1), ("nearest", 0)])
def test_warp_matches_scipy_map_coordinates(interp, order):
    images = torch.rand(3, 2, 12, 12, generator=gen(6), dtype=torch.float64)
    dx, dy = random_field(3, 12, 3.0, 7)                                               # large: clamping happens
    out = warp(images, dx, dy, interp=interp).numpy()
    rows, cols = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    for b in range(3):
        coords = [rows - dy[b].numpy(), cols - dx[b].numpy()]
        for c in range(2):
            reference = scipy.ndimage.map_coordinates(images[b, c].numpy(), coords, order=order, mode="nearest")
            np.testing.assert_allclose(out[b, c], reference, atol=1e-12)


def test_warp_sign_convention_out_equals_img_at_s_minus_tau():
    images = torch.arange(36.0).reshape(1, 1, 6, 6)
    ones = torch.ones(1, 6, 6)
    shifted = warp(images, ones, torch.zeros(1, 6, 6))                                 # dx = +1: moves content right
    torch.testing.assert_close(shifted[..., 1:], images[..., :-1])
    torch.testing.assert_close(shifted[..., 0], images[..., 0])                        # clamped source column 0
    shifted_down = warp(images, torch.zeros(1, 6, 6), 0.5 * ones)
    torch.testing.assert_close(shifted_down[..., 1:, :], 0.5 * (images[..., 1:, :] + images[..., :-1, :]))


def test_gaussian_warp_matches_the_direct_formula_over_all_pixels():
    """'gaussian' (seed004 §2.1, the authors' remap): out[y, x] = sum_{q,p} c img[q, p] with
    c = exp(-((q - y')^2 + (p - x')^2) / (2 0.4715^2)) normalised over all (q, p), (y', x') the clamped source."""
    images = torch.rand(2, 3, 7, 7, generator=gen(40), dtype=torch.float64)
    dx, dy = random_field(2, 7, 2.0, 41)
    out = warp(images, dx, dy, interp="gaussian").numpy()
    sigma, n = 0.4715, 7
    for b in range(2):
        for y in range(n):
            for x in range(n):
                sy = min(max(y - dy[b, y, x].item(), 0), n - 1)
                sx = min(max(x - dx[b, y, x].item(), 0), n - 1)
                q, p = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
                c = np.exp(-((q - sy) ** 2 + (p - sx) ** 2) / (2 * sigma**2))
                c /= c.sum()
                np.testing.assert_allclose(out[b, :, y, x], (c * images[b].numpy()).sum((1, 2)), rtol=1e-10)
    still = warp(images, torch.zeros(2, 7, 7, dtype=torch.float64), torch.zeros(2, 7, 7, dtype=torch.float64),
                 interp="gaussian")
    assert not torch.allclose(still, images) and torch.allclose(still.sum((2, 3)), images.sum((2, 3)), rtol=0.05)
    with pytest.raises(ValueError, match="interp"):
        warp(images, dx, dy, interp="cubic")


def test_same_seed_same_output_and_each_image_gets_its_own_field():
    images = torch.rand(1, 1, 20, 20, generator=gen(8)).expand(6, 1, 20, 20)
    T = temperature_for_displacement(1.0, 20, 3)
    first = diffeo(images, T, 3, generator=gen(9))
    torch.testing.assert_close(first, diffeo(images, T, 3, generator=gen(9)), rtol=0, atol=0)
    assert not torch.equal(first, diffeo(images, T, 3, generator=gen(10)))
    for a in range(6):
        for b in range(a + 1, 6):
            assert not torch.allclose(first[a], first[b])


def test_temperature_per_image_tensor():
    images = torch.rand(4, 1, 16, 16, generator=gen(11), dtype=torch.float64)
    T = 2e-3
    scalar = diffeo(images, T, 4, generator=gen(12))
    per_image = diffeo(images, torch.full((4,), T, dtype=torch.float64), 4, generator=gen(12))
    torch.testing.assert_close(per_image, scalar, rtol=0, atol=0)
    mixed = diffeo(images, torch.tensor([0.0, T, 0.0, T], dtype=torch.float64), 4, generator=gen(12))
    torch.testing.assert_close(mixed[[0, 2]], images[[0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(mixed[[1, 3]], scalar[[1, 3]])


# ---------------------------------------------------------------------------------------------------- noise

def test_matched_noise_norms_are_exact_per_sample():
    x = torch.rand(5, 3, 8, 8, generator=gen(13), dtype=torch.float64)
    scales = torch.tensor([0.01, 0.1, 1.0, 10.0, 0.0], dtype=torch.float64)
    x_tau = x + scales[:, None, None, None] * torch.randn(x.shape, generator=gen(14), dtype=torch.float64)
    out = matched_noise(x, x_tau, generator=gen(15))
    np.testing.assert_allclose((out - x).flatten(1).norm(dim=1).numpy(),
                               (x_tau - x).flatten(1).norm(dim=1).numpy(), rtol=1e-12, atol=1e-15)
    assert not torch.allclose(out - x, x_tau - x)                                     # a new direction, not tau's
    torch.testing.assert_close(out, matched_noise(x, x_tau, generator=gen(15)), rtol=0, atol=0)


def test_fixed_noise_magnitude():
    x = torch.zeros(4, 1, 5, 5, dtype=torch.float64)
    out = matched_noise(x, x, generator=gen(16), magnitude=2.5)
    np.testing.assert_allclose(out.flatten(1).norm(dim=1).numpy(), 2.5, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------- twopoints

def test_translate_points_moves_to_a_neighbour_and_stays_in_range():
    d = 28
    points = torch.randint(0, d, (4000, 2, 2), generator=gen(17))
    moved = translate_points(points, d, generator=gen(18))
    step = moved - points
    assert step.abs().max() <= 1
    assert moved.min() >= 0 and moved.max() <= d - 1
    interior = ((points > 0) & (points < d - 1)).all(-1)
    assert (step[interior].abs().sum(-1) > 0).all()                                     # never stays put inside
    diagonal = (step[interior].abs().sum(-1) == 2).double().mean().item()
    assert diagonal == pytest.approx(1 / 3, abs=0.03)                                   # spec §2.8 [C]


def test_translate_points_clips_at_the_edge():
    corner = torch.zeros(500, 2, 2, dtype=torch.long)
    assert translate_points(corner, 10, generator=gen(19)).min() == 0


def test_move_sites_steps_by_one_inside_the_block_or_stays():
    """§2.12: each site moves by exactly one (+-1) unless the move leaves [0, L) or its block; then it stays."""
    length, block = 64, 16
    sites = torch.randint(0, length, (5000, 2), generator=gen(42))
    moved = move_sites(sites, length, block, generator=gen(43))
    step = moved - sites
    assert set(step.unique().tolist()) <= {-1, 0, 1}
    assert torch.equal(moved // block, sites // block)                                   # the label is kept
    inner = (sites % block > 0) & (sites % block < block - 1)
    assert (step[inner].abs() == 1).all()                                                # never stays inside a block
    stayed = sites[step == 0]
    assert ((stayed % block == 0) | (stayed % block == block - 1)).all()
    assert (step[inner] == 1).double().mean().item() == pytest.approx(0.5, abs=0.03)


def test_rectified_noise_is_positive_with_the_mean_squared_change_as_variance():
    x = torch.zeros(400, 1, 128, dtype=torch.float64)
    x[:, 0, 10] = 8.0
    x_tau = x.roll(1, dims=-1)
    out = rectified_noise(x, x_tau, generator=gen(44))
    eta = out - x
    assert (eta >= 0).all() and (eta > 0).double().mean().item() == pytest.approx(0.5, abs=0.01)
    variance = (x_tau - x).pow(2).mean().item()                                         # 2 * 64 / 128 = 1
    assert variance == pytest.approx(1.0)
    assert eta.pow(2).mean().item() == pytest.approx(variance / 2, rel=0.02)             # E relu(eta)^2 = s^2 / 2


# ---------------------------------------------------------------------------------------------------- D, G, R

def numpy_stability(fx, ft, fe, median=False):
    """Reference: a direct double loop over all ordered pairs (diagonal included)."""
    fx, ft, fe = (np.asarray(f, dtype=np.float64).reshape(len(f), -1) for f in (fx, ft, fe))
    P = len(fx)
    den = sum(np.sum((fx[i] - fx[j]) ** 2) for i in range(P) for j in range(P)) / P**2 + 1e-10
    if median:
        dnum = np.sort((ft - fx) ** 2, axis=0)[(P - 1) // 2].sum()                      # lower median (torch)
        gnum = np.sort((fe - fx) ** 2, axis=0)[(P - 1) // 2].sum()
    else:
        dnum = np.mean([np.sum((ft[i] - fx[i]) ** 2) for i in range(P)])
        gnum = np.mean([np.sum((fe[i] - fx[i]) ** 2) for i in range(P)])
    return {"D": dnum / den, "G": gnum / den, "R": dnum / gnum, "den": den}


def random_representations(P, shape, seed, offset=0.0):
    g = gen(seed)
    fx = torch.randn(P, *shape, generator=g) + offset
    ft = fx + 0.3 * torch.randn(P, *shape, generator=g)
    fe = fx + 0.7 * torch.randn(P, *shape, generator=g)
    return fx, ft, fe


@pytest.mark.parametrize("median", [False, True])
def test_relative_stability_matches_numpy_double_loop(median):
    fx, ft, fe = random_representations(12, (3, 4, 4), 20)
    ours = relative_stability(fx, ft, fe, median=median)
    reference = numpy_stability(fx.numpy(), ft.numpy(), fe.numpy(), median=median)
    for key in ("D", "G", "R", "den"):
        assert ours[key] == pytest.approx(reference[key], rel=1e-10)


def test_streaming_accumulator_equals_one_shot_for_several_layers():
    layers = {"conv": (4, 5, 5), "out": (10,)}
    full = {name: random_representations(23, shape, 21 + k) for k, (name, shape) in enumerate(layers.items())}
    accumulator = StabilityAccumulator()
    for start, stop in ((0, 7), (7, 8), (8, 23)):
        accumulator.update(*({name: f[i][start:stop] for name, f in full.items()} for i in range(3)))
    streamed = accumulator.result()
    for name, (fx, ft, fe) in full.items():
        reference = numpy_stability(fx.numpy(), ft.numpy(), fe.numpy())
        for key in ("D", "G", "R", "den"):
            assert streamed[name][key] == pytest.approx(relative_stability(fx, ft, fe)[key], rel=1e-12)
            assert streamed[name][key] == pytest.approx(reference[key], rel=1e-10)


def test_layer_stabilities_are_the_numpy_reference_of_each_output_and_of_its_channel_mean():
    """The 1-D stage's per-block numbers (§2.12): full output and, as the original's Mean=True, its channel mean."""
    layers = [random_representations(9, (4, 6), 60 + k) for k in range(3)]
    found = layer_stabilities(*zip(*layers))
    for index, (fx, ft, fe) in enumerate(layers):
        full = numpy_stability(fx.numpy(), ft.numpy(), fe.numpy())
        mean = numpy_stability(*(f.mean(1).numpy() for f in (fx, ft, fe)))
        for key in ("D", "G", "R"):
            assert found[key][index] == pytest.approx(full[key], rel=1e-10)
            assert found[f"chmean_{key}"][index] == pytest.approx(mean[key], rel=1e-10)
    assert found["chmean_R"][0] != pytest.approx(found["R"][0])


def test_streamed_median_equals_the_one_shot_median_and_the_numpy_reference():
    """--mean_stability 0: the per-feature median needs all probes; batches must not change it."""
    fx, ft, fe = random_representations(25, (3, 4), 45)
    accumulator = StabilityAccumulator(median=True)
    for start, stop in ((0, 4), (4, 5), (5, 25)):
        accumulator.update({"f": fx[start:stop]}, {"f": ft[start:stop]}, {"f": fe[start:stop]})
    reference = numpy_stability(fx.numpy(), ft.numpy(), fe.numpy(), median=True)
    mean = relative_stability(fx, ft, fe)
    for key in ("D", "G", "R", "den"):
        assert accumulator.result()["f"][key] == pytest.approx(reference[key], rel=1e-10)
    assert mean["den"] == pytest.approx(reference["den"], rel=1e-12) and mean["D"] != pytest.approx(reference["D"])


def test_large_common_offset_does_not_spoil_the_denominator():
    fx, ft, fe = random_representations(40, (50,), 22, offset=0.0)
    offset = 1e6
    accumulator = StabilityAccumulator()
    for chunk in range(4):
        s = slice(10 * chunk, 10 * chunk + 10)
        accumulator.update({"f": fx[s].double() + offset}, {"f": ft[s].double() + offset},
                           {"f": fe[s].double() + offset})
    assert accumulator.result()["f"]["den"] == pytest.approx(relative_stability(fx, ft, fe)["den"], rel=1e-9)


def test_ratios_are_invariant_to_scaling_the_representation():
    fx, ft, fe = (f.double() for f in random_representations(15, (20,), 23))
    base = relative_stability(fx, ft, fe)
    scaled = relative_stability(7.5 * fx, 7.5 * ft, 7.5 * fe)
    for key in ("D", "G", "R"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-9)
    assert scaled["den"] == pytest.approx(7.5**2 * base["den"], rel=1e-9)


def test_identity_map_has_r_one_and_pooling_suppresses_noise_more_than_diffeo():
    """End to end on smooth images: for the identity map Dnum = Gnum exactly (matched norms), so R = 1; an 8x8
    average pool divides the white-noise energy by ~64 but keeps most of the smooth diffeo change, so R >> 1."""
    n = 32
    coords = torch.linspace(0, 1, n)
    g = gen(24)
    freq = torch.rand(64, 2, generator=g) * 3 + 1
    x = torch.sin(math.pi * freq[:, :1, None] * coords[None, :, None]) * torch.cos(
        math.pi * freq[:, 1:, None] * coords[None, None, :])
    x = x[:, None]                                                                      # (64, 1, n, n)
    x_tau = diffeo(x, temperature_for_displacement(1.0, n, 3), 3, generator=g)
    x_eta = matched_noise(x, x_tau, generator=g)
    blur = torch.nn.AvgPool2d(8)
    assert relative_stability(blur(x), blur(x_tau), blur(x_eta))["R"] > 5
    assert relative_stability(x, x_tau, x_eta)["R"] == pytest.approx(1.0, rel=1e-6)     # identity map: R = 1


# ---------------------------------------------------------------------------------------------------- shuffling

def small_state_dict():
    g = gen(25)
    return {"conv1.weight": torch.randn(8, 3, 3, 3, generator=g), "conv1.bias": torch.randn(8, generator=g),
            "bn.running_mean": torch.randn(8, generator=g), "bn.weight": torch.randn(8, generator=g),
            "conv2.weight": torch.randn(16, 8, 3, 3, generator=g), "fc.weight": torch.randn(10, 16, generator=g)}


def sorted_slices(weight):
    return sorted(tuple(s.flatten().tolist()) for s in weight.reshape(-1, *weight.shape[2:]))


def test_shuffle_permutes_input_channels_with_one_permutation_per_layer():
    state = small_state_dict()
    original = {k: v.clone() for k, v in state.items()}
    shuffled = shuffle_conv_channels(state, generator=gen(26))
    for name in ("conv1.bias", "bn.running_mean", "bn.weight", "fc.weight"):
        assert shuffled[name] is state[name]
    for name, value in state.items():
        torch.testing.assert_close(value, original[name], rtol=0, atol=0)                 # input untouched
    w, new = state["conv2.weight"], shuffled["conv2.weight"]
    assert not torch.equal(w, new)
    perm = [next(j for j in range(8) if torch.equal(new[0, k], w[0, j])) for k in range(8)]
    assert sorted(perm) == list(range(8))
    torch.testing.assert_close(new, w[:, perm], rtol=0, atol=0)                          # same perm for every output
    assert sorted_slices(new) == sorted_slices(w)


def test_shuffle_outputs_keeps_the_multiset_of_filter_slices():
    state = small_state_dict()
    shuffled = shuffle_conv_channels(state, generator=gen(27), outputs=True)
    for name in ("conv1.weight", "conv2.weight"):
        assert sorted_slices(shuffled[name]) == sorted_slices(state[name])
    rows_before = [sorted_slices(row[None]) for row in state["conv2.weight"]]
    rows_after = [sorted_slices(row[None]) for row in shuffled["conv2.weight"]]
    assert sorted(rows_after) == sorted(rows_before) and rows_after != rows_before      # output filters reordered
    torch.testing.assert_close(shuffle_conv_channels(state, generator=gen(27), outputs=True)["conv2.weight"],
                               shuffled["conv2.weight"], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------- theory (§2.11)

def fitted_exponent(k, values):
    return np.polyfit(np.log(k), np.log(values), 1)[0]


def test_constant_filter_model_stride_one_diffusive_exponents():
    """s=1, F=3: D_f ~ k^-1 (deterministic), G_f ~ k^(1/2), R_f ~ k^(-3/2) (noisy, looser); N=400, k = 8..64."""
    results = constant_filter_stabilities(64, kernel_size=3, stride=1, size=400, generator=gen(28))
    k = np.arange(1, 65)[7:]
    D, G, R = (np.array([r[key] for r in results])[7:] for key in ("D", "G", "R"))
    assert fitted_exponent(k, D) == pytest.approx(-1.0, abs=0.08)
    assert fitted_exponent(k, G) == pytest.approx(0.5, abs=0.12)
    assert fitted_exponent(k, R) == pytest.approx(-1.5, abs=0.15)


def test_constant_filter_model_stride_two_halves_d_per_layer():
    results = constant_filter_stabilities(8, kernel_size=2, stride=2, generator=gen(29))
    D = np.array([r["D"] for r in results])
    np.testing.assert_allclose(D[1:6] / D[:5], 0.5, rtol=0.08)                          # D_f ~ 2^-k


@pytest.mark.parametrize("seed", [30, 31])
def test_constant_filter_model_stride_two_against_its_closed_form(seed):
    """s = F = 2 on N = 1024 one-hot inputs: D_f and den exactly, G_f and R_f within 1.5% of the expectation over
    the rectified noise (pooling_model_prediction: G_k ~ 2^k / 2 pi, R_k ~ 2 pi 4^-k)."""
    depth, size = 8, 1024
    measured = constant_filter_stabilities(depth, kernel_size=2, stride=2, size=size, generator=gen(seed))
    predicted = pooling_model_prediction(depth, size)
    for ours, theory in zip(measured, predicted):
        assert ours["D"] == pytest.approx(theory["D"], rel=1e-9)
        assert ours["den"] == pytest.approx(theory["den"], rel=1e-9)
        assert ours["G"] == pytest.approx(theory["G"], rel=0.015)
        assert ours["R"] == pytest.approx(theory["R"], rel=0.015)
    R = np.array([t["R"] for t in predicted])
    np.testing.assert_allclose(R[5:] / R[4:-1], 0.25, rtol=0.06)                       # R_f ~ 4^-k, not constant
    with pytest.raises(ValueError, match="multiple"):
        pooling_model_prediction(4, 100)


def test_constant_filter_network_pools_and_keeps_mass_inside():
    x = torch.zeros(1, 11, dtype=torch.float64)
    x[0, 5] = 1.0
    outputs = constant_filter_network(x, 2, kernel_size=3, stride=1)
    np.testing.assert_allclose(outputs[0][0].numpy(), [0, 0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0])
    np.testing.assert_allclose(outputs[1][0, 3:8].numpy(), np.array([1, 2, 3, 2, 1]) / 9)
