"""Training dynamics (seed002 §5.6): train_classifier.py --save-epochs keeps the asked checkpoints, and rainbow.py's
a_r(t) = ||W(t) e_r|| / ||W(0) e_r||, c_r(t) = cos(W(t) e_r, W(0) e_r) along the eigenvectors of the final C_l match
numpy on the raw checkpoints (layer 0: the image, no alignment). C_l is net 1's alone by default (the paper's
num_exps=1, issue 28 item 7); --dynamics_nets 2 takes both nets' (the toolkit extra)."""
import numpy as np
import pytest

import rainbow
from pipeline import contract
from pipeline.loaded import LoadedRun
from utils.rundir import RunDir

MLP = ["--model-name", "rainbow_mlp", "--traindata", "digits", "--device", "cpu"]
TRAIN = ("--width", "0.125", "--epochs", "3", "--save-epochs", "1", "2", "--recipe", "seed002_tutorial")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, trained_run):
    workdir = tmp_path_factory.mktemp("rainbow_dynamics")
    for seed in (0, 1):
        trained_run(workdir, "rainbow_mlp", "digits", seed, *TRAIN)
    assert rainbow.main([*MLP, "--workdir", str(workdir), "--num_samples", "1", "--clip_points", "3"]) == 0
    return workdir


def test_save_epochs_keeps_those_checkpoints(workdir):
    assert RunDir.of(workdir, "digits", "rainbow_mlp", 0).saved_epochs() == [0, 1, 2, 3]


def fc1(workdir, seed, epoch):
    loaded = LoadedRun.open(RunDir.of(workdir, "digits", "rainbow_mlp", seed), epoch)
    return loaded.model.fc1.weight.detach().double().numpy()


def check_dynamics(workdir, rows):
    """The stage's a_r(t), c_r(t) at layer 0 against numpy along the 5 leading eigenvectors of rows^T rows."""
    dynamics = contract.load(RunDir.of(workdir, "digits", "rainbow_mlp", 0), "rainbow", "dynamics")
    assert dynamics["epochs"].tolist() == [0, 1, 2, 3]
    _, singular, vh = np.linalg.svd(rows, full_matrices=False)     # C_0 = V S^2 V^T / n: its eigenvectors
    top = vh[:5].T                                                  # the 5 leading ones (distinct values)
    assert np.all(np.diff(singular[:6]) < 0)
    start = fc1(workdir, 0, 0) @ top
    for t, epoch in enumerate([0, 1, 2, 3]):
        now = fc1(workdir, 0, epoch) @ top
        amplification = np.linalg.norm(now, axis=0) / np.linalg.norm(start, axis=0)
        cosine = (now * start).sum(0) / np.linalg.norm(now, axis=0) / np.linalg.norm(start, axis=0)
        np.testing.assert_allclose(dynamics["amplification_00"][t, :5], amplification, rtol=1e-6)
        np.testing.assert_allclose(dynamics["cosine_00"][t, :5], cosine, rtol=1e-6, atol=1e-9)
    assert dynamics["amplification_00"].shape[1] == len(rows)      # rank of C_0: its rows < 3072 inputs


def test_amplification_and_cosine_follow_net_1s_own_covariance_as_the_paper(workdir):
    check_dynamics(workdir, fc1(workdir, 0, 3))                    # net 1's final C_0 alone: 64 directions


def test_dynamics_nets_takes_the_covariance_of_every_net(workdir):
    assert rainbow.main([*MLP, "--workdir", str(workdir), "--num_samples", "1", "--clip_points", "3",
                         "--dynamics_nets", "2"]) == 0
    check_dynamics(workdir, np.concatenate([fc1(workdir, 0, 3), fc1(workdir, 1, 3)]))   # both nets: 128
