"""The 1-D scale-detection task (datasets/scale1d.py) and its CNN (models/cnn1d.py), seed004 §2.12."""
import itertools
import math

import pytest
import torch

from datasets import build_dataset
from datasets.scale1d import render_sites, site_pairs
from models import build_model
from utils.errors import ToolkitError


def test_block_task_labels_all_pairs_as_the_original_enumeration():
    sites, labels = site_pairs(128, 32)
    pairs = list(itertools.combinations(range(128), 2))
    assert [tuple(p) for p in sites.tolist()] == pairs
    assert labels.tolist() == [int(a // 32 == b // 32) for a, b in pairs]
    assert labels.sum() == 4 * 32 * 31 // 2 == 1984 and len(labels) - labels.sum() == 6144


def test_distance_task_uses_the_periodic_distance_and_an_unhalved_gap():
    sites, labels = site_pairs(64, 16, gap=2, task="distance")
    delta = sites[:, 1] - sites[:, 0]
    distance = torch.as_tensor(delta).minimum(64 - torch.as_tensor(delta))
    assert ((distance < 14) == torch.as_tensor(labels).bool()).all() and not ((distance >= 14) & (distance < 18)).any()
    with pytest.raises(ToolkitError, match="task"):
        site_pairs(64, 16, task="quadrant")


def test_splits_are_balanced_disjoint_and_seeded():
    parts = {split: build_dataset("scale1d", split, seed=3) for split in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1024, 128, 2 * (1984 - 576)]
    seen = set()
    for data in parts.values():
        assert data.labels.float().mean() == 0.5 and data.images.shape[1:] == (1, 1, 128)
        pairs = {tuple(p) for p in data.extras["sites"].tolist()}
        assert not pairs & seen
        seen |= pairs
    other = build_dataset("scale1d", "train", seed=4)
    assert not torch.equal(other.extras["sites"], parts["train"].extras["sites"])
    assert torch.equal(build_dataset("scale1d", "train", seed=3).images, parts["train"].images)
    probe = build_dataset("scale1d", "probe")
    assert len(probe) == 2 * (8128 // 20) and probe.labels.float().mean() == 0.5
    assert probe.mean == (0.0,) and probe.std == (1.0,)


def test_signals_hold_sqrt_half_length_at_both_sites():
    data = build_dataset("scale1d", "val", length=64, xi=16, ptr=256)
    images, sites = data.images[:, 0, 0], data.extras["sites"]
    assert torch.allclose(images.pow(2).sum(1), torch.full((len(images),), 64.0))
    assert torch.equal(images.gather(1, sites), torch.full(sites.shape, math.sqrt(32.0)))
    same = render_sites(torch.tensor([[3, 3]]), 8)
    assert same[0, 0, 0, 3] == pytest.approx(2 * 2.0)


def test_cnn1d_blocks_halve_the_length_with_circular_padding_and_mean_field_readout():
    torch.manual_seed(0)
    model = build_model("cnn1d", 1, in_channels=1, width=0.01, image_size=128).eval()
    assert len(model.blocks) == 7 and model.readout.in_features == 10
    x = torch.randn(3, 1, 1, 128)
    lengths, y = [], x
    for block in model.blocks:
        y = block(y)
        lengths.append(y.shape[-1])
    assert lengths == [64, 32, 16, 8, 4, 2, 1] and (y >= 0).all()
    conv = model.blocks[0].conv                                                     # F = 2, stride 2: pads one right
    by_hand = math.sqrt(2) * torch.relu(torch.einsum("hk,bpk->bhp", conv.weight[:, 0, 0] / math.sqrt(2),
                                                     x[:, 0, 0].reshape(3, 64, 2)) + conv.bias[None, :, None])
    torch.testing.assert_close(model.blocks[0](x)[:, :, 0], by_hand)
    readout = model.readout
    expected = readout.bias + y.mean((2, 3)) @ readout.weight.T / 10
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model(x[:, :, 0]), model(x))                         # (B, C, L) too
