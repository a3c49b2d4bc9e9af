"""Rainbow sampling through BatchNorm nets (seed002 §5.4 c): two scattering4 nets (width 1/8, one epoch on digits)
resampled by rainbow_nets.rainbow_networks, checked independently of the code under test:
- every re-standardised layer input of a rainbow net has zero mean and unit variance per channel on the train
  set (computed here from the activations, in float64);
- rows drawn as rainbow.py draws them have a covariance that approaches C_l (numpy, from the aligned weights)
  as the number of rows grows, for a rank-deficient C_l (M N < D);
- column 0 of the rainbow accuracy (nothing resampled yet) is net 1's own accuracy;
and the same re-standardisation through the complex skip variant (untrained nets: E z = 0, E|z|^2 = 1).
"""
from dataclasses import replace

import numpy as np
import pytest
import torch

import rainbow
from datasets import build_dataset
from measures import alignment as al
from models import build_model
from pipeline import rainbow_nets
from pipeline.loaded import LoadedRun
from utils.rundir import RunDir

MODEL = ["--model-name", "scattering4", "--traindata", "digits", "--device", "cpu"]
TRAIN = ("--width", "0.125", "--epochs", "1", "--lr", "0.05", "--recipe", "seed002")


@pytest.fixture(scope="module")
def bn_nets(tmp_path_factory, trained_run):
    workdir = tmp_path_factory.mktemp("rainbow_bn")
    for seed in (0, 1):
        trained_run(workdir, "scattering4", "digits", seed, *TRAIN)
    args = rainbow.parse_args([*MODEL, "--workdir", str(workdir), "--max-samples", "150", "--batchsize", "75"])
    _, nets, _ = rainbow_nets.open_runs(args, torch.device("cpu"))
    data = rainbow_nets.load_data(args, nets[0].loaded)
    aligners = rainbow_nets.align_nets(nets, data, num_iters=1)
    return nets, aligners, data


def draw(nets, aligners, j, samples, generator):
    """Layer j's weights of `samples` rainbow nets, as rainbow.main draws them: rows from the thin spectrum of C_l."""
    return al.sample_from_spectrum(*al.weight_spectrum(rainbow_nets.aligned_weights(nets, aligners, j)),
                                   samples * nets[0].layers[j].weight.shape[0], generator).chunk(samples)


def test_a_bn_rainbow_net_is_restandardised_and_starts_from_net_1(bn_nets):
    nets, aligners, data = bn_nets
    L = len(nets[0].layers)
    assert all(std is not None and not std.affine for std in nets[0].standardizations)
    generator = torch.Generator().manual_seed(0)
    draws = [[draw(nets, aligners, j, 1, generator)[0] for j in range(L - 1)]]
    mean_classifier = sum(rainbow_nets.aligned_weights(nets, aligners, L - 1)) / len(nets)
    top1, top5, (new,) = rainbow_nets.rainbow_networks(nets, aligners, draws, mean_classifier, data)
    trained = rainbow_nets.evaluate(nets[0], data)
    assert (top1[0, 0], top5[0, 0]) == trained                      # column 0: net 1 itself
    assert top1.shape == (1, L) and np.all(top5 >= top1)
    assert not torch.equal(new.layers[0].weight, nets[0].layers[0].weight)   # layer 0 was resampled
    for j in range(1, L):   # the input of every layer l >= 1: mean 0, variance 1 per channel on train (float64)
        sums = None
        for x, _ in data.batches("train"):
            rows = al.as_samples(new.layer_input(x, j)).double()
            batch = torch.stack([rows.sum(0), rows.square().sum(0), torch.full_like(rows[0], len(rows))])
            sums = batch if sums is None else sums + batch
        mean, power = sums[0] / sums[2], sums[1] / sums[2]
        variance = power - mean.square()
        assert mean.abs().max() < 1e-4, (j, mean.abs().max())
        assert (variance - 1).abs().max() < 1e-3, (j, (variance - 1).abs().max())
        # and net 1's statistics were not the right ones any more: the re-standardisation changed them
        assert not torch.equal(new.standardizations[j].running_var, nets[0].standardizations[j].running_var)


def test_sampled_weights_have_covariance_c_l_computed_by_hand(bn_nets):
    nets, aligners, _ = bn_nets
    j = 1                                                               # (16, 40, 1, 1) per net: M N = 32 < D = 40
    rows = np.concatenate([w.reshape(w.shape[0], -1).double().numpy()
                           for w in rainbow_nets.aligned_weights(nets, aligners, j)])
    assert rows.shape[0] < rows.shape[1]
    C = rows.T @ rows / len(rows)
    generator = torch.Generator().manual_seed(1)
    errors = []
    for samples in (10, 1000):
        drawn = torch.cat(draw(nets, aligners, j, samples, generator)).numpy()
        estimate = drawn.T @ drawn / len(drawn)
        errors.append(np.linalg.norm(estimate - C, 2) / np.linalg.norm(C, 2))
    assert errors[1] < 0.05 and errors[1] < errors[0] / 5, errors
    # the draws live in C_l's range: nothing along its null space (rank 32 < 40)
    null = np.linalg.eigh(C)[1][:, :rows.shape[1] - np.linalg.matrix_rank(rows)]
    assert np.abs(drawn @ null).max() < 1e-8 * np.abs(drawn).max()


@pytest.mark.slow   # its own two nets; the restandardising itself is guarded by the BN tests above
def test_the_complex_skip_variant_is_restandardised_too():
    """Two untrained scattering_skip nets (width 1/16) on 64 digits: complex layer inputs of the rainbow net have
    E z = 0 and E|z - E z|^2 = 1 per channel on train (float64 here)."""
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    config = {"model": {"name": "scattering_skip", "outputs": 10, "num_classes": 10, "in_channels": 3,
                        "image_size": 32, "width": 0.0625},
              "data": {"name": "digits", "mean": list(train.mean), "std": list(train.std)},
              "recipe": {"name": "seed002", "loss": "cross_entropy"}}
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("scattering_skip", 10, width=0.0625).eval()
        nets.append(rainbow_nets.Net(LoadedRun(RunDir(f"/nonexistent/rnd{seed}"), model, config, 0, "weights",
                                          torch.device("cpu"))))
    rainbow_nets.check_supported(nets[0], "scattering_skip")
    splits = {split: replace(data, images=data.images[:64], labels=data.labels[:64])
              for split, data in (("train", train), ("test", test))}
    data = rainbow_nets.Data(nets[0].loaded, splits, 32)
    aligners = rainbow_nets.align_nets(nets, data, num_iters=1)
    L = len(nets[0].layers)
    generator = torch.Generator().manual_seed(0)
    draws = [[draw(nets, aligners, j, 1, generator)[0] for j in range(L - 1)]]
    mean_classifier = sum(rainbow_nets.aligned_weights(nets, aligners, L - 1)) / 2
    top1, _, (new,) = rainbow_nets.rainbow_networks(nets, aligners, draws, mean_classifier, data)
    assert top1[0, 0] == rainbow_nets.evaluate(nets[0], data)[0]
    for j in range(1, L):
        rows = torch.cat([al.as_samples(new.layer_input(x, j)) for x, _ in data.batches("train")])
        rows = rows.to(torch.complex128 if rows.is_complex() else torch.float64)
        assert rows.is_complex() == (j < L - 1)                        # the classifier sees real and imaginary parts
        mean = rows.mean(0)
        assert mean.abs().max() < 1e-4 and ((rows - mean).abs().square().mean(0) - 1).abs().max() < 1e-3, j
