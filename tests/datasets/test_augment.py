"""Batched augmentation and input perturbations (datasets/augment.py, datasets/perturbations.py), checked against
slicing of the padded images and against torchvision's per-image RandomErasing draws."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import RandomErasing

from datasets.augment import random_crop_flip, random_erasing
from datasets.perturbations import gaussian_corruption

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _distinct_images(b, c=1, size=8):
    """Images whose pixels are all different (and non-zero), so each crop identifies its offset and flip."""
    return torch.arange(1, b * c * size * size + 1, dtype=torch.float32).reshape(b, c, size, size)


# ---------------------------------------------------------------------------------------------------------------
# random crop + flip


def test_crop_with_replayed_offsets_equals_slicing_the_padded_image():
    """Draw order: rows (B, 1), columns (B, 1), flips (B, 1); replaying it gives the crops by plain slicing."""
    x = _distinct_images(6, c=3, size=32)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=4, flip=True)
    replay = torch.Generator().manual_seed(0)
    top = torch.randint(0, 9, (6, 1), generator=replay)
    left = torch.randint(0, 9, (6, 1), generator=replay)
    flipped = torch.rand(6, 1, generator=replay) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(6):
        crop = padded[i, :, top[i]:top[i] + 32, left[i]:left[i] + 32]
        assert torch.equal(out[i], crop.flip(-1) if flipped[i] else crop)


def test_every_crop_is_a_slice_offsets_are_uniform_and_half_are_flipped():
    b, pad, size = 3000, 2, 8
    x = _distinct_images(b, size=size)
    out = random_crop_flip(x, torch.Generator().manual_seed(1), padding=pad)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    offsets = [(t, l) for t in range(2 * pad + 1) for l in range(2 * pad + 1)]
    candidates = torch.stack([padded[:, 0, t:t + size, l:l + size] for t, l in offsets], 1)  # (B, 25, 8, 8)
    candidates = torch.cat([candidates, candidates.flip(-1)], 1)  # (B, 50, 8, 8): unflipped, then flipped
    match = (candidates == out[:, :1]).flatten(2).all(2)  # (B, 50)
    assert torch.all(match.sum(1) == 1)  # each output is exactly one slice of its own padded image
    which = match.int().argmax(1)
    flipped = which >= len(offsets)
    assert abs(flipped.double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / b)
    counts = torch.bincount(which % len(offsets), minlength=len(offsets)).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3  # top-left corner uniform over the 25 positions


def test_crop_options_and_determinism():
    x = _distinct_images(16, c=3)
    assert torch.equal(random_crop_flip(x, torch.Generator().manual_seed(0), padding=0, flip=False), x)
    flipped_only = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0, flip=True)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(flipped_only, x))
    a = random_crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, random_crop_flip(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, random_crop_flip(x, torch.Generator().manual_seed(6)))
    assert (a == 0).any()  # zero padding shows at the borders


# ---------------------------------------------------------------------------------------------------------------
# random erasing


def _boxes(erased):
    """(top, left, height, width) of the erased rectangle of each image from a (B, H, W) mask; all -1 if none."""
    rows, cols = erased.any(2), erased.any(1)
    first = lambda m: torch.where(m.any(1), m.int().argmax(1), -1)  # noqa: E731
    return first(rows), first(cols), rows.sum(1), cols.sum(1)


def test_erasing_boxes_have_torchvisions_distribution():
    """Reference: torchvision's RandomErasing.get_params drawn per image (after the p coin, which we count apart)."""
    b, h, w = 4000, 32, 32
    x = torch.ones(b, 3, h, w)
    out = random_erasing(x, torch.Generator().manual_seed(0), p=1.0)
    erased = out[:, 0] == 0
    assert torch.equal(erased[:, None].expand_as(out), out == 0)  # the same box on every channel
    top, left, box_h, box_w = _boxes(erased)
    assert torch.equal(erased.sum((1, 2)), box_h * box_w)  # a filled rectangle
    torch.manual_seed(0)
    reference = np.array([RandomErasing.get_params(x[0], scale=(0.02, 0.33), ratio=(0.3, 3.3), value=[0])[:4]
                          for _ in range(b)])  # (B, 4): i, j, h, w
    assert (reference[:, 2] == 32).sum() == 0  # torchvision's "no box" returns the whole image: rare enough
    ours = torch.stack([top, left, box_h, box_w], 1).numpy()
    for column in range(4):
        assert stats.ks_2samp(ours[:, column], reference[:, column]).pvalue > 1e-3
    area = box_h * box_w / (h * w)
    assert area.min() >= 0.02 * 0.7 and area.max() <= 0.33 * 1.1  # U(scale), up to the rounding of the sides
    assert top.min() == 0 and left.min() == 0  # corners cover every position where the box fits
    assert (top + box_h == h).any() and (left + box_w == w).any()


