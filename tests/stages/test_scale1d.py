"""The 1-D scale-detection task (datasets/scale1d.py), its CNN (models/cnn1d.py) and the scale1d.py stage: its
training with the original's ridge and stopping rule, and its files (seed004 §2.12)."""
import itertools
import math

import numpy as np
import pytest
import torch

import scale1d
from datasets import build_dataset
from datasets.scale1d import render_sites, site_pairs
from models import build_model
from pipeline.contract import load
from utils.errors import ToolkitError
from utils.rundir import RunDir


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


# ---------------------------------------------------------------------------------------------------- scale1d.py
TINY = ["--scale1d_channels", "16", "--scale1d_length", "32", "--scale1d_xi", "8", "--scale1d_ptr", "64"]


@pytest.fixture(scope="module")
def run_workdir(tmp_path_factory, trained_run):
    workdir = tmp_path_factory.mktemp("scale1d")
    trained_run(workdir, "lenet", "digits", 0, "--width", "0.5", "--epochs", "1", "--recipe", "seed004")
    return workdir


def test_scale1d_stage_trains_measures_and_writes_the_constant_filter_model(run_workdir):
    assert scale1d.main(["--model-name", "lenet", "--traindata", "digits", "--workdir", str(run_workdir), "--device",
                         "cpu", *TINY, "--scale1d_epochs", "2"]) == 0
    run = RunDir.of(run_workdir, "digits", "lenet", 0)
    arrays, summary = load(run, "scale1d", "scale1d"), load(run, "scale1d", "summary")
    assert summary["depth"] == 5 and summary["epochs"] <= 2 and 0 <= summary["test_error"] <= 1
    assert 0 <= summary["val_error"] <= 1 and summary["ridge"] == 0
    assert list(arrays["layers"]) == [1, 2, 3, 4, 5] and summary["probes"] == 2 * (496 // 20)
    for key in ("trained", "init", "trained_chmean", "init_chmean", "pooling", "prediction"):
        assert all(arrays[f"{key}_{q}"].shape == (5,) and np.all(np.isfinite(arrays[f"{key}_{q}"])) for q in "DGR")
    np.testing.assert_allclose(arrays["pooling_D"], arrays["prediction_D"], rtol=1e-9)
    np.testing.assert_allclose(arrays["init_R"], arrays["init_D"] / arrays["init_G"], rtol=1e-10)
    assert arrays["diffusive_k"][-1] == len(arrays["diffusive_R"]) == 32


def test_the_original_s_stopping_rule_with_and_without_ridge():
    """§2.12: without a ridge, the first check at zero hinge loss; with one, zero loss and zero validation error at
    a 0-based epoch >= 500 x the first zero-loss epoch."""
    assert scale1d.stops(30, 0.0, 30, 0.0, math.nan) and not scale1d.stops(30, 1e-9, None, 0.0, math.nan)
    assert not scale1d.stops(30, 0.0, 30, 0.01, 0.0)                     # zero at 30: go on until epoch 15000
    assert not scale1d.stops(15000, 0.0, 30, 0.01, 0.0078)               # validation error not yet 0
    assert scale1d.stops(15000, 0.0, 30, 0.01, 0.0) and scale1d.stops(0, 0.0, 0, 0.01, 0.0)


def test_ridge_penalty_is_the_original_norm_and_acts_on_the_trained_weights():
    torch.manual_seed(0)
    model = build_model("cnn1d", 1, in_channels=1, width=0.016, image_size=32)
    by_hand = sum(b.conv.weight.detach().pow(2).sum() for b in model.blocks) / (16 * 5)
    assert float(scale1d.ridge_penalty(model, 2).detach()) == pytest.approx(float(by_hand), rel=1e-12)
    cubed = sum(b.conv.weight.detach().abs().pow(3).sum() for b in model.blocks) / (16 ** 1.5 * 5)
    assert float(scale1d.ridge_penalty(model, 3).detach()) == pytest.approx(float(cubed), rel=1e-12)
    weights = {}
    for ridge in ("0", "5"):
        args = scale1d.parse_args([*TINY, "--scale1d_epochs", "1", "--scale1d_ridge", ridge])
        torch.manual_seed(0)
        net = build_model("cnn1d", 1, in_channels=1, width=0.016, image_size=32)
        data = {split: build_dataset("scale1d", split, length=32, xi=8, ptr=64) for split in ("train", "val")}
        scale1d.train(net, data["train"], data["val"], args, torch.Generator().manual_seed(0), torch.device("cpu"))
        weights[ridge] = net.blocks[0].conv.weight.detach().clone()
    assert weights["5"].norm() < weights["0"].norm()                     # the penalty shrinks the conv weights


def test_training_syncs_with_the_host_once_per_check_not_per_batch(monkeypatch):
    """12 epochs of 8 batches: checks after 0-based epochs 0, 10 and 11 (the last), one host sync each (issue 27)."""
    syncs = []
    for method in ("item", "__float__", "__bool__", "__int__"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method,
                            lambda self, *a, _f=original, _m=method: syncs.append(_m) or _f(self, *a))
    args = scale1d.parse_args([*TINY, "--scale1d_epochs", "12"])
    torch.manual_seed(0)
    net = build_model("cnn1d", 1, in_channels=1, width=0.016, image_size=32)
    data = {split: build_dataset("scale1d", split, length=32, xi=8, ptr=64) for split in ("train", "val")}
    syncs.clear()
    found = scale1d.train(net, data["train"], data["val"], args, torch.Generator().manual_seed(0),
                          torch.device("cpu"))
    assert 3 <= len(syncs) <= 3 + 1 and found["epochs"] <= 12                  # 3 checks + the final validation error