def test_erasing_keeps_only_boxes_smaller_than_the_image():
    """torchvision retries until both sides are < the image's; after 10 failures the image is left as it is."""
    x = torch.ones(2000, 1, 32, 32)
    near_full = random_erasing(x, torch.Generator().manual_seed(0), p=1.0, scale=(0.9, 1.0), ratio=(1.0, 1.0))
    _, _, box_h, box_w = _boxes(near_full[:, 0] == 0)
    assert set(box_h.tolist()) == {30, 31} and torch.equal(box_h, box_w)  # round(sqrt(area)) = 32 never kept
    never_fits = random_erasing(x, torch.Generator().manual_seed(0), p=1.0, scale=(0.99, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(never_fits, x)


def test_erasing_probability_value_and_determinism():
    x = torch.rand(4000, 1, 32, 32) + 1
    out = random_erasing(x, torch.Generator().manual_seed(3), p=0.3, value=-1.0)
    changed = out != x
    assert torch.all(out[changed] == -1)
    fraction = changed.flatten(1).any(1).double().mean().item()
    assert abs(fraction - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 4000)
    assert torch.equal(out, random_erasing(x, torch.Generator().manual_seed(3), p=0.3, value=-1.0))
    assert not torch.equal(out, random_erasing(x, torch.Generator().manual_seed(4), p=0.3, value=-1.0))
    assert torch.equal(random_erasing(x, torch.Generator().manual_seed(3), p=0.0), x)


# ---------------------------------------------------------------------------------------------------------------
# Gaussian corruption (seed004 §2.7)


def test_gaussian_corruption_norm_and_distribution():
    x = torch.randn(500, 3, 32, 32)
    out = gaussian_corruption(x, 10.0, torch.Generator().manual_seed(0))
    noise = (out - x).double()
    norms = noise.flatten(1).norm(dim=1)
    assert norms.mean().item() == pytest.approx(10.0, rel=0.005)
    assert (norms / 10 - 1).abs().max() < 0.06  # chi with 3072 degrees of freedom: sd ~ 1.3 %
    standard = (noise * math.sqrt(3072) / 10).flatten()[:20000].numpy()
    assert stats.kstest(standard, "norm").pvalue > 1e-3  # xi ~ N(0, I)
    assert torch.equal(out, gaussian_corruption(x, 10.0, torch.Generator().manual_seed(0)))
    assert out.dtype == x.dtype and torch.equal(gaussian_corruption(x, 0.0), x)


@pytest.mark.parametrize("device", DEVICES)
def test_augmentations_run_on_the_batch_device(device):
    x = torch.rand(8, 3, 32, 32, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    for out in (random_crop_flip(x, generator), random_erasing(x, generator),
                gaussian_corruption(x, 1.0, generator)):
        assert out.device == x.device and out.shape == x.shape


def test_draws_come_from_the_cpu_generator_whatever_the_data_device():
    """One seed, the same draws on every device (issue 27): with the data on another device (`meta` stands in for a
    GPU here) every augmentation and perturbation draws from the CPU generator, in the same order and amount as
    for CPU data, so the generator ends in the same state (a draw on the meta device would not advance it)."""
    x = torch.rand(5, 3, 12, 12)
    steps = (lambda data, g: random_crop_flip(data, g, padding=2, flip=True),
             lambda data, g: random_erasing(data, g, p=0.7),
             lambda data, g: gaussian_corruption(data, 0.5, g))
    for step in steps:
        on_cpu, on_meta = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        expected = step(x, on_cpu)
        out = step(x.to("meta"), on_meta)
        assert out.device.type == "meta" and out.shape == expected.shape
        assert torch.equal(on_meta.get_state(), on_cpu.get_state())
